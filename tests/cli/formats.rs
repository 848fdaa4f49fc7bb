//! Catalogue formats end to end. The same rows as HDF5, Parquet, FITS and a HATS catalogue
//! (`validation/fixtures/formats`, written by h5py, pyarrow, astropy and hats-import) give the
//! same outputs from aion-tokenize, aion-embed, aion-predict and aion-generate, on 1, 2 and 3
//! ranks and after a kill and resume; damaged inputs stop every rank with a message naming the
//! file, column and row (or flag the row); labels are inputs only when mapped; rejected rows are
//! counted per reason.
//!
//! Runs use `--batch-size 1`: a HATS catalogue is read in sky order, so its chunks hold other
//! rows than the HDF5 file's, and a row's float results are bit-identical only when it is not
//! batched with different neighbours. Outputs are compared row by row by `object_id`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::model::pipeline_model;
use crate::util::*;

fn formats(name: &str) -> String {
    fixture("formats").join(name).display().to_string()
}

fn sdss_model() -> String {
    repo()
        .join("data/models/sdss-photoz-tiny")
        .display()
        .to_string()
}

/// Every dataset of an output with its rows put in `object_id` order (`resume/` left out: it
/// is per chunk, not per row).
fn by_object_id(path: &Path) -> Datasets {
    let all = read_all(path);
    let ids = all["/object_id"].1.clone();
    let mut order: Vec<usize> = (0..ids.len()).collect();
    order.sort_by(|&a, &b| ids[a].total_cmp(&ids[b]));
    all.into_iter()
        .filter(|(k, _)| !k.starts_with("/resume"))
        .map(|(k, (shape, v))| {
            let n = shape.first().copied().unwrap_or(0);
            if n != ids.len() || n == 0 {
                return (k, (shape, v));
            }
            let len = v.len() / n;
            let v = order
                .iter()
                .flat_map(|&r| v[r * len..(r + 1) * len].iter().copied())
                .collect();
            (k, (shape, v))
        })
        .collect()
}

/// Asserts two outputs hold the same datasets with the same values per object (NaN == NaN).
fn assert_same_per_object(what: &str, a: &Path, b: &Path) {
    assert_same_values(what, &by_object_id(a), &by_object_id(b), |x, y| x == y);
}

/// A tool run on a catalogue with the run options every comparison shares.
fn args(model: &str, cat: &str, out: &Path, chunk: &str, extra: &[&str]) -> Vec<String> {
    let mut a = io_args(model, cat, out);
    a.extend(["--chunk-rows", chunk, "--batch-size", "1"]);
    a.extend(extra);
    a.into_iter().map(String::from).collect()
}

struct Tool {
    name: &'static str,
    bin: &'static str,
    extra: &'static [&'static str],
}

const TOOLS: [Tool; 4] = [
    Tool {
        name: "tokenize",
        bin: TOKENIZE,
        extra: &["--map", "tok_z=Z"],
    },
    Tool {
        name: "embed",
        bin: EMBED,
        extra: &[],
    },
    Tool {
        name: "predict",
        bin: PREDICT,
        extra: &["--target", "tok_z"],
    },
    Tool {
        name: "generate",
        bin: GENERATE,
        extra: &["--target", "tok_z", "--samples", "2"],
    },
];

/// Every tool on `set`.h5 (one process), then on the other formats with 1, 2 and 3 ranks in
/// turn: outputs equal the HDF5 run's object by object.
fn every_tool_every_format(set: &str, model: &str, chunk: &str, others: [&str; 3]) {
    let dir = tempdir();
    let launches = [Launch::Alone, Launch::Mpirun(2), Launch::Mpirun(3)];
    for (t, tool) in TOOLS.iter().enumerate() {
        let reference = dir.path().join(format!("{}-h5.h5", tool.name));
        let h5 = formats(&format!("{set}.h5"));
        let a = args(model, &h5, &reference, chunk, tool.extra);
        assert_ok(&run_tool_env(tool.bin, Launch::Alone, &a, &[]));
        for (f, other) in others.iter().enumerate() {
            let launch = launches[(t + f) % 3];
            let out = dir.path().join(format!("{}-{f}.h5", tool.name));
            let a = args(model, &formats(other), &out, chunk, tool.extra);
            assert_ok(&run_tool_env(tool.bin, launch, &a, &[]));
            let what = format!("{} on {other} ({launch:?})", tool.name);
            assert_same_per_object(&what, &reference, &out);
        }
    }
}

