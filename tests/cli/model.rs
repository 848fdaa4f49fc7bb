//! `aion-embed` and `aion-predict` end to end against the reference pipeline fixture
//! (`validation/fixtures/pipeline`): raw MMU-style columns and pre-tokenized input, 1/2/3 ranks.

use std::path::{Path, PathBuf};

use crate::util::*;

/// A temp dir holding the fixture's model (see [`assemble_model`]), and that model.
pub fn pipeline_model() -> (tempfile::TempDir, PathBuf) {
    let dir = tempdir();
    let model = assemble_model(dir.path());
    (dir, model)
}

/// Assembles the fixture's model (transformer + codecs of other fixtures) into a Hub-layout
/// folder of symlinks, as `model.json` lists it.
pub fn assemble_model(dir: &Path) -> PathBuf {
    let fix = repo().join("validation/fixtures");
    let spec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fix.join("pipeline/model.json")).unwrap())
            .unwrap();
    let model = dir.join("model");
    std::fs::create_dir_all(model.join("codecs")).unwrap();
    let t = fix.join(spec["transformer"].as_str().unwrap());
    for f in ["config.json", "model.safetensors"] {
        std::os::unix::fs::symlink(t.join(f), model.join(f)).unwrap();
    }
    for (name, rel) in spec["codecs"].as_object().unwrap() {
        std::os::unix::fs::symlink(
            fix.join(rel.as_str().unwrap()),
            model.join("codecs").join(name),
        )
        .unwrap();
    }
    model
}

fn expected(name: &str) -> (Vec<usize>, Vec<f32>) {
    let bytes = std::fs::read(fixture("pipeline/expected.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor(name).unwrap();
    (
        t.shape().to_vec(),
        t.data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect(),
    )
}

fn read_f32(path: &Path, name: &str) -> Vec<f32> {
    hdf5::File::open(path)
        .unwrap()
        .dataset(name)
        .unwrap()
        .read_raw::<f32>()
        .unwrap()
}

/// Max |a − b| over pairs where both are finite; asserts NaN positions agree.
fn max_abs(what: &str, got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let mut m = 0f32;
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.is_nan(), w.is_nan(), "{what}[{i}]: got {g}, want {w}");
        if w.is_finite() {
            m = m.max((g - w).abs());
        }
    }
    eprintln!("[parity] {what}: max abs err {m:.3e}");
    m
}

fn common<'a>(model: &'a str, cat: &'a str, out: &'a str) -> Vec<&'a str> {
    let mut a = io_args(model, cat, out);
    a.extend(["--batch-size", "3", "--chunk-rows", "3"]);
    a
}

#[test]
fn embeddings_match_the_reference_from_raw_and_from_tokens() {
    let (dir, model) = pipeline_model();
    let (_, want) = expected("embedding");
    // The reference embeds every modality, the redshift included: mapped explicitly here.
    for (input, launch, z) in [
        ("catalog.h5", Launch::Alone, "tok_z=Z"),
        ("catalog.h5", Launch::Mpirun(3), "tok_z=Z"),
        ("tokens.h5", Launch::Mpirun(2), "tok_z=tokens:tok_z"),
    ] {
        let out = dir.path().join(format!("emb-{input}-{launch:?}.h5"));
        let cat = fixture("pipeline").join(input);
        let mut a = common(
            model.to_str().unwrap(),
            cat.to_str().unwrap(),
            out.to_str().unwrap(),
        );
        a.extend(["--map", z]);
        assert_ok(&run_tool(EMBED, launch, &a));
        let got = read_f32(&out, "embedding");
        assert!(max_abs(&format!("embedding from {input} ({launch:?})"), &got, &want) <= 1e-5);
        assert_self_describing(&out);
    }
}

