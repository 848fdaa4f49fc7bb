//! The f32 matrix product of the linear layers on CPUs, on the `gemm` crate's runtime-dispatched
//! AVX-512 / AVX2 kernels.
//!
//! Why not the backend's own: LibTorch's CPU matmul is MKL's, which on AMD processors takes its
//! non-AVX-512 path, and NdArray's is `matrixmultiply`. On the 2-core AMD EPYC (Zen 5) of our CI
//! a `[4640, 768] × [768, 3072]` product runs at 191 GFLOP/s in torch 2.9 (MKL), 124 GFLOP/s per
//! core in OpenBLAS, and 460 GFLOP/s here (docs/validation.md). The base model's linear layers
//! are ~88 % of its encoder's FLOPs.
#![allow(unsafe_code)]

/// `out = x · w (+ bias on every row)` for row-major `x [rows, d_in]`, `w [d_in, d_out]`,
/// `out [rows, d_out]`, on the current rayon pool's threads.
///
/// # Panics
/// If a slice's length does not match the dimensions (a caller bug, not an input error).
pub fn linear_rows(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    rows: usize,
    d_in: usize,
    d_out: usize,
    out: &mut [f32],
) {
    assert_eq!(x.len(), rows * d_in, "linear: x is not [rows, d_in]");
    assert_eq!(w.len(), d_in * d_out, "linear: w is not [d_in, d_out]");
    assert_eq!(out.len(), rows * d_out, "linear: out is not [rows, d_out]");
    match bias {
        Some(b) => {
            assert_eq!(b.len(), d_out, "linear: bias is not [d_out]");
            for row in out.chunks_exact_mut(d_out.max(1)) {
                row.copy_from_slice(b);
            }
        }
        None => out.fill(0.0),
    }
    if rows == 0 || d_out == 0 || d_in == 0 {
        return;
    }
    let threads = rayon::current_num_threads();
    // Below ~1 MFLOP the fork-join costs more than it saves.
    let parallelism = if threads > 1 && rows * d_in * d_out >= 1 << 19 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the three buffers are valid for the lengths asserted above, `out` is exclusively
    // borrowed and does not alias `x` or `w` (shared borrows), and the strides describe
    // row-major `[rows, d_out]`, `[rows, d_in]` and `[d_in, d_out]` matrices within them.
    unsafe {
        gemm::gemm(
            rows,
            d_out,
            d_in,
            out.as_mut_ptr(),
            1,              // dst column stride
            d_out as isize, // dst row stride
            true,           // accumulate onto the bias (or zeros) already in `out`
            x.as_ptr(),
            1,
            d_in as isize,
            w.as_ptr(),
            1,
            d_out as isize,
            1.0, // dst := 1·dst + 1·(x·w)
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// A batch of matrices inside a slice: element `(p, i, j)` is at
/// `p·batch + i·row + j·col` (strides in elements, all non-negative).
#[derive(Debug, Clone, Copy)]
pub struct Batched<'a> {
    /// The elements, from `(0, 0, 0)` to at least the last one addressed.
    pub data: &'a [f32],
    /// Stride between matrices.
    pub batch: usize,
    /// Stride between rows.
    pub row: usize,
    /// Stride between columns.
    pub col: usize,
}

impl Batched<'_> {
    /// Whether `[p, rows, cols]` with these strides stays inside `data`.
    fn covers(&self, p: usize, rows: usize, cols: usize) -> bool {
        if p == 0 || rows == 0 || cols == 0 {
            return true;
        }
        let last = (p - 1) * self.batch + (rows - 1) * self.row + (cols - 1) * self.col;
        last < self.data.len()
    }
}

/// `out[p] = a[p] · b[p]` for `a [P, n, k]`, `b [P, k, m]` (any strides), `out [P, n, m]`
/// row-major; the matrices are spread over the rayon pool, one thread each.
///
/// # Panics
/// If a view does not cover its shape or `out` is not `P·n·m` long (caller bugs).
pub fn bmm(
    a: Batched<'_>,
    b: Batched<'_>,
    p: usize,
    n: usize,
    k: usize,
    m: usize,
    out: &mut [f32],
) {
    use rayon::prelude::*;
    assert!(a.covers(p, n, k), "bmm: a does not cover [{p}, {n}, {k}]");
    assert!(b.covers(p, k, m), "bmm: b does not cover [{p}, {k}, {m}]");
    assert_eq!(out.len(), p * n * m, "bmm: out is not [P, n, m]");
    if out.is_empty() {
        return;
    }
    if k == 0 {
        out.fill(0.0);
        return;
    }
    out.par_chunks_mut(n * m).enumerate().for_each(|(i, dst)| {
        // SAFETY: `covers` checked that every element of a[i] and b[i] addressed by the strides
        // lies inside the borrowed slices; `dst` is this matrix's exclusive `n·m` chunk of `out`,
        // row-major; `read_dst` is false, so its previous contents are not read.
        unsafe {
            gemm::gemm(
                n,
                m,
                k,
                dst.as_mut_ptr(),
                1,
                m as isize,
                false,
                a.data.as_ptr().add(i * a.batch),
                a.col as isize,
                a.row as isize,
                b.data.as_ptr().add(i * b.batch),
                b.col as isize,
                b.row as isize,
                0.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bmm_of_strided_views_matches_a_naive_product() {
        let (p, n, k, m) = (3, 5, 4, 6);
        let a: Vec<f32> = (0..p * n * k).map(|i| (i % 7) as f32 - 3.0).collect();
        // b stored transposed, [P, m, k]: b[p](kk, j) at p·m·k + j·k + kk.
        let b: Vec<f32> = (0..p * m * k).map(|i| (i % 5) as f32 * 0.5).collect();
        let av = Batched {
            data: &a,
            batch: n * k,
            row: k,
            col: 1,
        };
        let bv = Batched {
            data: &b,
            batch: m * k,
            row: 1,
            col: k,
        };
        let mut out = vec![f32::NAN; p * n * m];
        bmm(av, bv, p, n, k, m, &mut out);
        for q in 0..p {
            for i in 0..n {
                for j in 0..m {
                    let want: f32 = (0..k)
                        .map(|kk| a[q * n * k + i * k + kk] * b[q * m * k + j * k + kk])
                        .sum();
                    assert_eq!(out[q * n * m + i * m + j], want, "[{q},{i},{j}]");
                }
            }
        }
    }

    #[test]
    fn matches_a_naive_product_with_and_without_bias() {
        // Sizes on both sides of the threading threshold, non-multiples of the kernel tiles.
        for (rows, d_in, d_out) in [(3, 5, 7), (37, 129, 131), (1, 1, 1), (0, 4, 4)] {
            let x: Vec<f32> = (0..rows * d_in)
                .map(|i| ((i * 7 % 13) as f32 - 6.0) / 5.0)
                .collect();
            let w: Vec<f32> = (0..d_in * d_out)
                .map(|i| ((i * 5 % 11) as f32 - 5.0) / 3.0)
                .collect();
            let b: Vec<f32> = (0..d_out).map(|i| i as f32 * 0.25 - 1.0).collect();
            for bias in [None, Some(b.as_slice())] {
                let mut out = vec![f32::NAN; rows * d_out];
                linear_rows(&x, &w, bias, rows, d_in, d_out, &mut out);
                for r in 0..rows {
                    for o in 0..d_out {
                        let mut want = bias.map_or(0.0, |b| b[o] as f64);
                        for i in 0..d_in {
                            want += x[r * d_in + i] as f64 * w[i * d_out + o] as f64;
                        }
                        let got = out[r * d_out + o] as f64;
                        assert!(
                            (got - want).abs() <= 1e-4 * (1.0 + want.abs()),
                            "{rows}x{d_in}x{d_out} [{r},{o}]: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }
}
