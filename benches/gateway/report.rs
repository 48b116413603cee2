//! The printed table: every figure of the gateway next to a baseline measured in the same run,
//! their difference and ratio, and the product target where one exists.

use std::time::Duration;

/// A measured quantity, so differences and ratios are computed in one unit.
#[derive(Clone, Copy, Debug)]
pub enum Fig {
    Ms(f64),
    /// Bytes (memory or payload); shown as MB or GB.
    Bytes(f64),
    PerSec(f64),
    /// A plain number (polls per job, counts).
    Num(f64),
}

impl Fig {
    pub fn ms(d: Duration) -> Fig {
        Fig::Ms(d.as_secs_f64() * 1000.0)
    }

    pub fn kb(kb: u64) -> Fig {
        Fig::Bytes(kb as f64 * 1024.0)
    }

    fn value(self) -> f64 {
        match self {
            Fig::Ms(v) | Fig::Bytes(v) | Fig::PerSec(v) | Fig::Num(v) => v,
        }
    }

    fn show(self) -> String {
        match self {
            Fig::Ms(v) => format!("{v:.1} ms"),
            Fig::Bytes(v) if v.abs() >= 1e9 => format!("{:.2} GB", v / 1e9),
            Fig::Bytes(v) if v.abs() >= 1e6 => format!("{:.1} MB", v / 1e6),
            Fig::Bytes(v) => format!("{:.1} kB", v / 1e3),
            Fig::PerSec(v) => format!("{v:.1}/s"),
            Fig::Num(v) if v.fract() == 0.0 => format!("{v:.0}"),
            Fig::Num(v) => format!("{v:.1}"),
        }
    }

    /// `self − base` in `self`'s unit, signed.
    fn delta(self, base: Fig) -> String {
        let d = self.value() - base.value();
        let shown = match self {
            Fig::Ms(_) => Fig::Ms(d.abs()).show(),
            Fig::Bytes(_) => Fig::Bytes(d.abs()).show(),
            Fig::PerSec(_) => Fig::PerSec(d.abs()).show(),
            Fig::Num(_) => Fig::Num(d.abs()).show(),
        };
        let sign = if !shown.chars().any(|c| ('1'..='9').contains(&c)) {
            "±"
        } else if d < 0.0 {
            "−"
        } else {
            "+"
        };
        format!("{sign}{shown}")
    }
}

/// A target from PRODUCT.md §6 and whether this run met it.
pub struct Target {
    pub text: String,
    pub met: bool,
}

impl Target {
    pub fn new(text: impl Into<String>, met: bool) -> Option<Target> {
        Some(Target { text: text.into(), met })
    }
}

struct Row {
    scenario: &'static str,
    figure: String,
    fluxgate: Fig,
    baseline: String,
    base: Fig,
    target: Option<Target>,
}

#[derive(Default)]
pub struct Report {
    rows: Vec<Row>,
    notes: Vec<String>,
}

impl Report {
    /// One row: `figure` of the gateway, `baseline` (its label) and its value from the same run.
    pub fn add(
        &mut self,
        scenario: &'static str,
        figure: impl Into<String>,
        fluxgate: Fig,
        baseline: impl Into<String>,
        base: Fig,
        target: Option<Target>,
    ) {
        let row = Row { scenario, figure: figure.into(), fluxgate, baseline: baseline.into(), base, target };
        self.rows.push(row);
    }

    /// A line printed under the table (errors, conditions of the run).
    pub fn note(&mut self, scenario: &str, text: impl AsRef<str>) {
        let line = format!("[{scenario}] {}", text.as_ref());
        eprintln!("{line}");
        self.notes.push(line);
    }

    pub fn print(&self) {
        let head = [
            "scenario",
            "figure",
            "fluxgate",
            "baseline (same run)",
            "baseline",
            "difference",
            "ratio",
            "target",
        ];
        let mut lines: Vec<[String; 8]> = vec![head.map(str::to_owned)];
        for r in &self.rows {
            let ratio = if r.base.value() == 0.0 {
                "—".to_owned()
            } else {
                format!("{:.2}x", r.fluxgate.value() / r.base.value())
            };
            let target = match &r.target {
                Some(t) => format!("{} {}", t.text, if t.met { "ok" } else { "MISSED" }),
                None => String::new(),
            };
            lines.push([
                r.scenario.to_owned(),
                r.figure.clone(),
                r.fluxgate.show(),
                r.baseline.clone(),
                r.base.show(),
                r.fluxgate.delta(r.base),
                ratio,
                target,
            ]);
        }
        let mut widths = [0usize; 8];
        for l in &lines {
            for (w, cell) in widths.iter_mut().zip(l) {
                *w = (*w).max(cell.chars().count());
            }
        }
        println!();
        println!("fluxgate gateway benchmark — loopback, one machine; ratio = fluxgate / baseline");
        for (i, l) in lines.iter().enumerate() {
            let cells: Vec<String> = l
                .iter()
                .zip(widths)
                .enumerate()
                .map(|(c, (cell, w))| {
                    let pad = w - cell.chars().count();
                    // Numbers right-aligned, words left-aligned.
                    if (2..=6).contains(&c) && c != 3 && i > 0 {
                        format!("{}{cell}", " ".repeat(pad))
                    } else {
                        format!("{cell}{}", " ".repeat(pad))
                    }
                })
                .collect();
            println!("{}", cells.join(" | ").trim_end());
            if i == 0 {
                let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
                println!("{}", rule.join("-+-"));
            }
        }
        if !self.notes.is_empty() {
            println!();
            for n in &self.notes {
                println!("{n}");
            }
        }
    }
}
