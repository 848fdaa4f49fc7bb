//! Fixture reading and comparison helpers for the parity tests.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use aion_model::weights::WeightFile;

/// `validation/fixtures/` of this repository, or `$AION_FIXTURES_DIR` (a test binary run away
/// from its checkout, as validation/gpu/ does on a GPU machine).
pub fn fixtures_dir() -> PathBuf {
    std::env::var_os("AION_FIXTURES_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../validation/fixtures"),
        PathBuf::from,
    )
}

/// The LibTorch device of the `tch` tests: `$AION_TEST_DEVICE` = `cpu` (default), `cuda` or
/// `cuda:N` (validation/gpu/ runs the parity tests on a GPU with it).
#[cfg(feature = "tch")]
pub fn tch_device() -> burn::backend::libtorch::LibTorchDevice {
    use burn::backend::libtorch::LibTorchDevice;
    match std::env::var("AION_TEST_DEVICE").as_deref() {
        Err(_) | Ok("cpu") => LibTorchDevice::Cpu,
        Ok("cuda") => LibTorchDevice::Cuda(0),
        Ok(other) => other
            .strip_prefix("cuda:")
            .and_then(|i| i.parse().ok())
            .map(LibTorchDevice::Cuda)
            .unwrap_or_else(|| panic!("AION_TEST_DEVICE={other}: expected cpu, cuda or cuda:N")),
    }
}

/// A fixture file: a safetensors file of named arrays (inputs, intermediates, outputs).
pub struct Fixture {
    file: WeightFile,
}

impl Fixture {
    /// Opens `validation/fixtures/<case>/<name>`.
    pub fn open(case: &str, name: &str) -> Self {
        let path = fixtures_dir().join(case).join(name);
        let file = WeightFile::open(&path)
            .unwrap_or_else(|e| panic!("cannot open fixture {}: {e}", path.display()));
        Self { file }
    }

    /// Shape of an array.
    pub fn shape(&self, name: &str) -> Vec<usize> {
        self.file
            .shape(name)
            .unwrap_or_else(|| panic!("fixture has no array {name}"))
            .to_vec()
    }

    /// Whether the fixture holds an array of this name.
    pub fn has(&self, name: &str) -> bool {
        self.file.contains(name)
    }

    /// A float array (any float dtype) as f32 with its shape.
    pub fn f32(&mut self, name: &str) -> (Vec<usize>, Vec<f32>) {
        let shape = self.shape(name);
        let v = self.file.f32s(name, &shape);
        assert!(!self.file.has_problems(), "cannot read {name} as float");
        (shape, v)
    }

    /// An integer/bool array as i64 with its shape.
    pub fn i64(&mut self, name: &str) -> (Vec<usize>, Vec<i64>) {
        let shape = self.shape(name);
        let v = self.file.i64s(name, &shape);
        assert!(!self.file.has_problems(), "cannot read {name} as int");
        (shape, v)
    }

    /// Names in the fixture.
    pub fn names(&self) -> Vec<String> {
        self.file.names().map(String::from).collect()
    }
}

/// Max absolute and max relative error of `got` against `want`.
pub fn max_errors(got: &[f32], want: &[f32]) -> (f32, f32) {
    assert_eq!(got.len(), want.len(), "length mismatch");
    let mut abs = 0f32;
    let mut rel = 0f32;
    for (&g, &w) in got.iter().zip(want) {
        let d = (g - w).abs();
        abs = abs.max(d);
        rel = rel.max(d / w.abs().max(1e-12));
    }
    (abs, rel)
}

