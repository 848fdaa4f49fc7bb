//! `aion-generate` end to end on the pipeline fixture's tiny model: identical outputs on 1, 2 and
//! 3 ranks, under `sbatch` and after SIGKILL + resume; seeds; decoded data equal to what
//! `aion-tokenize --decode` makes of the same tokens; segmentation maps and HSC images through a
//! model with extra decoder heads; argument errors. (Sampler parity with the reference is in
//! `lib/aion-model/tests/parity/generate.rs`.)

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::model::pipeline_model;
use crate::util::*;

const BIN: &str = GENERATE;

/// Arguments with 3-row chunks and 4-sample batches.
fn args<'a>(model: &'a Path, cat: &'a Path, out: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    sized(model, cat, out, "3", "4", extra)
}

fn sized<'a>(
    model: &'a Path,
    cat: &'a Path,
    out: &'a Path,
    chunk_rows: &'a str,
    batch: &'a str,
    extra: &[&'a str],
) -> Vec<&'a str> {
    let mut a = io_args(model, cat, out);
    a.extend(["--chunk-rows", chunk_rows, "--batch-size", batch]);
    a.extend_from_slice(extra);
    a
}

/// Pre-tokenized input without the image: fast runs that still condition every row on several
/// modalities (row 6 has none left).
const SPECTRUM: &[&str] = &[
    "--target",
    "tok_spectrum_desi",
    "--map",
    "tok_image=none",
    "--samples",
    "2",
    "--steps",
    "3",
];

#[test]
fn same_output_on_1_2_3_ranks_and_the_seed_rule() {
    let (dir, model) = pipeline_model();
    let cat = fixture("pipeline/tokens.h5");
    let outs: Vec<PathBuf> = (0..3)
        .map(|i| dir.path().join(format!("gen{i}.h5")))
        .collect();
    for (out, launch) in outs
        .iter()
        .zip([Launch::Alone, Launch::Mpirun(2), Launch::Mpirun(3)])
    {
        let err = assert_ok(&run_tool(BIN, launch, &args(&model, &cat, out, SPECTRUM)));
        assert!(err.contains("rows/s"), "{err}");
    }
    assert_same_datasets(&outs[0], &outs[1]);
    assert_same_datasets(&outs[0], &outs[2]);

    let (shape, tokens) = read_i64(&outs[0], "gen/tok_spectrum_desi/tokens");
    assert_eq!(shape, [8, 2, 273]);
    let (_, generated) = read_i64(&outs[0], "gen/tok_spectrum_desi/generated");
    let (_, used) = read_i64(&outs[0], "modalities_used");
    for r in 0..8 {
        let row = &tokens[r * 546..(r + 1) * 546];
        if used[r] == 0 {
            assert_eq!(generated[r], 0);
            assert!(row.iter().all(|&t| t == -1), "row {r} without inputs");
        } else {
            assert_eq!(generated[r], 1);
            assert!(row.iter().all(|&t| (0..1024).contains(&t)));
            assert_ne!(row[..273], row[273..], "row {r}: the two samples are equal");
        }
    }
    assert_eq!(used.iter().filter(|&&u| u == 0).count(), 1);
    let (_, flux) = read_f32(&outs[0], "gen/tok_spectrum_desi/flux");
    for r in 0..8 {
        let row = &flux[r * 2 * 8704..(r + 1) * 2 * 8704];
        assert_eq!(
            row.iter().all(|x| x.is_finite()),
            generated[r] == 1,
            "row {r}"
        );
        assert_eq!(row.iter().all(|x| x.is_nan()), generated[r] == 0, "row {r}");
    }

    // Another seed: other samples; the run's sidecar quotes the throughput.
    let other = dir.path().join("seed7.h5");
    let mut a = args(&model, &cat, &other, SPECTRUM);
    a.extend(["--seed", "7"]);
    assert_ok(&run_tool(BIN, Launch::Alone, &a));
    let (_, t7) = read_i64(&other, "gen/tok_spectrum_desi/tokens");
    let differ = tokens.iter().zip(&t7).filter(|(a, b)| a != b).count();
    assert!(
        differ > tokens.len() / 2,
        "seed 7 changed only {differ} tokens"
    );
    let sidecar: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{}.run.json", other.display())).unwrap(),
    )
    .unwrap();
    assert!(sidecar.to_string().contains("rows_per_second"), "{sidecar}");
    // Chunking and batching do not change the samples (draws are keyed by object id).
    let rechunked = dir.path().join("rechunked.h5");
    let a = sized(&model, &cat, &rechunked, "8", "16", SPECTRUM);
    assert_ok(&run_tool(BIN, Launch::Alone, &a));
    let (_, t) = read_i64(&rechunked, "gen/tok_spectrum_desi/tokens");
    assert_eq!(t, tokens, "tokens depend on the chunk or batch size");
}

