//! [`Aion`]: loading, `encode`, `embed`, `predict`.
//!
//! Port of `aion/model.py::AION.{encode, forward, _encode, _decode}` and
//! `aion/fourm/fm.py::FourM.{forward_encoder, forward_decoder, forward_mask_decoder}`
//! (polymathic-aion 0.0.2).

use std::path::Path;
use std::sync::Arc;

use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use super::assemble::{Assembled, assemble};
use super::attention::key_bias;
use super::block::{DecoderBlock, EncoderBlock};
use super::embeddings::{ModalityEmbedding, SEQUENCE_POSITIONS};
use super::layers::{norm, xavier};
use super::{DecoderMode, Encoded, TokenInput, pool_mean};
use crate::config::AionConfig;
use crate::error::{Error, Result};
use crate::modality::{ModalityInfo, TokenLayout};
use crate::nn::{LayerNorm, Linear};
use crate::weights::{EMBED_STD, Init, ParamNames, Source};

/// The AION-1 transformer (4M encoder–decoder).
#[derive(Module, Debug)]
pub struct Aion<B: Backend> {
    /// One entry per modality of `domains_in ∪ domains_out` (inputs first, in config order).
    pub embeddings: Vec<ModalityEmbedding<B>>,
    /// `encoder.<i>`.
    pub encoder: Vec<EncoderBlock<B>>,
    /// `encoder_norm`.
    pub encoder_norm: LayerNorm<B>,
    /// `decoder_proj_context` (always with bias).
    pub decoder_proj_context: Linear<B>,
    /// `decoder.<i>`.
    pub decoder: Vec<DecoderBlock<B>>,
    /// `decoder_norm`.
    pub decoder_norm: LayerNorm<B>,
    /// `mask_token` `[1, 1, D]`: the decoder input at every target position.
    pub mask_token: Param<Tensor<B, 3>>,
    config: AionConfig,
    /// The stored name of every parameter (recorded while the model was built; read by
    /// [`crate::export::state_dict`]).
    names: Arc<ParamNames>,
}

impl<B: Backend> Aion<B> {
    /// Loads the transformer of model directory `dir`, strictly (see
    /// [`ModelDir::transformer`](crate::ModelDir::transformer)).
    pub fn load(dir: &Path, device: &B::Device) -> Result<Self> {
        crate::ModelDir::open(dir)?.transformer(device)
    }

    /// Builds the model from an open weight file, taking every tensor it needs. Problems are
    /// recorded in `w` (see [`WeightFile::finish`](crate::weights::WeightFile::finish), which the caller must still call); the error
    /// here is only for an invalid configuration.
    ///
    /// `w` may be any [`Source`]: this function is the one description of the transformer's
    /// weights (names, shapes, and 4M's initialisation: Xavier-uniform linear weights, unit
    /// norms, `N(0, 0.02²)` embeddings and mask token, sin-cos position tables).
    pub fn from_weights(cfg: AionConfig, w: &mut impl Source, device: &B::Device) -> Result<Self> {
        cfg.validate()?;
        let d = cfg.dim;
        let (ins, outs) = (cfg.inputs(), cfg.outputs());
        let mut all = ins.clone();
        all.extend(outs.iter().filter(|m| !ins.contains(m)).cloned());
        let embeddings = all
            .iter()
            .map(|m| {
                let roles = (ins.contains(m), outs.contains(m));
                ModalityEmbedding::load(w, m, &cfg, roles, device)
            })
            .collect();
        let encoder = (0..cfg.encoder_depth)
            .map(|i| EncoderBlock::load(w, &format!("encoder.{i}"), &cfg, device))
            .collect();
        let encoder_norm = norm(w, "encoder_norm", d, &cfg, device);
        let context = "decoder_proj_context";
        let decoder_proj_context = Linear::load(w, context, (d, d), true, xavier(1), device);
        let decoder = (0..cfg.decoder_depth)
            .map(|i| DecoderBlock::load(w, &format!("decoder.{i}"), &cfg, device))
            .collect();
        let decoder_norm = norm(w, "decoder_norm", d, &cfg, device);
        let mask = Init::Normal { std: EMBED_STD };
        let mask_token = w.param("mask_token", [1, 1, d], &mask, device);
        Ok(Self {
            embeddings,
            encoder,
            encoder_norm,
            decoder_proj_context,
            decoder,
            decoder_norm,
            mask_token,
            config: cfg,
            names: Arc::new(std::mem::take(w.names_mut())),
        })
    }

    /// Where each parameter is stored (names, shapes, layouts), as recorded while building.
    pub fn param_names(&self) -> &ParamNames {
        &self.names
    }

    /// The configuration the model was built from.
    pub fn config(&self) -> &AionConfig {
        &self.config
    }

    /// The embedding module of a modality, if the model has one.
    pub fn embedding(&self, m: &ModalityInfo) -> Option<&ModalityEmbedding<B>> {
        self.embeddings
            .iter()
            .find(|e| e.modality.token_key == m.token_key)
    }

    pub(crate) fn input_embedding(&self, m: &ModalityInfo) -> Option<&ModalityEmbedding<B>> {
        self.embedding(m).filter(|e| e.token_emb.is_some())
    }