/// A copy of the codec folder `src` in a temp dir (named after `tag`) with its tensors but `drop`,
/// renamed by `rename`, plus the `(name, shape, f32 data)` tensors `add`; its `config.json`, or
/// `config`. For the strict-loading checks.
pub fn codec_copy(
    src: &Path,
    tag: &str,
    drop: &[&str],
    add: &[(&str, Vec<usize>, Vec<u8>)],
    config: Option<&str>,
    rename: fn(&str) -> &str,
) -> PathBuf {
    use safetensors::tensor::{Dtype, SafeTensors, TensorView};
    let tmp = std::env::temp_dir().join(format!("aion-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    match config {
        Some(text) => std::fs::write(tmp.join("config.json"), text).unwrap(),
        None => {
            std::fs::copy(src.join("config.json"), tmp.join("config.json")).unwrap();
        }
    }
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut views: Vec<(String, TensorView<'_>)> = st
        .tensors()
        .into_iter()
        .filter(|(name, _)| !drop.contains(&name.as_str()))
        .map(|(name, v)| (rename(&name).to_string(), v))
        .collect();
    for (name, shape, data) in add {
        let v = TensorView::new(Dtype::F32, shape.clone(), data).unwrap();
        views.push((name.to_string(), v));
    }
    safetensors::serialize_to_file(views, None, &tmp.join("model.safetensors")).unwrap();
    tmp
}

/// Asserts that `text` holds each of `words`, printing it otherwise.
pub fn assert_mentions(text: &str, words: &[&str]) {
    for w in words {
        assert!(text.contains(w), "no {w:?} in:\n{text}");
    }
}

/// Asserts that a result has as many values as the reference.
fn assert_same_len(what: &str, got: usize, want: usize) {
    assert_eq!(got, want, "{what}: length {got} vs {want}");
}

/// Asserts `|got - want| <= atol + rtol·|want|` elementwise; prints the max errors (they are
/// quoted in docs/validation.md).
pub fn assert_close(what: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) {
    assert_same_len(what, got.len(), want.len());
    let (abs, rel) = max_errors(got, want);
    eprintln!(
        "[parity] {what}: max abs err {abs:.3e}, max rel err {rel:.3e} (n={})",
        got.len()
    );
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= atol + rtol * w.abs() || (g.is_nan() && w.is_nan()),
            "{what}[{i}]: got {g}, want {w} (atol {atol}, rtol {rtol})"
        );
    }
}

/// Asserts two token arrays are identical, reporting the first differences.
pub fn assert_tokens_eq(what: &str, got: &[i64], want: &[i64]) {
    assert_same_len(what, got.len(), want.len());
    let diffs: Vec<_> = got
        .iter()
        .zip(want)
        .enumerate()
        .filter(|(_, (g, w))| g != w)
        .take(10)
        .collect();
    eprintln!(
        "[parity] {what}: {} tokens, {} differ",
        got.len(),
        got.iter().zip(want).filter(|(g, w)| g != w).count()
    );
    assert!(
        diffs.is_empty(),
        "{what}: tokens differ at (index, (got, want)): {diffs:?}"
    );
}

/// Defines `#[test] fn $name::ndarray` (always) and `#[test] fn $name::tch` (feature `tch`, on
/// [`tch_device`]) calling a generic `fn $body<B: Backend>(device: &B::Device)`.
#[macro_export]
macro_rules! backend_test {
    ($name:ident, $body:ident) => {
        mod $name {
            #[test]
            fn ndarray() {
                let device = Default::default();
                super::$body::<burn::backend::NdArray<f32>>(&device);
            }
            #[cfg(feature = "tch")]
            #[test]
            fn tch() {
                let device = $crate::common::tch_device();
                super::$body::<burn::backend::LibTorch<f32>>(&device);
            }
        }
    };
}

/// Distance of an FSQ channel's bounded value `tanh(z + shift)·half_l − offset` from the nearest
/// rounding edge (a half-integer), in the reference's `f32` arithmetic.
pub fn fsq_edge_distance(z: f32, levels: u32) -> f32 {
    let half_l = (levels - 1) as f32 * 1.001 / 2.0;
    let offset = if levels % 2 == 1 { 0.0f32 } else { 0.5 };
    let shift = (f64::from(offset / half_l)).atanh() as f32;
    let bounded = (z + shift).tanh() * half_l - offset;
    (bounded - bounded.floor() - 0.5).abs()
}

/// Asserts FSQ tokens equal, except where the reference's own pre-quantisation value sits within
/// float noise (`edge_tol`) of a rounding edge: there, the token may differ by one level in that
/// single channel. Every such case is printed; the number allowed is returned.
///
/// `ref_pre_quant` is the reference's `[B, D, N]` latent, `got`/`want` are `[B, N]`, `per_row = N`.
pub fn assert_fsq_tokens_eq(
    what: &str,
    got: &[i64],
    want: &[i64],
    ref_pre_quant: &[f32],
    levels: &[u32],
    per_row: usize,
    edge_tol: f32,
) -> usize {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let d = levels.len();
    assert_eq!(ref_pre_quant.len(), got.len() * d, "{what}: latent size");
    // Place value of each latent channel in the token (mixed radix, channel 0 lowest).
    let basis: Vec<i64> = (0..d)
        .map(|c| levels[..c].iter().map(|&l| i64::from(l)).product())
        .collect();
    let digit = |t: i64, c: usize| (t / basis[c]) % i64::from(levels[c]);
    let mut allowed = 0;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        if g == w {
            continue;
        }
        let (row, pos) = (i / per_row, i % per_row);
        let differing: Vec<usize> = (0..d).filter(|&c| digit(g, c) != digit(w, c)).collect();
        let c = differing[0];
        let z = ref_pre_quant[(row * d + c) * per_row + pos];
        let dist = fsq_edge_distance(z, levels[c]);
        let ok = differing.len() == 1 && (digit(g, c) - digit(w, c)).abs() == 1 && dist <= edge_tol;
        eprintln!(
            "[parity] {what}: token {i} (row {row}, position {pos}) got {g} want {w}: channel(s) \
             {differing:?} differ; reference latent {z} is {dist:.2e} from a rounding edge{}",
            if ok {
                " -> float noise at a bin edge"
            } else {
                ""
            }
        );
        assert!(ok, "{what}: token {i} differs away from a bin edge");
        allowed += 1;
    }
    eprintln!(
        "[parity] {what}: {} tokens, {} identical, {allowed} differ at a bin edge",
        got.len(),
        got.len() - allowed
    );
    allowed
}

