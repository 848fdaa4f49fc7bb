//! `config.json` of the segmentation-map codec (the `ScalarFieldCodec` constructor arguments of
//! `aion/codecs/scalar_field.py`, `polymathic-aion` 0.0.2).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::codecs::image::preprocess::CROP;
use crate::error::{Error, Result};
use crate::quantizers::Fsq;

/// `config.json` of the codec: the `ScalarFieldCodec` constructor arguments. Training-only
/// arguments are accepted and ignored; unknown keys are an error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScalarFieldConfig {
    /// Encoder output channels `E` (the released value is only known from `config.json`).
    pub encoder_output_dim: usize,
    /// Decoder channels (`None` or 0: `E`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decoder_input_dim: Option<usize>,
    /// Latent channels fed to FSQ (`None` or 0: `E`; must equal the number of levels).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding_dim: Option<usize>,
    /// Hidden channels of the residual layers.
    #[serde(default = "defaults::res_hidden_dims")]
    pub res_hidden_dims: usize,
    /// Residual layers in the encoder and in the decoder.
    #[serde(default = "defaults::num_res_layers")]
    pub num_res_layers: usize,
    /// 2× down-samplings (96 → 12 for 3).
    #[serde(default = "defaults::num_downsamples")]
    pub num_downsamples: usize,
    /// Variational mode (not supported: its latents cannot be FSQ-quantized by the reference).
    #[serde(default)]
    pub variational: bool,
    /// Output activation: `"sigmoid"` (the default) or `null` (identity, the reference's
    /// `output_activation=None`); other callables cannot be expressed in JSON.
    #[serde(default = "defaults::output_activation")]
    pub output_activation: serde_json::Value,
    /// `d` in `(1 + 2d)·act(x) − d` (none: `act(x)`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_activation_extension: Option<f64>,
    /// FSQ levels.
    #[serde(default = "defaults::levels")]
    pub levels: Vec<u32>,
    /// Whether the weights hold an EMA copy (`ema.*`, unused at inference and skipped).
    #[serde(default)]
    pub ema_model_weights: bool,
    #[serde(default, rename = "lr", skip_serializing)]
    _lr: Option<serde_json::Value>,
    #[serde(default, rename = "lr_warmup", skip_serializing)]
    _lr_warmup: Option<serde_json::Value>,
    #[serde(default, rename = "begin_cosine_annealing", skip_serializing)]
    _begin_cosine_annealing: Option<serde_json::Value>,
    #[serde(default, rename = "lr_cosine_period", skip_serializing)]
    _lr_cosine_period: Option<serde_json::Value>,
    #[serde(default, rename = "ema_decay", skip_serializing)]
    _ema_decay: Option<serde_json::Value>,
    #[serde(default, rename = "ema_update_freq", skip_serializing)]
    _ema_update_freq: Option<serde_json::Value>,
    #[serde(default, rename = "quantisation_loss_weight", skip_serializing)]
    _quantisation_loss_weight: Option<serde_json::Value>,
    #[serde(default, rename = "reconstruction_loss", skip_serializing)]
    _reconstruction_loss: Option<serde_json::Value>,
}

mod defaults {
    pub fn res_hidden_dims() -> usize {
        64
    }
    pub fn num_res_layers() -> usize {
        2
    }
    pub fn num_downsamples() -> usize {
        3
    }
    pub fn levels() -> Vec<u32> {
        vec![8, 5, 5, 5]
    }
    pub fn output_activation() -> serde_json::Value {
        serde_json::Value::String("sigmoid".into())
    }
}

impl ScalarFieldConfig {
    /// A codec with `encoder_output_dim` channels, 4 latent channels (FSQ `[8, 5, 5, 5]`, 1000
    /// codes) and `res_hidden_dims` in the residual layers, the other arguments at their
    /// defaults.
    fn with_dims(encoder_output_dim: usize, res_hidden_dims: usize) -> Self {
        let json = serde_json::json!({
            "encoder_output_dim": encoder_output_dim,
            "embedding_dim": 4,
            "res_hidden_dims": res_hidden_dims,
        });
        Self::parse(
            &json.to_string(),
            Path::new(crate::hub::layout::config_name()),
        )
        .expect("a valid configuration")
    }

