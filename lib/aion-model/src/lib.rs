//! AION-1 in burn: the codecs (tokenizers) and the 4M encoder–decoder transformer, with strict
//! loading of the reference's Hub weights (`config.json` + `model.safetensors`, one folder per
//! codec under `codecs/`).
//!
//! This crate knows nothing about MPI or HDF5: it builds and tests on any machine.
//!
//! References (cited by key in the code):
//! - **AION-1**: Parker et al., *AION-1: Omnimodal Foundation Model for Astronomical Sciences*,
//!   arXiv:2510.17960; reference package `polymathic-aion` 0.0.2 (MIT).
//! - **4M**: Mizrahi et al., *4M: Massively Multimodal Masked Modeling*, arXiv:2312.06647.
//! - **FSQ**: Mentzer et al., *Finite Scalar Quantization*, arXiv:2309.15505.
//! - **LFQ**: Yu et al., *Language Model Beats Diffusion* (MagViT-v2), arXiv:2310.05737.
//!
//! Module map:
//! - [`modality`]: the table of the 40 modalities (token keys, codecs, vocabularies, ids).
//! - [`weights`]: the one description of the weights ([`weights::Source`]): strict loading
//!   ([`weights::WeightFile`]), initialisation ([`weights::Initialiser`]), the names saving
//!   uses ([`weights::ParamNames`]).
//! - [`codecs`]: the codecs.
//! - [`config`]: the transformer's `config.json` ([`AionConfig`]).
//! - [`fourm`]: the 4M transformer ([`Aion`]).
//! - [`quantizers`]: quantizers shared by the codecs (FSQ).
//! - [`export`]: writing safetensors and a model's Hub state dict; [`fs`]: atomic writes and
//!   directory copies; [`rng`]: deterministic
//!   random numbers; [`lora`]: LoRA adapters; [`probe`]: probe heads on pooled embeddings;
//!   [`train`] (feature `train`): from-scratch initialisation, new modalities, the training
//!   objectives and optimiser of `aion-finetune`.
//! - [`hub`]: model directories as a whole: the Hub layout's file names ([`hub::layout`]),
//!   [`ModelDir`] (the transformer, codecs and checksummed files of one directory), a random
//!   full model, strict checks.

pub mod codecs;
pub mod config;
pub mod error;
pub mod export;
pub mod fourm;
pub mod fs;
pub mod hub;
pub mod lora;
pub mod modality;
pub mod nn;
pub mod probe;
pub mod quantizers;
pub mod rng;
#[cfg(feature = "train")]
pub mod train;
pub mod weights;

pub use config::AionConfig;
pub use error::{Error, Result};
pub use fourm::{Aion, DecoderMode, Encoded, TokenInput};
pub use hub::ModelDir;