#[test]
fn logits_and_posteriors_match_the_reference() {
    let (dir, model) = pipeline_model();
    let (_, want) = expected("logits_tok_z");
    let mut first: Option<PathBuf> = None;
    for (i, launch) in [Launch::Alone, Launch::Mpirun(2), Launch::Mpirun(3)]
        .into_iter()
        .enumerate()
    {
        let out = dir.path().join(format!("pred{i}.h5"));
        let cat = fixture("pipeline/catalog.h5");
        let mut a = common(
            model.to_str().unwrap(),
            cat.to_str().unwrap(),
            out.to_str().unwrap(),
        );
        a.extend(["--target", "tok_z", "--save-logits", "--save-pdf"]);
        assert_ok(&run_tool(PREDICT, launch, &a));
        let got = read_f32(&out, "logits/tok_z");
        assert!(max_abs(&format!("logits tok_z ({launch:?})"), &got, &want) <= 1e-5);
        assert_self_describing(&out);
        // The figure names its axes physically (z_spec, z_phot as z with a subscript) and its
        // metrics as they are written (σ_NMAD), with the PIT and coverage panels.
        assert_figure(
            &format!("{}.tok_z", out.display()),
            &[
                "spectroscopic redshift z\nspec",
                "photometric redshift z\nphot",
                "σ\nNMAD",
                "PIT = F(z_spec)",
                "68 % interval:",
                "±0.05 (1 + z_spec)",
            ],
        );
        let summary: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(format!("{}.run.json", out.display())).unwrap(),
        )
        .unwrap();
        let m = &summary["summary"]["targets"]["tok_z"]["metrics"];
        for k in [
            "sigma_nmad",
            "outlier_fraction",
            "bias",
            "coverage_68",
            "coverage_95",
            "crps",
        ] {
            assert!(m[k].is_number(), "run.json: no {k} in {m}");
        }
        assert_eq!(m["pit_histogram"].as_array().unwrap().len(), 10);
        match &first {
            None => first = Some(out),
            Some(f) => assert_same_datasets(f, &out),
        }
    }
}

/// A model directory with a `calibration.json` (temperature 3 for `tok_z`): aion-predict divides
/// the logits by it before summarising: the saved PDF is softmax(logits / 3), the intervals differ
/// from those without the file (`--no-calibration`), the raw logits are unchanged, and the output
/// and run summary record the temperature.
#[test]
fn predict_applies_the_models_calibration() {
    let (dir, model) = pipeline_model();
    std::fs::write(
        model.join("calibration.json"),
        r#"{"format": "aion-hpc/calibration", "version": 1, "targets": {"tok_z": {
            "method": "temperature", "temperature": 3.0, "fitted_on": "test", "rows": 1,
            "nll": [1.0, 1.0], "coverage_68": [0.5, 0.68]}}}"#,
    )
    .unwrap();
    let cat = fixture("pipeline/catalog.h5");
    let run = |name: &str, extra: &[&str]| {
        let out = dir.path().join(name);
        let mut a = common(
            model.to_str().unwrap(),
            cat.to_str().unwrap(),
            out.to_str().unwrap(),
        );
        a.extend(["--target", "tok_z", "--save-logits", "--save-pdf"]);
        a.extend(extra);
        assert_ok(&run_tool(PREDICT, Launch::Alone, &a));
        out
    };
    let (cal, raw) = (run("cal.h5", &[]), run("raw.h5", &["--no-calibration"]));
    let width = |p: &Path| -> Vec<f32> {
        let (lo, hi) = (read_f32(p, "pred/tok_z/q16"), read_f32(p, "pred/tok_z/q84"));
        hi.iter().zip(&lo).map(|(h, l)| h - l).collect()
    };
    // Both runs summarise the same rows; the intervals differ (the random model's posteriors
    // are multimodal, so tempering need not widen each 16–84 % interval: the PDF is checked).
    let (wc, wr) = (width(&cal), width(&raw));
    let rows: Vec<usize> = (0..wr.len()).filter(|&i| wr[i].is_finite()).collect();
    assert!(!rows.is_empty());
    assert!(
        rows.iter().any(|&i| wc[i] != wr[i]),
        "calibration changed no interval"
    );
    let logits = read_f32(&raw, "logits/tok_z");
    let same = |a: &f32, b: &f32| a == b || (a.is_nan() && b.is_nan());
    assert!(
        logits
            .iter()
            .zip(&read_f32(&cal, "logits/tok_z"))
            .all(|(a, b)| same(a, b)),
        "raw logits are saved as they are (rows without input are NaN in both)"
    );
    let pdf = read_f32(&cal, "pdf/tok_z");
    let k = pdf.len() / wr.len();
    let v = logits.len() / wr.len();
    for &i in &rows {
        let l: Vec<f64> = logits[i * v..i * v + k]
            .iter()
            .map(|&x| f64::from(x) / 3.0)
            .collect();
        let max = l.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let total: f64 = l.iter().map(|x| (x - max).exp()).sum();
        for (j, x) in l.iter().enumerate() {
            let want = (x - max).exp() / total;
            let got = f64::from(pdf[i * k + j]);
            assert!(
                (got - want).abs() < 1e-6,
                "row {i} token {j}: pdf {got}, want {want}"
            );
        }
    }
    let attr = |p: &Path| -> String {
        let f = hdf5::File::open(p).unwrap();
        let a: hdf5::types::VarLenUnicode = f
            .dataset("pred/tok_z/median")
            .unwrap()
            .attr("calibration")
            .unwrap()
            .read_scalar()
            .unwrap();
        a.to_string()
    };
    let recorded: serde_json::Value = serde_json::from_str(&attr(&cal)).unwrap();
    assert_eq!(recorded["temperature"], 3.0, "{recorded}");
    assert_eq!(attr(&raw), "none");
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{}.run.json", cal.display())).unwrap(),
    )
    .unwrap();
    assert_eq!(
        summary["summary"]["targets"]["tok_z"]["calibration"], 3.0,
        "{summary}"
    );
}

