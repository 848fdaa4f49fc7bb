//! Generation of one target modality's tokens: MaskGIT, ROAR and single-pass decoding.
//!
//! Port of `aion/fourm/generate.py::GenerationSampler` (polymathic-aion 0.0.2, from 4M) for one
//! image-type target (every AION modality but the catalog), without classifier-free guidance:
//!
//! * **State**: the target's tokens, each either revealed or still masked (at the start all are
//!   masked: `init_empty_target_modality`).
//! * **Encoder** (`forward_mask_encoder_generation`): the conditioning inputs *and the revealed
//!   target tokens* (when the target is also an input modality of the model) are encoded together;
//!   masked tokens are moved to the end and cut at the largest valid count of the batch.
//! * **Decoder** (`forward_mask_decoder_maskgit` / `_roar`): one query per position to predict
//!   (mask token + the position's embedding), with **unmasked self-attention among those
//!   queries** (`forward_decoder(…, None)`) — unlike `AION.forward`, whose all-true mask reduces
//!   the self-attention to a mean of values (aion-spec §3.5).
//! * **MaskGIT step** (`maskgit_step_batched`): every masked position is decoded and one token
//!   sampled at each; the `k` positions whose sampled token had the highest probability are
//!   revealed (ties: lowest position first).
//! * **ROAR step** (`roar_step_batched`): `k` masked positions chosen in random order are
//!   decoded together and all revealed.
//! * **Single pass**: one step that reveals everything (MaskGIT and ROAR coincide).
//!
//! Token draws come from a [`Draws`] source (a uniform number per (row, step, position) and a
//! random key per position for ROAR's order) instead of torch's global generator:
//! [`SeededDraws`] derives them from (run seed, object id, sample index, step, position), so an
//! object's samples are the same whatever the batch, the rank count or a resume. The sampling
//! itself ([`sampling`]) is the reference's: argmax at temperature 0, else top-k / top-p
//! filtering, softmax at the temperature, one categorical draw (by inverse CDF).
//!
//! The rows of a batch move in lockstep (same number of tokens revealed per step), as in the
//! reference's batched sampler.

mod rng;
pub mod sampling;
mod schedule;

use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Int, Tensor, TensorData};

pub use rng::{SeededDraws, hash_words, unit};
pub use sampling::Filter;
pub use schedule::{
    Schedule, Scheme, Step, TemperatureSchedule, TokenSchedule, cosine_schedule, linear_schedule,
    linear_temperatures, onex_temperatures,
};

use super::embeddings::ModalityEmbedding;
use super::model::standard_layout;
use super::{Aion, TokenInput};
use crate::error::{Error, Result};
use crate::modality::{Modality, ModalityInfo, TokenLayout};

/// Where the random numbers of a generation come from. Rows are the batch rows given to
/// [`Aion::generate`]; steps index the schedule (steps revealing nothing included); positions
/// are the target's token positions.
pub trait Draws {
    /// Uniform number in [0, 1) for the token drawn at `position` of `row` in `step`.
    fn token_uniform(&self, row: usize, step: usize, position: usize) -> f64;
    /// ROAR: the positions of `row` still masked at `step` are decoded in increasing order of
    /// this key (ties: lowest position first).
    fn order_key(&self, row: usize, step: usize, position: usize) -> f64;
}

/// The result of a generation: per row, the target's tokens and the step that revealed each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generated {
    /// Row-major `[rows, tokens]` token ids.
    pub tokens: Vec<i64>,
    /// Row-major `[rows, tokens]`: index of the schedule step that revealed the token.
    pub step: Vec<u32>,
    /// Tokens per row.
    pub per_row: usize,
}

/// Logit bytes pulled to the host at a time.
const LOGIT_BLOCK_BYTES: usize = 64 << 20;

