//! The `validation/fixtures/fourm` cases: model directories, fixture files and token inputs.
//! Shared by the parity tests and the bf16 test binary (`tests/bf16`).

#![allow(dead_code)]

use std::ops::Range;
use std::path::PathBuf;

use aion_model::fourm::{Aion, TokenInput};
use aion_model::modality::{ModalityInfo, by_token_key};
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Int, Tensor, TensorData};

use crate::common::{Fixture, fixtures_dir};

/// Encoder input order of the fixture (dict insertion order in the reference).
pub(crate) const ENCODE_KEYS: [&str; 7] = [
    "tok_image",
    "tok_spectrum_desi",
    "tok_flux_g",
    "catalog",
    "tok_xp_bp",
    "tok_ebv",
    "tok_z",
];
/// Inputs of the fixture's `predict.z*` / `predict.ebv` cases.
pub(crate) const PREDICT_KEYS: [&str; 5] = [
    "tok_image",
    "tok_spectrum_desi",
    "tok_flux_g",
    "catalog",
    "tok_xp_bp",
];
pub(crate) const ROWS: usize = 3;

pub(crate) fn modality(key: &str) -> &'static ModalityInfo {
    by_token_key(key).unwrap_or_else(|| panic!("unknown modality {key}"))
}

pub(crate) fn hub_dir(variant: &str) -> PathBuf {
    fixtures_dir().join("fourm").join(variant)
}

pub(crate) fn io(variant: &str) -> Fixture {
    Fixture::open("fourm", &format!("io_{variant}.safetensors"))
}

pub(crate) fn load<B: Backend>(variant: &str, device: &B::Device) -> Aion<B> {
    Aion::load(&hub_dir(variant), device).unwrap_or_else(|e| panic!("{e}"))
}

/// Token inputs of the fixture for `keys`, rows `rows`, with or without the fixture's masks.
pub(crate) fn inputs<B: Backend>(
    io: &mut Fixture,
    keys: &[&str],
    masked: bool,
    rows: Range<usize>,
    device: &B::Device,
) -> Vec<TokenInput<B>> {
    keys.iter()
        .map(|key| {
            let (shape, ids) = io.i64(&format!("in.{key}.ids"));
            let n = shape[1];
            let pick = |v: &[i64]| v[rows.start * n..rows.end * n].to_vec();
            let dims = [rows.len(), n];
            let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(pick(&ids), dims), device);
            let mut input = TokenInput::new(modality(key), ids);
            if masked {
                let (_, mask) = io.i64(&format!("in.{key}.mask"));
                let mask: Vec<bool> = pick(&mask).iter().map(|&m| m != 0).collect();
                let mask = Tensor::<B, 2, Bool>::from_data(TensorData::new(mask, dims), device);
                input = input.with_mask(mask);
            }
            input
        })
        .collect()
}
