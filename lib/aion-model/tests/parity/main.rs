//! Parity with the reference package: every test compares against fixtures that
//! `validation/fixtures/<case>/make_fixture.py` generated with `polymathic-aion` 0.0.2.
//!
//! Each test runs on the CPU backend (NdArray) and, with `--features tch`, on LibTorch too.

mod common;

mod catalog_codec;
mod fourm;
mod fourm_base;
mod fourm_io;
mod fourm_loading;
mod generate;
mod image_codec;
mod image_codec_errors;
mod scalar_codec;
mod scalar_fit;
mod segmap_codec;
mod spectrum_codec;
