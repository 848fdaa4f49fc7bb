//! The training log (`train_log.jsonl`, written by rank 0) and its learning-curve plot.
//!
//! One JSON object per line: `{"step", "lr", "loss", "grad_norm", "seconds", "parts": {…}}` for
//! every optimiser step and `{"step", "eval": "val", "loss", "metrics": {…}}` for every
//! evaluation. `loss` is the global batch's mean (per target token, weighted). A resumed run
//! cuts the file back to its length at the checkpoint, so the log of an interrupted and resumed
//! run has the same lines as an uninterrupted one (the `seconds` aside).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::json;

/// Totals of an evaluation over a set of rows (already summed over the ranks).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Evaluation {
    /// Mean loss.
    pub loss: f64,
    /// Named metrics (e.g. `sigma_nmad_tok_z`).
    pub metrics: Vec<(String, f64)>,
}

/// The log file (a no-op on ranks other than 0).
pub struct TrainLog {
    path: PathBuf,
    root: bool,
    bytes: u64,
}

impl TrainLog {
    /// The log `<output>/train_log.jsonl`.
    pub fn new(output: &Path, root: bool) -> Self {
        Self {
            path: output.join("train_log.jsonl"),
            root,
            bytes: 0,
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Cuts the log to `len` bytes (0: starts a new log).
    pub fn truncate(&mut self, len: u64) -> Result<()> {
        self.bytes = len;
        if !self.root {
            return Ok(());
        }
        let f = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(len == 0)
            .open(&self.path)
            .with_context(|| format!("cannot open {}", self.path.display()))?;
        f.set_len(len)
            .with_context(|| format!("cannot truncate {}", self.path.display()))?;
        Ok(())
    }

    /// Bytes written so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    fn line(&mut self, v: serde_json::Value) -> Result<()> {
        let text = format!("{v}\n");
        self.bytes += text.len() as u64;
        if self.root {
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(&self.path)
                .with_context(|| format!("cannot open {}", self.path.display()))?;
            f.write_all(text.as_bytes())
                .with_context(|| format!("cannot write {}", self.path.display()))?;
        }
        Ok(())
    }

    /// One optimiser step.
    pub fn step(
        &mut self,
        step: u64,
        lr: f64,
        loss: f64,
        grad_norm: f64,
        parts: &[(String, f64)],
        seconds: f64,
    ) -> Result<()> {
        let parts: serde_json::Map<String, serde_json::Value> =
            parts.iter().map(|(k, v)| (k.clone(), finite(*v))).collect();
        self.line(json!({
            "step": step, "lr": lr, "loss": finite(loss), "grad_norm": finite(grad_norm),
            "parts": parts, "seconds": (seconds * 1000.0).round() / 1000.0,
        }))
    }

    /// One evaluation.
    pub fn eval(&mut self, step: u64, split: &str, e: &Evaluation) -> Result<()> {
        let metrics: serde_json::Map<String, serde_json::Value> = e
            .metrics
            .iter()
            .map(|(k, v)| (k.clone(), finite(*v)))
            .collect();
        if self.root {
            let m: Vec<String> = e
                .metrics
                .iter()
                .map(|(k, v)| format!("{k} {v:.5}"))
                .collect();
            log::info!("step {step}: {split} loss {:.4} {}", e.loss, m.join(" "));
        }
        self.line(
            json!({ "step": step, "eval": split, "loss": finite(e.loss), "metrics": metrics }),
        )
    }
}

fn finite(v: f64) -> serde_json::Value {
    if v.is_finite() {
        json!(v)
    } else {
        serde_json::Value::Null
    }
}

/// `(x, y)` points of a curve.
pub type Curve = Vec<(f64, f64)>;

/// What a training log holds: `(step, loss)` of the steps, `(step, loss)` of the evaluations,
/// and each evaluation metric's `(step, value)` by name (`sigma_nmad_tok_z`, …).
#[derive(Debug, Default)]
pub struct Curves {
    /// Training loss per step.
    pub train: Curve,
    /// Validation loss.
    pub val: Curve,
    /// Validation metrics.
    pub metrics: std::collections::BTreeMap<String, Curve>,
}

/// Reads a training log.
pub fn read_curves(path: &Path) -> Result<Curves> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut c = Curves::default();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line)?;
        let Some(step) = v["step"].as_f64() else {
            continue;
        };
        let loss = v["loss"].as_f64().unwrap_or(f64::NAN);
        if v.get("eval").is_some() {
            c.val.push((step, loss));
            for (k, m) in v["metrics"].as_object().into_iter().flatten() {
                let y = m.as_f64().unwrap_or(f64::NAN);
                c.metrics.entry(k.clone()).or_default().push((step, y));
            }
        } else {
            c.train.push((step, loss));
        }
    }
    Ok(c)
}

/// The validation metrics of `curves` whose name is `metric` or `<metric>_<key>`, with the
/// legend entry of each (the key, or nothing).
fn metric_series(curves: &Curves, metric: &str) -> Vec<(String, Curve)> {
    curves
        .metrics
        .iter()
        .filter_map(|(name, pts)| {
            if name == metric {
                Some((String::new(), pts.clone()))
            } else {
                name.strip_prefix(&format!("{metric}_"))
                    .map(|key| (key.to_string(), pts.clone()))
            }
        })
        .collect()
}

