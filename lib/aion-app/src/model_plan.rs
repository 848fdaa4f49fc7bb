//! What `aion-embed` and `aion-predict` load before the first collective write: the run's
//! mapping and catalogue, the codecs of the model's input modalities, and the transformer.

use std::path::PathBuf;

use aion_model::fourm::Aion;
use anyhow::{Context, Result, bail};
use burn::tensor::backend::Backend;

use crate::args::IoArgs;
use crate::codec_set::CodecSet;
use crate::output::ObjectIds;
use crate::run_config::{Binding, ChunkRows, Common};

/// Everything a model tool resolves before touching the output.
pub struct ModelPlan<B: Backend> {
    /// Mapping, sized catalogue, batch size.
    pub common: Common,
    /// Codecs of the bound modalities (inputs, and targets whose truth is in the catalogue).
    pub codecs: CodecSet<B>,
    /// Per codec-set binding: whether it is a model input.
    pub is_input: Vec<bool>,
    /// The transformer.
    pub aion: Aion<B>,
    /// Where object ids come from.
    pub ids: ObjectIds,
    /// Rows per chunk.
    pub chunk: ChunkRows,
}

impl<B: Backend> ModelPlan<B> {
    /// Loads the plan for a run on `ranks` ranks. Modalities the model cannot take as input are
    /// left out (logged); the `targets` are never inputs but are kept when the catalogue holds
    /// their true value.
    pub fn load(io: &IoArgs, device: &B::Device, targets: &[&str], ranks: usize) -> Result<Self> {
        Self::load_excluding(io, device, targets, &[], ranks)
    }

    /// [`load`](Self::load), leaving the `excluded` modalities out entirely (not read, not
    /// tokenized: `aion-generate`'s target).
    pub fn load_excluding(
        io: &IoArgs,
        device: &B::Device,
        targets: &[&str],
        excluded: &[&str],
        ranks: usize,
    ) -> Result<Self> {
        let common = Common::resolve(io, targets)?;
        let aion = common.model.transformer::<B>(device).with_context(|| {
            format!(
                "cannot load the transformer from {}",
                common.model.path().display()
            )
        })?;
        let domains_in = &aion.config().domains_in;
        let keep: Vec<Binding> = common
            .bindings
            .iter()
            .filter(|b| {
                let out = excluded.contains(&b.token_key());
                if out && b.explicit {
                    log::warn!(
                        "{}: {} is the generation target, never an input; left out",
                        b.describe(),
                        b.token_key()
                    );
                }
                !out
            })
            .filter(|b| {
                let ok = targets.contains(&b.token_key())
                    || domains_in.iter().any(|d| d == b.token_key());
                if !ok && b.explicit {
                    log::warn!(
                        "{}: the model has no input embedding for {}; left out",
                        b.describe(),
                        b.token_key()
                    );
                }
                ok
            })
            .cloned()
            .collect();
        let codecs =
            CodecSet::<B>::load(&common.model, &keep, &common.catalog, common.pad, device)?;
        let is_input: Vec<bool> = codecs
            .bindings()
            .map(|b| !targets.contains(&b.token_key()))
            .collect();
        if !is_input.iter().any(|&i| i) {
            bail!(
                "none of the model's input modalities ({}) is in the catalogue",
                domains_in.join(", ")
            );
        }
        let ids = ObjectIds::detect(&common.catalog)?;
        let chunk = common.chunk_rows_for(codecs.row_bytes(&common.catalog), ranks);
        Ok(Self {
            common,
            codecs,
            is_input,
            aion,
            ids,
            chunk,
        })
    }

    /// Files whose checksums identify the model (transformer + codecs).
    pub fn files(&self) -> Vec<PathBuf> {
        let mut f = self.common.model.transformer_files();
        f.extend(self.codecs.files().iter().cloned());
        f
    }

    /// The input bindings.
    pub fn inputs(&self) -> Vec<&Binding> {
        self.codecs
            .bindings()
            .zip(&self.is_input)
            .filter(|(_, i)| **i)
            .map(|(b, _)| b)
            .collect()
    }
}