/// Writes `tokens` `(N, T)` as dataset `key` of a new file (the input of `aion-tokenize --decode`).
fn token_file(path: &Path, key: &str, tokens: &[i64], t: usize) {
    let f = hdf5::File::create(path).unwrap();
    f.new_dataset::<i64>()
        .shape([tokens.len() / t, t])
        .create(key)
        .unwrap()
        .write_raw(tokens)
        .unwrap();
}

fn assert_same_f32(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            g == w || (g.is_nan() && w.is_nan()),
            "{what}[{i}]: {g} vs {w}"
        );
    }
}

#[test]
fn decoded_data_is_the_codecs_decode_of_the_generated_tokens() {
    let (dir, model) = pipeline_model();
    // Image from raw columns (spectrum, catalog, scalars), two bands; spectra resampled onto
    // grids with λ = −1 padding (bad_rows.h5), from raw columns too.
    for (cat, target, extra, dataset, t) in [
        (
            "pipeline/catalog.h5",
            "tok_image",
            vec![
                "--steps",
                "2",
                "--bands",
                "DES-R,DES-Z",
                "--map",
                "tok_xp_bp=none",
            ],
            "flux",
            576,
        ),
        (
            "pipeline/bad_rows.h5",
            "tok_spectrum_desi",
            vec![
                "--schedule",
                "roar",
                "--steps",
                "2",
                "--top-k",
                "50",
                "--wavelength-from",
                "spectrum_lambda",
                "--map",
                "tok_image=none",
            ],
            "flux",
            273,
        ),
    ] {
        let out = dir.path().join(format!("{target}.h5"));
        let cat = fixture(cat);
        let mut a = args(&model, &cat, &out, &["--target", target]);
        a.extend(extra.iter().copied());
        assert_ok(&run_tool(BIN, Launch::Alone, &a));
        assert_self_describing(&out);
        let words: &[&str] = if target == "tok_image" {
            &[
                "Legacy Survey image flux",
                "sample 1",
                "DES-R, DES-R, DES-Z",
            ]
        } else {
            &[
                "wavelength λ [Angstrom]",
                "flux [1e-17 erg / (s cm2 Angstrom)]",
                "DESI spectral flux density",
            ]
        };
        assert_figure(&format!("{}.{target}", out.display()), words);
        let (shape, tokens) = read_i64(&out, &format!("gen/{target}/tokens"));
        let n = shape[0];
        let toks = dir.path().join(format!("{target}-tokens.h5"));
        token_file(&toks, target, &tokens, t);
        let dec = dir.path().join(format!("{target}-decoded.h5"));
        let model_s = model.to_str().unwrap();
        assert_ok(&run_tool(
            TOKENIZE,
            Launch::Alone,
            &[
                "--decode",
                "--model",
                model_s,
                "--catalog",
                toks.to_str().unwrap(),
                "--output",
                dec.to_str().unwrap(),
            ],
        ));
        let (gshape, got) = read_f32(&out, &format!("gen/{target}/{dataset}"));
        let (_, want) = read_f32(&dec, &format!("decoded/{target}"));
        if target == "tok_image" {
            // aion-tokenize decodes DES g,r,i,z: compare bands r and z.
            assert_eq!(gshape, [n, 1, 2, 96, 96]);
            let px = 96 * 96;
            for r in 0..n {
                for (k, b) in [(0, 1), (1, 3)] {
                    assert_same_f32(
                        &format!("{target} row {r} band {b}"),
                        &got[(r * 2 + k) * px..(r * 2 + k + 1) * px],
                        &want[(r * 4 + b) * px..(r * 4 + b + 1) * px],
                    );
                }
            }
        } else {
            assert_same_f32(target, &got, &want);
            // Resampled flux: NaN on λ ≤ 0 padding and outside the latent grid (3500 Å +
            // 0.8 Å·i, i < 8704); at λ = 3600 Å (latent pixel 125) the
            // latent flux itself.
            let (rshape, res) = read_f32(&out, &format!("gen/{target}/flux_resampled"));
            assert_eq!(rshape, [n, 1, 2000]);
            let lam = read_f32(&cat, "spectrum_lambda").1;
            // The wavelengths of the resampled flux are in the output (padding as NaN).
            let (wshape, wave) = read_f32(&out, &format!("gen/{target}/wavelength_resampled"));
            assert_eq!(wshape, [n, 2000]);
            for (w, l) in wave.iter().zip(&lam) {
                assert!(if *l > 0.0 { w == l } else { w.is_nan() }, "{w} vs {l}");
            }
            let (_, generated) = read_i64(&out, &format!("gen/{target}/generated"));
            for r in 0..n {
                for i in 0..2000 {
                    let (x, l) = (res[r * 2000 + i], lam[r * 2000 + i]);
                    let outside = !(3500.0..=3500.0 + 0.8 * 8703.0).contains(&l);
                    if generated[r] == 0 || outside {
                        assert!(x.is_nan(), "row {r} λ {l}: {x}");
                    } else {
                        assert!(x.is_finite(), "row {r} λ {l}: {x}");
                    }
                }
                if generated[r] == 1 && lam[r * 2000] == 3600.0 {
                    let latent = got[r * 8704 + 125];
                    assert!(
                        (res[r * 2000] - latent).abs() <= 1e-5 * latent.abs().max(1.0),
                        "row {r}: {} vs {latent}",
                        res[r * 2000]
                    );
                }
            }
            assert!(generated.iter().filter(|&&g| g == 1).count() >= 4);
        }
    }
}

