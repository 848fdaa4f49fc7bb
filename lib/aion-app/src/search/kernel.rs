//! The inner loop of `aion-search`: scores of a tile of rows against all queries with one f32
//! GEMM, then the per-query top-k update.
//!
//! A block of rows is cut into tiles of [`TILE_ROWS`] rows, aligned on global row indices (a
//! partial tile at a block edge is zero-padded, so the GEMM always has the same shape and every
//! row's score is bit-identical for any rank, chunk or thread decomposition), and the queries
//! into blocks of at most [`QUERY_BLOCK`]; for each pair one GEMM computes the
//! `tile × queries` dot products (row-major: one row's scores contiguous), which are turned into
//! order keys and offered to each query's [`TopK`]. Most rows fail the threshold test, so the
//! heap is rarely touched. Scratch memory per thread: `TILE_ROWS × (QUERY_BLOCK + D)` floats
//! (4 MiB at D = 768).
//!
//! The GEMM is the `gemm` crate (runtime-dispatched AVX2 / AVX-512 kernels, no threads of its
//! own): on one core it is 2–10× faster than `matrixmultiply` (what `ndarray::dot` calls) for
//! the 1–64 queries of a typical search, because it does not repack the large operand for a
//! narrow product (`examples/search_gemm_bench.rs`, figures in `docs/validation.md`).

use super::topk::{Candidate, TopK, key_of};

/// Rows per GEMM tile.
pub const TILE_ROWS: usize = 1024;
/// Queries per GEMM call.
pub const QUERY_BLOCK: usize = 256;

/// Similarity measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    /// Cosine similarity (queries and rows normalised); higher is better.
    Cosine,
    /// Dot product; higher is better.
    Dot,
    /// Euclidean distance (reported as the plain distance, not squared); smaller is better.
    L2,
}

impl Metric {
    /// The name used in outputs and logs.
    pub fn name(self) -> &'static str {
        match self {
            Self::Cosine => "cosine",
            Self::Dot => "dot",
            Self::L2 => "l2",
        }
    }

    /// The reported score of an order key's badness value.
    pub fn score(self, badness: f32) -> f32 {
        match self {
            Self::Cosine | Self::Dot => -badness + 0.0, // never -0.0
            Self::L2 => badness.sqrt(),
        }
    }
}

/// The queries as the kernel uses them.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// Dimension.
    pub d: usize,
    /// `n × d`, row-major; unit length for cosine.
    pub mat: Vec<f32>,
    /// Squared norms (for l2).
    pub norm2: Vec<f32>,
    /// Whether each query is searched (invalid queries are skipped).
    pub active: Vec<bool>,
    /// Object id whose rows are not returned for each query (`--exclude-self`).
    pub exclude: Vec<Option<i64>>,
}

impl Prepared {
    /// Number of queries.
    pub fn len(&self) -> usize {
        self.active.len()
    }

    /// Whether there are no queries.
    pub fn is_empty(&self) -> bool {
        self.active.is_empty()
    }
}

/// Rows skipped because they hold no valid embedding, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Skipped {
    /// `modalities_used == 0`: the model had nothing to embed.
    pub unused: u64,
    /// NaN or ±inf values (or a squared norm that overflows f32).
    pub nonfinite: u64,
    /// All-zero vector (no direction; cosine only).
    pub zero: u64,
}

impl Skipped {
    /// Adds `o`.
    pub fn add(&mut self, o: Skipped) {
        self.unused += o.unused;
        self.nonfinite += o.nonfinite;
        self.zero += o.zero;
    }

    /// All skipped rows.
    pub fn total(&self) -> u64 {
        self.unused + self.nonfinite + self.zero
    }
}

/// Per-thread scratch buffers.
#[derive(Debug)]
pub struct Scratch {
    scores: Vec<f32>,
    norm2: Vec<f32>,
    norm: Vec<f32>,
    valid: Vec<bool>,
    /// A partial tile, zero-padded to `TILE_ROWS` rows.
    tile: Vec<f32>,
}

impl Default for Scratch {
    fn default() -> Self {
        Self {
            scores: vec![0.0; TILE_ROWS * QUERY_BLOCK],
            norm2: vec![0.0; TILE_ROWS],
            norm: vec![0.0; TILE_ROWS],
            valid: vec![false; TILE_ROWS],
            tile: Vec::new(),
        }
    }
}

