//! Fixture reading and comparison helpers for the parity tests.

#![allow(dead_code)]

use std::path::PathBuf;

use aion_model::weights::WeightFile;

/// `validation/fixtures/` of this repository.
pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../validation/fixtures")
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

/// Asserts `|got - want| <= atol + rtol·|want|` elementwise; prints the max errors (they are
/// quoted in docs/validation.md).
pub fn assert_close(what: &str, got: &[f32], want: &[f32], atol: f32, rtol: f32) {
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: length {} vs {}",
        got.len(),
        want.len()
    );
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
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: length {} vs {}",
        got.len(),
        want.len()
    );
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

/// Defines `#[test] fn $name_ndarray` (always) and `#[test] fn $name_tch` (feature `tch`)
/// calling a generic `fn $body<B: Backend>(device: &B::Device)`.
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
                let device = burn::backend::libtorch::LibTorchDevice::Cpu;
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
    let basis: Vec<i64> = levels
        .iter()
        .scan(1i64, |acc, &l| {
            let b = *acc;
            *acc *= i64::from(l);
            Some(b)
        })
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
