//! Training support for `aion-finetune` (feature `train`, which turns on burn's autodiff).
//!
//! - [`init`]: a model from scratch (random weights, sin-cos position tables, ordinal tables
//!   for scalar tokens), drawn by the same description of the weights that loads a released
//!   model ([`crate::weights::Initialiser`]), so its names are the Hub names.
//! - [`extend`]: new modalities added to an existing model directory, every stored tensor
//!   copied unchanged.
//! - [`objective`]: the 4M token-prediction loss (cross-entropy over target tokens, optionally
//!   with Gaussian soft labels for ordinal scalar tokens) and posteriors for evaluation.
//! - [`params`]: the trainable parameters of a module as one flat vector (values, gradients,
//!   write-back), so that MPI can all-reduce them and the optimiser state can be checkpointed
//!   and restored bit for bit.
//! - [`adamw`]: AdamW on that flat vector, warm-up + cosine schedule, global-norm clipping.

pub mod adamw;
pub mod extend;
pub mod init;
pub mod objective;
pub mod params;