/// Draws the learning curves as `<stem>.png` and `<stem>.svg`: the training loss per step, its
/// running mean and the validation loss; then, when the evaluations report them, the
/// validation σ_NMAD, outlier fraction and 68 % / 95 % interval coverage (names and meanings as
/// in `aion-predict`'s summary, [`crate::metrics`]).
pub fn plot_curves(log: &Path, stem: &Path, title: &str) -> Result<()> {
    use crate::metrics::display_name;
    use crate::plot::charts::{CurvesFigure, Panel, Series};
    use crate::plot::{C_BLUE, C_GREEN, C_GREY, C_LIGHT_BLUE, C_ORANGE, C_RED};
    use plotters::chart::SeriesLabelPosition;
    let curves = read_curves(log)?;
    let train = &curves.train;
    let window = (train.len() / 50).max(1);
    let smooth: Curve = train
        .iter()
        .enumerate()
        .map(|(i, &(s, _))| {
            let lo = i.saturating_sub(window - 1);
            let m = train[lo..=i].iter().map(|p| p.1).sum::<f64>() / (i + 1 - lo) as f64;
            (s, m)
        })
        .collect();
    let last_step = train.last().map_or(1.0, |p| p.0);
    let x_range = Some((0.0, last_step.max(1.0)));
    let step = "training step";
    let mut panels = vec![Panel {
        title: "loss".into(),
        xtitle: step.into(),
        ytitle: "loss (mean per target token)".into(),
        series: vec![
            Series {
                width: 1,
                ..Series::line("training (each step)", C_LIGHT_BLUE, train.clone())
            },
            // The running mean, when it averages something.
            if window > 1 {
                Series::line(format!("training (mean of {window} steps)"), C_BLUE, smooth)
            } else {
                Series::line("", C_BLUE, Vec::new())
            },
            Series::line("validation", C_RED, curves.val.clone()),
        ],
        y_range: None,
        x_range,
        legend: SeriesLabelPosition::UpperRight,
    }];
    let colours = [C_RED, C_GREEN, C_ORANGE, C_BLUE];
    for metric in ["sigma_nmad", "outlier_fraction"] {
        let mut found = metric_series(&curves, metric);
        if found.is_empty() && metric == "outlier_fraction" {
            found = metric_series(&curves, "outliers"); // logs written before the rename
        }
        if found.is_empty() {
            continue;
        }
        let series = found
            .into_iter()
            .zip(colours.iter().cycle())
            .map(|((key, pts), &c)| Series::line(key, c, pts))
            .collect();
        panels.push(Panel {
            x_range,
            ..Panel::new(
                format!("validation {}", display_name(metric)),
                step,
                display_name(metric).replace("σ_NMAD", "σ_{NMAD}"),
                series,
            )
        });
    }
    let mut coverage = Vec::new();
    for (level, colour) in [("68", C_BLUE), ("95", C_ORANGE)] {
        for (key, pts) in metric_series(&curves, &format!("coverage_{level}")) {
            let name = format!("{level} % interval {key}").trim().to_string();
            coverage.push(Series::line(name, colour, pts));
            let nominal: f64 = level.parse::<f64>().expect("a number") / 100.0;
            coverage.push(Series {
                dashed: true,
                width: 1,
                ..Series::line(
                    "",
                    C_GREY,
                    vec![(0.0, nominal), (last_step.max(1.0), nominal)],
                )
            });
        }
    }
    if !coverage.is_empty() {
        panels.push(Panel {
            title: "validation interval coverage (dashed: nominal)".into(),
            xtitle: step.into(),
            ytitle: "share of true values inside".into(),
            series: coverage,
            y_range: Some((0.0, 1.05)),
            x_range,
            legend: SeriesLabelPosition::LowerLeft,
        });
    }
    crate::plot::save(
        &CurvesFigure {
            title: title.to_string(),
            columns: 2,
            panel_size: (680, 460),
            panels,
        },
        stem,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learning_curves_show_the_loss_and_the_validation_metrics() {
        let dir = std::env::temp_dir().join(format!("aion-curves-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut log = TrainLog::new(&dir, true);
        log.truncate(0).unwrap();
        for step in 1..=200u64 {
            let loss = 3.0 / (1.0 + step as f64 / 10.0) + 0.1 * ((step * 7 % 5) as f64 - 2.0);
            log.step(step, 1e-3, loss, 1.0, &[], step as f64).unwrap();
            if step % 40 == 0 {
                let t = step as f64 / 200.0;
                let e = Evaluation {
                    loss: loss + 0.2,
                    metrics: vec![
                        ("sigma_nmad_tok_z".into(), 0.05 - 0.03 * t),
                        ("outlier_fraction_tok_z".into(), 0.2 - 0.15 * t),
                        ("coverage_68_tok_z".into(), 0.4 + 0.25 * t),
                        ("coverage_95_tok_z".into(), 0.7 + 0.22 * t),
                    ],
                };
                log.eval(step, "val", &e).unwrap();
            }
        }
        plot_curves(log.path(), &dir.join("curves"), "test (mode masked)").unwrap();
        let svg = std::fs::read_to_string(dir.join("curves.svg")).unwrap();
        for s in [
            "training step",
            "validation σ_NMAD",
            "validation outlier fraction",
            "68 % interval tok_z",
            "training (mean of",
        ] {
            assert!(svg.contains(s), "{s}");
        }
        std::fs::remove_dir_all(&dir).ok();
    }
}