    pub(crate) fn output_embedding(&self, m: &ModalityInfo) -> Option<&ModalityEmbedding<B>> {
        self.embedding(m).filter(|e| e.to_logits.is_some())
    }

    /// Checks inputs the way the reference's assertions do (and a little more): at least one
    /// input, each an input modality of the model given once, equal batch sizes, the
    /// modality's token count (1 to 512 for the catalog), masks of the ids' shape, and ids
    /// inside the vocabulary.
    pub fn check_inputs(&self, inputs: &[TokenInput<B>]) -> Result<()> {
        let Some(first) = inputs.first() else {
            return Err(Error::Input("no input modality".into()));
        };
        let rows = first.ids.dims()[0];
        for (i, inp) in inputs.iter().enumerate() {
            let key = &*inp.modality.token_key;
            if inputs[..i].iter().any(|o| o.modality.token_key == key) {
                return Err(Error::Input(format!("{key} is given twice")));
            }
            self.check_input(inp, rows)
                .map_err(|m| Error::Input(format!("{key} {m}")))?;
        }
        Ok(())
    }

    /// One input of a batch of `rows` objects; the error message follows the token key.
    fn check_input(&self, inp: &TokenInput<B>, rows: usize) -> std::result::Result<(), String> {
        let (m, [b, n]) = (&inp.modality, inp.ids.dims());
        if self.input_embedding(m).is_none() {
            return Err("is not an input of this model (domains_in)".into());
        }
        if b != rows || b == 0 {
            return Err(format!("has {b} rows, expected {rows} (> 0)"));
        }
        let ok = match m.layout {
            TokenLayout::Grid { .. } => n == m.num_tokens(),
            TokenLayout::Sequence { .. } => (1..=SEQUENCE_POSITIONS).contains(&n),
        };
        if !ok {
            return Err(format!(
                "has {n} tokens per row, expected {}",
                m.num_tokens()
            ));
        }
        if let Some(mask) = &inp.mask
            && mask.dims() != [b, n]
        {
            return Err(format!("mask is {:?}, ids are {:?}", mask.dims(), [b, n]));
        }
        let ids = inp.ids.clone().into_data().convert::<i64>();
        let ids = ids.as_slice::<i64>().expect("i64 ids");
        match ids.iter().find(|&&id| id < 0 || id >= m.vocab as i64) {
            Some(id) => Err(format!("has id {id} outside its vocabulary 0..{}", m.vocab)),
            None => Ok(()),
        }
    }

    /// Checks prediction targets: at least one, each an output modality given once, and of grid
    /// type (the reference's `AION.forward` cannot request the catalog: it has no token count).
    pub fn check_targets(&self, targets: &[&ModalityInfo]) -> Result<()> {
        let bad = |m: String| Err(Error::Input(m));
        if targets.is_empty() {
            return bad("no target modality".into());
        }
        for (i, m) in targets.iter().enumerate() {
            let key = &*m.token_key;
            if self.output_embedding(m).is_none() {
                return bad(format!(
                    "{key} is not an output of this model (domains_out)"
                ));
            }
            if targets[..i].iter().any(|o| o.token_key == key) {
                return bad(format!("target {key} is requested twice"));
            }
            if matches!(m.layout, TokenLayout::Sequence { .. }) {
                return bad(format!(
                    "{key} is a sequence modality and cannot be a target"
                ));
            }
        }
        Ok(())
    }

    /// Encodes the inputs like `AION.encode(tokens, input_mask, num_encoder_tokens)`.
    /// `None` keeps every token (the reference defaults to 256, which cuts the image).
    ///
    /// # Shapes
    /// inputs `[B, N_m]` `->` context `[B, K, D]`, `K = min(num_encoder_tokens, Σ N_m)`
    ///
    /// # Errors
    /// If [`check_inputs`](Self::check_inputs) fails or `num_encoder_tokens` is `Some(0)`.
    pub fn encode(
        &self,
        inputs: &[TokenInput<B>],
        num_encoder_tokens: Option<usize>,
    ) -> Result<Encoded<B>> {
        Ok(self.encode_biased(inputs, num_encoder_tokens)?.0)
    }

    /// [`encode`](Self::encode), also returning the context key bias (None without padding).
    pub(crate) fn encode_biased(
        &self,
        inputs: &[TokenInput<B>],
        keep: Option<usize>,
    ) -> Result<(Encoded<B>, Option<Tensor<B, 4>>)> {
        self.check_inputs(inputs)?;
        if keep == Some(0) {
            return Err(Error::Input("num_encoder_tokens must be at least 1".into()));
        }
        let embeddings: Vec<_> = inputs
            .iter()
            .map(|inp| self.input_embedding(&inp.modality).expect("checked input"))
            .collect();
        let a = assemble(&embeddings, inputs, keep.unwrap_or(usize::MAX));
        Ok(self.run_encoder(a))
    }

