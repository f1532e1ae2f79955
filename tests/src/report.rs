//! The figures a benchmark reports, for `cargo run -p ovation-tests --bin benchmarks`
//! to tabulate into `BENCHMARKS.md`.
//!
//! A bench prints its own table for a human, and also [`record`]s each figure with the
//! baseline it was measured against in the same run and the target it is held to. Recording
//! appends one JSON line to the file `OVATION_BENCH_REPORT` names, and does nothing when that
//! is unset (a bench run on its own).

use std::io::Write;

use serde::{Deserialize, Serialize};

/// The environment variable naming the file figures are appended to.
pub const REPORT_ENV: &str = "OVATION_BENCH_REPORT";

/// One measured figure.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Figure {
    /// The part of the suite: "Endpoint overhead", "Pub/Sub", ...
    pub section: String,
    /// What was measured, in words: "Ovation, sampling 0.0: requests/s".
    pub name: String,
    pub value: f64,
    /// "req/s", "µs", "ms", "msg/s", "MiB", "s".
    pub unit: String,
    /// What the figure is compared with, measured in the same run.
    pub baseline: Option<Baseline>,
    pub target: Option<Target>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Baseline {
    pub name: String,
    pub value: f64,
}

/// What a figure must reach.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// `value / baseline` at least this.
    RatioAtLeast(f64),
    /// `value / baseline` at most this.
    RatioAtMost(f64),
    /// `value - baseline` at most this (in the figure's unit).
    AddedAtMost(f64),
    /// `value` at least this.
    AtLeast(f64),
    /// `value` at most this.
    AtMost(f64),
}

impl Figure {
    pub fn new(section: &str, name: impl Into<String>, value: f64, unit: &str) -> Figure {
        Figure {
            section: section.to_owned(),
            name: name.into(),
            value,
            unit: unit.to_owned(),
            baseline: None,
            target: None,
        }
    }

    pub fn against(mut self, name: impl Into<String>, value: f64) -> Figure {
        self.baseline = Some(Baseline {
            name: name.into(),
            value,
        });
        self
    }

    pub fn target(mut self, target: Target) -> Figure {
        self.target = Some(target);
        self
    }

    /// `value / baseline`, when there is a baseline.
    pub fn ratio(&self) -> Option<f64> {
        self.baseline.as_ref().map(|b| self.value / b.value)
    }

    /// Whether the target is met; `None` without a target (or a ratio target without a
    /// baseline).
    pub fn met(&self) -> Option<bool> {
        let base = self.baseline.as_ref().map(|b| b.value);
        Some(match self.target? {
            Target::RatioAtLeast(t) => self.ratio()? >= t,
            Target::RatioAtMost(t) => self.ratio()? <= t,
            Target::AddedAtMost(t) => self.value - base? <= t,
            Target::AtLeast(t) => self.value >= t,
            Target::AtMost(t) => self.value <= t,
        })
    }

    /// The target in words, in the figure's unit.
    pub fn target_text(&self) -> String {
        match self.target {
            None => String::new(),
            Some(Target::RatioAtLeast(t)) => format!("≥ {t:.2}× baseline"),
            Some(Target::RatioAtMost(t)) => format!("≤ {t:.2}× baseline"),
            Some(Target::AddedAtMost(t)) => format!("≤ {} {} added", number(t), self.unit),
            Some(Target::AtLeast(t)) => format!("≥ {} {}", number(t), self.unit),
            Some(Target::AtMost(t)) => format!("≤ {} {}", number(t), self.unit),
        }
    }

    /// Prints the figure on a line of its own and appends it to the report, if one is kept.
    pub fn record(self) {
        let ratio = self
            .ratio()
            .map(|r| format!(", {r:.2}× baseline"))
            .unwrap_or_default();
        let verdict = match self.met() {
            Some(true) => " — target met",
            Some(false) => " — target MISSED",
            None => "",
        };
        println!(
            "  {}: {} {}{ratio}{verdict}",
            self.name,
            number(self.value),
            self.unit
        );
        let Some(path) = std::env::var_os(REPORT_ENV) else {
            return;
        };
        let line = serde_json::to_string(&self).expect("a figure serialises");
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| writeln!(f, "{line}"));
        if let Err(e) = written {
            eprintln!("could not append to {}: {e}", path.to_string_lossy());
        }
    }
}

/// A figure for a table: three significant digits at most, thousands separated.
pub fn number(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    let abs = v.abs();
    let decimals = if abs >= 100.0 {
        0
    } else if abs >= 10.0 {
        1
    } else if abs >= 1.0 {
        2
    } else {
        3
    };
    let text = format!("{v:.decimals$}");
    let (int, frac) = text
        .split_once('.')
        .map_or((text.as_str(), None), |(i, f)| (i, Some(f)));
    let (sign, digits) = int.strip_prefix('-').map_or(("", int), |d| ("-", d));
    let mut grouped = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    match frac {
        Some(f) => format!("{sign}{grouped}.{f}"),
        None => format!("{sign}{grouped}"),
    }
}

/// The `p`-quantile (0.0–1.0) of sorted values.
pub fn quantile<T: Copy>(sorted: &[T], p: f64) -> T {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// The median of `values` (reordered).
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_grouped_and_rounded() {
        assert_eq!(number(72355.4), "72,355");
        assert_eq!(number(1234567.0), "1,234,567");
        assert_eq!(number(-1500.0), "-1,500");
        assert_eq!(number(67.25), "67.2");
        assert_eq!(number(0.1234), "0.123");
        assert_eq!(number(999.6), "1,000");
    }

    #[test]
    fn targets_are_judged_against_the_baseline() {
        let f = Figure::new("s", "x", 95.0, "req/s").against("axum", 100.0);
        assert!(f.clone().target(Target::RatioAtLeast(0.95)).met().unwrap());
        assert!(!f.clone().target(Target::RatioAtLeast(0.96)).met().unwrap());
        let call = Figure::new("s", "stub", 2.5, "µs").against("direct", 0.4);
        assert!(!call.clone().target(Target::AddedAtMost(2.0)).met().unwrap());
        assert!(call.target(Target::AddedAtMost(2.2)).met().unwrap());
        let ms = Figure::new("s", "start", 150.0, "ms").target(Target::AtMost(200.0));
        assert_eq!(ms.met(), Some(true));
        assert_eq!(Figure::new("s", "n", 1.0, "").met(), None);
    }
}
