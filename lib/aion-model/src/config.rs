//! Configuration of the 4M transformer: the Hub `config.json`.
//!
//! Port of the constructor arguments of `aion/fourm/fm.py::FM` and `FourM` (polymathic-aion
//! 0.0.2). The JSON object *is* the dict given to `FM.__init__`: four required keys
//! (`domains_in`, `domains_out`, `norm_bias`, `act_layer`) and optional `FourM` keyword arguments
//! with the reference defaults. Unknown keys are an error, as in the reference (where they reach
//! `FourM.__init__` as unexpected keyword arguments).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::hub::layout;
use crate::modality::{MODALITIES, Modality, ModalityInfo, ModalityTable, TokenLayout};

/// Activation of the MLPs (`act_layer`, the name of a `torch.nn` class).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Activation {
    /// `torch.nn.SiLU` (the released models, inside SwiGLU).
    SiLU,
    /// `torch.nn.GELU` with its default exact (erf) form.
    GELU,
}

/// The Hub `config.json` of an AION transformer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AionConfig {
    /// Token keys with an encoder embedding, in construction order.
    pub domains_in: Vec<String>,
    /// Token keys with a decoder embedding (and output head).
    pub domains_out: Vec<String>,
    /// Whether LayerNorms have a trainable bias (otherwise a stored zero buffer).
    pub norm_bias: bool,
    /// MLP activation.
    pub act_layer: Activation,
    /// Model width `D`.
    #[serde(default = "defaults::dim")]
    pub dim: usize,
    /// Number of encoder blocks.
    #[serde(default = "defaults::depth")]
    pub encoder_depth: usize,
    /// Number of decoder blocks.
    #[serde(default = "defaults::depth")]
    pub decoder_depth: usize,
    /// Attention heads `H` (`D / H` is the head width).
    #[serde(default = "defaults::heads")]
    pub num_heads: usize,
    /// MLP hidden width factor.
    #[serde(default = "defaults::mlp_ratio")]
    pub mlp_ratio: f64,
    /// Bias of the `qkv` / `q` / `kv` projections.
    #[serde(default = "defaults::yes")]
    pub qkv_bias: bool,
    /// Bias of the attention output projections.
    #[serde(default = "defaults::yes")]
    pub proj_bias: bool,
    /// Biases of the MLP layers.
    #[serde(default = "defaults::yes")]
    pub mlp_bias: bool,
    /// Stochastic-depth rate of the encoder (identity at inference).
    #[serde(default)]
    pub drop_path_rate_encoder: f64,
    /// Stochastic-depth rate of the decoder (identity at inference).
    #[serde(default)]
    pub drop_path_rate_decoder: f64,
    /// Whether the drop-path schedule spans encoder and decoder (training only).
    #[serde(default)]
    pub shared_drop_path: bool,
    /// Gated MLP (SwiGLU with `act_layer = SiLU`).
    #[serde(default)]
    pub gated_mlp: bool,
    /// LayerNorm on queries and keys (one per head width, shared over heads).
    #[serde(default)]
    pub qk_norm: bool,
    /// Causal decoder self-attention (not supported by this port).
    #[serde(default)]
    pub decoder_causal_mask: bool,
    /// Decoder self-attention restricted to each modality (no effect on AION's all-masked
    /// decoder self-attention, see [`crate::fourm::DecoderMode`]).
    #[serde(default = "defaults::yes")]
    pub decoder_sep_mask: bool,
    /// Learned register tokens prepended to the encoder input (only 0 is supported).
    #[serde(default)]
    pub num_register_tokens: usize,
    /// Activation checkpointing (training only; ignored).
    #[serde(default)]
    pub use_act_checkpoint: bool,
    /// Whether a modality in both domain lists has one `mod_emb` for encoder and decoder.
    #[serde(default = "defaults::yes")]
    pub share_modality_embeddings: bool,
    /// The modalities the domain lists are resolved in: the built-ins, plus the extra
    /// modalities of the model directory (its `modalities.json`, not part of `config.json`;
    /// [`from_file_in`](Self::from_file_in)).
    #[serde(skip)]
    pub modalities: ModalityTable,
}

mod defaults {
    pub fn dim() -> usize {
        768
    }
    pub fn depth() -> usize {
        12
    }
    pub fn heads() -> usize {
        12
    }
    pub fn mlp_ratio() -> f64 {
        4.0
    }
    pub fn yes() -> bool {
        true
    }
}

