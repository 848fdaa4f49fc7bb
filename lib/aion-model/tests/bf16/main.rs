//! `--precision bf16` on LibTorch (CPU here; the same code runs on CUDA) against the float32
//! reference fixtures of `validation/fixtures/fourm`.
//!
//! A test binary of its own: burn keeps one default float type per device, shared by every
//! LibTorch element type, so bfloat16 and float32 models cannot share a process.

#![cfg(feature = "tch")]

#[path = "../parity/common.rs"]
mod common;
#[path = "../parity/fourm_io.rs"]
mod fourm_io;

use burn::backend::libtorch::LibTorch;
use fourm_io::{ENCODE_KEYS, ROWS, inputs, io, load};

type Bf = LibTorch<half::bf16>;

/// Embeddings stay within bfloat16 accuracy of the float32 reference: relative L2 error per
/// row below 2 % (about 0.5 % is typical), all finite.
#[test]
fn bf16_embeddings_are_close_to_the_f32_reference() {
    let device = common::tch_device();
    for variant in ["swiglu_qknorm_nobias", "gelu_bias"] {
        let (model, mut io) = (load::<Bf>(variant, &device), io(variant));
        // With the fixture's masks, so padded keys are exercised.
        let got: Vec<f32> = model
            .embed(&inputs(&mut io, &ENCODE_KEYS, true, 0..ROWS, &device))
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
