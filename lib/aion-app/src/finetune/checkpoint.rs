//! Checkpoints of a training run: `<output>/checkpoint/state.safetensors`.
//!
//! One file, written atomically by rank 0 (temporary file + rename), holding the flat vector of
//! trainable values (`values`), AdamW's moments (`adam.m`, `adam.v`), the best values so far
//! (`best`), their exponential moving average when `[train] ema` is on (`ema`), and in the safetensors metadata: the format, the step
//! count, AdamW's step, the validation bookkeeping, the byte length of the training log at that
//! step (a resumed run cuts the log back to it), the shapes of the trainable parameters and a
//! hash of the effective configuration. Everything else (the initial model, fitted codecs, the
//! data, the split, every random draw) is a deterministic function of the configuration and the
//! catalogue and is rebuilt on restart; so a resumed run continues bit for bit where the
//! checkpoint was taken. The rank count may differ between the runs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use aion_model::export::{NamedTensor, read_safetensors, write_safetensors};
use aion_model::train::adamw::{AdamW, AdamWConfig};
use aion_model::train::params::Flat;
use aion_mpi::Session;
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

const FORMAT: &str = "aion-hpc/finetune-checkpoint";

/// Training progress (saved with every checkpoint).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// Optimiser steps done.
    pub step: u64,
    /// Best validation loss so far.
    pub best_loss: Option<f64>,
    /// Step of the best validation loss.
    pub best_step: u64,
    /// Evaluations since the best one.
    pub evals_since_best: u64,
    /// Early stopping triggered.
    pub early_stopped: bool,
    /// Length of `train_log.jsonl` at this step.
    pub log_bytes: u64,
    /// The best values (not serialised in the metadata; a tensor of the file).
    #[serde(skip)]
    pub best_values: Option<Vec<f32>>,
    /// The exponential moving average of the values (a tensor of the file).
    #[serde(skip)]
    pub ema_values: Option<Vec<f32>>,
}

/// A restored state.
#[derive(Debug)]
pub struct State {
    /// Trainable values.
    pub values: Vec<f32>,
    /// Optimiser state.
    pub opt: AdamW,
    /// Progress.
    pub progress: Progress,
}

/// The checkpoint of one run.
pub struct Checkpoint {
    dir: PathBuf,
    config_hash: String,
}

#[derive(Serialize, Deserialize)]
struct Meta {
    format: String,
    config_hash: String,
    adam_t: u64,
    progress: Progress,
}

impl Checkpoint {
    /// The checkpoint of the run in `output` with this configuration hash.
    pub fn new(output: &Path, config_hash: &str) -> Self {
        Self {
            dir: output.join("checkpoint"),
            config_hash: config_hash.to_string(),
        }
    }

    /// The state file.
    pub fn path(&self) -> PathBuf {
        self.dir.join("state.safetensors")
    }