/// A block of consecutive rows to scan.
#[derive(Debug, Clone, Copy)]
pub struct Rows<'a> {
    /// Global index of the first row.
    pub start: u64,
    /// Values, `len × d` row-major.
    pub x: &'a [f32],
    /// Object id of each row.
    pub ids: &'a [i64],
    /// Whether each row's `modalities_used` is non-zero.
    pub used: &'a [bool],
}

/// Squared norm of a row (16 independent lanes, so the loop vectorises).
#[inline]
pub fn norm2(row: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let mut chunks = row.chunks_exact(16);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += v * v;
        }
    }
    let tail: f32 = chunks.remainder().iter().map(|&v| v * v).sum();
    acc.iter().sum::<f32>() + tail
}

/// Scans `rows` for every active query, updating `topk` (one per query); returns the rows
/// skipped as invalid.
pub fn scan(
    rows: Rows<'_>,
    q: &Prepared,
    metric: Metric,
    topk: &mut [TopK],
    scratch: &mut Scratch,
) -> Skipped {
    let d = q.d;
    let n = rows.ids.len();
    debug_assert_eq!(rows.x.len(), n * d);
    debug_assert_eq!(rows.used.len(), n);
    let Scratch {
        scores,
        norm2: row_norm2,
        norm: row_norm,
        valid,
        tile: pad,
    } = scratch;
    let mut skipped = Skipped::default();
    let mut i = 0;
    while i < n {
        // The tile is global rows [tile_start, tile_start + TILE_ROWS); rows i..i+t of the block
        // sit at offset `off` in it. GEMM always runs on a whole tile (zero rows padding a
        // partial one), so each row's scores come out of the same code path, at the same
        // place, whatever the rank count, chunk size or thread count: results are identical
        // for any decomposition.
        let global = rows.start + i as u64;
        let off = (global % TILE_ROWS as u64) as usize;
        let t = (TILE_ROWS - off).min(n - i);
        let block = &rows.x[i * d..(i + t) * d];
        let x: &[f32] = if t == TILE_ROWS {
            block
        } else {
            pad.clear();
            pad.resize(TILE_ROWS * d, 0.0);
            pad[off * d..(off + t) * d].copy_from_slice(block);
            pad
        };
        let ids = &rows.ids[i..i + t];
        for r in 0..t {
            let s = norm2(&block[r * d..(r + 1) * d]);
            row_norm2[r] = s;
            row_norm[r] = s.sqrt();
            valid[r] = if !rows.used[i + r] {
                skipped.unused += 1;
                false
            } else if !s.is_finite() {
                skipped.nonfinite += 1;
                false
            } else if metric == Metric::Cosine && s == 0.0 {
                skipped.zero += 1;
                false
            } else {
                true
            };
        }
        if valid[..t].iter().any(|&v| v) {
            let mut j0 = 0;
            while j0 < q.len() {
                let nq = QUERY_BLOCK.min(q.len() - j0);
                if q.active[j0..j0 + nq].iter().any(|&a| a) {
                    raw::scores(x, TILE_ROWS, d, &q.mat[j0 * d..(j0 + nq) * d], nq, scores);
                    for j in 0..nq {
                        let qi = j0 + j;
                        if !q.active[qi] {
                            continue;
                        }
                        let tile = Tile {
                            scores: &scores[off * nq + j..(off + t) * nq],
                            stride: nq,
                            valid: &valid[..t],
                            ids,
                            first_row: global,
                        };
                        let (topk, ex) = (&mut topk[qi], q.exclude[qi]);
                        match metric {
                            Metric::Dot => tile.offer(topk, ex, |s, _| -s),
                            Metric::Cosine => {
                                let norm = &row_norm[..t];
                                tile.offer(topk, ex, |s, r| -(s / norm[r]))
                            }
                            Metric::L2 => {
                                let (qn, n2) = (q.norm2[qi], &row_norm2[..t]);
                                tile.offer(topk, ex, |s, r| (qn + n2[r] - 2.0 * s).max(0.0))
                            }
                        }
                    }
                }
                j0 += nq;
            }
        }
        i += t;
    }
    skipped
}

/// One query's scores over one tile.
struct Tile<'a> {
    /// Row `r`'s score is `scores[r * stride]`.
    scores: &'a [f32],
    stride: usize,
    valid: &'a [bool],
    ids: &'a [i64],
    first_row: u64,
}

