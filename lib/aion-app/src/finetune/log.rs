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

use super::trainer::Evaluation;

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

/// Reads a training log: `(step, loss)` of the steps and `(step, loss)` of the evaluations.
pub fn read_curves(path: &Path) -> Result<(Curve, Curve)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let (mut train, mut val) = (Vec::new(), Vec::new());
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line)?;
        let (Some(step), Some(loss)) = (v["step"].as_f64(), v["loss"].as_f64()) else {
            continue;
        };
        if v.get("eval").is_some() {
            val.push((step, loss));
        } else {
            train.push((step, loss));
        }
    }
    Ok((train, val))
}

/// Draws the learning curves (training loss per step, its running mean, validation loss) as a
/// PNG.
pub fn plot_curves(log: &Path, png: &Path, title: &str) -> Result<()> {
    let (train, val) = read_curves(log)?;
    let window = (train.len() / 50).max(1);
    let smooth: Vec<(f64, f64)> = train
        .iter()
        .enumerate()
        .map(|(i, &(s, _))| {
            let lo = i.saturating_sub(window - 1);
            let m = train[lo..=i].iter().map(|p| p.1).sum::<f64>() / (i + 1 - lo) as f64;
            (s, m)
        })
        .collect();
    super::curves::line_png(
        png,
        &[
            ("TRAIN (STEP)", &train, super::curves::LIGHT_BLUE),
            ("TRAIN (MEAN)", &smooth, super::curves::BLUE),
            ("VALIDATION", &val, super::curves::RED),
        ],
        title,
        "STEP",
        "LOSS",
    )
}
