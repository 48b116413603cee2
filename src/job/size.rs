//! Output size rules per catalog sizing: FLUX.2 and legacy width/height, or a reduced aspect ratio.
//! Client integers are bounded (`MAX_PART`) before any arithmetic, so no size or ratio a client
//! can write overflows: each is a 400 naming its parameter.

use serde::Serialize;

use crate::catalog::{Model, Sizing};
use crate::error::ApiError;
use crate::openai::Fields;

/// What the job asks BFL for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputSize {
    /// No size given (or `auto`): BFL's default for the model.
    Default,
    Dimensions {
        width: u32,
        height: u32,
    },
    /// A reduced ratio `w:h` between 21:9 and 9:21.
    AspectRatio {
        w: u32,
        h: u32,
    },
}

const FLUX2_MAX_PIXELS: u64 = 2048 * 2048;

/// Largest side or ratio term read from a client: far beyond any size or ratio BFL serves, and
/// small enough that no product or reduction of two of them can overflow.
const MAX_PART: u32 = 100_000;

impl OutputSize {
    /// Reads `size`, `width`/`height` and `aspect_ratio` and checks them against the model's row.
    pub fn parse(model: &Model, fields: &Fields) -> Result<OutputSize, ApiError> {
        let from_size = match fields.string("size")?.map(str::trim) {
            None | Some("auto") | Some("") => None,
            Some(s) => Some(parse_pair(s, 'x').map_err(|why| {
                ApiError::invalid(
                    "size",
                    format!("`size` must be \"auto\" or \"WIDTHxHEIGHT\" ({why}), got \"{}\"", clip(s)),
                )
            })?),
        };
        let from_fields = match (fields.integer("width")?, fields.integer("height")?) {
            (None, None) => None,
            (Some(w), Some(h)) => Some((side("width", w)?, side("height", h)?)),
            (None, Some(_)) => return Err(ApiError::invalid("width", "`height` was given without `width`")),
            (Some(_), None) => return Err(ApiError::invalid("height", "`width` was given without `height`")),
        };
        let (dims, param) = match (from_size, from_fields) {
            (Some(a), Some(b)) if a != b => {
                return Err(ApiError::invalid("size", "`size` and `width`/`height` disagree"));
            }
            (Some(d), _) => (Some(d), "size"),
            (None, Some(d)) => (Some(d), "width"),
            (None, None) => (None, "size"),
        };
        let ratio = fields.string("aspect_ratio")?;
        match model.sizing {
            Sizing::Flux2 | Sizing::Legacy => {
                if ratio.is_some() {
                    return Err(ApiError::invalid(
                        "aspect_ratio",
                        format!("{} takes `size` (or width/height), not `aspect_ratio`", model.id),
                    ));
                }
                let limits = if model.sizing == Sizing::Flux2 { &FLUX2 } else { &LEGACY };
                match dims {
                    None => Ok(OutputSize::Default),
                    Some((w, h)) => check_dimensions(model, limits, w, h, param),
                }
            }
            Sizing::AspectRatio => {
                let explicit = match ratio {
                    None => None,
                    Some(r) => {
                        let (w, h) = parse_pair(r.trim(), ':').map_err(|why| {
                            ApiError::invalid(
                                "aspect_ratio",
                                format!(
                                    "`aspect_ratio` must look like \"16:9\" ({why}), got \"{}\"",
                                    clip(r)
                                ),
                            )
                        })?;
                        Some(reduce(w, h))
                    }
                };
                let implied = dims.map(|(w, h)| reduce(w, h));
                let (ratio, param) = match (explicit, implied) {
                    (Some(a), Some(b)) if a != b => {
                        return Err(ApiError::invalid("aspect_ratio", "`aspect_ratio` and `size` disagree"));
                    }
                    (Some(r), _) => (r, "aspect_ratio"),
                    (None, Some(r)) => (r, param),
                    (None, None) => return Ok(OutputSize::Default),
                };
                check_ratio(ratio, param)
            }
        }
    }
}

/// A model's size rules as clients may read them (`GET /v1/models/{id}`, the playground's live
/// checks, which repeat the messages below word for word).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SizeRules {
    /// `WxH` (or width/height) taken as is.
    Dimensions {
        min: u32,
        max: u32,
        multiple: u32,
        /// `None`: no limit beyond the sides'.
        max_pixels: Option<u64>,
        max_part: u32,
    },
    /// `WxH` reduced to a ratio, or `aspect_ratio`, between `widest` and `tallest`.
    AspectRatio { widest: &'static str, tallest: &'static str, max_part: u32 },
}