#[test]
fn sdss_rows_give_the_same_outputs_from_every_format_and_tool() {
    let others = ["sdss.parquet", "sdss.fits", "sdss_hats"];
    every_tool_every_format("sdss", &sdss_model(), "64", others);
}

#[test]
fn multimodal_rows_give_the_same_outputs_from_every_format_and_tool() {
    let (_dir, model) = pipeline_model();
    let others = ["mm.parquet", "mm.fits.gz", "mm_hats"];
    every_tool_every_format("mm", model.to_str().unwrap(), "3", others);
}

#[test]
fn killed_runs_on_every_format_resume_to_the_same_output() {
    let dir = tempdir();
    let model = sdss_model();
    let reference = dir.path().join("ref.h5");
    let h5 = formats("sdss.h5");
    assert_ok(&run_tool_env(
        EMBED,
        Launch::Alone,
        &args(&model, &h5, &reference, "32", &[]),
        &[],
    ));
    for (i, (cat, fault, launch)) in [
        ("sdss.parquet", "mid_write@6:1", Launch::Mpirun(2)),
        ("sdss.fits", "after_flush@2:0", Launch::Mpirun(3)),
        ("sdss_hats", "prepare@4:0", Launch::Alone),
    ]
    .into_iter()
    .enumerate()
    {
        let out = dir.path().join(format!("k{i}.h5"));
        let a = args(&model, &formats(cat), &out, "32", &[]);
        kill_then_resume(EMBED, launch, &a, fault);
        assert_same_per_object(&format!("resumed {cat}"), &reference, &out);
    }
}

/// Root attribute `name` of an output.
fn attr(path: &Path, name: &str) -> String {
    hdf5::File::open(path)
        .unwrap()
        .attr(name)
        .unwrap()
        .read_scalar::<hdf5::types::VarLenUnicode>()
        .unwrap()
        .to_string()
}

fn modality_bit(path: &Path, key: &str) -> u64 {
    let bits: Vec<String> = serde_json::from_str(&attr(path, "modality_bits")).unwrap();
    1u64 << bits.iter().position(|b| b == key).unwrap()
}

#[test]
fn redshift_is_an_input_only_when_mapped() {
    let (dir, model) = pipeline_model();
    let model = model.to_str().unwrap();
    let with_z = fixture("pipeline/catalog.h5");
    let without_z = dir.path().join("catalog_without_z.h5");
    std::fs::copy(&with_z, &without_z).unwrap();
    hdf5::File::open_rw(&without_z)
        .unwrap()
        .unlink("Z")
        .unwrap();
    let run = |cat: &Path, name: &str, extra: &[&str]| -> (PathBuf, String) {
        let out = dir.path().join(name);
        let a = args(model, cat.to_str().unwrap(), &out, "3", extra);
        let err = assert_ok(&run_tool_env(EMBED, Launch::Mpirun(2), &a, &[]));
        (out, err)
    };
    let (default, log) = run(&with_z, "default.h5", &[]);
    let (no_z, _) = run(&without_z, "no_z.h5", &[]);
    let (mapped, _) = run(&with_z, "mapped.h5", &["--map", "tok_z=Z"]);
    let z = modality_bit(&default, "tok_z");
    let used = |p: &Path| -> Vec<u64> {
        hdf5::File::open(p)
            .unwrap()
            .dataset("modalities_used")
            .unwrap()
            .read_raw()
            .unwrap()
    };
    assert!(
        used(&default).iter().all(|u| u & z == 0),
        "tok_z used without --map"
    );
    assert!(
        log.contains("not used (a label") && log.contains("tok_z <- Z"),
        "{log}"
    );
    assert!(!attr(&default, "inputs").contains("tok_z"));
    assert_same_datasets(&default, &no_z);
    // Mapped, it is an input: the flags and embeddings change (so this test can fail).
    assert!(used(&mapped).iter().any(|u| u & z != 0));
    let inputs: serde_json::Value = serde_json::from_str(&attr(&mapped, "inputs")).unwrap();
    assert_eq!(inputs["tok_z"], "Z");
    let emb = |p: &Path| read_all(p)["/embedding"].1.clone();
    assert_ne!(emb(&mapped), emb(&default));
}