impl AionConfig {
    /// The released sizes share everything but width, depth and heads (aion-spec §3.1):
    /// SwiGLU, qk-norm, no biases, every modality of the README (39: all but `tok_segmap`)
    /// in both domain lists. The Hub `config.json` remains authoritative for the domains.
    fn released(dim: usize, depth: usize, num_heads: usize) -> Self {
        let keys: Vec<String> = MODALITIES
            .iter()
            .filter(|m| m.token_key != "tok_segmap")
            .map(|m| m.token_key.to_string())
            .collect();
        Self {
            domains_in: keys.clone(),
            domains_out: keys,
            norm_bias: false,
            act_layer: Activation::SiLU,
            dim,
            encoder_depth: depth,
            decoder_depth: depth,
            num_heads,
            mlp_ratio: 4.0,
            qkv_bias: false,
            proj_bias: false,
            mlp_bias: false,
            drop_path_rate_encoder: 0.0,
            drop_path_rate_decoder: 0.0,
            shared_drop_path: false,
            gated_mlp: true,
            qk_norm: true,
            decoder_causal_mask: false,
            decoder_sep_mask: true,
            num_register_tokens: 0,
            use_act_checkpoint: false,
            share_modality_embeddings: true,
            modalities: ModalityTable::builtin(),
        }
    }

    /// AION-1 base: D 768, 12 + 12 blocks, 12 heads (312 M parameters).
    pub fn base() -> Self {
        Self::released(768, 12, 12)
    }

    /// AION-1 large: D 1024, 24 + 24 blocks, 16 heads.
    pub fn large() -> Self {
        Self::released(1024, 24, 16)
    }

    /// AION-1 xlarge: D 2048, 24 + 24 blocks, 32 heads.
    pub fn xlarge() -> Self {
        Self::released(2048, 24, 32)
    }

    /// The tiny SwiGLU/qk-norm test configuration of the parity fixtures (D 64, 2 + 2 blocks,
    /// 4 heads, seven modalities).
    pub fn tiny() -> Self {
        let list = |keys: &[&str]| keys.iter().map(|k| k.to_string()).collect();
        Self {
            domains_in: list(&[
                "tok_image",
                "tok_spectrum_desi",
                "tok_flux_g",
                "tok_ebv",
                "tok_xp_bp",
                "tok_z",
                "catalog",
            ]),
            domains_out: list(&[
                "tok_z",
                "tok_ebv",
                "tok_spectrum_desi",
                "tok_flux_g",
                "tok_image",
            ]),
            ..Self::released(64, 2, 4)
        }
    }