    /// # Shapes
    /// assembled `[B, K, D]` `->` context `[B, K, D]`
    fn run_encoder(&self, a: Assembled<B>) -> (Encoded<B>, Option<Tensor<B, 4>>) {
        let bias = a
            .mask_host
            .iter()
            .any(|&m| m)
            .then(|| key_bias(a.mask.clone()));
        let mut x = standard_layout(a.x + a.e.clone());
        for block in &self.encoder {
            x = block.forward(x, bias.clone());
        }
        let x = self.encoder_norm.forward(x);
        let context = self.decoder_proj_context.forward(x) + a.e;
        let encoded = Encoded {
            context,
            mask: a.mask,
            modality: a.modality,
        };
        (encoded, bias)
    }

    /// One vector per object: the mean of the context over the row's non-masked tokens (all
    /// tokens kept, no 256 cut), computed on the host by [`pool_mean`] (f64 sums, as
    /// `aion-embed` writes it). A row whose tokens are all masked gives NaN.
    ///
    /// # Shapes
    /// inputs `[B, N_m]` `-> [B, D]`
    ///
    /// # Panics
    /// If [`check_inputs`](Self::check_inputs) fails (callers that cannot rule this out use
    /// [`encode`](Self::encode), which returns the error).
    pub fn embed(&self, inputs: &[TokenInput<B>]) -> Tensor<B, 2> {
        let enc = self.encode(inputs, None).unwrap_or_else(|e| panic!("{e}"));
        let [b, k, d] = enc.context.dims();
        let device = enc.context.device();
        let masked: Vec<bool> = enc.mask.into_data().to_vec().expect("a bool mask");
        let context: Vec<f32> = enc
            .context
            .into_data()
            .convert::<f32>()
            .to_vec()
            .expect("f32 after convert");
        let mut out = vec![0f32; b * d];
        for (r, row) in out.chunks_exact_mut(d).enumerate() {
            pool_mean(
                &context[r * k * d..(r + 1) * k * d],
                &masked[r * k..(r + 1) * k],
                row,
            );
        }
        Tensor::from_data(TensorData::new(out, [b, d]), &device)
    }

    /// Logits of every position of each target, like `AION.forward(tokens, targets,
    /// input_mask)` (all input tokens kept), in the order of `targets`.
    ///
    /// # Shapes
    /// inputs `[B, N_m]` `->` one `[B, N_t, V_t]` per target
    ///
    /// # Panics
    /// If [`check_inputs`](Self::check_inputs) or [`check_targets`](Self::check_targets) fails.
    pub fn predict(
        &self,
        inputs: &[TokenInput<B>],
        targets: &[&ModalityInfo],
        mode: DecoderMode,
    ) -> Vec<Tensor<B, 3>> {
        let checked = self
            .check_targets(targets)
            .and_then(|()| self.encode_biased(inputs, None));
        let (enc, bias) = checked.unwrap_or_else(|e| panic!("{e}"));
        let heads: Vec<_> = targets
            .iter()
            .map(|m| self.output_embedding(m).expect("checked target"))
            .collect();
        let (mut y, ranges) = self.decoder_input(&heads, enc.context.dims()[0]);
        let m = y.dims()[1];
        let groups = match mode {
            DecoderMode::Joint => vec![(0, m)],
            DecoderMode::Independent => ranges.clone(),
        };
        for block in &self.decoder {
            y = block.forward(y, enc.context.clone(), bias.clone(), &groups);
        }
        let y = self.decoder_norm.forward(y);
        heads
            .iter()
            .zip(ranges)
            .map(|(h, (start, len))| h.logits(y.clone().narrow(1, start, len)))
            .collect()
    }

    /// The decoder input of `AION.forward`: at every position of every target, the mask token
    /// plus the target's position and modality embedding; and each target's `(start, len)`.
    ///
    /// # Shapes
    /// `-> [B, M, D]`, `M = Σ N_t`
    fn decoder_input(
        &self,
        heads: &[&ModalityEmbedding<B>],
        b: usize,
    ) -> (Tensor<B, 3>, Vec<(usize, usize)>) {
        let mask_token = self.mask_token.val();
        let d = mask_token.dims()[2];
        let mut ranges = Vec::with_capacity(heads.len());
        let mut queries = Vec::with_capacity(heads.len());
        let mut m = 0;
        for h in heads {
            let n = h.modality.num_tokens();
            ranges.push((m, n));
            m += n;
            queries.push(mask_token.clone() + h.decoder_queries());
        }
        let y = standard_layout(Tensor::cat(queries, 1).expand([b, m, d]));
        (y, ranges)
    }
}

/// The same values with row-major strides. burn has no explicit "contiguous" operation; a
/// reshape round trip gives one. It matters for bitwise batch independence on NdArray: a
/// `[1, N, D]` tensor whose size-1 axis carries an odd stride makes ndarray's reductions (the
/// LayerNorm statistics) sum in another order than for the same row inside a `[B, N, D]` batch.
///
/// # Shapes
/// `[B, N, D] -> [B, N, D]`
pub(crate) fn standard_layout<B: Backend>(x: Tensor<B, 3>) -> Tensor<B, 3> {
    let [b, n, d] = x.dims();
    x.reshape([b * n, d]).reshape([b, n, d])
}
