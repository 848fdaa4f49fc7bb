//! `aion-export` end to end: predictions on the HATS fixture (`validation/fixtures/formats`)
//! exported as Parquet (one process), FITS (2 ranks) and HATS (3 ranks), joined with `ra`,
//! `dec` and the spec-z, then read back
//! - by the project's own catalogue reader (always), compared with the HDF5 value for value;
//! - by pyarrow and astropy (`validation/check_export.py`, in the validation venv: required
//!   under scripts/test.sh, skipped with a message elsewhere when the venv lacks pyarrow);
//! - by LSDB, which opens the HATS export and cross-matches it with the input catalogue (the
//!   validation venv of `scripts/test.sh` has it, so CI runs it).
//!
//! And the output guard: no input is overwritten, no foreign file replaced, and a catalogue
//! whose object ids differ from the results' is refused, naming the row.

use std::path::{Path, PathBuf};

use aion_io::Catalog;
use aion_io::catalog::ColumnValues;

use crate::util::*;

fn formats(name: &str) -> String {
    fixture("formats").join(name).display().to_string()
}

/// Predictions of `tok_z` with posteriors (`pdf/tok_z`: (N, 1, K) per row) on `catalog`.
fn predict(catalog: &str, out: &Path) {
    let model = repo().join("data/models/sdss-photoz-tiny");
    let mut a = io_args(&model, catalog, out);
    a.extend(["--target", "tok_z", "--save-pdf", "--chunk-rows", "64"]);
    assert_ok(&run_tool(PREDICT, Launch::Alone, &a));
}

/// [`predict`] on the HATS catalogue into `dir/pred.h5`: the catalogue and the results.
fn predicted_hats(dir: &Path) -> (String, PathBuf) {
    let hats_in = formats("sdss_hats");
    let results = dir.join("pred.h5");
    predict(&hats_in, &results);
    (hats_in, results)
}

fn export(launch: Launch, args: &[&str]) -> std::process::Output {
    run_tool(EXPORT, launch, args)
}

const COLUMNS: [&str; 3] = ["ra", "dec", "z_spec=Z"];

fn export_args<'a>(results: &'a str, catalog: &'a str, out: &'a str) -> Vec<&'a str> {
    let mut a = vec!["--results", results, "--catalog", catalog, "--output", out];
    a.push("--columns");
    a.extend(COLUMNS);
    a
}

/// Reads every column of `export` with the project's catalogue reader and compares the result
/// columns with the HDF5 datasets they came from (row by row, in the same order).
fn assert_matches_results(export: &[String], results: &Path) {
    let mut cat = Catalog::open(export).unwrap();
    cat.size_by(&["object_id".to_string()]).unwrap();
    let all = read_all(results);
    let n = all["/object_id"].0[0];
    assert_eq!(cat.n_rows(), n, "{export:?}: rows");
    let mut compared = 0;
    for (name, (shape, want)) in &all {
        let column = name.trim_start_matches('/').replace('/', "_");
        if shape.first() != Some(&n) || !cat.has(&column) {
            continue;
        }
        let got = cat.read_f64(&column, 0..n).unwrap();
        assert_eq!(got.row_shape, shape[1..], "{export:?}: {column}: row shape");
        let got: Vec<f64> = match got.values {
            ColumnValues::F64(v) => v,
            ColumnValues::I64(v) => v.iter().map(|&x| x as f64).collect(),
            other => panic!("{column}: {other:?}"),
        };
        let bad = got
            .iter()
            .zip(want)
            .position(|(a, b)| !(a == b || (a.is_nan() && b.is_nan())));
        assert!(bad.is_none(), "{export:?}: {column}: differs at {bad:?}");
        compared += 1;
    }
    // object_id, three masks, pred/tok_z/* (8), pdf/tok_z at least.
    assert!(
        compared >= 12,
        "{export:?}: only {compared} columns compared"
    );
    for c in ["ra", "dec", "z_spec"] {
        assert!(cat.has(c), "{export:?}: no column {c}");
    }
}

/// `python` if it can import `modules`.
fn with_modules(python: PathBuf, modules: &str) -> Option<PathBuf> {
    let ok = command(&python)
        .args(["-c", &format!("import {modules}")])
        .output()
        .is_ok_and(|o| o.status.success());
    ok.then_some(python)
}

fn run_checker(python: &Path, args: &[&str]) {
    let out = command(python)
        .arg(repo().join("validation/check_export.py"))
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "check_export.py failed:\n{text}");
    eprintln!("{text}");
}

