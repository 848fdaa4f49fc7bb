//! Which f32 GEMM `aion-search` uses: single-core throughput of `gemm` (both score layouts) and
//! `matrixmultiply` (what `ndarray`'s `dot` calls; both operand orders) on the search's shape,
//! a 1024-row tile of D = 768 rows against Q queries, interleaved, best of 3.
//!
//! `cargo run --release -p aion-app --example search_gemm_bench` (pin it to one core with
//! `taskset -c 0`; `MATMUL_NUM_THREADS=1` keeps matrixmultiply on one thread).
#![allow(unsafe_code, missing_docs)]

use std::time::Instant;

use aion_model::nn::sgemm::{Batched, matmul};

const D: usize = 768;
const T: usize = 1024;
const N: usize = 64 * T;

/// Mrows/s of one pass over the N rows with kernel `kind`.
fn run(kind: u8, x: &[f32], q: &[f32], nq: usize, c: &mut [f32]) -> f64 {
    let t0 = Instant::now();
    for tile in 0..N / T {
        let x = &x[tile * T * D..(tile + 1) * T * D];
        match kind {
            // gemm, scores row-major (one row's scores contiguous): aion-search's layout.
            0 => matmul(
                Batched::matrix(q, D, 1),
                Batched::matrix(x, 1, D),
                [nq, D, T],
                c,
                (1, nq),
            ),
            // gemm, scores query-major (one query's scores contiguous).
            1 => matmul(
                Batched::matrix(x, D, 1),
                Batched::matrix(q, 1, D),
                [T, D, nq],
                c,
                (1, T),
            ),
            _ => {
                let (b, q, c) = (x.as_ptr(), q.as_ptr(), c.as_mut_ptr());
                let (d, t, nq_) = (D as isize, T as isize, nq as isize);
                // SAFETY: every operand is large enough for the sizes and strides given (the
                // tile holds T rows, q holds nq rows, c holds T × nq values).
                unsafe {
                    if kind == 2 {
                        matrixmultiply::sgemm(T, D, nq, 1.0, b, d, 1, q, 1, d, 0.0, c, nq_, 1);
                    } else {
                        matrixmultiply::sgemm(nq, D, T, 1.0, q, d, 1, b, 1, d, 0.0, c, t, 1);
                    }
                }
            }
        }
    }
    N as f64 / t0.elapsed().as_secs_f64() / 1e6
}

fn main() {
    let mut rng = aion_model::rng::Rng::new(1, 0, 0);
    let x: Vec<f32> = (0..N * D).map(|_| rng.uniform() as f32 - 0.5).collect();
    println!("Mrows/s on one thread, tiles of {T} rows, D = {D}, best of 3 (interleaved)");
    println!(
        "{:>5} {:>14} {:>14} {:>16}",
        "Q", "gemm row-major", "gemm query-maj", "matrixmultiply"
    );
    for nq in [1usize, 2, 4, 8, 16, 32, 64, 128, 256] {
        let q = x[..nq * D].to_vec();
        let mut c = vec![0f32; T * nq];
        let mut best = [0f64; 4];
        for _ in 0..3 {
            for k in 0..4u8 {
                best[k as usize] = best[k as usize].max(run(k, &x, &q, nq, &mut c));
            }
        }
        println!(
            "{nq:>5} {:>14.2} {:>14.2} {:>16.2}",
            best[0],
            best[1],
            best[2].max(best[3])
        );
    }
}
