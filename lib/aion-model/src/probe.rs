//! Probe heads: a linear layer or a small MLP on the pooled (mean) embedding of the frozen
//! transformer ([`Aion::embed`](crate::Aion::embed)), trained by `aion-finetune --mode probe`.
//!
//! Like the newer reference's `LinearProbing` (aion-spec §4), the input is the mean of the
//! context vectors; unlike it, regression heads predict a Gaussian (mean and σ), so every
//! prediction carries an uncertainty.
//!
//! # File format
//!
//! A probe lives in `<model dir>/probe/` next to the model it was trained on:
//!
//! * `config.json`:
//!   ```json
//!   {"format": "aion-hpc/probe-head", "version": 1,
//!    "task": "regression",             // or "classification"
//!    "input_dim": 64, "hidden": 32,    // hidden: null for a linear head
//!    "outputs": 2,                     // 2 (mean, log σ) or the number of classes
//!    "target": "Z",                    // the catalogue dataset it was trained on
//!    "target_mean": 0.1, "target_std": 0.05,   // regression: standardisation of the target
//!    "classes": null,                  // classification: the label value of each class
//!    "inputs": ["tok_mag_u_sdss", "…"] // the modalities fed to the encoder}
//!   ```
//! * `model.safetensors`: `hidden.weight` `[H, D]`, `hidden.bias` `[H]` (MLP only; GELU after
//!   it), `out.weight` `[O, H or D]`, `out.bias` `[O]` (PyTorch layout).
//!
//! Regression: `out = [μ̂, log σ̂]` in standardised units; `mean = m + s·μ̂`,
//! `σ = s·exp(clamp(log σ̂, −10, 10))`. Classification: `softmax(out)`.

use std::path::Path;

use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::activation::{gelu, softmax};
use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::export::{NamedTensor, write_safetensors};
use crate::fs::write_atomic;
use crate::hub::layout;
use crate::nn::Linear;
use crate::weights::{Init, Initialiser, Source, WeightFile};

/// Folder of a model directory that holds its probe head.
pub const PROBE_DIR: &str = "probe";

/// Bound of the predicted standardised log σ.
pub const LOG_SIGMA_BOUND: f64 = 10.0;

/// What a probe predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeTask {
    /// A real value with a Gaussian uncertainty.
    Regression,
    /// One of `outputs` classes.
    Classification,
}

/// `probe/config.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeConfig {
    /// `"aion-hpc/probe-head"`.
    pub format: String,
    /// 1.
    pub version: u32,
    /// Task.
    pub task: ProbeTask,
    /// Embedding width `D`.
    pub input_dim: usize,
    /// Hidden width of the MLP (`None`: linear head).
    pub hidden: Option<usize>,
    /// Output width: 2 for regression, the class count for classification.
    pub outputs: usize,
    /// Catalogue dataset of the target.
    pub target: String,
    /// Regression: mean of the training targets.
    #[serde(default)]
    pub target_mean: f64,
    /// Regression: standard deviation of the training targets.
    #[serde(default = "one")]
    pub target_std: f64,
    /// Classification: the label value of each class, in output order.
    #[serde(default)]
    pub classes: Option<Vec<i64>>,
    /// Modalities the encoder was fed.
    pub inputs: Vec<String>,
}

fn one() -> f64 {
    1.0
}

impl ProbeConfig {
    /// A config with the format fields filled in.
    pub fn new(task: ProbeTask, input_dim: usize, hidden: Option<usize>, outputs: usize) -> Self {
        Self {
            format: "aion-hpc/probe-head".into(),
            version: 1,
            task,
            input_dim,
            hidden,
            outputs,
            target: String::new(),
            target_mean: 0.0,
            target_std: 1.0,
            classes: None,
            inputs: Vec::new(),
        }
    }

    fn validate(&self, path: &Path) -> Result<()> {
        let bad = |m: &str| Err(Error::config(path, m));
        if self.format != "aion-hpc/probe-head" || self.version != 1 {
            return bad("expected format aion-hpc/probe-head version 1");
        }
        if self.input_dim == 0 || self.hidden == Some(0) {
            return bad("input_dim and hidden must be positive");
        }
        match self.task {
            ProbeTask::Regression if self.outputs != 2 => bad("a regression head has 2 outputs"),
            ProbeTask::Regression if self.target_std.is_nan() || self.target_std <= 0.0 => {
                bad("target_std must be > 0")
            }
            ProbeTask::Classification if self.outputs < 2 => bad("a classifier needs 2+ outputs"),
            _ => Ok(()),
        }
    }
}

/// Predictions of a probe for a batch, on the host.
#[derive(Debug, Clone, PartialEq)]
pub enum ProbePrediction {
    /// Gaussian mean and standard deviation per row, in target units.
    Gaussian {
        /// Means.
        mean: Vec<f32>,
        /// Standard deviations.
        sigma: Vec<f32>,
    },
    /// Class probabilities, row-major `[B, classes]`.
    Classes {
        /// Probabilities.
        probs: Vec<f32>,
        /// Classes per row.
        classes: usize,
    },
}