impl<B: Backend> Aion<B> {
    /// Checks a generation request: `target` has a decoder head, is of grid type (the catalog
    /// would need autoregressive decoding, not implemented), and is not among the inputs.
    pub fn check_generation_target(
        &self,
        target: &ModalityInfo,
        inputs: &[TokenInput<B>],
    ) -> Result<()> {
        let key = &*target.token_key;
        if matches!(target.layout, TokenLayout::Sequence { .. }) {
            return Err(Error::Input(format!(
                "{key} is a sequence modality: it would need autoregressive generation, which \
                 is not implemented"
            )));
        }
        if self.output_embedding(target).is_none() {
            return Err(Error::Input(format!(
                "{key} is not an output of this model (domains_out: {})",
                self.config().domains_out.join(", ")
            )));
        }
        if inputs.iter().any(|i| i.modality.token_key == key) {
            return Err(Error::Input(format!(
                "{key} is both the target and an input"
            )));
        }
        Ok(())
    }

    /// Generates the `target` tokens of every row of `inputs` with `schedule`.
    ///
    /// # Shapes
    /// inputs `[B, N_m]` `->` `[B, N_target]` tokens (row-major)
    pub fn generate(
        &self,
        inputs: &[TokenInput<B>],
        target: impl Into<Modality>,
        schedule: &Schedule,
        filter: Filter,
        draws: &impl Draws,
    ) -> Result<Generated> {
        let target = target.into();
        self.check_inputs(inputs)?;
        self.check_generation_target(&target, inputs)?;
        let n = target.num_tokens();
        if schedule.total() != n {
            return Err(Error::Input(format!(
                "the schedule reveals {} tokens, {} has {n}",
                schedule.total(),
                target.token_key
            )));
        }
        let mut state = TargetState::new(target, inputs[0].ids.dims()[0]);
        let mut cache = None;
        for (s, step) in schedule.steps.iter().enumerate() {
            let take = step.tokens.min(n - state.revealed_per_row);
            if take == 0 {
                continue;
            }
            let positions = match schedule.scheme {
                Scheme::MaskGit => state.masked_positions(),
                Scheme::Roar => state.random_positions(take, s, draws),
            };
            let m = positions.len() / state.rows;
            let logits = self.target_logits(inputs, &state, &positions, &mut cache)?;
            let picks = sample_rows(logits, &positions, m, s, step.temperature, filter, draws);
            for r in 0..state.rows {
                let row = &picks[r * m..(r + 1) * m];
                let chosen: Vec<&Pick> = match schedule.scheme {
                    Scheme::Roar => row.iter().collect(),
                    Scheme::MaskGit => {
                        let mut order: Vec<&Pick> = row.iter().collect();
                        order.sort_by(|a, b| {
                            b.prob
                                .partial_cmp(&a.prob)
                                .unwrap_or(std::cmp::Ordering::Equal)
                                .then(a.position.cmp(&b.position))
                        });
                        order.truncate(take);
                        order
                    }
                };
                for p in chosen {
                    state.reveal(r, p.position, p.token, s);
                }
            }
            state.revealed_per_row += take;
        }
        Ok(Generated {
            tokens: state.tokens,
            step: state.step,
            per_row: n,
        })
    }

    /// The target logits at `positions` (row-major `[B, m]`), given the revealed tokens of
    /// `state`: one encoder + decoder pass of the sampler. The encoder pass is cached in `cache`
    /// when the target is not an input modality (its revealed tokens then never change it).
    ///
    /// # Shapes
    /// `-> [B, m, V]`
    fn target_logits(
        &self,
        inputs: &[TokenInput<B>],
        state: &TargetState,
        positions: &[usize],
        cache: &mut Option<Context<B>>,
    ) -> Result<Tensor<B, 3>> {
        let head = self
            .output_embedding(&state.target)
            .expect("checked: decoder head");
        let context = match cache {
            Some(c) => c.clone(),
            None => {
                let c = self.generation_context(inputs, state)?;
                if self.input_embedding(&state.target).is_none() {
                    *cache = Some(c.clone());
                }
                c
            }
        };
        let y = self.decode_positions(head, &context, positions, state.rows);
        Ok(head.logits(y))
    }

