//! Codecs (tokenizers): raw survey data ⇄ discrete tokens.
//!
//! Port of `aion/codecs/` of `polymathic-aion` 0.0.2. One file per reference codec.

pub mod catalog;
pub mod image;
pub mod plausible;
pub mod scalar;
pub mod scalar_field;
pub mod scalar_fit;
pub mod spectrum;