#[test]
fn damaged_rows_are_flagged_and_never_stop_the_run() {
    let (dir, model) = pipeline_model();
    let model = model.to_str().unwrap();
    let bad = fixture("pipeline/bad_rows.h5");
    let out = dir.path().join("bad.h5");
    let a = common(model, bad.to_str().unwrap(), out.to_str().unwrap());
    assert_ok(&run_tool(EMBED, Launch::Mpirun(2), &a));
    let f = hdf5::File::open(&out).unwrap();
    // No row lost: all 8 rows, in order.
    let ids: Vec<i64> = f.dataset("object_id").unwrap().read_raw().unwrap();
    assert_eq!(ids, (900..908).collect::<Vec<_>>());
    let bits = modality_bits(&f);
    let bit = |k: &str| 1u64 << bits.iter().position(|b| b == k).unwrap();
    let read = |n: &str| -> Vec<u64> { f.dataset(n).unwrap().read_raw().unwrap() };
    let (used, rejected, repaired) = (
        read("modalities_used"),
        read("modalities_rejected"),
        read("modalities_repaired"),
    );
    let (img, spec, flux) = (
        bit("tok_image"),
        bit("tok_spectrum_desi"),
        bit("tok_flux_g"),
    );
    let all = used[2];
    assert_eq!(rejected, vec![0, 0, 0, spec, spec, img, img, img | flux]);
    assert_eq!(repaired, vec![spec, spec, 0, 0, 0, 0, 0, 0]);
    for (r, (&u, &x)) in used.iter().zip(&rejected).enumerate() {
        assert_eq!(u, all & !x, "row {r}: used {u:b}");
    }
    let emb: Vec<f32> = f.dataset("embedding").unwrap().read_raw().unwrap();
    assert!(
        emb.iter().all(|v| v.is_finite()),
        "every row has usable modalities left"
    );
}

#[test]
fn a_padded_spectrum_tokenizes_like_its_unpadded_twin() {
    let (dir, model) = pipeline_model();
    let mut got = Vec::new();
    for name in ["bad_rows.h5", "bad_rows_unpadded.h5"] {
        let out = dir.path().join(format!("t-{name}"));
        let cat = fixture("pipeline").join(name);
        let a = io_args(&model, &cat, &out);
        assert_ok(&run_tool(TOKENIZE, Launch::Alone, &a));
        let (_, t) = read_i64(&out, "tok_spectrum_desi");
        got.push(t);
    }
    let row = |v: &[i64], r: usize| v[r * 273..(r + 1) * 273].to_vec();
    assert_eq!(
        row(&got[0], 2),
        row(&got[1], 0),
        "padded row 2 vs its unpadded twin"
    );
    assert_ne!(
        row(&got[0], 2)[1..],
        row(&got[0], 0)[1..],
        "the padding removed a real part of the spectrum"
    );
}