#[test]
fn exports_round_trip_through_pyarrow_astropy_and_lsdb() {
    let dir = tempdir();
    let (hats_in, results) = predicted_hats(dir.path());
    let r = results.to_str().unwrap();
    let pq = dir.path().join("pred.parquet");
    let fits = dir.path().join("pred.fits");
    let hats = dir.path().join("pred_hats");
    let (p, f, h) = (
        pq.to_str().unwrap(),
        fits.to_str().unwrap(),
        hats.to_str().unwrap(),
    );
    assert_ok(&export(Launch::Alone, &export_args(r, &hats_in, p)));
    assert_ok(&export(Launch::Mpirun(2), &export_args(r, &hats_in, f)));
    let mut a = export_args(r, &hats_in, h);
    a.extend(["--format", "hats", "--chunk-rows", "7"]);
    assert_ok(&export(Launch::Mpirun(3), &a));
    for e in [p, f] {
        assert_matches_results(&[e.to_string()], &results);
        assert!(Path::new(&format!("{e}.run.json")).is_file());
    }
    assert_matches_results(&[h.to_string()], &results);

    let catalogue = formats("sdss.parquet");
    let mut check = vec!["--results", r, "--catalog", &catalogue, "--columns"];
    check.extend(COLUMNS);
    check.extend([
        "--parquet",
        p,
        "--fits",
        f,
        "--hats",
        h,
        "--hats-input",
        &hats_in,
    ]);
    check.push("--lsdb");
    let main = venv_python().and_then(|py| with_modules(py, "pyarrow, astropy, h5py, lsdb"));
    match main {
        Some(py) => run_checker(&py, &check),
        None if std::env::var_os("AION_PYTHON").is_some() => {
            panic!("the validation venv (AION_PYTHON) lacks pyarrow, astropy, h5py or lsdb")
        }
        None => eprintln!("skipped the pyarrow/astropy/LSDB read-back: no validation venv"),
    }
}

#[test]
fn export_never_replaces_inputs_or_foreign_files_and_checks_the_join() {
    let dir = tempdir();
    let (hats_in, results) = predicted_hats(dir.path());
    let r = results.to_str().unwrap();

    // Outputs that are inputs: the results, the catalogue directory, a catalogue file.
    let part = std::fs::read_dir(Path::new(&hats_in).join("dataset/Norder=0/Dir=0"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    for (out, fmt) in [
        (r.to_string(), "parquet"),
        (hats_in.clone(), "hats"),
        (part.display().to_string(), "parquet"),
    ] {
        let mut a = export_args(r, &hats_in, &out);
        a.extend(["--format", fmt, "--overwrite"]);
        let err = assert_fails(&export(Launch::Alone, &a));
        assert!(err.contains("an input of this run"), "{out}: {err}");
    }

    // A foreign file is never replaced; our own only with --overwrite.
    let foreign = dir.path().join("foreign.parquet");
    std::fs::copy(formats("sdss.parquet"), &foreign).unwrap();
    let before = std::fs::read(&foreign).unwrap();
    let mut a = export_args(r, &hats_in, foreign.to_str().unwrap());
    a.push("--overwrite");
    let err = assert_fails(&export(Launch::Alone, &a));
    assert!(err.contains("not written by aion-export"), "{err}");
    assert_eq!(std::fs::read(&foreign).unwrap(), before);
    let ours = dir.path().join("ours.fits");
    let o = ours.to_str().unwrap();
    assert_ok(&export(Launch::Alone, &export_args(r, &hats_in, o)));
    let err = assert_fails(&export(Launch::Alone, &export_args(r, &hats_in, o)));
    assert!(err.contains("--overwrite"), "{err}");
    let mut a = export_args(r, &hats_in, o);
    a.push("--overwrite");
    assert_ok(&export(Launch::Mpirun(2), &a));

    // The same objects in another order (the Parquet copy is in catalogue order, the HATS
    // catalogue in sky order): refused, naming the row; nothing is left at the output.
    let wrong = dir.path().join("wrong.parquet");
    let err = assert_fails(&export(
        Launch::Mpirun(2),
        &export_args(r, &formats("sdss.parquet"), wrong.to_str().unwrap()),
    ));
    assert_mentions(&err, &["row ", "object_id", "not the one"]);
    assert!(!wrong.exists());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("aion-tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // HATS needs a HATS input.
    let parquet = formats("sdss.parquet");
    let mut a = export_args(r, &parquet, "x_hats");
    a.extend(["--format", "hats"]);
    let err = assert_fails(&export(Launch::Alone, &a));
    assert!(err.contains("HATS"), "{err}");
}