impl SizeRules {
    pub fn of(model: &Model) -> SizeRules {
        let dimensions = |l: &Limits| SizeRules::Dimensions {
            min: l.min,
            max: l.max,
            multiple: l.multiple,
            max_pixels: (l.max_pixels != u64::MAX).then_some(l.max_pixels),
            max_part: MAX_PART,
        };
        match model.sizing {
            Sizing::Flux2 => dimensions(&FLUX2),
            Sizing::Legacy => dimensions(&LEGACY),
            Sizing::AspectRatio => {
                SizeRules::AspectRatio { widest: "21:9", tallest: "9:21", max_part: MAX_PART }
            }
        }
    }
}

fn side(param: &str, v: i64) -> Result<u32, ApiError> {
    u32::try_from(v).ok().filter(|v| (1..=MAX_PART).contains(v)).ok_or_else(|| {
        ApiError::invalid(param, format!("`{param}` must be a positive integer of at most {MAX_PART}"))
    })
}

/// `A<sep>B` with both terms in 1..=MAX_PART, or why not.
fn parse_pair(s: &str, sep: char) -> Result<(u32, u32), &'static str> {
    let (a, b) = s.split_once(sep).ok_or("two numbers are needed")?;
    let term = |t: &str| -> Result<u32, &'static str> {
        let t = t.trim();
        if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
            return Err("each term must be a whole number");
        }
        // Leading zeros aside, more than 6 digits is above MAX_PART: no parse can overflow.
        let digits = t.trim_start_matches('0');
        match digits.len() {
            0 => Err("each term must be positive"),
            1..=6 => match digits.parse::<u32>() {
                Ok(n) if n <= MAX_PART => Ok(n),
                _ => Err("each term must be at most 100000"),
            },
            _ => Err("each term must be at most 100000"),
        }
    };
    Ok((term(a)?, term(b)?))
}

