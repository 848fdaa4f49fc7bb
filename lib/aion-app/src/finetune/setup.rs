//! The values a fine-tuning run passes between its stages: what was resolved before training
//! ([`Setup`]), what a mode trains with ([`Run`]) and what the exporters read ([`Context`]).
//! Kept apart from the stages themselves so that `prepare` → `modes` → `export` import in one
//! direction only.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use aion_io::Catalog;
use aion_model::ModelDir;
use aion_model::codecs::scalar_fit::FittedCodec;
use aion_model::modality::{ExtraModality, Modality, ModalityTable};
use aion_mpi::Session;

use super::checkpoint::Checkpoint;
use super::config::{FinetuneConfig, NewModalitySection};
use super::data::{FullColumn, ModalityData, Split};
use super::trainer::Plan;
use crate::signals::StopFlag;

/// The description of a new modality as registered.
pub fn new_spec(n: &NewModalitySection) -> ExtraModality {
    ExtraModality {
        token_key: n.token_key.clone(),
        codec: n.codec.clone(),
        codec_dir: n.codec_dir.clone().unwrap_or_else(|| n.dataset.clone()),
        vocab: n.codebook_size,
        tokens: 1,
        dataset: n.dataset.clone(),
        class_name: None,
        units: n.units.clone(),
        label: n.label.clone(),
    }
}

/// A modality the run reads, with its source dataset.
pub struct Needed {
    /// The modality.
    pub modality: Modality,
    /// Dataset (and column range).
    pub dataset: String,
    /// Column range of a 2-D dataset.
    pub columns: Option<(usize, usize)>,
    /// The dataset holds tokens.
    pub tokens: bool,
}

/// Everything resolved before training.
pub struct Setup {
    /// Effective configuration.
    pub cfg: FinetuneConfig,
    /// The directory the run writes into: the work directory `<output>.partial`, renamed to
    /// the output directory when the run has finished ([`work_dir`]).
    pub out: PathBuf,
    /// The output directory (`output` of the configuration, `--output`).
    pub final_out: PathBuf,
    /// The catalogue.
    pub catalog: Catalog,
    /// The base model (`[model] base`), opened once.
    pub base: Option<ModelDir>,
    /// The modalities of the run: the built-ins, the base model's extras and the
    /// `[[new_modality]]` entries.
    pub modalities: ModalityTable,
    /// Modalities read (inputs ∪ targets), in config order.
    pub needed: Vec<Needed>,
    /// Hash of everything that determines the result.
    pub hash: String,
    /// The config file (named in errors about the paths it sets).
    pub config_file: PathBuf,
}

/// What the exporters need.
pub struct Context<'a> {
    /// MPI.
    pub session: &'a Session,
    /// The run.
    pub setup: &'a Setup,
    /// The split.
    pub split: &'a Split,
    /// Fitted codecs.
    pub fitted: &'a [FittedCodec],
    /// Start of the run (after setup).
    pub seconds_before: Instant,
}

/// Everything a mode needs to train and export.
pub struct Run<'a> {
    /// MPI.
    pub session: &'a Session,
    /// Stop signal.
    pub stop: &'a StopFlag,
    /// The run.
    pub setup: &'a Setup,
    /// The split.
    pub split: &'a Split,
    /// The catalogue columns read, by dataset.
    pub cols: &'a BTreeMap<String, FullColumn>,
    /// Per-modality data.
    pub data: &'a [ModalityData],
    /// The checkpoint.
    pub ckpt: Checkpoint,
    /// What the exporters need.
    pub ctx: Context<'a>,
}

impl Run<'_> {
    /// The training plan.
    pub fn plan(&self) -> Plan<'_> {
        Plan {
            train: &self.split.train,
            val: &self.split.val,
            seed: self.setup.cfg.seed,
            cfg: &self.setup.cfg.train,
        }
    }
}
