//! Times [`Aion::encode`] on a Hub folder, to compare with `validation/bench_encode.py`.
//!
//! `cargo run --release -p aion-model --example bench_encode -- DIR [BATCH] [REPEAT]`
//!
//! Inputs: image (576) + DESI spectrum (273) + g flux (1) = 850 tokens per object, pseudo-random
//! ids, no masks, every token kept.

use std::path::PathBuf;
use std::time::Instant;

use aion_model::modality::by_token_key;
use aion_model::{Aion, TokenInput};
use burn::backend::NdArray;
use burn::tensor::{Int, Tensor, TensorData};

type B = NdArray<f32>;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = PathBuf::from(
        args.first()
            .expect("usage: bench_encode DIR [BATCH] [REPEAT]"),
    );
    let batch: usize = args.get(1).map_or(4, |s| s.parse().expect("BATCH"));
    let repeat: usize = args.get(2).map_or(3, |s| s.parse().expect("REPEAT"));
    let device = Default::default();
    let t = Instant::now();
    let model = Aion::<B>::load(&dir, &device).unwrap_or_else(|e| panic!("{e}"));
    println!("loaded in {:.1} s", t.elapsed().as_secs_f64());
    let mut state = 12345u64;
    let mut input = |key: &str| {
        let m = by_token_key(key).unwrap();
        let n = m.num_tokens();
        let ids: Vec<i64> = (0..batch * n)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 33) % m.vocab as u64) as i64
            })
            .collect();
        let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [batch, n]), &device);
        TokenInput::new(m, ids)
    };
    let inputs = [
        input("tok_image"),
        input("tok_spectrum_desi"),
        input("tok_flux_g"),
    ];
    let mut times = Vec::new();
    for _ in 0..=repeat {
        let (t, cpu) = (Instant::now(), cpu_seconds());
        let enc = model.encode(&inputs, None).unwrap();
        let values: Vec<f32> = enc.context.into_data().to_vec().unwrap();
        assert!(values.iter().all(|v| v.is_finite()));
        times.push(format!(
            "{:.2} s ({:.2} s CPU)",
            t.elapsed().as_secs_f64(),
            cpu_seconds() - cpu
        ));
    }
    println!("burn NdArray, B={batch}, 850 tokens: {}", times.join(", "));
}

/// User + system CPU time of this process (Linux `/proc/self/stat`, 100 ticks per second);
/// on a shared machine it varies less than wall time.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_name = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (tick(11) + tick(12)) / 100.0
}