    /// The encoder pass of a step: the inputs plus the revealed target tokens (if the target is
    /// an input modality), cut at the largest valid token count of the batch.
    fn generation_context(
        &self,
        inputs: &[TokenInput<B>],
        state: &TargetState,
    ) -> Result<Context<B>> {
        let device = inputs[0].ids.device();
        let mut all = inputs.to_vec();
        if self.input_embedding(&state.target).is_some() && state.revealed_per_row > 0 {
            let dims = [state.rows, state.target.num_tokens()];
            let ids = Tensor::<B, 2, Int>::from_data(
                TensorData::new(state.tokens.clone(), dims),
                &device,
            );
            let masked: Vec<bool> = state.step.iter().map(|&s| s == UNREVEALED).collect();
            let mask = Tensor::<B, 2, Bool>::from_data(TensorData::new(masked, dims), &device);
            all.push(TokenInput::new(&state.target, ids).with_mask(mask));
        }
        let keep = valid_counts(&all).into_iter().max().unwrap_or(1).max(1);
        let (enc, bias) = self.encode_biased(&all, Some(keep))?;
        Ok(Context {
            context: enc.context,
            bias,
        })
    }

    /// Decoder pass over the queries at `positions` (row-major `[B, m]`), with full
    /// self-attention among them and cross-attention to the context.
    ///
    /// # Shapes
    /// `-> [B, m, D]` (after `decoder_norm`)
    fn decode_positions(
        &self,
        head: &ModalityEmbedding<B>,
        ctx: &Context<B>,
        positions: &[usize],
        rows: usize,
    ) -> Tensor<B, 3> {
        let device = ctx.context.device();
        let m = positions.len() / rows;
        let queries = head.decoder_queries().squeeze_dim::<2>(0);
        let ids: Vec<i64> = positions.iter().map(|&p| p as i64).collect();
        let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [rows, m]), &device);
        let q = burn::tensor::module::embedding(queries, ids);
        let mut y = standard_layout(self.mask_token.val() + q);
        for blk in &self.decoder {
            y = y.clone() + blk.self_attn.forward(blk.norm1.forward(y), None);
            let context = blk.context_norm.forward(ctx.context.clone());
            y = y.clone()
                + blk
                    .cross_attn
                    .forward(blk.query_norm.forward(y), context, ctx.bias.clone());
            y = y.clone() + blk.mlp.forward(blk.norm2.forward(y));
        }
        self.decoder_norm.forward(y)
    }

    /// Logits of one sampler pass, for tests against the reference: the target tokens of
    /// `revealed` (row-major `[B, N]`, `None` = nothing revealed yet; masked entries are
    /// `None`) condition the encoder, and the decoder predicts `positions` (row-major `[B, m]`).
    ///
    /// # Shapes
    /// `-> [B, m, V]`
    pub fn generation_logits(
        &self,
        inputs: &[TokenInput<B>],
        target: impl Into<Modality>,
        revealed: &[Option<i64>],
        positions: &[usize],
    ) -> Result<Tensor<B, 3>> {
        let target = target.into();
        self.check_inputs(inputs)?;
        self.check_generation_target(&target, inputs)?;
        let rows = inputs[0].ids.dims()[0];
        let mut state = TargetState::new(target, rows);
        if !revealed.is_empty() {
            let per_row: Vec<usize> = revealed
                .chunks(state.target.num_tokens())
                .map(|r| r.iter().flatten().count())
                .collect();
            if revealed.len() != state.tokens.len() || per_row.iter().any(|&c| c != per_row[0]) {
                return Err(Error::Input(
                    "revealed tokens must be [B, N] with the same count in every row".into(),
                ));
            }
            for (i, t) in revealed.iter().enumerate() {
                if let Some(t) = t {
                    state.tokens[i] = *t;
                    state.step[i] = 0;
                }
            }
            state.revealed_per_row = per_row[0];
        }
        if !positions.len().is_multiple_of(rows) {
            return Err(Error::Input("positions must be [B, m]".into()));
        }
        self.target_logits(inputs, &state, positions, &mut None)
    }
}

/// The encoder output a decoder pass attends to.
#[derive(Clone)]
struct Context<B: Backend> {
    context: Tensor<B, 3>,
    bias: Option<Tensor<B, 4>>,
}