#[test]
fn every_modality_tokenizes_and_decodes_through_the_tool() {
    let (dir, model) = pipeline_model();
    let tok = dir.path().join("tok.h5");
    let cat = fixture("pipeline/catalog.h5");
    let mut a = io_args(&model, &cat, &tok);
    a.extend(["--map", "tok_z=Z"]);
    assert_ok(&run_tool(TOKENIZE, Launch::Mpirun(2), &a));
    // Tokens equal the reference's for every modality (image, spectrum, catalog, scalars, XP).
    let bytes = std::fs::read(fixture("pipeline/expected.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    for key in [
        "tok_image",
        "tok_spectrum_desi",
        "catalog",
        "tok_flux_g",
        "tok_ebv",
        "tok_z",
        "tok_xp_bp",
    ] {
        let want: Vec<i64> = st
            .tensor(&format!("tokens.{key}"))
            .unwrap()
            .data()
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
            .collect();
        let (_, got) = read_i64(&tok, key);
        assert_eq!(got, want, "{key}: tokens differ from the reference");
    }
    let dec = dir.path().join("dec.h5");
    let mut a = vec!["--decode"];
    a.extend(io_args(&model, &tok, &dec));
    assert_ok(&run_tool(TOKENIZE, Launch::Mpirun(3), &a));
    let f = hdf5::File::open(&dec).unwrap();
    let img: Vec<f32> = f.dataset("decoded/tok_image").unwrap().read_raw().unwrap();
    let per = 4 * 96 * 96;
    let (_, itok) = read_i64(&tok, "tok_image");
    for r in 0..8 {
        let has = itok[r * 576] >= 0;
        let row = &img[r * per..(r + 1) * per];
        assert!(
            if has {
                row.iter().all(|v| v.is_finite())
            } else {
                row.iter().all(|v| v.is_nan())
            },
            "image row {r}"
        );
    }
    assert_self_describing(&tok);
    assert_self_describing(&dec);
    let grid: Vec<f64> = f
        .dataset("decoded/tok_spectrum_desi_wavelength")
        .unwrap()
        .read_raw()
        .unwrap();
    assert_eq!(grid.len(), 8704);
    assert!((grid[0] - 3500.0).abs() < 1e-3 && (grid[1] - 3500.8).abs() < 1e-3);
    let x: Vec<f32> = f.dataset("decoded/catalog/X").unwrap().read_raw().unwrap();
    assert!(
        x.iter()
            .filter(|v| v.is_finite())
            .all(|&v| (0.0..96.0).contains(&v))
    );
}

/// A re-run of a finished job says so and changes nothing: not a byte of the output, of its
/// `run.json` or of its figure; no warning, no rows/s of a run that did nothing.
#[test]
fn a_finished_run_run_again_changes_nothing() {
    let (dir, model) = pipeline_model();
    let cat = fixture("pipeline/catalog.h5");
    for (bin, extra) in [(EMBED, vec![]), (PREDICT, vec!["--target", "tok_z"])] {
        let out = dir
            .path()
            .join(format!("{}.h5", bin.rsplit('/').next().unwrap()));
        let mut a = common(
            model.to_str().unwrap(),
            cat.to_str().unwrap(),
            out.to_str().unwrap(),
        );
        a.extend(extra);
        assert_ok(&run_tool(bin, Launch::Mpirun(2), &a));
        let mut files = vec![
            out.clone(),
            PathBuf::from(format!("{}.run.json", out.display())),
        ];
        if bin == PREDICT {
            files.push(PathBuf::from(format!("{}.tok_z.png", out.display())));
        }
        let before = snapshot(&files);
        let err = assert_ok(&run_tool(bin, Launch::Mpirun(2), &a));
        assert_eq!(
            before,
            snapshot(&files),
            "{bin}: a finished run was changed"
        );
        assert!(err.contains("is complete"), "{bin}: {err}");
        assert!(
            !err.contains("WARN") && !err.contains("rows/s"),
            "{bin}: {err}"
        );
    }
}