#[test]
fn single_pass_argmax_of_a_scalar_is_the_argmax_of_aion_predict_logits() {
    // For a one-token target the sampler's decoder (full self-attention over one query) and
    // AION.forward's (mean of one value) coincide, so argmax generation = argmax of the logits.
    let (dir, model) = pipeline_model();
    let cat = fixture("pipeline/catalog.h5");
    let generated_z = dir.path().join("z.h5");
    let pred = dir.path().join("pred.h5");
    let a = args(
        &model,
        &cat,
        &generated_z,
        &[
            "--target",
            "tok_z",
            "--schedule",
            "single-pass",
            "--temperature",
            "0",
        ],
    );
    assert_ok(&run_tool(BIN, Launch::Mpirun(2), &a));
    assert_self_describing(&generated_z);
    assert_figure(
        &format!("{}.tok_z", generated_z.display()),
        &["generated redshift z"],
    );
    let p = sized(
        &model,
        &cat,
        &pred,
        "8",
        "8",
        &["--target", "tok_z", "--save-logits"],
    );
    assert_ok(&run_tool(PREDICT, Launch::Alone, &p));
    let (_, tokens) = read_i64(&generated_z, "gen/tok_z/tokens");
    let (_, logits) = read_f32(&pred, "logits/tok_z");
    let (_, values) = read_f32(&generated_z, "gen/tok_z/value");
    for (r, &t) in tokens.iter().enumerate() {
        let row = &logits[r * 1025..(r + 1) * 1025];
        if row[0].is_nan() {
            assert_eq!(t, -1);
            assert!(values[r].is_nan());
            continue;
        }
        let best = (0..1025).fold(0, |b, i| if row[i] > row[b] { i } else { b });
        assert_eq!(t, best as i64, "row {r}");
        // tok_z token k decodes to the k-th grid value k/1023 (token 1024 has none).
        let want = if best < 1024 {
            best as f32 / 1023.0
        } else {
            f32::NAN
        };
        assert!(
            (values[r] - want).abs() < 1e-6 || (want.is_nan() && values[r].is_nan()),
            "row {r}: {} vs {want}",
            values[r]
        );
    }
}