/// A client's text quoted back, cut short so a huge value does not make a huge error.
fn clip(s: &str) -> String {
    match s.char_indices().nth(40) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// `w:h` in lowest terms; both are positive (checked when parsed), so the divisor is too.
fn reduce(w: u32, h: u32) -> (u32, u32) {
    let g = gcd(w, h).max(1);
    (w / g, h / g)
}

/// Side limits of a width/height model.
struct Limits {
    min: u32,
    max: u32,
    multiple: u32,
    max_pixels: u64,
}

const FLUX2: Limits = Limits { min: 64, max: 2048, multiple: 16, max_pixels: FLUX2_MAX_PIXELS };
const LEGACY: Limits = Limits { min: 256, max: 1440, multiple: 32, max_pixels: u64::MAX };

fn check_dimensions(
    model: &Model,
    limits: &Limits,
    w: u32,
    h: u32,
    param: &str,
) -> Result<OutputSize, ApiError> {
    let why = if !(limits.min..=limits.max).contains(&w) || !(limits.min..=limits.max).contains(&h) {
        format!("each side must be between {} and {}", limits.min, limits.max)
    } else if !w.is_multiple_of(limits.multiple) || !h.is_multiple_of(limits.multiple) {
        format!("width and height must be multiples of {}", limits.multiple)
    } else if u64::from(w).checked_mul(u64::from(h)).is_none_or(|px| px > limits.max_pixels) {
        "at most 4 megapixels (2048x2048)".to_owned()
    } else {
        return Ok(OutputSize::Dimensions { width: w, height: h });
    };
    Err(ApiError::invalid(param, format!("size {w}x{h} is not valid for {}: {why}", model.id)))
}

fn check_ratio((w, h): (u32, u32), param: &str) -> Result<OutputSize, ApiError> {
    // Between 21:9 and 9:21, compared without floating point.
    let (w64, h64) = (u64::from(w), u64::from(h));
    let outside = |a: u64, b: u64| a.checked_mul(9).zip(b.checked_mul(21)).is_none_or(|(a9, b21)| a9 > b21);
    if outside(w64, h64) || outside(h64, w64) {
        return Err(ApiError::invalid(param, format!("aspect ratio {w}:{h} must lie between 21:9 and 9:21")));
    }
    Ok(OutputSize::AspectRatio { w, h })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use serde_json::{Map, Value, json};

    use super::*;
    use crate::catalog::Catalog;

    fn parse(model: &str, fields: Value) -> Result<OutputSize, ApiError> {
        let catalog = Catalog::new(&HashMap::new()).expect("catalog");
        let model = catalog.get(model).expect("model");
        let Value::Object(map) = fields else { panic!("an object") };
        OutputSize::parse(model, &Fields::from_json(map))
    }

    fn param_of(result: Result<OutputSize, ApiError>) -> Option<String> {
        match result {
            Err(ApiError::InvalidRequest { param, .. }) => param,
            other => panic!("expected a 400, got {other:?}"),
        }
    }

    #[test]
    fn ordinary_sizes_and_ratios_still_parse() {
        assert_eq!(
            parse("flux-2-pro", json!({"size": "1024x768"})),
            Ok(OutputSize::Dimensions { width: 1024, height: 768 })
        );
        assert_eq!(
            parse("flux-kontext-pro", json!({"size": "1920x1080"})),
            Ok(OutputSize::AspectRatio { w: 16, h: 9 })
        );
        assert_eq!(
            parse("flux-kontext-pro", json!({"aspect_ratio": "21:9"})),
            Ok(OutputSize::AspectRatio { w: 7, h: 3 })
        );
        assert_eq!(
            parse("flux-kontext-pro", json!({"aspect_ratio": "009:016"})),
            Ok(OutputSize::AspectRatio { w: 9, h: 16 })
        );
    }

    #[test]
    fn huge_zero_and_malformed_sizes_are_a_400_naming_size() {
        let max = u64::MAX.to_string();
        let cases = [
            "99999999999999999999x1".to_owned(),
            format!("{max}x{max}"),
            format!("1x{max}"),
            "4294967295x4294967295".to_owned(),
            "4294967296x1".to_owned(),
            "100001x100000".to_owned(),
            "0x0".to_owned(),
            "0x1024".to_owned(),
            "-1x1024".to_owned(),
            "+1024x1024".to_owned(),
            "1024x".to_owned(),
            "x".to_owned(),
            "1e3x1e3".to_owned(),
            "1024.0x1024".to_owned(),
            "1024×1024".to_owned(),
            format!("{}x1", "9".repeat(100_000)),
        ];
        for model in ["flux-2-pro", "flux-pro-1.1", "flux-kontext-pro"] {
            for case in &cases {
                let result = parse(model, json!({"size": case}));
                assert_eq!(param_of(result.clone()).as_deref(), Some("size"), "{model} {case}: {result:?}");
                if let Err(e) = result {
                    assert!(e.to_string().len() < 300, "the error quotes a clipped value: {e}");
                }
            }
        }
    }

    #[test]
    fn huge_zero_and_malformed_ratios_are_a_400_naming_aspect_ratio() {
        let max = u64::MAX.to_string();
        for case in [
            "1:0".to_owned(),
            "0:0".to_owned(),
            "0:1".to_owned(),
            format!("{max}:1"),
            format!("{max}:{max}"),
            "4294967295:4294967294".to_owned(),
            "99999999999999999999:1".to_owned(),
            "100000:1".to_owned(),
            ":".to_owned(),
            "16".to_owned(),
            "16:9:1".to_owned(),
            "-16:9".to_owned(),
            "1.5:1".to_owned(),
        ] {
            let result = parse("flux-kontext-pro", json!({"aspect_ratio": case}));
            assert_eq!(param_of(result.clone()).as_deref(), Some("aspect_ratio"), "{case}: {result:?}");
        }
    }

    #[test]
    fn huge_and_negative_width_and_height_are_a_400_naming_the_field() {
        for (w, h, param) in [
            (json!(i64::MAX), json!(1024), "width"),
            (json!(1024), json!(i64::MIN), "height"),
            (json!(u64::MAX), json!(1024), "width"),
            (json!(4_294_967_296u64), json!(1024), "width"),
            (json!(1024), json!(4_294_967_295u64), "height"),
            (json!(0), json!(0), "width"),
            (json!(1e300), json!(1024), "width"),
            (json!("99999999999999999999"), json!(1024), "width"),
        ] {
            for model in ["flux-2-pro", "flux-pro-1.1", "flux-kontext-pro"] {
                let result = parse(model, json!({"width": w, "height": h}));
                assert_eq!(param_of(result.clone()).as_deref(), Some(param), "{model} {w}x{h}: {result:?}");
            }
        }
    }

    #[test]
    fn random_size_text_never_panics_and_is_ok_or_a_400_naming_its_field() {
        let mut rng = fastrand::Rng::with_seed(7);
        let alphabet: Vec<char> = "0123456789x:-+ .e9".chars().collect();
        for _ in 0..5_000 {
            let len = rng.usize(0..30);
            let text: String = (0..len).map(|_| alphabet[rng.usize(..alphabet.len())]).collect();
            for (model, field) in [
                ("flux-2-pro", "size"),
                ("flux-pro-1.1", "size"),
                ("flux-kontext-pro", "size"),
                ("flux-kontext-pro", "aspect_ratio"),
            ] {
                let mut map = Map::new();
                map.insert(field.to_owned(), Value::String(text.clone()));
                match parse(model, Value::Object(map)) {
                    Ok(_) => {}
                    Err(ApiError::InvalidRequest { param: Some(p), .. }) if p == field => {}
                    other => panic!("{model} {field}={text:?}: {other:?}"),
                }
            }
        }
    }
}