#[test]
fn rejected_rows_are_counted_per_reason() {
    let (dir, model) = pipeline_model();
    let out = dir.path().join("bad.h5");
    let bad = fixture("pipeline/bad_rows.h5");
    let a = args(
        model.to_str().unwrap(),
        bad.to_str().unwrap(),
        &out,
        "3",
        &[],
    );
    let err = assert_ok(&run_tool_env(TOKENIZE, Launch::Mpirun(2), &a, &[]));
    let run: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{}.run.json", out.display())).unwrap(),
    )
    .unwrap();
    let m = &run["summary"]["modalities"];
    let reasons = |key: &str| -> BTreeMap<String, u64> {
        m[key]["rejected_by_reason"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v["rows"].as_u64().unwrap()))
            .collect()
    };
    // bad_rows.h5: row 5 an empty band name, row 6 band "des-q", row 7 an infinite pixel and
    // an infinite FLUX_G; rows 3 and 4 malformed spectra (make_fixture.py).
    assert_eq!(
        reasons("tok_image"),
        BTreeMap::from([
            ("empty band name".to_string(), 1),
            ("unknown band name".to_string(), 1),
            (
                "NaN or infinite pixel in the central 96x96 crop".to_string(),
                1
            ),
        ])
    );
    assert_eq!(m["tok_image"]["rejected"], 3);
    let unknown = &m["tok_image"]["rejected_by_reason"]["unknown band name"];
    assert_eq!(
        (
            unknown["first_row"].as_u64(),
            unknown["first_object_id"].as_i64()
        ),
        (Some(6), Some(906))
    );
    let detail = unknown["detail"].as_str().unwrap();
    assert_mentions(detail, &["'des-q' is not one of HSC-G", "DES-G"]);
    assert_eq!(
        reasons("tok_spectrum_desi"),
        BTreeMap::from([
            ("fewer than 2 pixels".to_string(), 1),
            ("wavelength not finite and increasing".to_string(), 1),
        ])
    );
    assert_eq!(
        reasons("tok_flux_g"),
        BTreeMap::from([("NaN or infinite value".to_string(), 1)])
    );
    assert_mentions(
        &err,
        &["tok_image: 3 row(s) rejected", "1 x unknown band name"],
    );
}

mod bad_input {
    use super::*;

    /// A run of `bin` on `cats` with the pipeline fixture's model; returns stderr of the exit-2
    /// failure.
    fn fails(bin: &str, cats: &[String], extra: &[&str], launch: Launch) -> String {
        let (dir, model) = pipeline_model();
        let out = dir.path().join("o.h5");
        let mut a = vec![
            "--model".to_string(),
            model.display().to_string(),
            "--output".to_string(),
            out.display().to_string(),
            "--chunk-rows".to_string(),
            "2".to_string(),
            "--catalog".to_string(),
        ];
        a.extend(cats.iter().cloned());
        a.extend(extra.iter().map(|s| s.to_string()));
        let o = run_tool_env(bin, launch, &a, &[]);
        let err = assert_fails(&o);
        assert!(!err.contains("panicked"), "{err}");
        err
    }

    #[test]
    fn a_parquet_file_missing_a_column_of_a_group_is_named() {
        let cats = [
            formats("bad/spec_full.parquet"),
            formats("bad/spec_no_ivar.parquet"),
        ];
        let err = fails(TOKENIZE, &cats, &[], Launch::Mpirun(2));
        assert_mentions(
            &err,
            &["spec_no_ivar.parquet", "spectrum_ivar", "rows 2..4"],
        );
    }