/// The pipeline model with two more decoder heads (random weights, written here):
/// `tok_segmap` (+ the segmentation-map codec fixture) and `tok_image_hsc`. Neither is an input
/// of the model, so the sampler does not feed their revealed tokens back to the encoder.
fn model_with_extra_heads(dir: &Path) -> PathBuf {
    let model = crate::model::assemble_model(dir);
    let src = fixture("fourm/swiglu_qknorm_nobias");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    let outs = cfg["domains_out"].as_array_mut().unwrap();
    outs.push("tok_segmap".into());
    outs.push("tok_image_hsc".into());
    let bytes = std::fs::read(src.join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut extra: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut noise = |len: usize, scale: f32| -> Vec<u8> {
        (0..len)
            .flat_map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let u = (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
                (u * scale).to_le_bytes()
            })
            .collect()
    };
    for (key, n, v) in [("tok_segmap", 144, 1000), ("tok_image_hsc", 576, 4375)] {
        let p = format!("decoder_embeddings.{key}");
        extra.push((format!("{p}.mod_emb"), vec![1, 1, 64], noise(64, 0.2)));
        extra.push((format!("{p}.pos_emb"), vec![1, n, 64], noise(n * 64, 1.0)));
        extra.push((
            format!("{p}.token_emb.weight"),
            vec![v, 64],
            noise(v * 64, 0.2),
        ));
        extra.push((
            format!("{p}.to_logits.weight"),
            vec![v, 64],
            noise(v * 64, 1.0),
        ));
    }
    let mut views: Vec<(String, safetensors::tensor::TensorView)> =
        st.tensors().into_iter().collect();
    for (name, shape, data) in &extra {
        views.push((
            name.clone(),
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), data)
                .unwrap(),
        ));
    }
    for f in ["config.json", "model.safetensors"] {
        std::fs::remove_file(model.join(f)).unwrap();
    }
    std::fs::write(model.join("config.json"), cfg.to_string()).unwrap();
    std::fs::write(
        model.join("model.safetensors"),
        safetensors::serialize(views, None).unwrap(),
    )
    .unwrap();
    std::os::unix::fs::symlink(
        fixture("segmap_codec/hub/codecs/segmentation_map"),
        model.join("codecs/segmentation_map"),
    )
    .unwrap();
    model
}

/// A nucleus-sampled segmentation map, 2 samples of 3 steps.
const SEGMAP: &[&str] = &[
    "--target",
    "tok_segmap",
    "--steps",
    "3",
    "--samples",
    "2",
    "--top-p",
    "0.9",
];

#[test]
fn segmentation_maps_and_hsc_images_from_extra_heads() {
    let dir = tempdir();
    let model = model_with_extra_heads(dir.path());
    let cat = fixture("pipeline/tokens.h5");
    let seg = dir.path().join("seg.h5");
    let a = args(&model, &cat, &seg, SEGMAP);
    assert_ok(&run_tool(BIN, Launch::Mpirun(2), &a));
    assert_self_describing(&seg);
    assert_figure(
        &format!("{}.tok_segmap", seg.display()),
        &["segmentation map", "sample 2", "object"],
    );
    let (shape, map) = read_f32(&seg, "gen/tok_segmap/map");
    assert_eq!(shape, [8, 2, 96, 96]);
    let (_, generated) = read_i64(&seg, "gen/tok_segmap/generated");
    let (_, tokens) = read_i64(&seg, "gen/tok_segmap/tokens");
    for r in 0..8 {
        let row = &map[r * 2 * 9216..(r + 1) * 2 * 9216];
        if generated[r] == 1 {
            assert!(row.iter().all(|x| (0.0..=1.0).contains(x)), "row {r}");
            assert!(
                tokens[r * 288..(r + 1) * 288]
                    .iter()
                    .all(|t| (0..1000).contains(t))
            );
        } else {
            assert!(row.iter().all(|x| x.is_nan()));
        }
    }
    let one = dir.path().join("seg1.h5");
    let a = args(&model, &cat, &one, SEGMAP);
    assert_ok(&run_tool(BIN, Launch::Alone, &a));
    assert_same_datasets(&seg, &one);

    let hsc = dir.path().join("hsc.h5");
    let a = args(
        &model,
        &cat,
        &hsc,
        &[
            "--target",
            "tok_image_hsc",
            "--schedule",
            "single-pass",
            "--temperature",
            "0.5",
        ],
    );
    assert_ok(&run_tool(BIN, Launch::Alone, &a));
    assert_self_describing(&hsc);
    assert_figure(
        &format!("{}.tok_image_hsc", hsc.display()),
        &["HSC image flux"],
    );
    let f = hdf5::File::open(&hsc).unwrap();
    let ds = f.dataset("gen/tok_image_hsc/flux").unwrap();
    assert_eq!(ds.shape(), [8, 1, 5, 96, 96]);
    let bands: hdf5::types::VarLenUnicode = ds.attr("bands").unwrap().read_scalar().unwrap();
    assert_eq!(bands.as_str(), "HSC-G,HSC-R,HSC-I,HSC-Z,HSC-Y");
    let units: hdf5::types::VarLenUnicode = ds.attr("units").unwrap().read_scalar().unwrap();
    assert_eq!(units.as_str(), "10**(-1.8) nmgy");
    let flux = ds.read_raw::<f32>().unwrap();
    let (_, generated) = read_i64(&hsc, "gen/tok_image_hsc/generated");
    for r in 0..8 {
        let row = &flux[r * 5 * 9216..(r + 1) * 5 * 9216];
        let finite = row.iter().all(|x| x.is_finite());
        assert_eq!(finite, generated[r] == 1, "row {r}");
    }
}

