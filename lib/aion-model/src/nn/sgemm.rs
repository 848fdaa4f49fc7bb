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

impl<'a> Batched<'a> {
    /// A single matrix: element `(i, j)` at `i·row + j·col`.
    pub fn matrix(data: &'a [f32], row: usize, col: usize) -> Self {
        Self {
            data,
            batch: 0,
            row,
            col,
        }
    }

    /// Matrix `p` of the batch.
    fn at(&self, p: usize) -> Batched<'a> {
        Self::matrix(
            &self.data[(p * self.batch).min(self.data.len())..],
            self.row,
            self.col,
        )
    }

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
    out.par_chunks_mut(n * m)
        .enumerate()
        .for_each(|(i, dst)| matmul(a.at(i), b.at(i), [n, k, m], dst, (m, 1)));
}

/// `dst = a · b` for one `[n, k] × [k, m]` product (`dims = [n, k, m]`) of strided matrices
/// ([`Batched::matrix`]), on this thread; element `(i, j)` of `dst` goes to
/// `dst[i·dst_strides.0 + j·dst_strides.1]` (the others are left as they are).
///
/// # Panics
/// If a matrix, or `dst` with its strides, does not cover its shape (caller bugs).
pub fn matmul(
    a: Batched<'_>,
    b: Batched<'_>,
    dims: [usize; 3],
    dst: &mut [f32],
    dst_strides: (usize, usize),
) {
    let [n, k, m] = dims;
    let out = Batched::matrix(dst, dst_strides.0, dst_strides.1);
    assert!(a.covers(1, n, k), "matmul: a does not cover [{n}, {k}]");
    assert!(b.covers(1, k, m), "matmul: b does not cover [{k}, {m}]");
    assert!(out.covers(1, n, m), "matmul: dst does not cover [{n}, {m}]");
    if n == 0 || m == 0 {
        return;
    }
    if k == 0 {
        for i in 0..n {
            for j in 0..m {
                dst[i * dst_strides.0 + j * dst_strides.1] = 0.0;
            }
        }
        return;
    }
    // SAFETY: `covers` checked that every element of a, b and dst addressed by the strides lies
    // inside the borrowed slices; `dst` is borrowed exclusively, so nothing aliases it; `read_dst`
    // is false, so its previous contents are not read; no threads are used.
    unsafe {
        gemm::gemm(
            n,
            m,
            k,
            dst.as_mut_ptr(),
            dst_strides.1 as isize,
            dst_strides.0 as isize,
            false,
            a.data.as_ptr(),
            a.col as isize,
            a.row as isize,
            b.data.as_ptr(),
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
}

/// Shape of a 2-D convolution for [`conv2d`] (groups 1, dilation 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvShape {
    /// Images.
    pub n: usize,
    /// Input channels.
    pub c_in: usize,
    /// Input height and width.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Output channels.
    pub c_out: usize,
    /// Kernel height.
    pub kh: usize,
    /// Kernel width.
    pub kw: usize,
    /// Stride (both axes).
    pub stride: usize,
    /// Zero padding on each side (both axes).
    pub padding: usize,
}

impl ConvShape {
    /// Output height and width.
    pub fn out_hw(&self) -> (usize, usize) {
        let s = self.stride.max(1);
        (
            (self.h + 2 * self.padding - self.kh) / s + 1,
            (self.w + 2 * self.padding - self.kw) / s + 1,
        )
    }
}

/// 2-D convolution `y = w ⋆ x + b` of row-major `x [n, c_in, h, w]` with `w [c_out, c_in, kh,
/// kw]`, into `out [n, c_out, h', w']`, without an im2col copy.
///
/// Each image is zero-padded (width `wp`). Each kernel tap `(i, j)` adds `W[:, :, i, j] · X_ij`
/// to the output, where `X_ij` is a strided view of the padded image. With stride 1 one GEMM per
/// tap covers the whole image: output pixel `(y, x)` is column `y·wp + x` of an extended grid read
/// from offset `i·wp + j` (the `wp − w'` extra columns per row, a few percent, are dropped at the
/// end). With a larger stride, one GEMM per tap and output row (columns `stride` apart).
///
/// # Panics
/// If a slice's length does not match the shape, or the kernel does not fit the padded input
/// (caller bugs).
pub fn conv2d(x: &[f32], w: &[f32], bias: Option<&[f32]>, sh: ConvShape, out: &mut [f32]) {
    use rayon::prelude::*;
    let ConvShape {
        n,
        c_in,
        h,
        w: wd,
        c_out,
        kh,
        kw,
        stride,
        padding,
    } = sh;
    let s = stride.max(1);
    assert!(
        h + 2 * padding >= kh && wd + 2 * padding >= kw,
        "conv2d: kernel larger than input"
    );
    let (ho, wo) = sh.out_hw();
    assert_eq!(
        x.len(),
        n * c_in * h * wd,
        "conv2d: x is not [n, c_in, h, w]"
    );
    assert_eq!(
        w.len(),
        c_out * c_in * kh * kw,
        "conv2d: w is not [c_out, c_in, kh, kw]"
    );
    assert_eq!(
        out.len(),
        n * c_out * ho * wo,
        "conv2d: out is not [n, c_out, h', w']"
    );
    if let Some(b) = bias {
        assert_eq!(b.len(), c_out, "conv2d: bias is not [c_out]");
    }
    if out.is_empty() {
        return;
    }
    let (hp, wp) = (h + 2 * padding, wd + 2 * padding);
    // Stride 1: output columns on the extended grid y·wp + x; otherwise exactly w' per row.
    let (pitch, cols) = if s == 1 {
        (wp, (ho - 1) * wp + wo)
    } else {
        (wo, ho * wo)
    };
    let threads = rayon::current_num_threads();
    let inner = if n >= threads || threads == 1 {
        gemm::Parallelism::None
    } else {
        gemm::Parallelism::Rayon(threads)
    };
    // One GEMM: ext[:, col0 .. col0 + ncols] += W_tap · pad[off + c·hp·wp + s·q].
    let tap_gemm =
        |ext: &mut [f32], pad: &[f32], tap: usize, off: usize, col0: usize, ncols: usize| {
            assert!(
                col0 + ncols <= cols && off + (c_in - 1) * hp * wp + s * (ncols - 1) < pad.len()
            );
            // SAFETY: `ext` is [c_out, cols] row-major and exclusively borrowed, and columns
            // col0..col0 + ncols exist (asserted); the weight view (o, c) ↦ w[o·c_in·kh·kw +
            // c·kh·kw + tap] is inside `w` (its length was asserted); the input view (c, q) ↦
            // pad[off + c·hp·wp + s·q] is inside `pad` (the furthest read was asserted above).
            unsafe {
                gemm::gemm(
                    c_out,
                    ncols,
                    c_in,
                    ext.as_mut_ptr().add(col0),
                    1,
                    cols as isize,
                    true,
                    w.as_ptr().add(tap),
                    (kh * kw) as isize,
                    (c_in * kh * kw) as isize,
                    pad.as_ptr().add(off),
                    s as isize,
                    (hp * wp) as isize,
                    1.0,
                    1.0,
                    false,
                    false,
                    false,
                    inner,
                );
            }
        };
    let image = |(img, dst): (usize, &mut [f32])| {
        let mut pad = vec![0f32; c_in * hp * wp];
        for c in 0..c_in {
            for y in 0..h {
                let src = &x[((img * c_in + c) * h + y) * wd..][..wd];
                pad[(c * hp + y + padding) * wp + padding..][..wd].copy_from_slice(src);
            }
        }
        let mut ext = vec![0f32; c_out * cols];
        for i in 0..kh {
            for j in 0..kw {
                let tap = i * kw + j;
                if s == 1 {
                    tap_gemm(&mut ext, &pad, tap, i * wp + j, 0, cols);
                } else {
                    for y in 0..ho {
                        tap_gemm(&mut ext, &pad, tap, (y * s + i) * wp + j, y * wo, wo);
                    }
                }
            }
        }
        for o in 0..c_out {
            let b = bias.map_or(0.0, |b| b[o]);
            for y in 0..ho {
                let src = &ext[o * cols + y * pitch..][..wo];
                let row = &mut dst[(o * ho + y) * wo..][..wo];
                for (d, &v) in row.iter_mut().zip(src) {
                    *d = v + b;
                }
            }
        }
    };
    let per_image = c_out * ho * wo;
    if matches!(inner, gemm::Parallelism::None) && n > 1 {
        out.par_chunks_mut(per_image).enumerate().for_each(image);
    } else {
        out.chunks_mut(per_image).enumerate().for_each(image);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conv2d_matches_a_direct_convolution() {
        // (c_in, c_out, kernel, stride, padding, h, w): codec shapes, odd sizes, strides 2 and 3.
        for (ci, co, k, st, p, h, w) in [
            (3, 5, 3, 1, 1, 9, 9),
            (4, 8, 7, 1, 3, 11, 10),
            (3, 6, 3, 2, 1, 10, 11),
            (2, 4, 4, 2, 1, 12, 12),
            (5, 3, 1, 1, 0, 7, 7),
            (2, 3, 3, 3, 0, 10, 8),
        ] {
            let n = 3;
            let sh = ConvShape {
                n,
                c_in: ci,
                h,
                w,
                c_out: co,
                kh: k,
                kw: k,
                stride: st,
                padding: p,
            };
            let x: Vec<f32> = (0..n * ci * h * w)
                .map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0)
                .collect();
            let wt: Vec<f32> = (0..co * ci * k * k)
                .map(|i| ((i * 13 % 17) as f32 - 8.0) / 9.0)
                .collect();
            let b: Vec<f32> = (0..co).map(|o| o as f32 * 0.1).collect();
            let (ho, wo) = sh.out_hw();
            let mut out = vec![f32::NAN; n * co * ho * wo];
            conv2d(&x, &wt, Some(&b), sh, &mut out);
            for img in 0..n {
                for o in 0..co {
                    for y in 0..ho {
                        for xx in 0..wo {
                            let mut want = b[o] as f64;
                            for c in 0..ci {
                                for i in 0..k {
                                    for j in 0..k {
                                        let (yy, xi) = (
                                            (y * st + i) as isize - p as isize,
                                            (xx * st + j) as isize - p as isize,
                                        );
                                        if yy >= 0
                                            && xi >= 0
                                            && (yy as usize) < h
                                            && (xi as usize) < w
                                        {
                                            want += x[((img * ci + c) * h + yy as usize) * w
                                                + xi as usize]
                                                as f64
                                                * wt[((o * ci + c) * k + i) * k + j] as f64;
                                        }
                                    }
                                }
                            }
                            let got = out[((img * co + o) * ho + y) * wo + xx] as f64;
                            assert!(
                                (got - want).abs() < 1e-4 * (1.0 + want.abs()),
                                "{sh:?} [{img},{o},{y},{xx}]: {got} vs {want}"
                            );
                        }
                    }
                }
            }
        }
    }

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
