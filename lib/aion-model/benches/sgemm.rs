//! Throughput of the f32 GEMM behind the linear layers and attention (`nn::sgemm`).
//!
//! `cargo bench -p aion-model --bench sgemm -- [THREADS]` prints one JSON line: GFLOP/s of a
//! 4096³ product and of the base model's widest linear layer (8 rows × 580 tokens, 768 → 3072),
//! on THREADS rayon threads (default: all cores). `validation/bench_embed.py` quotes it as the
//! sgemm peak that our encoder's FLOP/s are a fraction of.

use std::time::Instant;

use aion_model::nn::sgemm::linear_rows;

fn gflops(rows: usize, d_in: usize, d_out: usize) -> f64 {
    let x: Vec<f32> = (0..rows * d_in).map(|i| (i % 17) as f32 * 0.01).collect();
    let w: Vec<f32> = (0..d_in * d_out).map(|i| (i % 13) as f32 * 0.01).collect();
    let mut out = vec![0f32; rows * d_out];
    for _ in 0..2 {
        linear_rows(&x, &w, None, rows, d_in, d_out, &mut out);
    }
    let reps = 5;
    let t = Instant::now();
    for _ in 0..reps {
        linear_rows(&x, &w, None, rows, d_in, d_out, &mut out);
    }
    let s = t.elapsed().as_secs_f64() / reps as f64;
    std::hint::black_box(&out);
    2.0 * (rows * d_in * d_out) as f64 / s / 1e9
}

fn main() {
    let threads = std::env::args()
        .skip(1)
        .find_map(|a| a.parse::<usize>().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .expect("the first rayon pool of this process");
    let big = gflops(4096, 4096, 4096);
    let linear = gflops(8 * 580, 768, 3072);
    println!(
        "{{\"threads\": {threads}, \"gflops_4096\": {big:.1}, \"gflops_linear_4640x768x3072\": {linear:.1}}}"
    );
}
