//! The Hub layout of a model directory: the one place that spells its file names.
//!
//! ```text
//! <model>/config.json          the transformer's configuration (AionConfig)
//! <model>/model.safetensors    its weights
//! <model>/modalities.json      extra (new-survey) modalities, when the model has any
//! <model>/codecs/<name>/       one folder per codec, itself a component folder:
//!     config.json, model.safetensors
//! ```
//!
//! Every component folder (the model itself, a codec folder, a probe head) holds its settings in
//! [`config`] and its tensors in [`weights`]. Tools that read a model go through
//! [`super::ModelDir`]; writers (export, fitting, random models) name their files here.

use std::path::{Path, PathBuf};

/// Settings of a component folder.
const CONFIG: &str = "config.json";
/// Tensors of a component folder.
const WEIGHTS: &str = "model.safetensors";
/// Extra modalities of a model directory.
const EXTRAS: &str = "modalities.json";
/// Folder of the codec folders.
const CODECS: &str = "codecs";

/// `dir/config.json`: the settings of a component folder (model, codec, probe head).
pub fn config(dir: &Path) -> PathBuf {
    dir.join(CONFIG)
}

/// `dir/model.safetensors`: the tensors of a component folder.
pub fn weights(dir: &Path) -> PathBuf {
    dir.join(WEIGHTS)
}

/// `[config, weights]` of a component folder: the files that identify it (checksums).
pub fn component_files(dir: &Path) -> [PathBuf; 2] {
    [config(dir), weights(dir)]
}

/// `model/modalities.json`: the extra modalities of a model directory.
pub fn extras(model: &Path) -> PathBuf {
    model.join(EXTRAS)
}

/// `model/codecs`: the folder of a model's codec folders.
pub fn codecs(model: &Path) -> PathBuf {
    model.join(CODECS)
}

/// `model/codecs/<name>`: one codec folder.
pub fn codec(model: &Path, name: &str) -> PathBuf {
    codecs(model).join(name)
}

/// The names of the files directly inside a model directory (config, weights, extra
/// modalities), for copying a model file by file.
pub fn top_level_files() -> [&'static str; 3] {
    [CONFIG, WEIGHTS, EXTRAS]
}

/// The bare name of the configuration file (for messages about configuration text that is not
/// read from a file).
pub fn config_name() -> &'static str {
    CONFIG
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_follow_the_hub_layout() {
        let m = Path::new("m");
        assert_eq!(config(m), Path::new("m/config.json"));
        assert_eq!(weights(m), Path::new("m/model.safetensors"));
        assert_eq!(extras(m), Path::new("m/modalities.json"));
        assert_eq!(codec(m, "FLUX_G"), Path::new("m/codecs/FLUX_G"));
        assert_eq!(
            component_files(&codec(m, "image"))[1],
            Path::new("m/codecs/image/model.safetensors")
        );
    }
}