impl Tile<'_> {
    /// Offers every valid row to `topk`; `badness(dot, r)` is the metric's order value of the
    /// tile's row `r`.
    #[inline]
    fn offer(&self, topk: &mut TopK, exclude: Option<i64>, badness: impl Fn(f32, usize) -> f32) {
        let mut thr = topk.threshold();
        for (r, &s) in self.scores.iter().step_by(self.stride).enumerate() {
            if !self.valid[r] {
                continue;
            }
            let b = badness(s, r);
            if b.is_nan() {
                continue;
            }
            let key = key_of(b);
            if key > thr || exclude == Some(self.ids[r]) {
                continue;
            }
            topk.push(Candidate {
                key,
                row: self.first_row + r as u64,
                object_id: self.ids[r],
            });
            thr = topk.threshold();
        }
    }
}

/// The search's GEMM, on aion-model's strided f32 product ([`sgemm::matmul`]).
mod raw {
    use aion_model::nn::sgemm::{self, Batched};

    /// `out[r·nq + j] = Σ_c x[r·d + c] · q[j·d + c]` for `r < t`, `j < nq`: the scores of `t`
    /// rows (row-major `t × d`) against `nq` queries (row-major `nq × d`), one row's scores
    /// contiguous. (Of the layouts, this one is the fastest with `gemm` for few queries: 1.5–2×
    /// the query-major one at 4–16 queries, as it needs no repacking of the rows.)
    ///
    /// # Panics
    /// If a slice is too short for the sizes given.
    pub(super) fn scores(x: &[f32], t: usize, d: usize, q: &[f32], nq: usize, out: &mut [f32]) {
        assert!(
            x.len() >= t * d && q.len() >= nq * d && out.len() >= t * nq,
            "GEMM operands too short"
        );
        if t == 0 || nq == 0 {
            return;
        }
        if d == 0 {
            out[..t * nq].fill(0.0);
            return;
        }
        // An (nq × t) product: q as [nq, d] row-major, xᵀ as [d, t] (column j = row j of x),
        // scores row-major by row: element (i, j) at out[i + j·nq].
        sgemm::matmul(
            Batched::matrix(q, d, 1),
            Batched::matrix(x, 1, d),
            [nq, d, t],
            out,
            (1, nq),
        );
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn gemm_matches_a_plain_loop() {
            let (t, d, nq) = (37, 19, 5);
            let x: Vec<f32> = (0..t * d).map(|i| ((i * 7) % 13) as f32 - 6.0).collect();
            let q: Vec<f32> = (0..nq * d).map(|i| ((i * 5) % 11) as f32 - 5.0).collect();
            let mut out = vec![f32::NAN; t * nq];
            super::scores(&x, t, d, &q, nq, &mut out);
            for r in 0..t {
                for j in 0..nq {
                    let want: f32 = (0..d).map(|c| x[r * d + c] * q[j * d + c]).sum();
                    assert_eq!(out[r * nq + j], want, "row {r} query {j}");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::topk::badness_of;

    fn prepared(mat: Vec<f32>, d: usize, metric: Metric) -> Prepared {
        let n = mat.len() / d;
        let mut mat = mat;
        if metric == Metric::Cosine {
            for q in mat.chunks_mut(d) {
                let n = norm2(q).sqrt();
                q.iter_mut().for_each(|v| *v /= n);
            }
        }
        Prepared {
            d,
            norm2: mat.chunks(d).map(norm2).collect(),
            mat,
            active: vec![true; n],
            exclude: vec![None; n],
        }
    }

    #[test]
    fn scan_equals_brute_force_across_tiles_with_ties_and_invalid_rows() {
        let d = 16;
        let n = 2 * TILE_ROWS + 77;
        // Small integers: every product and sum is exact in f32, so scores tie exactly.
        let mut x: Vec<f32> = (0..n * d)
            .map(|i| (((i * 2_654_435_761usize) >> 7) % 5) as f32 - 2.0)
            .collect();
        x[5 * d] = f32::NAN;
        x[9 * d..10 * d].fill(0.0);
        let ids: Vec<i64> = (0..n as i64).map(|r| r + 100).collect();
        let mut used = vec![true; n];
        used[11] = false;
        // Queries with norm 2 (four entries ±1): normalising them is exact too.
        let mut queries = vec![0f32; 3 * d];
        for (j, q) in queries.chunks_mut(d).enumerate() {
            for c in 0..4 {
                q[(j * 3 + c * 4) % d] = if (j + c) % 3 == 0 { -1.0 } else { 1.0 };
            }
        }
        for metric in [Metric::Dot, Metric::L2, Metric::Cosine] {
            let q = prepared(queries.clone(), d, metric);
            let k = 25;
            let mut topk: Vec<TopK> = (0..3).map(|_| TopK::new(k)).collect();
            let mut scratch = Scratch::default();
            let rows = Rows {
                start: 1000,
                x: &x,
                ids: &ids,
                used: &used,
            };
            let sk = scan(rows, &q, metric, &mut topk, &mut scratch);
            assert_eq!(sk.unused, 1);
            assert_eq!(sk.nonfinite, 1);
            assert_eq!(sk.zero, u64::from(metric == Metric::Cosine));
            for (j, t) in topk.into_iter().enumerate() {
                let qv = &q.mat[j * d..(j + 1) * d];
                let mut all: Vec<(f32, u64)> = (0..n)
                    .filter(|&r| r != 5 && r != 11 && !(metric == Metric::Cosine && r == 9))
                    .map(|r| {
                        let xr = &x[r * d..(r + 1) * d];
                        let dot: f32 = xr.iter().zip(qv).map(|(a, b)| a * b).sum();
                        let b = match metric {
                            Metric::Dot => -dot,
                            Metric::Cosine => -(dot / norm2(xr).sqrt()),
                            Metric::L2 => (q.norm2[j] + norm2(xr) - 2.0 * dot).max(0.0),
                        };
                        (b + 0.0, 1000 + r as u64)
                    })
                    .collect();
                all.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
                all.truncate(k);
                let got: Vec<(f32, u64)> = t
                    .into_sorted()
                    .iter()
                    .map(|c| (badness_of(c.key), c.row))
                    .collect();
                assert_eq!(got, all, "{metric:?} query {j}");
            }
        }
    }

    #[test]
    fn any_split_of_the_rows_gives_the_same_bits() {
        let (d, n) = (40, 3 * TILE_ROWS + 5);
        let mut rng = aion_model::rng::Rng::new(1, 0, 0);
        let x: Vec<f32> = (0..n * d).map(|_| rng.uniform() as f32 - 0.5).collect();
        let ids: Vec<i64> = (0..n as i64).collect();
        let used = vec![true; n];
        let q = prepared(x[7 * d..12 * d].to_vec(), d, Metric::Cosine);
        let run = |cuts: &[usize]| -> Vec<Vec<Candidate>> {
            let mut topk: Vec<TopK> = (0..5).map(|_| TopK::new(30)).collect();
            let mut scratch = Scratch::default();
            for w in cuts.windows(2) {
                let rows = Rows {
                    start: w[0] as u64,
                    x: &x[w[0] * d..w[1] * d],
                    ids: &ids[w[0]..w[1]],
                    used: &used[w[0]..w[1]],
                };
                scan(rows, &q, Metric::Cosine, &mut topk, &mut scratch);
            }
            topk.into_iter().map(TopK::into_sorted).collect()
        };
        let whole = run(&[0, n]);
        assert_eq!(run(&[0, 1, 1000, 1001, 2500, n]), whole);
        assert_eq!(run(&[0, 1024, 2048, 3000, n]), whole);
    }

    #[test]
    fn exclusion_drops_the_query_object() {
        let d = 4;
        let x = vec![1.0, 0.0, 0.0, 0.0, 0.9, 0.1, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0];
        let ids = vec![7, 8, 9];
        let used = vec![true; 3];
        let mut q = prepared(x[..4].to_vec(), d, Metric::Dot);
        q.exclude[0] = Some(7);
        let mut topk = vec![TopK::new(2)];
        let rows = Rows {
            start: 0,
            x: &x,
            ids: &ids,
            used: &used,
        };
        scan(rows, &q, Metric::Dot, &mut topk, &mut Scratch::default());
        let rows: Vec<u64> = topk.remove(0).into_sorted().iter().map(|c| c.row).collect();
        assert_eq!(rows, vec![1, 2]);
    }
}
