//! Adding new modalities to an existing model directory.
//!
//! The new token keys get embedding tables (encoder and/or decoder) and modality embeddings,
//! initialised as in [`super::init`]; `config.json` gets them appended to `domains_in` /
//! `domains_out`, and `modalities.json` lists them. A modality the model's table already knows
//! (AION-1's built-ins such as `tok_z`) can likewise be given a role the model lacks
//! ([`NewRole`]): a backbone pre-trained on photometry only gets redshift as a target. Every tensor already in `model.safetensors`
//! is copied byte for byte (same name, dtype, shape, values): the existing weights are
//! untouched, and the extended model gives the same outputs as the original for inputs and
//! targets that do not involve the new modalities.

use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use super::init::{InitOptions, modality_tensors};
use crate::config::AionConfig;
use crate::error::{Error, Result};
use crate::fs::{copy_dir, write_atomic};
use crate::hub::ModelDir;
use crate::hub::layout;
use crate::modality::Modality;
use crate::modality::extra::{ExtraModalitiesFile, ExtraModality};

/// One modality to add and its roles.
#[derive(Debug, Clone)]
pub struct NewModality {
    /// Its description (added to the model's modality table by [`add_modalities`]).
    pub spec: ExtraModality,
    /// Give it an encoder embedding (`domains_in`).
    pub input: bool,
    /// Give it a decoder embedding and output head (`domains_out`).
    pub output: bool,
}

/// A modality the model's table already holds (a built-in such as `tok_z`, or one of the
/// model's extras) and the roles it is to get; a role the model already gives it is kept as is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRole {
    /// Its token key.
    pub token_key: String,
    /// Give it an encoder embedding (`domains_in`) if it has none.
    pub input: bool,
    /// Give it a decoder embedding and output head (`domains_out`) if it has none.
    pub output: bool,
}

/// The model of the opened directory `src` with `new` modalities added, in memory: its config
/// (whose modality table holds the new ones), its safetensors bytes (every stored tensor copied
/// unchanged, the new ones appended) and the full list of extra modalities it uses.
pub fn extended(
    src: &ModelDir,
    new: &[NewModality],
    opts: InitOptions,
) -> Result<(AionConfig, Vec<u8>, Vec<ExtraModality>)> {
    extended_with_roles(src, new, &[], opts)
}

/// [`extended`], also giving the known modalities of `roles` the roles they lack. Their new
/// tables are initialised as a new modality's; a tensor the model already stores under the same
/// name (a modality embedding shared by the encoder and the decoder) is kept, not replaced.
pub fn extended_with_roles(
    src: &ModelDir,
    new: &[NewModality],
    roles: &[NewRole],
    opts: InitOptions,
) -> Result<(AionConfig, Vec<u8>, Vec<ExtraModality>)> {
    let mut cfg = src.config()?.clone();
    let mut extras = ExtraModalitiesFile::read_dir(src.path())?
        .map(|f| f.modalities)
        .unwrap_or_default();
    let mut added: Vec<(Modality, bool, bool)> = Vec::new();
    for n in new {
        let m = cfg.modalities.add(&n.spec)?;
        let key = m.token_key.to_string();
        if cfg.domains_in.contains(&key) || cfg.domains_out.contains(&key) {
            return Err(Error::Input(format!(
                "the model already has modality {key}"
            )));
        }
        if !(n.input || n.output) {
            return Err(Error::Input(format!("{key}: neither input nor output")));
        }
        if n.input {
            cfg.domains_in.push(key.clone());
        }
        if n.output {
            cfg.domains_out.push(key);
        }
        if !extras.contains(&n.spec) {
            extras.push(n.spec.clone());
        }
        added.push((m, n.input, n.output));
    }
    let mut known: Vec<(Modality, bool, bool)> = Vec::new();
    for r in roles {
        let key = r.token_key.as_str();
        let m = cfg.modalities.get(key).ok_or_else(|| {
            Error::Input(format!(
                "{key} is neither a built-in modality nor one of the model's"
            ))
        })?;
        if added.iter().any(|(a, ..)| a.token_key == m.token_key) {
            return Err(Error::Input(format!("{key} is added twice")));
        }
        let input = r.input && !cfg.domains_in.iter().any(|k| k == key);
        let output = r.output && !cfg.domains_out.iter().any(|k| k == key);
        if input {
            cfg.domains_in.push(key.to_string());
        }
        if output {
            cfg.domains_out.push(key.to_string());
        }
        if input || output {
            known.push((m, input, output));
        }
    }
    cfg.validate()?;
    let new_tensors: Vec<_> = added
        .iter()
        .flat_map(|(m, i, o)| modality_tensors(m, &cfg, (*i, *o), opts))
        .collect();

    let weights = layout::weights(src.path());
    let bytes = std::fs::read(&weights).map_err(|source| Error::Io {
        path: weights.clone(),
        source,
    })?;
    let bad = |m: String| Error::SafeTensors {
        path: weights.clone(),
        message: m,
    };
    let st = SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
    let (_, meta) = SafeTensors::read_metadata(&bytes).map_err(|e| bad(e.to_string()))?;
    let held: std::collections::HashSet<&str> = st.names().into_iter().collect();
    let stored = |name: &str| held.contains(name);
    for (k, t) in new_tensors.iter().enumerate() {
        if stored(&t.name) || new_tensors[..k].iter().any(|e| e.name == t.name) {
            return Err(bad(format!("already holds {}", t.name)));
        }
    }
    // A known modality's tensor that the file already holds (a shared modality embedding) is kept.
    let mut added_tensors = new_tensors;
    let role_tensors: Vec<_> = known
        .iter()
        .flat_map(|(m, i, o)| modality_tensors(m, &cfg, (*i, *o), opts))
        .filter(|t| !stored(&t.name) && !added_tensors.iter().any(|a| a.name == t.name))
        .collect();
    added_tensors.extend(role_tensors);
    let raw: Vec<Vec<u8>> = added_tensors
        .iter()
        .map(|t| t.data.iter().flat_map(|v| v.to_le_bytes()).collect())
        .collect();
    let mut views: Vec<(String, TensorView<'_>)> = st.tensors();
    for (t, raw) in added_tensors.iter().zip(&raw) {
        let v = TensorView::new(Dtype::F32, t.shape.clone(), raw).expect("shape fits data");
        views.push((t.name.clone(), v));
    }
    let out = safetensors::tensor::serialize(views, meta.metadata().clone())
        .map_err(|e| bad(e.to_string()))?;
    Ok((cfg, out, extras))
}

/// Writes to `dst` the model of `src` with `new` modalities added (see the module docs); `src`
/// and `dst` may be the same directory. Codecs (`codecs/`) are copied when they differ; the
/// new modalities' codecs are the caller's to write (e.g. fitted ones). Returns the new config.
pub fn add_modalities(
    src: &Path,
    dst: &Path,
    new: &[NewModality],
    opts: InitOptions,
) -> Result<AionConfig> {
    let (cfg, bytes, extras) = extended(&ModelDir::open(src)?, new, opts)?;
    if src != dst && layout::codecs(src).is_dir() {
        copy_dir(&layout::codecs(src), &layout::codecs(dst))?;
    }
    std::fs::create_dir_all(dst).map_err(|source| Error::Write {
        path: dst.to_path_buf(),
        source,
    })?;
    write_atomic(&layout::weights(dst), &bytes)?;
    let text = serde_json::to_string_pretty(&cfg).expect("config serialises");
    write_atomic(&layout::config(dst), format!("{text}\n").as_bytes())?;
    ExtraModalitiesFile::new(extras).write_dir(dst)?;
    Ok(cfg)
}