/// Marks a position not yet revealed in [`TargetState::step`].
const UNREVEALED: u32 = u32::MAX;

/// The target being generated: tokens and the step that revealed each.
struct TargetState {
    target: Modality,
    rows: usize,
    tokens: Vec<i64>,
    step: Vec<u32>,
    revealed_per_row: usize,
}

impl TargetState {
    fn new(target: Modality, rows: usize) -> Self {
        let n = target.num_tokens();
        Self {
            target,
            rows,
            tokens: vec![0; rows * n],
            step: vec![UNREVEALED; rows * n],
            revealed_per_row: 0,
        }
    }

    /// Every masked position of every row, ascending (MaskGIT's decoder order).
    fn masked_positions(&self) -> Vec<usize> {
        let n = self.target.num_tokens();
        (0..self.rows)
            .flat_map(|r| (0..n).filter(move |&p| self.step[r * n + p] == UNREVEALED))
            .collect()
    }

    /// `take` masked positions per row in increasing order of their random key (ROAR).
    fn random_positions(&self, take: usize, step: usize, draws: &impl Draws) -> Vec<usize> {
        let n = self.target.num_tokens();
        let mut out = Vec::with_capacity(self.rows * take);
        for r in 0..self.rows {
            let mut keyed: Vec<(f64, usize)> = (0..n)
                .filter(|&p| self.step[r * n + p] == UNREVEALED)
                .map(|p| (draws.order_key(r, step, p), p))
                .collect();
            keyed.sort_by(|a, b| {
                a.0.partial_cmp(&b.0)
                    .unwrap_or(std::cmp::Ordering::Equal)
                    .then(a.1.cmp(&b.1))
            });
            out.extend(keyed.into_iter().take(take).map(|(_, p)| p));
        }
        out
    }

    fn reveal(&mut self, row: usize, position: usize, token: i64, step: usize) {
        let i = row * self.target.num_tokens() + position;
        self.tokens[i] = token;
        self.step[i] = step as u32;
    }
}

/// One decoded position of a row: the token drawn and its probability.
struct Pick {
    position: usize,
    token: i64,
    prob: f32,
}

/// Draws a token at every decoded position (row-major `[B, m]`), pulling the logits to the host
/// in blocks of rows.
fn sample_rows<B: Backend>(
    logits: Tensor<B, 3>,
    positions: &[usize],
    m: usize,
    step: usize,
    temperature: f64,
    filter: Filter,
    draws: &impl Draws,
) -> Vec<Pick> {
    let [rows, _, v] = logits.dims();
    let block = (LOGIT_BLOCK_BYTES / (4 * m * v).max(1)).clamp(1, rows.max(1));
    let mut out = Vec::with_capacity(rows * m);
    for start in (0..rows).step_by(block) {
        let len = block.min(rows - start);
        let host: Vec<f32> = logits
            .clone()
            .narrow(0, start, len)
            .into_data()
            .convert::<f32>()
            .to_vec()
            .expect("f32 logits");
        for (i, l) in host.chunks(v).enumerate() {
            let (r, j) = (start + i / m, i % m);
            let position = positions[r * m + j];
            let u = draws.token_uniform(r, step, position);
            let (token, prob) = sampling::sample(l, temperature, filter, u);
            out.push(Pick {
                position,
                token: token as i64,
                prob,
            });
        }
    }
    out
}

/// Per row, the number of tokens the encoder will attend to.
fn valid_counts<B: Backend>(inputs: &[TokenInput<B>]) -> Vec<usize> {
    let rows = inputs[0].ids.dims()[0];
    let mut counts = vec![0usize; rows];
    for inp in inputs {
        let n = inp.ids.dims()[1];
        match &inp.mask {
            None => counts.iter_mut().for_each(|c| *c += n),
            Some(mask) => {
                let m: Vec<bool> = mask
                    .clone()
                    .into_data()
                    .convert::<bool>()
                    .to_vec()
                    .expect("bool mask");
                for (r, row) in m.chunks(n).enumerate() {
                    counts[r] += row.iter().filter(|&&x| !x).count();
                }
            }
        }
    }
    counts
}