    #[test]
    fn a_fits_vector_column_of_the_wrong_length_is_named() {
        let err = fails(
            TOKENIZE,
            &[formats("bad/wrong_vector.fits")],
            &[],
            Launch::Alone,
        );
        assert_mentions(
            &err,
            &["wrong_vector.fits", "spectrum_ivar", "[199]", "[200]"],
        );
    }

    #[test]
    fn a_row_of_the_wrong_length_stops_every_rank_naming_file_column_and_row() {
        let err = fails(
            EMBED,
            &[formats("bad/ragged.parquet")],
            &[],
            Launch::Mpirun(2),
        );
        assert_mentions(&err, &["ragged.parquet", "'coeff'", "row 2"]);
    }

    #[test]
    fn a_hats_catalogue_missing_a_partition_is_named() {
        let dir = tempdir();
        let hats = dir.path().join("sdss_hats");
        copy_dir(&fixture("formats/sdss_hats"), &hats);
        std::fs::remove_file(hats.join("dataset/Norder=6/Dir=20000/Npix=27257.parquet")).unwrap();
        let err = fails(
            TOKENIZE,
            &[hats.display().to_string()],
            &[],
            Launch::Mpirun(2),
        );
        assert_mentions(&err, &["Norder=6 Npix=27257", "missing"]);
    }

    #[test]
    fn mixed_formats_a_wrong_format_and_a_plain_directory_are_refused() {
        let err = fails(
            TOKENIZE,
            &[formats("sdss.h5"), formats("sdss.parquet")],
            &[],
            Launch::Alone,
        );
        assert_mentions(&err, &["mixes formats", "sdss.parquet"]);
        let err = fails(
            TOKENIZE,
            &[formats("sdss.parquet")],
            &["--format", "fits"],
            Launch::Mpirun(2),
        );
        assert_mentions(&err, &["sdss.parquet", "FITS"]);
        let err = fails(TOKENIZE, &[formats("bad")], &[], Launch::Alone);
        assert!(err.contains("is a directory"), "{err}");
        let err = fails(
            TOKENIZE,
            &[formats("sdss.h5")],
            &["--format", "csv"],
            Launch::Alone,
        );
        assert!(err.contains("hdf5, parquet, hats, fits"), "{err}");
    }

    #[test]
    fn map_errors_list_the_token_keys_and_the_catalogues_columns() {
        let cat = [formats("sdss.parquet")];
        let err = fails(TOKENIZE, &cat, &["--map", "tok_nope=mag_u"], Launch::Alone);
        assert_mentions(&err, &["tok_flux_g", "color_gr"]);
        let err = fails(
            TOKENIZE,
            &cat,
            &["--map", "tok_flux_g=NO_SUCH"],
            Launch::Mpirun(2),
        );
        assert_mentions(&err, &["NO_SUCH", "sdss.parquet", "magerr_u"]);
    }

    #[test]
    fn null_values_are_absent_rows_not_errors() {
        let dir = tempdir();
        let out = dir.path().join("t.h5");
        let model = fixture("scalar_codecs/hub");
        let a = args(
            model.to_str().unwrap(),
            &formats("bad/nulls.parquet"),
            &out,
            "2",
            &[],
        );
        assert_ok(&run_tool_env(TOKENIZE, Launch::Mpirun(2), &a, &[]));
        let (_, ids) = read_i64(&out, "object_id");
        assert_eq!(ids, [10, 11, 12, 13]);
        let (_, g) = read_i64(&out, "tok_flux_g");
        let (_, e) = read_i64(&out, "tok_ebv");
        assert_eq!((g[1], e[2]), (-1, -1));
        assert!(g[0] >= 0 && e[1] >= 0);
        let rejected: Vec<u64> = hdf5::File::open(&out)
            .unwrap()
            .dataset("modalities_rejected")
            .unwrap()
            .read_raw()
            .unwrap();
        assert!(rejected.iter().all(|&r| r == 0), "{rejected:?}");
    }
}
