//! Per-modality embeddings: token table, fixed positions, modality embedding, output head.
//!
//! Port of `aion/fourm/encoder_embeddings.py::{ImageTokenEncoderEmbedding,
//! SequenceEncoderEmbedding}` and `aion/fourm/decoder_embeddings.py::{ImageTokenDecoderEmbedding,
//! SequenceDecoderEmbedding}` (polymathic-aion 0.0.2), merged into one module per modality so
//! that the modality embedding shared by encoder and decoder (`share_modality_embeddings`) is one
//! parameter. The sin-cos position tables are read from the weight file, where they are
//! persistent buffers (note the catalog's is `(1, 512, D)`, not `(1, 50, D)`, aion-spec §3.2).

use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};

use crate::config::AionConfig;
use crate::modality::{ModalityInfo, TokenLayout};
use crate::nn::{Embedding, Linear};
use crate::weights::WeightFile;

/// Rows of a sequence modality's position table (4M's `max_sincos_pos_emb`).
pub const SEQUENCE_POSITIONS: usize = 512;

/// Everything the transformer holds for one modality.
#[derive(Module, Debug)]
pub struct ModalityEmbedding<B: Backend> {
    /// The modality.
    pub modality: ModalityInfo,
    /// `mod_emb` `[1, 1, D]`: the encoder's, which is also the decoder's when shared (or the
    /// decoder's alone for an output-only modality).
    pub mod_emb: Param<Tensor<B, 3>>,
    /// The decoder's own `mod_emb` when it is not shared with the encoder's.
    pub dec_mod_emb: Option<Param<Tensor<B, 3>>>,
    /// Encoder token table `[V, D]` (input modalities).
    pub token_emb: Option<Embedding<B>>,
    /// Encoder position table `[P, D]` (buffer).
    pub enc_pos: Option<Tensor<B, 2>>,
    /// Decoder position table `[P, D]` (buffer; output modalities).
    pub dec_pos: Option<Tensor<B, 2>>,
    /// Output head `to_logits`: `D -> V`, no bias (output modalities).
    pub to_logits: Option<Linear<B>>,
}

/// Rows of the stored position table of a modality.
fn positions(m: &ModalityInfo) -> usize {
    match m.layout {
        TokenLayout::Grid { h, w } => h * w,
        TokenLayout::Sequence { .. } => SEQUENCE_POSITIONS,
    }
}

impl<B: Backend> ModalityEmbedding<B> {
    /// Loads `encoder_embeddings.<key>.*` (when `encoder`) and `decoder_embeddings.<key>.*`
    /// (when `decoder`). A shared `mod_emb` may be stored under either name (the Hub files keep
    /// only the decoder's); if both are stored the decoder's wins, as in the reference's
    /// `load_state_dict`, where the second copy overwrites the first.
    pub fn load(
        w: &mut WeightFile,
        m: &'static ModalityInfo,
        cfg: &AionConfig,
        (encoder, decoder): (bool, bool),
        device: &B::Device,
    ) -> Self {
        let (d, v, p, key) = (cfg.dim, m.vocab, positions(m), m.token_key);
        let enc = format!("encoder_embeddings.{key}");
        let dec = format!("decoder_embeddings.{key}");
        let (mod_emb, dec_mod_emb) = load_mod_emb(w, key, cfg, (encoder, decoder), device);
        let table = |w: &mut WeightFile, name: String| -> Tensor<B, 2> {
            w.tensor::<B, 3>(&name, [1, p, d], device).reshape([p, d])
        };
        let token_emb =
            encoder.then(|| Embedding::load(w, &format!("{enc}.token_emb"), v, d, device));
        let enc_pos = encoder.then(|| table(w, format!("{enc}.pos_emb")));
        let dec_pos = decoder.then(|| table(w, format!("{dec}.pos_emb")));
        // The decoder's token table only feeds sequence targets, which AION cannot request.
        if decoder {
            w.take_unused(&format!("{dec}.token_emb.weight"), &[v, d]);
        }
        let to_logits =
            decoder.then(|| Linear::load(w, &format!("{dec}.to_logits"), d, v, false, device));
        Self {
            modality: *m,
            mod_emb,
            dec_mod_emb,
            token_emb,
            enc_pos,
            dec_pos,
            to_logits,
        }
    }