#[test]
fn argument_and_model_errors() {
    let (dir, model) = pipeline_model();
    let cat = fixture("pipeline/tokens.h5");
    let out = dir.path().join("e.h5");
    for (extra, want) in [
        (vec!["--target", "tok_nonsense"], "unknown token key"),
        (vec!["--target", "catalog"], "autoregressive"),
        (vec!["--target", "tok_xp_bp"], "no decoder head"),
        (vec!["--target", "tok_segmap"], "no decoder head"),
        (
            vec!["--target", "tok_z", "--bands", "DES-G"],
            "image targets only",
        ),
        (
            vec![
                "--target",
                "tok_spectrum_desi",
                "--wavelength-from",
                "nonexistent",
            ],
            "no such dataset",
        ),
        (
            vec!["--target", "tok_image", "--bands", "DES-Q"],
            "--bands DES-Q",
        ),
        (vec!["--target", "tok_z", "--top-p", "1.5"], "--top-p"),
        (
            vec!["--target", "tok_z", "--temperature-schedule", "onex:0.5:1"],
            "at least 2 tokens",
        ),
    ] {
        let err = assert_fails(&run_tool(
            BIN,
            Launch::Mpirun(2),
            &args(&model, &cat, &out, &extra),
        ));
        assert!(
            err.contains(want),
            "{extra:?}: expected '{want}' in:\n{err}"
        );
    }
    // clap rejects an unknown schedule before anything starts.
    let bad = run_tool(
        BIN,
        Launch::Alone,
        &args(
            &model,
            &cat,
            &out,
            &["--target", "tok_z", "--schedule", "beam"],
        ),
    );
    assert!(!bad.status.success());
    assert!(!out.exists(), "an output was created by a failed run");
}

#[test]
fn sigkill_then_resume_and_time_limit_stop_give_identical_outputs() {
    let (dir, model) = pipeline_model();
    let cat = fixture("pipeline/tokens.h5");
    let base = |out: &Path| -> Vec<String> {
        sized(&model, &cat, out, "2", "4", SPECTRUM)
            .iter()
            .map(|x| x.to_string())
            .collect()
    };
    let reference = dir.path().join("ref.h5");
    assert_ok(&run_tool_env(BIN, Launch::Alone, &base(&reference), &[]));
    for (i, (fault, launch)) in KILL_POINTS.into_iter().enumerate() {
        let out = dir.path().join(format!("k{i}.h5"));
        let killed = kill_then_resume(BIN, launch, &base(&out), fault);
        assert!(
            String::from_utf8_lossy(&killed.stderr).contains("AION_FAULT: SIGKILL"),
            "{fault}: fault not reached"
        );
        assert_same_datasets(&reference, &out);
    }
    // The time-limit signal: exit 3 after recording progress, the re-run finishes.
    let out = dir.path().join("usr1.h5");
    let a = base(&out);
    let stopped = run_tool_env(BIN, Launch::Mpirun(2), &a, &[("AION_FAULT", "usr1@1:0")]);
    assert_eq!(
        stopped.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&stopped.stderr)
    );
    assert_ok(&run_tool_env(BIN, Launch::Alone, &a, &[]));
    assert_same_datasets(&reference, &out);
    // Another seed into the same output is another run: refused without --overwrite.
    let mut other = a.clone();
    other.extend(["--seed".into(), "3".into()]);
    let err = assert_fails(&run_tool_env(BIN, Launch::Alone, &other, &[]));
    assert!(err.contains("made by another run"), "{err}");
}

#[test]
fn generate_sbatch_matches_a_single_process() {
    let Some(dir) = crate::slurm::slurm_test_dir() else {
        return;
    };
    let model = crate::model::assemble_model(dir.path());
    let cat = fixture("pipeline/tokens.h5");
    let out = dir.path().join("slurm.h5");
    let single = dir.path().join("single.h5");
    let log = dir.path().join("job-%j.out");
    let mut sb = vec!["slurm/generate.sbatch"];
    sb.extend(args(&model, &cat, &out, SPECTRUM));
    let (_, text) = crate::slurm::sbatch_completed("2", &log, &sb, Duration::from_secs(300));
    assert!(text.contains("aion-generate 1/2]"), "not 2 ranks:\n{text}");
    assert_ok(&run_tool(
        BIN,
        Launch::Alone,
        &args(&model, &cat, &single, SPECTRUM),
    ));
    assert_same_datasets(&single, &out);
}