    /// The presumed released configuration (aion-spec §2.5 leaves `encoder_output_dim`
    /// unknown; 64 as in `aion-state-dict-keys.txt`, 306 k parameters).
    pub fn released() -> Self {
        Self::with_dims(64, defaults::res_hidden_dims())
    }

    /// The released architecture at test size (the parity fixture's: 32 channels, 16 in the
    /// residual layers).
    pub fn tiny() -> Self {
        Self::with_dims(32, 16)
    }

    /// Parses and checks a `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and checks the JSON text of a `config.json` (`path` is only used in errors).
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let cfg: Self =
            serde_json::from_str(text).map_err(|e| Error::config(path, e.to_string()))?;
        cfg.validate().map_err(|m| Error::config(path, m))?;
        Ok(cfg)
    }

    fn validate(&self) -> std::result::Result<(), String> {
        let (e, n) = (self.encoder_output_dim, self.num_downsamples);
        if self.variational {
            return Err("variational codecs are not supported".into());
        }
        if n == 0 || n > 5 || !CROP.is_multiple_of(1 << n) {
            return Err(format!(
                "num_downsamples = {n}: 96 must be divisible by 2^n, n ≥ 1"
            ));
        }
        if e >> (n - 1) == 0 || self.decoder_dim() >> (n - 1) == 0 || self.res_hidden_dims == 0 {
            return Err(format!("channel counts too small for {n} down-samplings"));
        }
        if self.embedding() != self.levels.len() {
            return Err(format!(
                "embedding_dim = {} but {} FSQ levels",
                self.embedding(),
                self.levels.len()
            ));
        }
        self.sigmoid_output()?;
        Fsq::new(&self.levels).map_err(|e| e.to_string())?;
        Ok(())
    }

    /// Whether the output activation is a sigmoid (else identity).
    pub(crate) fn sigmoid_output(&self) -> std::result::Result<bool, String> {
        match &self.output_activation {
            serde_json::Value::Null => Ok(false),
            serde_json::Value::String(s) if s == "sigmoid" => Ok(true),
            other => Err(format!(
                "output_activation {other} is not supported (\"sigmoid\" or null)"
            )),
        }
    }

    /// Decoder channels (`decoder_input_dim or encoder_output_dim`).
    pub fn decoder_dim(&self) -> usize {
        self.decoder_input_dim
            .filter(|&d| d > 0)
            .unwrap_or(self.encoder_output_dim)
    }

    /// Latent channels (`embedding_dim or encoder_output_dim`).
    pub fn embedding(&self) -> usize {
        self.embedding_dim
            .filter(|&d| d > 0)
            .unwrap_or(self.encoder_output_dim)
    }

    /// Side of the token grid (12).
    pub fn grid(&self) -> usize {
        CROP >> self.num_downsamples
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ScalarFieldConfig> {
        ScalarFieldConfig::parse(text, Path::new("config.json"))
    }

    #[test]
    fn defaults_and_derived_dims() {
        let c = parse(r#"{"encoder_output_dim": 64, "embedding_dim": 4}"#).unwrap();
        assert_eq!((c.decoder_dim(), c.embedding(), c.grid()), (64, 4, 12));
        assert_eq!(
            (c.res_hidden_dims, c.num_res_layers, c.levels.len()),
            (64, 2, 4)
        );
        assert_eq!(c.sigmoid_output(), Ok(true));
        let c = parse(r#"{"encoder_output_dim": 64, "embedding_dim": 4, "decoder_input_dim": 0}"#);
        assert_eq!(c.unwrap().decoder_dim(), 64);
    }

    #[test]
    fn activation_and_training_keys() {
        let c = parse(
            r#"{"encoder_output_dim": 8, "embedding_dim": 4, "output_activation": null,
            "lr": 0.001, "ema_decay": 0.99, "reconstruction_loss": "mse"}"#,
        )
        .unwrap();
        assert_eq!(c.sigmoid_output(), Ok(false));
        let err =
            parse(r#"{"encoder_output_dim": 8, "embedding_dim": 4, "output_activation": "tanh"}"#)
                .unwrap_err()
                .to_string();
        assert!(err.contains("\"tanh\" is not supported"), "{err}");
        let err = parse(r#"{"encoder_output_dim": 8, "embedding_dim": 4, "variational": true}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("variational"), "{err}");
    }
}