    /// Removes the checkpoint (rank 0).
    pub fn remove(&self, session: &Session) {
        if session.is_root() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// Writes the state (rank 0 writes, every rank waits for it).
    pub fn save(
        &self,
        session: &Session,
        values: &[f32],
        opt: &AdamW,
        progress: &Progress,
    ) -> Result<()> {
        let result = if session.is_root() {
            self.write(values, opt, progress)
        } else {
            Ok(())
        };
        crate::collective::agree(session, result)
    }

    fn write(&self, values: &[f32], opt: &AdamW, progress: &Progress) -> Result<()> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("cannot create {}", self.dir.display()))?;
        let n = values.len();
        let mut t = vec![
            NamedTensor::new("values", vec![n], values.to_vec()),
            NamedTensor::new("adam.m", vec![n], opt.m.clone()),
            NamedTensor::new("adam.v", vec![n], opt.v.clone()),
        ];
        if let Some(b) = &progress.best_values {
            t.push(NamedTensor::new("best", vec![n], b.clone()));
        }
        if let Some(e) = &progress.ema_values {
            t.push(NamedTensor::new("ema", vec![n], e.clone()));
        }
        let meta = Meta {
            format: FORMAT.into(),
            config_hash: self.config_hash.clone(),
            adam_t: opt.t,
            progress: progress.clone(),
        };
        let meta = HashMap::from([("state".to_string(), serde_json::to_string(&meta)?)]);
        write_safetensors(&self.path(), &t, Some(meta))
            .with_context(|| format!("cannot write checkpoint {}", self.path().display()))
    }

    /// Reads the state if there is one; fails if it belongs to another configuration or its
    /// parameters do not fit `flat`.
    pub fn load(&self, flat: &Flat) -> Result<Option<State>> {
        let path = self.path();
        if !path.exists() {
            return Ok(None);
        }
        let (tensors, meta) = read_safetensors(&path)
            .with_context(|| format!("cannot read checkpoint {}", path.display()))?;
        let meta: Meta = serde_json::from_str(meta.get("state").map_or("", String::as_str))
            .with_context(|| format!("checkpoint {} has no valid state record", path.display()))?;
        if meta.format != FORMAT {
            bail!("{} is not an aion-finetune checkpoint", path.display());
        }
        if meta.config_hash != self.config_hash {
            bail!(
                "checkpoint {} was made with another configuration (or catalogue); use --overwrite to start afresh",
                path.display()
            );
        }
        let get = |name: &str| -> Result<Vec<f32>> {
            let t = tensors
                .iter()
                .find(|t| t.name == name)
                .with_context(|| format!("checkpoint {} lacks {name}", path.display()))?;
            if t.data.len() != flat.len {
                bail!(
                    "checkpoint {} holds {} trainable values, the model has {}",
                    path.display(),
                    t.data.len(),
                    flat.len
                );
            }
            Ok(t.data.clone())
        };
        let mut progress = meta.progress;
        progress.ema_values = tensors
            .iter()
            .any(|t| t.name == "ema")
            .then(|| get("ema"))
            .transpose()?;
        progress.best_values = tensors
            .iter()
            .any(|t| t.name == "best")
            .then(|| get("best"))
            .transpose()?;
        Ok(Some(State {
            values: get("values")?,
            opt: AdamW {
                cfg: AdamWConfig::default(),
                m: get("adam.m")?,
                v: get("adam.v")?,
                t: meta.adam_t,
            },
            progress,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aion_model::train::params::Slot;

    #[test]
    fn state_round_trips_bit_for_bit() {
        let dir = std::env::temp_dir().join(format!("aion-ckpt-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let ck = Checkpoint::new(&dir, "hash-a");
        let flat = Flat {
            slots: vec![Slot {
                id: burn::module::ParamId::new(),
                shape: vec![5],
                offset: 0,
            }],
            len: 5,
        };
        assert!(ck.load(&flat).unwrap().is_none());
        let values = vec![0.1f32, -2.5, 3.0e-7, f32::MIN_POSITIVE, 7.0];
        let opt = AdamW {
            cfg: AdamWConfig::default(),
            m: vec![1e-3; 5],
            v: vec![2.5e-9; 5],
            t: 42,
        };
        let progress = Progress {
            step: 42,
            best_loss: Some(1.25),
            best_step: 40,
            evals_since_best: 1,
            early_stopped: false,
            log_bytes: 1234,
            best_values: Some(values.clone()),
            ema_values: Some(vec![0.5; 5]),
        };
        ck.write(&values, &opt, &progress).unwrap();
        let s = ck.load(&flat).unwrap().unwrap();
        assert_eq!(s.values, values);
        assert_eq!((s.opt.m, s.opt.v, s.opt.t), (opt.m, opt.v, 42));
        assert_eq!(s.progress.best_values.as_deref(), Some(&values[..]));
        assert_eq!(s.progress.ema_values, Some(vec![0.5; 5]));
        assert_eq!(
            (s.progress.step, s.progress.log_bytes, s.progress.best_loss),
            (42, 1234, Some(1.25))
        );
        // Another configuration, or another model size, is refused.
        let other = Checkpoint::new(&dir, "hash-b");
        assert!(
            other
                .load(&flat)
                .unwrap_err()
                .to_string()
                .contains("another configuration")
        );
        let bigger = Flat { len: 6, ..flat };
        assert!(ck.load(&bigger).is_err());
        std::fs::remove_dir_all(&dir).ok();
    }
}
