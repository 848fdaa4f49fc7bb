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

use super::layers::xavier;
use crate::config::AionConfig;
use crate::modality::{CodecKind, ModalityInfo, TokenLayout};
use crate::nn::{Embedding, Linear};
use crate::weights::{EMBED_STD, Init, Source};

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
    ///
    /// From scratch, the modality's tensors come from its own random stream (keyed by its id),
    /// so adding a modality changes no other tensor; the position tables are the fixed sin-cos
    /// tables of aion-spec §3.2.
    pub fn load(
        w: &mut impl Source,
        m: &ModalityInfo,
        cfg: &AionConfig,
        (encoder, decoder): (bool, bool),
        device: &B::Device,
    ) -> Self {
        let (d, v, p, key) = (cfg.dim, m.vocab, positions(m), &*m.token_key);
        let enc = format!("encoder_embeddings.{key}");
        let dec = format!("decoder_embeddings.{key}");
        w.stream(crate::rng::mix64(u64::from(m.id())));
        let (mod_emb, dec_mod_emb) = load_mod_emb(w, key, cfg, (encoder, decoder), device);
        let pos_init = match m.layout {
            TokenLayout::Grid { h, w } => Init::SinCos2d { h, w },
            TokenLayout::Sequence { .. } => Init::SinCos1d { n: p },
        };
        let table = |w: &mut _, name: String| -> Tensor<B, 2> {
            Source::buffer(w, &name, &[1, p, d], [p, d], &pos_init, device)
        };
        // Quantile and grid scalars have ordered tokens (not Gaia XP, whose 55 channels share
        // one vocabulary).
        let ordinal = matches!(
            m.codec,
            CodecKind::Scalar | CodecKind::LogScalar | CodecKind::GridScalar
        );
        let token_emb = encoder.then(|| {
            let init = Init::TokenTable { ordinal };
            Embedding::load(w, &format!("{enc}.token_emb"), (v, d), init, device)
        });
        let enc_pos = encoder.then(|| table(w, format!("{enc}.pos_emb")));
        let dec_pos = decoder.then(|| table(w, format!("{dec}.pos_emb")));
        // The decoder's token table only feeds sequence targets, which AION cannot request.
        if decoder {
            let init = Init::Normal { std: EMBED_STD };
            w.unkept(&format!("{dec}.token_emb.weight"), &[v, d], &init);
        }
        let to_logits = decoder.then(|| {
            let name = format!("{dec}.to_logits");
            Linear::load(w, &name, (d, v), false, xavier(1), device)
        });
        w.stream(0);
        Self {
            modality: m.clone(),
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
    w: &mut impl Source,
    key: &str,
    cfg: &AionConfig,
    (encoder, decoder): (bool, bool),
    device: &B::Device,
) -> (Param<Tensor<B, 3>>, Option<Param<Tensor<B, 3>>>) {
    let d = cfg.dim;
    let enc = format!("encoder_embeddings.{key}.mod_emb");
    let dec = format!("decoder_embeddings.{key}.mod_emb");
    let init = Init::Normal { std: EMBED_STD };
    let take = |w: &mut _, name: &str| Source::param(w, name, [1, 1, d], &init, device);
    if encoder && decoder && cfg.share_modality_embeddings {
        w.alias(&dec, &enc, &[1, 1, d]);
        (take(w, &dec), None)
    } else if encoder {
        let own = take(w, &enc);
        (own, decoder.then(|| take(w, &dec)))
    } else {
        (take(w, &dec), None)
    }
}

/// 2-D sin-cos table of an `h × w` token grid (4M's `build_2d_sincos_posemb`): for flat index
/// `n`, `a = n div h`, `b = n mod h`, `P = D/4`, `ω_k = 10000^(−k/P)`:
/// `[sin(aω), cos(aω), sin(bω), cos(bω)]`. Row-major `[h·w, D]`.
pub fn sincos_2d(h: usize, w: usize, d: usize) -> Vec<f32> {
    let p = d / 4;
    let omega: Vec<f32> = (0..p)
        .map(|k| 1.0 / 10000f32.powf(k as f32 / p as f32))
        .collect();
    let mut out = Vec::with_capacity(h * w * d);
    for n in 0..h * w {
        let (a, b) = ((n / h) as f32, (n % h) as f32);
        out.extend(omega.iter().map(|o| (a * o).sin()));
        out.extend(omega.iter().map(|o| (a * o).cos()));
        out.extend(omega.iter().map(|o| (b * o).sin()));
        out.extend(omega.iter().map(|o| (b * o).cos()));
    }
    out
}

/// 1-D sin-cos table of `n` positions (`P = D/2`): `[sin(iω), cos(iω)]`. Row-major `[n, D]`.
pub fn sincos_1d(n: usize, d: usize) -> Vec<f32> {
    let p = d / 2;
    let omega: Vec<f32> = (0..p)
        .map(|k| 1.0 / 10000f32.powf(k as f32 / p as f32))
        .collect();
    let mut out = Vec::with_capacity(n * d);
    for i in 0..n {
        let x = i as f32;
        out.extend(omega.iter().map(|o| (x * o).sin()));
        out.extend(omega.iter().map(|o| (x * o).cos()));
    }
    out
}

/// The ordinal token table of a `vocab`-token scalar modality: the sin-cos code of the bin rank
/// `[sin(π·u·f_j), cos(π·u·f_j)] / 2`, `u = k / V`, frequencies `f_j` spaced geometrically from
/// 1 to `V/4`, so that neighbouring bins start close together (see `train::init`).
pub fn ordinal_table(vocab: usize, d: usize) -> Vec<f32> {
    let half = d / 2;
    let top = (vocab as f64 / 4.0).max(1.0).ln();
    let freqs: Vec<f64> = (0..half)
        .map(|j| {
            let t = if half > 1 {
                j as f64 / (half - 1) as f64
            } else {
                0.0
            };
            std::f64::consts::PI * (t * top).exp()
        })
        .collect();
    let mut out = Vec::with_capacity(vocab * d);
    for k in 0..vocab {
        let u = k as f64 / vocab as f64;
        out.extend(freqs.iter().map(|f| (0.5 * (u * f).sin()) as f32));
        out.extend(freqs.iter().map(|f| (0.5 * (u * f).cos()) as f32));
        out.extend(std::iter::repeat_n(0.0, d - 2 * half));
    }
    out
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
