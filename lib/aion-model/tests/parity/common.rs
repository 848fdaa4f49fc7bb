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
