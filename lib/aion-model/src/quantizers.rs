//! Quantizers shared by the codecs: continuous latents ⇄ integer tokens.
//!
//! - [`fsq`]: finite scalar quantization (image and segmentation-map codecs).

pub mod fsq;

pub use fsq::Fsq;