/// Asserts spectrum codec tokens equal (`[rows × (1 + N)]`: the normalisation bucket, then LFQ
/// codes of `D` sign bits), except where float noise decides them: a flipped bit whose reference
/// latent (`ref_pre_quant`, `[rows × D × N]`) lies within `latent_tol` of the LFQ threshold 0, or
/// a normalisation bucket whose reference log-normalisation (`ref_norm`, one per row) lies within
/// `norm_tol` of the bucket edges (`buckets`) it crossed. Returns the number of rows whose
/// normalisation token was excused (everything after it in such a row is computed from another
/// normalisation, so the caller stops comparing that row).
pub fn assert_spectrum_tokens_eq(
    what: &str,
    got: &[i64],
    want: &[i64],
    ref_pre_quant: &[f32],
    ref_norm: &[f32],
    buckets: &[f32],
    (latent_tol, norm_tol): (f32, f32),
) -> usize {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let rows = ref_norm.len();
    let per_row = got.len() / rows;
    let (n, d) = (per_row - 1, ref_pre_quant.len() / rows / (per_row - 1));
    let (mut bits, mut norms) = (0, 0);
    for r in 0..rows {
        let (g, w) = (
            &got[r * per_row..][..per_row],
            &want[r * per_row..][..per_row],
        );
        if g[0] != w[0] {
            let (lo, hi) = (g[0].min(w[0]) as usize, g[0].max(w[0]) as usize);
            let dist = buckets[lo..hi]
                .iter()
                .map(|b| (b - ref_norm[r]).abs())
                .fold(0f32, f32::max);
            eprintln!(
                "[parity] {what}: row {r} normalisation token got {} want {}; reference \
                 log10(m+1) = {} is {dist:.1e} from the bucket edge(s) crossed (tolerance {norm_tol:.1e})",
                g[0], w[0], ref_norm[r]
            );
            assert!(
                dist <= norm_tol,
                "{what}: row {r} normalisation token differs away from a bucket edge"
            );
            norms += 1;
            continue;
        }
        for p in 1..per_row {
            if g[p] == w[p] {
                continue;
            }
            let flipped: Vec<(usize, f32)> = (0..d)
                .filter(|&c| ((g[p] ^ w[p]) >> (d - 1 - c)) & 1 == 1)
                .map(|c| (c, ref_pre_quant[(r * d + c) * n + p - 1]))
                .collect();
            let ok = flipped.iter().all(|&(_, z)| z.abs() <= latent_tol);
            eprintln!(
                "[parity] {what}: row {r} token {p} got {} want {}; reference latents of the \
                 flipped bits (channel, value) {flipped:?}{}",
                g[p],
                w[p],
                if ok {
                    " -> float noise at the LFQ threshold"
                } else {
                    ""
                }
            );
            assert!(
                ok,
                "{what}: row {r} token {p} differs away from the LFQ threshold"
            );
            bits += 1;
        }
    }
    eprintln!(
        "[parity] {what}: {} tokens, {bits} LFQ codes and {norms} normalisation tokens differ at an edge",
        got.len()
    );
    norms
}