    /// Reads and validates a `config.json` that names built-in modalities only.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        Self::from_file_in(path, ModalityTable::builtin())
    }

    /// Reads a `config.json` and validates it against `modalities` (its model directory's
    /// table), which it keeps.
    pub fn from_file_in(path: impl AsRef<Path>, modalities: ModalityTable) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_json_in(&text, modalities).map_err(|e| match e {
            Error::Config { message, .. } => Error::config(path, message),
            other => other,
        })
    }

    /// Parses and validates the JSON text of a `config.json` that names built-in modalities only
    /// (errors name the file `config.json`).
    pub fn from_json(text: &str) -> Result<Self> {
        Self::from_json_in(text, ModalityTable::builtin())
    }

    /// [`from_json`](Self::from_json) against the modalities of `modalities`, which it keeps.
    pub fn from_json_in(text: &str, modalities: ModalityTable) -> Result<Self> {
        let mut cfg: Self = serde_json::from_str(text)
            .map_err(|e| Error::config(layout::config_name(), e.to_string()))?;
        cfg.modalities = modalities;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks that this implementation can honour every value (domains are resolved in
    /// [`modalities`](Self::modalities)).
    pub fn validate(&self) -> Result<()> {
        let fail = |m: String| Err(Error::config(layout::config_name(), m));
        if self.dim == 0 || self.num_heads == 0 || !self.dim.is_multiple_of(self.num_heads) {
            return fail(format!(
                "dim {} is not a positive multiple of num_heads {}",
                self.dim, self.num_heads
            ));
        }
        // The 2-D sin-cos positions need D/4 frequencies (the stored buffers must match it).
        if !self.dim.is_multiple_of(4) {
            return fail(format!("dim {} is not a multiple of 4", self.dim));
        }
        if !(self.mlp_ratio > 0.0 && self.mlp_ratio.is_finite()) || self.mlp_hidden() == 0 {
            return fail(format!("mlp_ratio {} gives no MLP width", self.mlp_ratio));
        }
        if self.decoder_causal_mask {
            return fail("decoder_causal_mask = true is not supported".into());
        }
        if self.num_register_tokens != 0 {
            return fail(format!(
                "num_register_tokens = {} is not supported (only 0)",
                self.num_register_tokens
            ));
        }
        for (list, keys) in [
            ("domains_in", &self.domains_in),
            ("domains_out", &self.domains_out),
        ] {
            for (i, key) in keys.iter().enumerate() {
                if self.modalities.get(key).is_none() {
                    return fail(format!("{list} names unknown modality {key:?}"));
                }
                if keys[..i].contains(key) {
                    return fail(format!("{list} names {key:?} twice"));
                }
            }
        }
        if self.domains_in.is_empty() || self.domains_out.is_empty() {
            return fail("domains_in and domains_out must not be empty".into());
        }
        Ok(())
    }

    /// Head width `D / H`.
    pub fn head_dim(&self) -> usize {
        self.dim / self.num_heads
    }

    /// Hidden width of the MLPs: `int(D·mlp_ratio)`, and for gated MLPs
    /// `int(2·int(D·mlp_ratio)/3)` (2048 for base, 2730 for large, 5461 for xlarge).
    pub fn mlp_hidden(&self) -> usize {
        let hidden = (self.dim as f64 * self.mlp_ratio) as usize;
        if self.gated_mlp {
            2 * hidden / 3
        } else {
            hidden
        }
    }

    /// The encoder modalities, in `domains_in` order.
    pub fn inputs(&self) -> Vec<Modality> {
        self.domains_in
            .iter()
            .filter_map(|k| self.modalities.get(k))
            .collect()
    }

    /// The decoder modalities, in `domains_out` order.
    pub fn outputs(&self) -> Vec<Modality> {
        self.domains_out
            .iter()
            .filter_map(|k| self.modalities.get(k))
            .collect()
    }
}

/// Whether a modality is of 4M's `img` type (fixed grid) rather than a sequence.
pub(crate) fn is_grid(m: &ModalityInfo) -> bool {
    matches!(m.layout, TokenLayout::Grid { .. })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_have_the_released_widths() {
        let b = AionConfig::base();
        assert_eq!((b.head_dim(), b.mlp_hidden()), (64, 2048));
        assert_eq!(b.domains_in.len(), 39);
        assert_eq!(AionConfig::large().mlp_hidden(), 2730);
        assert_eq!(AionConfig::xlarge().mlp_hidden(), 5461);
        for c in [
            b,
            AionConfig::large(),
            AionConfig::xlarge(),
            AionConfig::tiny(),
        ] {
            c.validate().unwrap();
        }
        let gelu = AionConfig {
            gated_mlp: false,
            ..AionConfig::tiny()
        };
        assert_eq!(gelu.mlp_hidden(), 256);
    }

    #[test]
    fn json_defaults_and_errors() {
        let min = r#"{"domains_in":["tok_z"],"domains_out":["tok_z"],"norm_bias":true,"act_layer":"GELU"}"#;
        let c = AionConfig::from_json(min).unwrap();
        assert_eq!((c.dim, c.encoder_depth, c.num_heads), (768, 12, 12));
        assert!(c.qkv_bias && c.decoder_sep_mask && c.share_modality_embeddings && !c.qk_norm);
        let err = |text: &str| AionConfig::from_json(text).unwrap_err().to_string();
        assert!(err(&min.replace("}", r#","dropout":0.1}"#)).contains("dropout"));
        assert!(err(&min.replace("GELU", "ReLU")).contains("ReLU"));
        assert!(err(&min.replace(r#""norm_bias":true,"#, "")).contains("norm_bias"));
        assert!(err(&min.replace(r#"["tok_z"],"norm"#, r#"["tok_q"],"norm"#)).contains("tok_q"));
        let causal = min.replace("}", r#","decoder_causal_mask":true}"#);
        assert!(err(&causal).contains("decoder_causal_mask"));
        let heads = min.replace("}", r#","num_heads":5}"#);
        assert!(err(&heads).contains("num_heads"));
    }
}
