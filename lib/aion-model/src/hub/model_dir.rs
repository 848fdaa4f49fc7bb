//! [`ModelDir`]: one opened model directory, the owner of every path inside it.

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;

use super::layout;
use crate::codecs::AnyCodec;
use crate::config::AionConfig;
use crate::error::{Error, Result};
use crate::fourm::Aion;
use crate::modality::{Modality, ModalityInfo, ModalityTable};
use crate::weights::WeightFile;

/// A model directory in the Hub layout ([`layout`]), opened once: its [`ModalityTable`] (the
/// built-ins plus the extras of `modalities.json`) is built and its `config.json` read when
/// opening; the modalities, the transformer, the codecs and the list of files to checksum come
/// from here, so no tool rebuilds a path inside the directory or resolves a token key elsewhere.
///
/// A directory may hold codecs only (what `aion-fit-codecs` writes): it opens, and asking for
/// the transformer is then the error of its missing `config.json`.
#[derive(Debug, Clone)]
pub struct ModelDir {
    root: PathBuf,
    modalities: ModalityTable,
    config: Option<AionConfig>,
}

impl ModelDir {
    /// Opens `path`: reads the extra modalities it lists (they must be known before its
    /// configuration names them) and its `config.json` when there is one.
    pub fn open(path: &Path) -> Result<Self> {
        if !path.is_dir() {
            return Err(Error::Input(format!(
                "model directory {} does not exist",
                path.display()
            )));
        }
        let modalities = ModalityTable::read_dir(path)?;
        let config_path = layout::config(path);
        let config = if config_path.exists() {
            Some(AionConfig::from_file_in(config_path, modalities.clone())?)
        } else {
            None
        };
        Ok(Self {
            root: path.to_path_buf(),
            modalities,
            config,
        })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// The transformer's configuration; the error names the missing `config.json`.
    pub fn config(&self) -> Result<&AionConfig> {
        self.config.as_ref().ok_or_else(|| Error::Io {
            path: layout::config(&self.root),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        })
    }

    /// The modalities of this model: the built-ins, then the extras of `modalities.json`.
    /// Every token key a tool meets is resolved here.
    pub fn modalities(&self) -> &ModalityTable {
        &self.modalities
    }

    /// Loads the transformer strictly: every tensor must be present with its shape and every
    /// stored tensor must be used, otherwise the error lists all offending names.
    pub fn transformer<B: Backend>(&self, device: &B::Device) -> Result<Aion<B>> {
        let cfg = self.config()?.clone();
        let mut w = WeightFile::open(layout::weights(&self.root))?;
        let model = Aion::from_weights(cfg, &mut w, device)?;
        w.finish()?;
        Ok(model)
    }

    /// The codec folder of modality `m` (`codecs/<codec_dir>`).
    pub fn codec_dir(&self, m: &ModalityInfo) -> PathBuf {
        layout::codec(&self.root, &m.codec_dir)
    }

    /// Whether the directory has a codec for `m` (its folder holds a `config.json`).
    pub fn has_codec(&self, m: &ModalityInfo) -> bool {
        layout::config(&self.codec_dir(m)).exists()
    }

    /// The file whose absence [`has_codec`](Self::has_codec) reports, for messages.
    pub fn codec_config(&self, m: &ModalityInfo) -> PathBuf {
        layout::config(&self.codec_dir(m))
    }

    /// Loads the codec of modality `m` from its folder, strictly.
    pub fn codec<B: Backend>(&self, m: &Modality, device: &B::Device) -> Result<AnyCodec<B>> {
        AnyCodec::load(m, &self.codec_dir(m), device)
    }

    /// The files that identify the transformer (for checksums): `config.json` and
    /// `model.safetensors`.
    pub fn transformer_files(&self) -> Vec<PathBuf> {
        layout::component_files(&self.root).to_vec()
    }

    /// The files that identify the codec of `m` (for checksums).
    pub fn codec_files(&self, m: &ModalityInfo) -> Vec<PathBuf> {
        layout::component_files(&self.codec_dir(m)).to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codecs::AnyCodec;

    type Cpu = burn_ndarray::NdArray<f32>;

    /// The small model bundled with the project (extra modalities, scalar codecs).
    fn bundled() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/models/sdss-photoz-tiny")
    }

    #[test]
    fn opens_a_model_and_hands_out_its_parts() {
        let dir = ModelDir::open(&bundled()).unwrap();
        assert_eq!(dir.modalities().extras().count(), 9);
        let cfg = dir.config().unwrap();
        assert!(cfg.domains_out.iter().any(|d| d == "tok_z"));
        let model = dir.transformer::<Cpu>(&Default::default()).unwrap();
        assert_eq!(model.config(), cfg);
        let z = dir.modalities().get("tok_z").unwrap();
        assert!(dir.has_codec(&z));
        let Ok(AnyCodec::Scalar(c)) = dir.codec::<Cpu>(&z, &Default::default()) else {
            panic!("tok_z has a scalar codec");
        };
        assert_eq!(c.channels(), 1);
        let files = [dir.transformer_files(), dir.codec_files(&z)].concat();
        assert_eq!(files.len(), 4);
        assert!(files.iter().all(|f| f.is_file()), "{files:?}");
        assert!(!dir.has_codec(crate::modality::by_token_key("tok_image").unwrap()));
    }

    #[test]
    fn a_codec_only_directory_opens_without_a_transformer() {
        let tmp = std::env::temp_dir().join(format!("aion-model-dir-{}", std::process::id()));
        std::fs::create_dir_all(&tmp).unwrap();
        let dir = ModelDir::open(&tmp).unwrap();
        let e = dir.transformer::<Cpu>(&Default::default()).unwrap_err();
        assert!(e.to_string().contains("config.json"), "{e}");
        std::fs::remove_dir_all(&tmp).ok();
        let e = ModelDir::open(&tmp).unwrap_err().to_string();
        assert!(e.contains("does not exist"), "{e}");
    }
}
