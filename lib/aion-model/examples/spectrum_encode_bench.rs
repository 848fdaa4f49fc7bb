//! Times `SpectrumCodec::encode` on a batch of DESI-sized spectra (CPU, NdArray backend).
//!
//! ```text
//! validation/.venv/bin/python validation/bench/spectrum_full_random.py /tmp/aion-spectrum-full
//! cargo run --release -p aion-model --example spectrum_encode_bench -- /tmp/aion-spectrum-full [batch] [iters]
//! ```
//! The codec folder holds `config.json` + `model.safetensors` (any configuration; the script
//! above writes the released-size one with random weights). Inputs are synthetic DESI-like
//! spectra on 3600–9824 Å at 0.8 Å (7781 px). Prints the first tokens and a checksum per row (compare with the script's output), then
//! the wall and CPU time of each encode after one warm-up.

use std::path::PathBuf;
use std::time::Instant;

use aion_model::codecs::spectrum::{SpectrumCodec, SpectrumRow};

type B = burn::backend::NdArray<f32>;

/// User + system CPU seconds of this process (Linux `/proc/self/stat`; 0 elsewhere).
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    let f: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(
        args.next()
            .expect("usage: spectrum_encode_bench DIR [batch] [iters]"),
    );
    let batch: usize = args.next().map_or(4, |s| s.parse().expect("batch"));
    let iters: usize = args.next().map_or(3, |s| s.parse().expect("iters"));
    let device = Default::default();
    let t0 = Instant::now();
    let codec = SpectrumCodec::<B>::load(&dir, &device).unwrap_or_else(|e| panic!("{e}"));
    println!("load: {:.2} s", t0.elapsed().as_secs_f64());
    let n = 7781;
    let wl: Vec<f32> = (0..n).map(|i| 3600.0 + 0.8 * i as f32).collect();
    let rows: Vec<(Vec<f32>, Vec<f32>, Vec<bool>)> = (0..batch)
        .map(|b| {
            let flux = (0..n)
                .map(|i| 2.0 + (b as f32 + 1.0) * ((i as f32) * 0.01).sin())
                .collect();
            (flux, vec![4.0; n], vec![false; n])
        })
        .collect();
    let spectra: Vec<SpectrumRow<'_>> = rows
        .iter()
        .map(|(f, iv, m)| SpectrumRow {
            flux: f,
            ivar: iv,
            mask: m,
            wavelength: &wl,
        })
        .collect();
    let warm = codec.encode(&spectra).unwrap();
    let t = codec.num_tokens();
    let all: Vec<i64> = warm.into_data().convert::<i64>().to_vec().unwrap();
    for (b, row) in all.chunks(t).enumerate() {
        let weighted: i64 = row
            .iter()
            .enumerate()
            .map(|(i, &v)| (i as i64 + 1) * v)
            .sum();
        println!(
            "row {b}: first tokens {:?}, Σ (i+1)·token = {weighted}",
            &row[..6]
        );
    }
    for _ in 0..iters {
        let (t, c) = (Instant::now(), cpu_seconds());
        let tokens = codec.encode(&spectra).unwrap();
        let _: Vec<i64> = tokens.into_data().convert::<i64>().to_vec().unwrap();
        println!(
            "encode B={batch}: wall {:.3} s, cpu {:.2} s",
            t.elapsed().as_secs_f64(),
            cpu_seconds() - c
        );
    }
}
