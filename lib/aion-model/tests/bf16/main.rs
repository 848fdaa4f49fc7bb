//! `--precision bf16` on LibTorch (CPU here; the same code runs on CUDA) against the float32
//! reference fixtures of `validation/fixtures/fourm`.
//!
//! A test binary of its own: burn keeps one default float type per device, shared by every
//! LibTorch element type, so bfloat16 and float32 models cannot share a process.

#![cfg(feature = "tch")]

#[path = "../parity/common.rs"]
mod common;

use aion_model::fourm::{Aion, TokenInput};
use aion_model::modality::by_token_key;
use burn::backend::libtorch::{LibTorch, LibTorchDevice};
use burn::tensor::{Bool, Int, Tensor, TensorData};
use common::{Fixture, fixtures_dir};

type Bf = LibTorch<half::bf16>;

/// Encoder inputs of the fixture, with its masks (so padded keys are exercised).
fn inputs(io: &mut Fixture, device: &LibTorchDevice) -> Vec<TokenInput<Bf>> {
    let keys = [
        "tok_image",
        "tok_spectrum_desi",
        "tok_flux_g",
        "catalog",
        "tok_xp_bp",
        "tok_ebv",
        "tok_z",
    ];
    keys.iter()
        .map(|key| {
            let (shape, ids) = io.i64(&format!("in.{key}.ids"));
            let dims = [shape[0], shape[1]];
            let (_, mask) = io.i64(&format!("in.{key}.mask"));
            let mask: Vec<bool> = mask.iter().map(|&m| m != 0).collect();
            let ids = Tensor::<Bf, 2, Int>::from_data(TensorData::new(ids, dims), device);
            let mask = Tensor::<Bf, 2, Bool>::from_data(TensorData::new(mask, dims), device);
            TokenInput::new(by_token_key(key).unwrap(), ids).with_mask(mask)
        })
        .collect()
}

/// Embeddings stay within bfloat16 accuracy of the float32 reference: relative L2 error per
/// row below 2 % (about 0.5 % is typical), all finite.
#[test]
fn bf16_embeddings_are_close_to_the_f32_reference() {
    let device = LibTorchDevice::Cpu;
    for variant in ["swiglu_qknorm_nobias", "gelu_bias"] {
        let dir = fixtures_dir().join("fourm").join(variant);
        let model = Aion::<Bf>::load(&dir, &device).unwrap_or_else(|e| panic!("{e}"));
        let mut io = Fixture::open("fourm", &format!("io_{variant}.safetensors"));
        let got: Vec<f32> = model
            .embed(&inputs(&mut io, &device))
            .into_data()
            .convert::<f32>()
            .to_vec()
            .unwrap();
        let (shape, want) = io.f32("embed.masked");
        let d = *shape.last().unwrap();
        assert_eq!(got.len(), want.len(), "{variant}: shape");
        for (r, (g, w)) in got.chunks(d).zip(want.chunks(d)).enumerate() {
            assert!(
                g.iter().all(|x| x.is_finite()),
                "{variant} row {r}: non-finite"
            );
            let err = g
                .iter()
                .zip(w)
                .map(|(a, b)| (a - b) * (a - b))
                .sum::<f32>()
                .sqrt();
            let norm = w.iter().map(|b| b * b).sum::<f32>().sqrt();
            eprintln!(
                "[bf16] {variant} row {r}: relative L2 error {:.2e}",
                err / norm
            );
            assert!(err / norm < 0.02, "{variant} row {r}: {} ≥ 2 %", err / norm);
        }
    }
}
