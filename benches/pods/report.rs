//! Summaries (min / median / p90 / max), the ratios, and the two outputs: a Markdown
//! table and a JSON document.

use std::fmt::Write as _;

use serde_json::{Value, json};

/// The samples of one figure for berth, containerd, berth with its pods on the youki
/// handler (the pod cycle only) and the floor (where it has one).
pub struct Figure {
    pub name: String,
    pub unit: &'static str,
    pub berth: Vec<f64>,
    pub containerd: Vec<f64>,
    pub youki: Vec<f64>,
    pub floor: Vec<f64>,
}

impl Figure {
    pub fn new(name: &str, unit: &'static str) -> Figure {
        Figure {
            name: name.to_string(),
            unit,
            berth: Vec::new(),
            containerd: Vec::new(),
            youki: Vec::new(),
            floor: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub n: usize,
    pub min: f64,
    pub median: f64,
    pub p90: f64,
    pub max: f64,
}

impl Summary {
    /// `None` for no samples. The median of an even count is the mean of the middle two;
    /// p90 is the nearest-rank percentile.
    pub fn of(samples: &[f64]) -> Option<Summary> {
        if samples.is_empty() {
            return None;
        }
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
        };
        let rank = ((0.9 * n as f64).ceil() as usize).clamp(1, n);
        Some(Summary {
            n,
            min: sorted[0],
            median,
            p90: sorted[rank - 1],
            max: sorted[n - 1],
        })
    }

    fn cell(&self) -> String {
        if self.n == 1 {
            return format!("{:.2}", self.median);
        }
        format!(
            "{:.2} / **{:.2}** / {:.2} / {:.2}",
            self.min, self.median, self.p90, self.max
        )
    }

    fn json(&self) -> Value {
        json!({"n": self.n, "min": self.min, "median": self.median, "p90": self.p90, "max": self.max})
    }
}

/// berth's median over the other's, when both exist.
fn ratio(berth: Option<Summary>, other: Option<Summary>) -> Option<f64> {
    match (berth, other) {
        (Some(b), Some(o)) if o.median > 0.0 => Some(b.median / o.median),
        _ => None,
    }
}

fn ratio_cell(ratio: Option<f64>) -> String {
    ratio.map_or_else(|| "–".to_string(), |r| format!("{r:.2}×"))
}

fn summary_cell(summary: Option<Summary>) -> String {
    summary.map_or_else(|| "–".to_string(), |s| s.cell())
}

/// The Markdown table: one row per figure.
pub fn markdown(figures: &[Figure], header: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{header}\n");
    let _ = writeln!(
        out,
        "Latencies: min / **median** / p90 / max over n samples. Ratios are of medians.\n"
    );
    let _ = writeln!(
        out,
        "| figure | unit | n | berth (runc) | berth (youki) | containerd | floor | berth/containerd | youki/containerd | berth/floor |"
    );
    let _ = writeln!(
        out,
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    );
    for figure in figures {
        let (b, y, c, f) = (
            Summary::of(&figure.berth),
            Summary::of(&figure.youki),
            Summary::of(&figure.containerd),
            Summary::of(&figure.floor),
        );
        let n = [b, y, c, f]
            .iter()
            .flatten()
            .map(|s| s.n)
            .max()
            .unwrap_or(0);
        let _ = writeln!(
            out,
            "| {} | {} | {n} | {} | {} | {} | {} | {} | {} | {} |",
            figure.name,
            figure.unit,
            summary_cell(b),
            summary_cell(y),
            summary_cell(c),
            summary_cell(f),
            ratio_cell(ratio(b, c)),
            ratio_cell(ratio(y, c)),
            ratio_cell(ratio(b, f)),
        );
    }
    out
}

/// The JSON document: every summary and ratio, plus `meta` as given.
pub fn json(figures: &[Figure], meta: Value) -> Value {
    let figures: Vec<Value> = figures
        .iter()
        .map(|figure| {
            let (b, y, c, f) = (
                Summary::of(&figure.berth),
                Summary::of(&figure.youki),
                Summary::of(&figure.containerd),
                Summary::of(&figure.floor),
            );
            json!({
                "name": figure.name,
                "unit": figure.unit,
                "berth": b.map(|s| s.json()),
                "berth_youki": y.map(|s| s.json()),
                "berth_youki_over_containerd": ratio(y, c),
                "containerd": c.map(|s| s.json()),
                "floor": f.map(|s| s.json()),
                "berth_over_containerd": ratio(b, c),
                "berth_over_floor": ratio(b, f),
            })
        })
        .collect();
    json!({"meta": meta, "figures": figures})
}