/// A probe head (see the module docs).
#[derive(Module, Debug)]
pub struct ProbeHead<B: Backend> {
    /// Hidden layer (MLP heads).
    pub hidden: Option<Linear<B>>,
    /// Output layer.
    pub out: Linear<B>,
}

impl<B: Backend> ProbeHead<B> {
    /// Reads `<model_dir>/probe/`.
    pub fn load(model_dir: &Path, device: &B::Device) -> Result<(Self, ProbeConfig)> {
        let dir = model_dir.join(PROBE_DIR);
        let path = layout::config(&dir);
        let text = std::fs::read_to_string(&path).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        let cfg: ProbeConfig =
            serde_json::from_str(&text).map_err(|e| Error::config(&path, e.to_string()))?;
        cfg.validate(&path)?;
        let mut w = WeightFile::open(layout::weights(&dir))?;
        let head = Self::from_weights(&cfg, &mut w, device);
        w.finish()?;
        Ok((head, cfg))
    }

    /// Builds the head from weights named as in the file format: the one description of a
    /// probe head's weights (Xavier-uniform weights and zero biases from scratch).
    pub fn from_weights(cfg: &ProbeConfig, w: &mut impl Source, device: &B::Device) -> Self {
        let xavier = || Init::XavierUniform { packed: 1 };
        let hidden = cfg
            .hidden
            .map(|h| Linear::load(w, "hidden", (cfg.input_dim, h), true, xavier(), device));
        let d = cfg.hidden.unwrap_or(cfg.input_dim);
        Self {
            hidden,
            out: Linear::load(w, "out", (d, cfg.outputs), true, xavier(), device),
        }
    }

    /// Raw outputs.
    ///
    /// # Shapes
    /// pooled `[B, D]` `-> [B, O]`
    pub fn forward(&self, pooled: Tensor<B, 2>) -> Tensor<B, 2> {
        let x = match &self.hidden {
            Some(h) => gelu(h.forward(pooled)),
            None => pooled,
        };
        self.out.forward(x)
    }

    /// Predictions in target units (regression) or class probabilities.
    ///
    /// # Shapes
    /// pooled `[B, D]`
    pub fn predict(&self, cfg: &ProbeConfig, pooled: Tensor<B, 2>) -> ProbePrediction {
        let out = self.forward(pooled);
        let [b, o] = out.dims();
        match cfg.task {
            ProbeTask::Regression => {
                let v: Vec<f32> = out.into_data().convert::<f32>().to_vec().expect("f32");
                let (m, s) = (cfg.target_mean, cfg.target_std);
                let mean = (0..b)
                    .map(|r| (m + s * f64::from(v[2 * r])) as f32)
                    .collect();
                let sigma = (0..b)
                    .map(|r| {
                        let ls = f64::from(v[2 * r + 1]).clamp(-LOG_SIGMA_BOUND, LOG_SIGMA_BOUND);
                        (s * ls.exp()) as f32
                    })
                    .collect();
                ProbePrediction::Gaussian { mean, sigma }
            }
            ProbeTask::Classification => ProbePrediction::Classes {
                probs: softmax(out, 1)
                    .into_data()
                    .convert::<f32>()
                    .to_vec()
                    .expect("f32"),
                classes: o,
            },
        }
    }

    /// The weights under the file format's names. The names are those [`Self::from_weights`]
    /// takes: a head of the same shape is described, and its parameters are paired with this
    /// head's (which may have been assembled by hand).
    pub fn tensors(&self) -> Vec<NamedTensor> {
        let [input_dim, first] = self.hidden.as_ref().unwrap_or(&self.out).weight.dims();
        let hidden = self.hidden.as_ref().map(|_| first);
        let outputs = self.out.weight.dims()[1];
        let cfg = ProbeConfig::new(ProbeTask::Regression, input_dim, hidden, outputs);
        let mut described = Initialiser::new(0);
        let device = self.out.weight.device();
        let skeleton = Self::from_weights(&cfg, &mut described, &device);
        let names = std::mem::take(described.names_mut());
        names.rebind(&skeleton, self).state_dict(self)
    }

    /// Writes `<model_dir>/probe/{config.json, model.safetensors}`.
    pub fn save(&self, cfg: &ProbeConfig, model_dir: &Path) -> Result<()> {
        let dir = model_dir.join(PROBE_DIR);
        std::fs::create_dir_all(&dir).map_err(|source| Error::Write {
            path: dir.clone(),
            source,
        })?;
        let text = serde_json::to_string_pretty(cfg).expect("json");
        write_atomic(&layout::config(&dir), format!("{text}\n").as_bytes())?;
        write_safetensors(&layout::weights(&dir), &self.tensors(), None)
    }
}
