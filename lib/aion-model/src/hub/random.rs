//! A complete AION with random weights in the Hub layout (`aion-model random`): the transformer
//! and a codec for every modality, each drawn by its own description of the weights (the same
//! `from_weights` that loads a released model) through an [`Initialiser`].
//!
//! It lets a user run every tool on their catalogue, and their job scripts, before the gated
//! AION-1 weights arrive: the inputs, token counts, vocabularies and codec architectures are
//! those of the released model, only the values are random. Scalar codecs get quantile tables
//! of plausible values ([`crate::codecs::plausible`]), so real catalogue values tokenize into a
//! spread of tokens; the network codecs get LeCun-uniform weights, which keep activations at
//! their scale, so real cutouts and spectra also give varied tokens.

use std::path::{Path, PathBuf};

use burn_ndarray::NdArray;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::layout;
use crate::codecs::catalog::{CatalogCodec, CatalogConfig};
use crate::codecs::image::{ImageCodec, ImageCodecConfig};
use crate::codecs::scalar::{ScalarCodec, ScalarConfig};
use crate::codecs::scalar_field::{ScalarFieldCodec, ScalarFieldConfig};
use crate::codecs::spectrum::{SpectrumCodec, SpectrumConfig};
use crate::config::AionConfig;
use crate::error::{Error, Result};
use crate::fourm::Aion;
use crate::fs::write_atomic;
use crate::modality::{CodecKind, MODALITIES, ModalityInfo};
use crate::weights::{Initialiser, Source, StoredTensor, write_stored};

/// The file that marks a directory as made by [`create`] (and tells what it is).
pub const MARKER: &str = "random_model.json";

type Cpu = NdArray<f32>;

/// Size of a random model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Size {
    /// D 64, 2 + 2 blocks, 4 heads; small codecs of the released architectures (for tests and
    /// quick trials: a few MB).
    Tiny,
    /// D 256, 4 + 4 blocks, 4 heads; the released codecs' sizes.
    Small,
    /// AION-1 base: D 768, 12 + 12 blocks, 12 heads (312 M parameters); released codec sizes.
    Base,
    /// AION-1 large: D 1024, 24 + 24 blocks, 16 heads (857 M parameters).
    Large,
    /// AION-1 xlarge: D 2048, 24 + 24 blocks, 32 heads (3.1 G parameters).
    Xlarge,
}

impl Size {
    /// Every size, smallest first.
    pub const ALL: [Size; 5] = [
        Size::Tiny,
        Size::Small,
        Size::Base,
        Size::Large,
        Size::Xlarge,
    ];

    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Tiny => "tiny",
            Self::Small => "small",
            Self::Base => "base",
            Self::Large => "large",
            Self::Xlarge => "xlarge",
        }
    }

    /// The transformer: the released configuration family (SwiGLU, qk-norm, no biases) with
    /// every modality but `tok_segmap` in both domain lists, as AION-1 base.
    pub fn transformer(self) -> AionConfig {
        let (dim, depth, num_heads) = match self {
            Self::Tiny => (64, 2, 4),
            Self::Small => (256, 4, 4),
            Self::Base => return AionConfig::base(),
            Self::Large => return AionConfig::large(),
            Self::Xlarge => return AionConfig::xlarge(),
        };
        AionConfig {
            dim,
            encoder_depth: depth,
            decoder_depth: depth,
            num_heads,
            ..AionConfig::base()
        }
    }

    /// Whether the codecs are the small test-size ones (else the released sizes).
    fn small_codecs(self) -> bool {
        self == Self::Tiny
    }
}

/// What [`create`] wrote.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RandomModel {
    /// `"aion-hpc/random-model"`.
    pub format: String,
    /// Size.
    pub size: Size,
    /// Seed of every draw.
    pub seed: u64,
    /// A reminder for whoever finds the directory.
    pub note: String,
}

impl RandomModel {
    fn new(size: Size, seed: u64) -> Self {
        Self {
            format: "aion-hpc/random-model".into(),
            size,
            seed,
            note: "random weights made by `aion-model random`: the layout and architecture of \
                   AION-1, not its weights; outputs are meaningless"
                .into(),
        }
    }

    /// Reads `dir/random_model.json` if `dir` was made by [`create`].
    pub fn read(dir: &Path) -> Option<Self> {
        let text = std::fs::read_to_string(dir.join(MARKER)).ok()?;
        serde_json::from_str::<Self>(&text)
            .ok()
            .filter(|m| m.format == "aion-hpc/random-model")
    }
}

