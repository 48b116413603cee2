//! Budget periods in UTC: where the day or month of a unix time starts and ends.

use crate::clients::Period;

const DAY: u64 = 86_400;

/// Unix seconds at which the period holding `t` began.
pub(super) fn start(period: Period, t: u64) -> u64 {
    match period {
        Period::Day => t - t % DAY,
        Period::Month => {
            let (y, m, _) = civil(t / DAY);
            days(y, m, 1) * DAY
        }
    }
}

/// Unix seconds at which the period holding `t` ends.
pub(super) fn end(period: Period, t: u64) -> u64 {
    match period {
        Period::Day => start(period, t) + DAY,
        Period::Month => {
            let (y, m, _) = civil(t / DAY);
            let (y, m) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
            days(y, m, 1) * DAY
        }
    }
}

/// (year, month, day) of a count of days since 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil(z: u64) -> (u64, u64, u64) {
    let z = z + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + u64::from(m <= 2), m, d)
}

/// Days since 1970-01-01 of a date (`days_from_civil`), for dates from 1970 on.
fn days(y: u64, m: u64, d: u64) -> u64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_start_and_end_on_their_first_day() {
        // 2026-11-25T19:00:00Z
        let t = 1_795_633_200;
        assert_eq!(civil(t / DAY), (2026, 11, 25));
        assert_eq!(start(Period::Month, t), 1_793_491_200, "2026-11-01");
        assert_eq!(end(Period::Month, t), 1_796_083_200, "2026-12-01");
        assert_eq!(end(Period::Month, 1_796_083_200 + 5), 1_798_761_600, "2027-01-01");
        assert_eq!(start(Period::Day, t), 1_795_564_800);
        assert_eq!(end(Period::Day, t), 1_795_651_200);
        assert_eq!(days(2024, 2, 29) + 1, days(2024, 3, 1), "a leap day");
    }
}
