//! `aion-tokenize` end to end.

use std::path::Path;

use crate::util::*;

const BIN: &str = TOKENIZE;

fn tokenize(launch: Launch, out: &Path, extra: &[&str]) -> std::process::Output {
    let (model, cat) = scalar_fixture();
    let mut args = io_args(&model, &cat, &out);
    args.extend_from_slice(extra);
    run_tool(BIN, launch, &args)
}

/// Reference tokens (from the fixture) for `key`; values that are NaN/inf are expected as −1.
fn expected(key: &str) -> Vec<i64> {
    use safetensors::SafeTensors;
    let bytes = std::fs::read(fixture("scalar_codecs/io.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let t = st.tensor(&format!("{key}_tokens")).unwrap();
    let toks: Vec<i64> = match t.dtype() {
        safetensors::Dtype::I64 => t
            .data()
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
            .collect(),
        safetensors::Dtype::I32 => t
            .data()
            .chunks_exact(4)
            .map(|b| i64::from(i32::from_le_bytes(b.try_into().unwrap())))
            .collect(),
        d => panic!("{d:?}"),
    };
    let v = st.tensor(&format!("{key}_values")).unwrap();
    let vals: Vec<f32> = v
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let per_row = vals.len() / 64;
    let mut out = toks;
    for r in 0..64 {
        if vals[r * per_row..(r + 1) * per_row]
            .iter()
            .any(|x| !x.is_finite())
        {
            out[r * per_row..(r + 1) * per_row]
                .iter_mut()
                .for_each(|t| *t = -1);
        }
    }
    out
}

#[test]
fn tokens_equal_the_reference_for_every_scalar_codec_kind() {
    let dir = tempdir();
    let out = dir.path().join("tok.h5");
    // The redshift is a label: tokenized only when mapped.
    let z = ["--batch-size", "10", "--map", "tok_z=Z"];
    assert_ok(&tokenize(Launch::Alone, &out, &z));
    for key in ["tok_ebv", "tok_flux_g", "tok_xp_bp", "tok_xp_rp", "tok_z"] {
        let (shape, got) = read_i64(&out, key);
        assert_eq!(shape[0], 64, "{key}");
        assert_eq!(
            got,
            expected(key),
            "{key}: tokens differ from the reference"
        );
    }
    let (_, ids) = read_i64(&out, "object_id");
    assert_eq!(ids, (1000..1064).collect::<Vec<i64>>());
}

#[test]
fn unusable_values_are_flagged_per_row() {
    let dir = tempdir();
    let out = dir.path().join("tok.h5");
    assert_ok(&tokenize(Launch::Alone, &out, &["--map", "tok_z=Z"]));
    let f = hdf5::File::open(&out).unwrap();
    let bits = modality_bits(&f);
    let bit = |k: &str| 1u64 << bits.iter().position(|b| b == k).unwrap();
    let rejected: Vec<u64> = f
        .dataset("modalities_rejected")
        .unwrap()
        .read_raw()
        .unwrap();
    let used: Vec<u64> = f.dataset("modalities_used").unwrap().read_raw().unwrap();
    // Fixture rows with NaN: EBV row 6, FLUX_G row 7, Z row 3.
    assert_eq!(rejected[6], bit("tok_ebv"));
    assert_eq!(rejected[7], bit("tok_flux_g"));
    assert_eq!(rejected[3], bit("tok_z"));
    assert_eq!(rejected.iter().filter(|&&r| r != 0).count(), 3);
    assert_eq!(used[6] & bit("tok_ebv"), 0);
    assert_ne!(used[5] & bit("tok_ebv"), 0);
}

#[test]
fn output_is_identical_for_any_rank_count() {
    let dir = tempdir();
    let one = dir.path().join("one.h5");
    assert_ok(&tokenize(Launch::Alone, &one, &["--batch-size", "10"]));
    for (n, batch) in [(2, "10"), (3, "7")] {
        let many = dir.path().join(format!("n{n}.h5"));
        let err = assert_ok(&tokenize(
            Launch::Mpirun(n),
            &many,
            &["--batch-size", batch],
        ));
        assert!(err.contains(&format!("0/{n}]")), "not {n} ranks:\n{err}");
        assert_same_datasets(&one, &many);
        let f = hdf5::File::open(&many).unwrap();
        assert_eq!(
            f.attr("n_ranks").unwrap().read_scalar::<i64>().unwrap(),
            n as i64
        );
    }
}

#[test]
fn more_ranks_than_rows_and_several_files() {
    // Two copies of the catalogue given as a glob, and 3 ranks over a tiny batch size.
    let dir = tempdir();
    for name in ["a.h5", "b.h5"] {
        std::fs::copy(fixture("scalar_codecs/catalog.h5"), dir.path().join(name)).unwrap();
    }
    let glob = dir.path().join("*.h5").to_str().unwrap().to_string();
    let model = fixture("scalar_codecs/hub");
    let out = dir.path().join("out").join("tok.h5");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let args = [
        "--model",
        model.to_str().unwrap(),
        "--catalog",
        &glob,
        "--output",
        out.to_str().unwrap(),
        "--batch-size",
        "5",
    ];
    assert_ok(&run_tool(BIN, Launch::Mpirun(3), &args));
    let (shape, ids) = read_i64(&out, "object_id");
    assert_eq!(shape, vec![128]);
    let want: Vec<i64> = (1000..1064).chain(1000..1064).collect();
    assert_eq!(ids, want);
}

#[test]
fn h5py_reads_the_output() {
    let Some(py) = venv_python() else {
        eprintln!("skipped: no validation venv (run validation/setup-venv.sh)");
        return;
    };
    let dir = tempdir();
    let out = dir.path().join("tok.h5");
    assert_ok(&tokenize(Launch::Mpirun(2), &out, &["--map", "tok_z=Z"]));
    let script = "import h5py,sys,json\nf=h5py.File(sys.argv[1],'r')\n\
        assert f['tok_xp_bp'].shape==(64,55) and f['tok_xp_bp'].dtype=='int64'\n\
        assert int(f['tok_z'][1,0])==1023 and int(f['object_id'][0])==1000\n\
        assert f.attrs['tool']=='aion-tokenize' and int(f.attrs['n_ranks'])==2\n\
        json.loads(f.attrs['config']); print('ok')";
    let o = command(py)
        .args(["-c", script, out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "h5py failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

mod bad_input {
    use super::*;

    fn write_catalog(path: &Path, f: impl FnOnce(&hdf5::File)) {
        let file = hdf5::File::create(path).unwrap();
        f(&file);
    }

    #[test]
    fn missing_mapped_dataset_names_file_and_dataset() {
        let dir = tempdir();
        let out = dir.path().join("o.h5");
        let err = assert_fails(&tokenize(
            Launch::Mpirun(2),
            &out,
            &["--map", "tok_ebv=NO_SUCH"],
        ));
        assert_mentions(&err, &["NO_SUCH", "tok_ebv"]);
    }

    #[test]
    fn unreadable_file_is_named() {
        let dir = tempdir();
        let bad = dir.path().join("bad.h5");
        std::fs::write(&bad, b"this is not hdf5").unwrap();
        let model = fixture("scalar_codecs/hub");
        let out = dir.path().join("o.h5");
        let args = io_args(&model, &bad, &out);
        let err = assert_fails(&run_tool(BIN, Launch::Mpirun(2), &args));
        assert!(err.contains("bad.h5"), "{err}");
    }

    #[test]
    fn wrong_shape_and_row_mismatch_are_named() {
        let dir = tempdir();
        let model = fixture("scalar_codecs/hub");
        let out = dir.path().join("o.h5");
        let shape = dir.path().join("shape.h5");
        write_catalog(&shape, |f| {
            f.new_dataset_builder()
                .with_data(&ndarray::Array2::<f32>::zeros((5, 3)))
                .create("EBV")
                .unwrap();
        });
        let args = io_args(&model, &shape, &out);
        let err = assert_fails(&run_tool(BIN, Launch::Alone, &args));
        assert_mentions(&err, &["EBV", "[3]"]);

        let rows = dir.path().join("rows.h5");
        write_catalog(&rows, |f| {
            f.new_dataset_builder()
                .with_data(&ndarray::Array1::<f32>::zeros(5))
                .create("EBV")
                .unwrap();
            f.new_dataset_builder()
                .with_data(&ndarray::Array1::<f32>::zeros(6))
                .create("Z")
                .unwrap();
        });
        let mut args = io_args(&model, &rows, &out);
        args.extend(["--map", "tok_z=Z"]);
        let err = assert_fails(&run_tool(BIN, Launch::Mpirun(2), &args));
        assert_mentions(&err, &["rows.h5", "'Z' has 6 rows", "'EBV' has 5"]);
    }

    #[test]
    fn missing_model_and_bad_map_syntax() {
        let dir = tempdir();
        let cat = fixture("scalar_codecs/catalog.h5");
        let out = dir.path().join("o.h5");
        let args = [
            "--model",
            "/nonexistent/model",
            "--catalog",
            cat.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
        ];
        let err = assert_fails(&run_tool(BIN, Launch::Alone, &args));
        assert!(err.contains("/nonexistent/model"), "{err}");
        let err = assert_fails(&tokenize(Launch::Alone, &out, &["--map", "tok_ebv"]));
        assert!(err.contains("TOKEN_KEY=DATASET"), "{err}");
    }

    #[test]
    fn missing_codec_folder_is_named() {
        let dir = tempdir();
        let model = dir.path().join("model");
        std::fs::create_dir_all(model.join("codecs")).unwrap();
        let cat = fixture("scalar_codecs/catalog.h5");
        let out = dir.path().join("o.h5");
        let args = io_args(&model, &cat, &out);
        let err = assert_fails(&run_tool(BIN, Launch::Mpirun(2), &args));
        assert!(err.contains("codecs/FLUX_G"), "{err}");
    }
}

#[test]
fn decode_turns_tokens_back_into_the_reference_values() {
    let dir = tempdir();
    let tok = dir.path().join("tok.h5");
    assert_ok(&tokenize(Launch::Alone, &tok, &["--map", "tok_z=Z"]));
    let dec = dir.path().join("dec.h5");
    let model = fixture("scalar_codecs/hub");
    let mut a = vec!["--decode"];
    a.extend(io_args(&model, &tok, &dec));
    assert_ok(&run_tool(BIN, Launch::Mpirun(2), &a));
    let bytes = std::fs::read(fixture("scalar_codecs/io.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let f32s = |name: &str| -> Vec<f32> {
        st.tensor(name)
            .unwrap()
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect()
    };
    let f = hdf5::File::open(&dec).unwrap();
    for key in ["tok_ebv", "tok_flux_g", "tok_xp_bp", "tok_z"] {
        let got: Vec<f32> = f
            .dataset(&format!("decoded/{key}"))
            .unwrap()
            .read_raw()
            .unwrap();
        let want = f32s(&format!("{key}_decoded"));
        let vals = f32s(&format!("{key}_values"));
        let per = want.len() / 64;
        for r in 0..64 {
            let row_ok = vals[r * per..(r + 1) * per].iter().all(|v| v.is_finite());
            for j in r * per..(r + 1) * per {
                if row_ok {
                    assert!(
                        (got[j] - want[j]).abs() <= 2e-7 * want[j].abs(),
                        "{key}[{j}]: {} vs {}",
                        got[j],
                        want[j]
                    );
                } else {
                    assert!(got[j].is_nan(), "{key}[{j}]: a rejected row decodes to NaN");
                }
            }
        }
    }
}
