//! Helpers for the CLI tests: temp dirs, spawning tools with or without mpirun, reading outputs.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `validation/fixtures/<case>`.
pub fn fixture(case: &str) -> PathBuf {
    repo().join("validation/fixtures").join(case)
}

/// A fresh temporary directory, removed on drop.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("aion-cli-")
        .tempdir()
        .expect("temp dir")
}

/// How to launch a tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Launch {
    /// No launcher: one process (MPI singleton).
    Alone,
    /// `mpirun -n N` (with `--oversubscribe` when N exceeds the cores).
    Mpirun(usize),
}

/// Runs binary `bin` with `args` under `launch`; stdin is closed (CI has none).
pub fn run_tool(bin: &str, launch: Launch, args: &[&str]) -> Output {
    let mut cmd = match launch {
        Launch::Alone => Command::new(bin),
        Launch::Mpirun(n) => {
            let mut c = Command::new("mpirun");
            c.args(["-n", &n.to_string(), "--oversubscribe", bin]);
            c
        }
    };
    cmd.args(args)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("OMPI_MCA_rmaps_base_oversubscribe", "1")
        .env("OMP_NUM_THREADS", "1")
        .stdin(Stdio::null());
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {bin}: {e}"))
}

/// Asserts success, printing stderr otherwise; returns stderr.
pub fn assert_ok(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        out.status.success(),
        "tool failed ({:?}):\n{err}",
        out.status.code()
    );
    err
}

/// Asserts exit code 2 and returns stderr.
pub fn assert_fails(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(
        out.status.code(),
        Some(2),
        "expected exit 2, got {:?}:\n{err}",
        out.status.code()
    );
    err
}

/// Every dataset of an HDF5 file as flat f64 values with its shape (ints and floats; NaN kept).
pub fn read_all(path: &Path) -> BTreeMap<String, (Vec<usize>, Vec<f64>)> {
    let f =
        hdf5::File::open(path).unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
    let mut out = BTreeMap::new();
    collect(&f, "", &mut out);
    out
}

fn collect(g: &hdf5::Group, prefix: &str, out: &mut BTreeMap<String, (Vec<usize>, Vec<f64>)>) {
    for name in g.member_names().unwrap() {
        let full = format!("{prefix}/{name}");
        if let Ok(ds) = g.dataset(&name) {
            let v: Vec<f64> = ds
                .read_raw::<f64>()
                .unwrap_or_else(|e| panic!("{full}: {e}"));
            out.insert(full, (ds.shape(), v));
        } else if let Ok(sub) = g.group(&name) {
            collect(&sub, &full, out);
        }
    }
}

/// Asserts two outputs hold the same datasets with the same values (NaN == NaN).
pub fn assert_same_datasets(a: &Path, b: &Path) {
    let (da, db) = (read_all(a), read_all(b));
    assert_eq!(
        da.keys().collect::<Vec<_>>(),
        db.keys().collect::<Vec<_>>(),
        "dataset names differ"
    );
    for (name, (sa, va)) in &da {
        let (sb, vb) = &db[name];
        assert_eq!(sa, sb, "{name}: shape");
        let same = va
            .iter()
            .zip(vb)
            .all(|(x, y)| x == y || (x.is_nan() && y.is_nan()));
        assert!(
            same,
            "{name}: values differ between {} and {}",
            a.display(),
            b.display()
        );
    }
}

/// Reads one dataset as i64.
pub fn read_i64(path: &Path, name: &str) -> (Vec<usize>, Vec<i64>) {
    let f = hdf5::File::open(path).unwrap();
    let ds = f.dataset(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    (ds.shape(), ds.read_raw::<i64>().unwrap())
}

/// Python of the validation venv (has h5py), if it exists.
pub fn venv_python() -> Option<PathBuf> {
    let p = std::env::var_os("AION_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("validation/.venv/bin/python"));
    p.exists().then_some(p)
}