/// Asserts tokens of a table quantizer (the reference's `bucketize` against sorted entries) equal,
/// except where the reference's compressed value (`ref_values`: log, arcsinh or the value itself)
/// lies within `rel_tol` (relative) of every table entry between the two tokens: there the last
/// bit of a logarithm decides. `tables` holds one table per channel (`channels` = values per row).
pub fn assert_table_tokens_eq(
    what: &str,
    got: &[i64],
    want: &[i64],
    ref_values: &[f32],
    tables: &[f32],
    channels: usize,
    rel_tol: f32,
) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let table_len = tables.len() / channels;
    let mut excused = 0;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        if g == w {
            continue;
        }
        let table = &tables[(i % channels) * table_len..][..table_len];
        let z = ref_values[i];
        let (lo, hi) = (
            g.min(w).max(0) as usize,
            (g.max(w).max(0) as usize).min(table_len),
        );
        let dist = table[lo..hi]
            .iter()
            .map(|t| (t - z).abs())
            .fold(0f32, f32::max);
        let ok = g >= 0 && w >= 0 && dist <= rel_tol * z.abs();
        eprintln!(
            "[parity] {what}: value {i} got token {g} want {w}; reference compressed value {z} is \
             {dist:.1e} from the table entries crossed{}",
            if ok {
                " -> last-bit noise at a table entry"
            } else {
                ""
            }
        );
        assert!(ok, "{what}: value {i} differs away from a table entry");
        excused += 1;
    }
    eprintln!(
        "[parity] {what}: {} tokens, {excused} differ at a table entry",
        got.len()
    );
}

/// The reference sampler's decision records of one run (see validation/fixtures/generate):
/// `(row, step, position)` → smallest margin in logit units (position −1: the MaskGIT cut), and
/// `(row, step)` → the smallest margin of that step.
pub struct DecisionMargins {
    by_position: std::collections::HashMap<(i64, i64, i64), f32>,
    by_step: std::collections::HashMap<(i64, i64), f32>,
}

impl DecisionMargins {
    /// Reads `<prefix>.close` and `<prefix>.close_margin`.
    pub fn read(fx: &mut Fixture, prefix: &str) -> Self {
        let (_, close) = fx.i64(&format!("{prefix}.close"));
        let (_, margin) = fx.f32(&format!("{prefix}.close_margin"));
        let (mut by_position, mut by_step) = (
            std::collections::HashMap::new(),
            std::collections::HashMap::new(),
        );
        for (c, &m) in close.chunks(3).zip(&margin) {
            let p = by_position
                .entry((c[0], c[1], c[2]))
                .or_insert(f32::INFINITY);
            *p = p.min(m);
            let s = by_step.entry((c[0], c[1])).or_insert(f32::INFINITY);
            *s = s.min(m);
        }
        Self {
            by_position,
            by_step,
        }
    }
}

/// Asserts generated tokens and their reveal steps (`[rows × n]`) equal the reference's, except
/// where a decision of the reference came within `eps` (logit units) of going the other way: per
/// row, at the first step where anything differs, a position revealed at that step in both runs
/// must have its own draw within `eps` of an edge; a position revealed at another step needs some
/// decision of that row and step within `eps` (the MaskGIT confidence cut, or another position's
/// draw, which changes its confidence). Later steps of such a row follow from it and are not
/// compared. Returns (tokens excused at their step, tokens downstream).
#[allow(clippy::too_many_arguments)]
pub fn assert_generation_eq(
    what: &str,
    got: &[i64],
    want: &[i64],
    got_steps: &[i64],
    want_steps: &[i64],
    n: usize,
    margins: &DecisionMargins,
    eps: f32,
) -> (usize, usize) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let (mut at_edge, mut downstream) = (0, 0);
    for r in 0..got.len() / n {
        let span = r * n..(r + 1) * n;
        let diff: Vec<usize> = span
            .clone()
            .filter(|&i| got[i] != want[i] || got_steps[i] != want_steps[i])
            .collect();
        let Some(first) = diff.iter().map(|&i| got_steps[i].min(want_steps[i])).min() else {
            continue;
        };
        for &i in &diff {
            if got_steps[i].min(want_steps[i]) > first {
                downstream += 1;
                continue;
            }
            let (row, pos) = (r as i64, (i - r * n) as i64);
            let m = if got_steps[i] == want_steps[i] {
                margins.by_position.get(&(row, first, pos))
            } else {
                margins.by_step.get(&(row, first))
            }
            .copied()
            .unwrap_or(f32::INFINITY);
            eprintln!(
                "[parity] {what}: row {r} position {pos} got token {} (step {}) want {} (step {}); \
                 reference decision margin {m:.1e} (tolerance {eps:.1e})",
                got[i], got_steps[i], want[i], want_steps[i]
            );
            assert!(
                m <= eps,
                "{what}: row {r} position {pos} differs away from a sampling edge"
            );
            at_edge += 1;
        }
    }
    eprintln!(
        "[parity] {what}: {} tokens, {at_edge} differ at a sampling edge, {downstream} downstream of those",
        got.len()
    );
    (at_edge, downstream)
}