    /// Encoder embedding of ids: the token vectors `x` and the position + modality vectors `e`.
    /// `positions` gives each token's row of the position table; sequence modalities need it
    /// (their non-masked tokens are numbered consecutively, see [`sequence_positions`]); `None`
    /// puts token `n` at position `n` (grid modalities).
    ///
    /// # Shapes
    /// ids `[B, N]`, positions `[B, N]` `-> (x [B, N, D], e [B, N, D])`
    ///
    /// # Panics
    /// If this modality has no encoder embedding.
    pub fn encode(
        &self,
        ids: Tensor<B, 2, Int>,
        positions: Option<Tensor<B, 2, Int>>,
    ) -> (Tensor<B, 3>, Tensor<B, 3>) {
        let [b, n] = ids.dims();
        let token_emb = self.token_emb.as_ref().expect("encoder embedding");
        let pos = self.enc_pos.clone().expect("encoder embedding");
        let x = token_emb.forward(ids);
        let d = x.dims()[2];
        let e = match positions {
            Some(pos_ids) => burn::tensor::module::embedding(pos, pos_ids) + self.mod_emb.val(),
            None => {
                (pos.narrow(0, 0, n).unsqueeze_dim::<3>(0) + self.mod_emb.val()).expand([b, n, d])
            }
        };
        (x, e)
    }

    /// Position + modality embedding of the decoder queries (every position of the grid).
    ///
    /// # Shapes
    /// `-> [1, N, D]`
    ///
    /// # Panics
    /// If this modality has no decoder embedding.
    pub fn decoder_queries(&self) -> Tensor<B, 3> {
        let pos = self.dec_pos.clone().expect("decoder embedding");
        let mod_emb = self.dec_mod_emb.as_ref().unwrap_or(&self.mod_emb).val();
        pos.narrow(0, 0, self.modality.num_tokens())
            .unsqueeze_dim::<3>(0)
            + mod_emb
    }

    /// Output logits.
    ///
    /// # Shapes
    /// `[B, N, D] -> [B, N, V]`
    ///
    /// # Panics
    /// If this modality has no decoder embedding.
    pub fn logits(&self, y: Tensor<B, 3>) -> Tensor<B, 3> {
        self.to_logits.as_ref().expect("decoder head").forward(y)
    }
}

/// The modality embedding(s): one shared `[1, 1, D]` parameter when the modality is in both
/// domain lists and `share_modality_embeddings` (stored under either name; the decoder's wins
/// when both are stored), otherwise the encoder's and/or the decoder's own.
fn load_mod_emb<B: Backend>(
    w: &mut WeightFile,
    key: &str,
    cfg: &AionConfig,
    (encoder, decoder): (bool, bool),
    device: &B::Device,
) -> (Param<Tensor<B, 3>>, Option<Param<Tensor<B, 3>>>) {
    let d = cfg.dim;
    let enc = format!("encoder_embeddings.{key}.mod_emb");
    let dec = format!("decoder_embeddings.{key}.mod_emb");
    if encoder && decoder && cfg.share_modality_embeddings {
        w.alias(dec.clone(), enc.clone());
        if w.contains(&dec) && w.contains(&enc) {
            w.take_unused(&enc, &[1, 1, d]);
        }
        (w.param(&dec, [1, 1, d], device), None)
    } else if encoder {
        let own = decoder.then(|| w.param(&dec, [1, 1, d], device));
        (w.param(&enc, [1, 1, d], device), own)
    } else {
        (w.param(&dec, [1, 1, d], device), None)
    }
}

/// Compacted positions of a sequence modality's tokens: the `i`-th non-masked token of a row
/// gets position `i`; masked tokens get 0 (their embeddings are zeroed later anyway).
pub fn sequence_positions(mask: &[bool], rows: usize) -> Vec<i64> {
    let n = mask.len() / rows.max(1);
    let mut out = Vec::with_capacity(mask.len());
    for row in mask.chunks(n.max(1)) {
        let mut next = 0i64;
        for &masked in row {
            if masked {
                out.push(0);
            } else {
                out.push(next);
                next += 1;
            }
        }
    }
    out
}