/// Writes a random model of `size` drawn with `seed` to `dir`.
///
/// `dir` must not exist, unless `overwrite` and it was made by this function (it holds
/// [`MARKER`]); nothing else is ever replaced. Everything is written into a temporary sibling
/// folder first and renamed into place at the end, so `dir` never holds a partial model.
pub fn create(dir: &Path, size: Size, seed: u64, overwrite: bool) -> Result<RandomModel> {
    let refuse = |m: String| Err(Error::Input(format!("{}: {m}", dir.display())));
    let existing = dir.symlink_metadata().is_ok();
    if existing && !overwrite {
        return refuse(
            "exists; pass --overwrite to replace a model made by `aion-model random`".into(),
        );
    }
    if existing && RandomModel::read(dir).is_none() {
        return refuse(format!(
            "exists and was not made by `aion-model random` (no {MARKER}): refusing to touch it"
        ));
    }
    let name = dir
        .file_name()
        .ok_or_else(|| Error::Input(format!("{}: not a directory name", dir.display())))?
        .to_string_lossy()
        .into_owned();
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let werr = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Write { path, source }
    };
    std::fs::create_dir_all(&parent).map_err(werr(&parent))?;
    let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    std::fs::create_dir(&tmp).map_err(werr(&tmp))?;
    let model = RandomModel::new(size, seed);
    if let Err(e) = write_all(&tmp, &model) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if existing {
        let old = parent.join(format!(".{name}.old-{}", std::process::id()));
        std::fs::rename(dir, &old).map_err(werr(dir))?;
        std::fs::rename(&tmp, dir).map_err(werr(dir))?;
        std::fs::remove_dir_all(&old).map_err(werr(&old))?;
    } else {
        std::fs::rename(&tmp, dir).map_err(werr(dir))?;
    }
    Ok(model)
}

/// Writes every file of the model into `dir` (which exists and is empty).
fn write_all(dir: &Path, model: &RandomModel) -> Result<()> {
    let cfg = model.size.transformer();
    let mut init = Initialiser::new(model.seed);
    Aion::<Cpu>::from_weights(cfg.clone(), &mut init, &Default::default())?;
    write_json(&layout::config(dir), &cfg)?;
    write_stored(&layout::weights(dir), init.tensors())?;
    drop(init);
    let mut done: Vec<&str> = Vec::new();
    for m in MODALITIES {
        if done.contains(&m.codec_dir.as_ref()) {
            continue;
        }
        done.push(&m.codec_dir);
        let codec_dir = layout::codec(dir, &m.codec_dir);
        std::fs::create_dir_all(&codec_dir).map_err(|source| Error::Write {
            path: codec_dir.clone(),
            source,
        })?;
        let (config, tensors) = codec(m, model.size.small_codecs(), model.seed)?;
        write_atomic(
            &layout::config(&codec_dir),
            format!("{config}\n").as_bytes(),
        )?;
        write_stored(&layout::weights(&codec_dir), &tensors)?;
    }
    write_json(&dir.join(MARKER), model)
}

/// The random stream of a codec folder: the first 8 bytes of SHA-256 of its name (so each
/// codec draws its own numbers, whatever the others are).
fn stream_of(name: &str) -> u64 {
    let digest = Sha256::digest(name.as_bytes());
    u64::from_le_bytes(digest[..8].try_into().expect("8 bytes"))
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value).expect("serialisable");
    write_atomic(path, format!("{text}\n").as_bytes())
}

/// The `config.json` text and the tensors of `m`'s codec, drawn by its description.
fn codec(m: &'static ModalityInfo, small: bool, seed: u64) -> Result<(String, Vec<StoredTensor>)> {
    let mut init = Initialiser::new(seed);
    init.stream(stream_of(&m.codec_dir));
    let dev = Default::default();
    let json = |v: serde_json::Result<String>| v.expect("serialisable");
    let config = match m.codec {
        CodecKind::Image => {
            let cfg = if small {
                ImageCodecConfig::tiny()
            } else {
                ImageCodecConfig::released()
            };
            ImageCodec::<Cpu>::from_weights(cfg.clone(), &mut init, &dev)?;
            json(serde_json::to_string_pretty(&cfg))
        }
        CodecKind::Spectrum => {
            let cfg = if small {
                SpectrumConfig::tiny()
            } else {
                SpectrumConfig::released()
            };
            SpectrumCodec::<Cpu>::from_weights(cfg.clone(), &mut init, &dev)?;
            json(serde_json::to_string_pretty(&cfg))
        }
        CodecKind::ScalarField => {
            let cfg = if small {
                ScalarFieldConfig::tiny()
            } else {
                ScalarFieldConfig::released()
            };
            ScalarFieldCodec::<Cpu>::from_weights(cfg.clone(), &mut init, &dev)?;
            json(serde_json::to_string_pretty(&cfg))
        }
        CodecKind::Catalog => {
            let cfg = CatalogConfig::default();
            CatalogCodec::from_weights(&cfg, &mut init)?;
            json(serde_json::to_string_pretty(&cfg))
        }
        _ => {
            let cfg = ScalarConfig::released(m);
            ScalarCodec::from_weights(m, &cfg, &mut init)
                .map_err(|e| Error::config(layout::codec(Path::new(""), &m.codec_dir), e))?;
            json(serde_json::to_string_pretty(&cfg))
        }
    };
    Ok((config, init.into_tensors()))
}
