//! `aion-model`: a random full model in the Hub layout passes `check`, damaged copies fail it
//! with the problem named, the command never replaces what it did not make, and the random
//! model takes every modality of the bundled samples through aion-tokenize, aion-embed,
//! aion-predict and aion-generate.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Output;

use safetensors::SafeTensors;
use safetensors::tensor::TensorView;

use crate::util::*;

fn model_tool(args: &[&str]) -> Output {
    run_tool(MODEL, Launch::Alone, args)
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// A tiny random model at `dir/name`.
fn random(dir: &Path, name: &str, seed: u64) -> PathBuf {
    let out = dir.join(name);
    let seed = seed.to_string();
    assert_ok(&model_tool(&[
        "random",
        "--size",
        "tiny",
        "--seed",
        &seed,
        "--output",
        out.to_str().unwrap(),
    ]));
    out
}

fn check(dir: &Path) -> Output {
    model_tool(&["check", dir.to_str().unwrap()])
}

/// Copies a directory tree.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy_tree(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// A stored tensor: dtype, shape, bytes.
type Stored = (safetensors::Dtype, Vec<usize>, Vec<u8>);

/// Rewrites a safetensors file through `edit(name, dtype, shape, bytes)`, which returns the new
/// entry or `None` to drop the tensor.
fn rewrite(
    path: &Path,
    edit: impl Fn(&str, safetensors::Dtype, Vec<usize>, Vec<u8>) -> Option<Stored>,
) {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let kept: Vec<(String, Stored)> = st
        .tensors()
        .into_iter()
        .filter_map(|(name, v)| {
            edit(&name, v.dtype(), v.shape().to_vec(), v.data().to_vec()).map(|e| (name, e))
        })
        .collect();
    let views: Vec<(String, TensorView<'_>)> = kept
        .iter()
        .map(|(n, (d, s, b))| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    std::fs::write(path, safetensors::tensor::serialize(views, None).unwrap()).unwrap();
}

#[test]
fn a_random_model_passes_check_and_damaged_copies_fail_it() {
    let dir = tempdir();
    let model = random(dir.path(), "random", 3);
    let out = check(&model);
    let text = stdout(&out);
    assert_ok(&out);
    assert!(text.contains("check: OK"), "{text}");
    assert!(text.contains("RANDOM WEIGHTS"), "{text}");
    // Every file is listed with its SHA-256.
    for f in [
        "config.json",
        "model.safetensors",
        "codecs/image/model.safetensors",
        "codecs/spectrum/config.json",
        "codecs/segmentation_map/model.safetensors",
        "codecs/catalog/model.safetensors",
        "codecs/bp_coefficients/model.safetensors",
        "codecs/Z/model.safetensors",
    ] {
        let line = text
            .lines()
            .find(|l| l.ends_with(&format!("  {f}")))
            .unwrap_or_else(|| panic!("{f} not listed:\n{text}"));
        assert_eq!(line.split_whitespace().next().unwrap().len(), 64, "{line}");
    }
    // Every modality of the configuration has its codec; 39 inputs as AION-1 base.
    assert!(text.contains("inputs (39)"), "{text}");
    let info = model_tool(&["info", model.to_str().unwrap()]);
    assert_ok(&info);
    let info = stdout(&info);
    assert_mentions(&info, &["codecs (38)", "inputs (39)"]);
    assert!(
        !info.contains("SHA-256"),
        "info reads no file in full:\n{info}"
    );

    // Same seed, same bytes; another seed, other weights.
    let again = random(dir.path(), "again", 3);
    let other = random(dir.path(), "other", 4);
    for f in [
        "model.safetensors",
        "codecs/image/model.safetensors",
        "codecs/EBV/model.safetensors",
    ] {
        let read = |m: &Path| std::fs::read(m.join(f)).unwrap();
        assert_eq!(read(&model), read(&again), "{f}: same seed");
        assert_ne!(read(&model), read(&other), "{f}: other seed");
    }

    // A transformer tensor removed.
    let removed = "decoder.1.mlp.fc3.weight";
    let bad = dir.path().join("removed");
    copy_tree(&model, &bad);
    rewrite(&bad.join("model.safetensors"), |n, d, s, b| {
        (n != removed).then_some((d, s, b))
    });
    let out = check(&bad);
    let err = stdout(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(&format!("missing tensor {removed}")), "{err}");

    // A codec tensor with another shape.
    let reshaped = "model.conv_in.conv.bias";
    let bad = dir.path().join("reshaped");
    copy_tree(&model, &bad);
    rewrite(&bad.join("codecs/image/model.safetensors"), |n, d, s, b| {
        if n == reshaped {
            let half = b.len() / 2;
            Some((d, vec![s[0] / 2], b[..half].to_vec()))
        } else {
            Some((d, s, b))
        }
    });
    let out = check(&bad);
    let err = stdout(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("codecs/image"), "{err}");
    assert!(
        err.contains(&format!("tensor {reshaped} has shape")),
        "{err}"
    );

    // A codec folder deleted: every problem is listed, not only the first.
    let bad = dir.path().join("no-spectrum");
    copy_tree(&model, &bad);
    std::fs::remove_dir_all(bad.join("codecs/spectrum")).unwrap();
    std::fs::remove_file(bad.join("codecs/EBV/config.json")).unwrap();
    let out = check(&bad);
    let err = stdout(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(
            "codecs/spectrum: missing (the codec of tok_spectrum_desi, tok_spectrum_sdss)"
        ),
        "{err}"
    );
    assert!(err.contains("codecs/EBV/config.json: missing"), "{err}");
    assert!(
        err.contains("2 problem(s)") || err.contains("3 problem(s)"),
        "{err}"
    );
}

#[test]
fn random_never_replaces_what_it_did_not_make() {
    let dir = tempdir();
    let mine = dir.path().join("mine");
    std::fs::create_dir_all(&mine).unwrap();
    std::fs::write(mine.join("notes.txt"), "keep me").unwrap();
    let args = |overwrite: bool| {
        let mut a = vec![
            "random".to_string(),
            "--size".into(),
            "tiny".into(),
            "--output".into(),
            mine.to_str().unwrap().into(),
        ];
        if overwrite {
            a.push("--overwrite".into());
        }
        a
    };
    for overwrite in [false, true] {
        let a = args(overwrite);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        let err = assert_fails(&model_tool(&a));
        assert!(err.contains(mine.to_str().unwrap()), "{err}");
        assert_eq!(
            std::fs::read_to_string(mine.join("notes.txt")).unwrap(),
            "keep me"
        );
        assert_eq!(std::fs::read_dir(&mine).unwrap().count(), 1);
    }
    // Its own output: refused without --overwrite, replaced with it.
    let model = random(dir.path(), "random", 1);
    let o = model.to_str().unwrap();
    let err = assert_fails(&model_tool(&["random", "--size", "tiny", "--output", o]));
    assert!(err.contains("--overwrite"), "{err}");
    assert_ok(&model_tool(&[
        "random",
        "--size",
        "tiny",
        "--seed",
        "2",
        "--output",
        o,
        "--overwrite",
    ]));
    assert!(
        std::fs::read_to_string(model.join("random_model.json"))
            .unwrap()
            .contains("\"seed\": 2")
    );
    // No temporary folder is left behind.
    let left: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

fn distinct(v: &[i64]) -> usize {
    v.iter().filter(|&&t| t >= 0).collect::<BTreeSet<_>>().len()
}

/// The random model takes the bundled samples through every tool: DESI spectrum, Legacy Survey
/// photometry, Gaia photometry and XP, and the images, catalog and spectra of the pipeline
/// fixture.
#[test]
fn a_random_model_runs_every_tool_on_the_bundled_samples() {
    let dir = tempdir();
    let model = random(dir.path(), "random", 0);
    let m = model.to_str().unwrap();
    let repo = repo();
    let data = |p: &str| repo.join(p).to_str().unwrap().to_string();
    // Runs `bin` on the catalogue files `cat` into `dir/name`; returns that output.
    let run = |bin: &str, cat: &[&String], name: &str, extra: &[&str]| {
        let output = dir.path().join(name);
        let mut a = vec!["--model", m, "--catalog"];
        a.extend(cat.iter().map(|c| c.as_str()));
        a.extend(["--output", s(&output)]);
        a.extend(extra);
        assert_ok(&run_tool(bin, Launch::Alone, &a));
        output
    };

    // Tokens of every modality, with a spread of values.
    let (desi, ls, gaia, xp, pipe) = (
        data("data/desi/desi_one.h5"),
        data("data/legacysurvey/piczl_dr10.h5"),
        data("data/gaia/gaia_dr3_cone.h5"),
        data("data/gaia/gaia_xp_one.h5"),
        data("validation/fixtures/pipeline/catalog.h5"),
    );
    let tokens = |cat: &String, name: &str| run(TOKENIZE, &[cat], name, &[]);
    let t = tokens(&desi, "desi-tokens.h5");
    let (shape, spec) = read_i64(&t, "tok_spectrum_desi");
    assert_eq!(shape, [1, 273]);
    assert!(distinct(&spec) > 10, "spectrum tokens {spec:?}");
    let t = tokens(&ls, "ls-tokens.h5");
    for key in [
        "tok_flux_g",
        "tok_flux_r",
        "tok_flux_z",
        "tok_flux_w1",
        "tok_ebv",
        "tok_shape_e1",
    ] {
        let (_, v) = read_i64(&t, key);
        assert!(distinct(&v) >= 15, "{key}: {v:?}");
    }
    let t = tokens(&gaia, "gaia-tokens.h5");
    // (ra and dec of this cone span 0.04 degrees: one or two bins.)
    for key in ["tok_flux_g_gaia", "tok_flux_bp_gaia", "tok_parallax"] {
        let (_, v) = read_i64(&t, key);
        assert!(distinct(&v) >= 3, "{key}: {v:?}");
    }
    let t = tokens(&xp, "xp-tokens.h5");
    let (_, bp) = read_i64(&t, "tok_xp_bp");
    assert!(distinct(&bp) > 10, "XP BP tokens {bp:?}");
    let t = tokens(&pipe, "pipe-tokens.h5");
    let (shape, img) = read_i64(&t, "tok_image");
    assert_eq!(shape[1], 576);
    assert!(
        distinct(&img) > 20,
        "image tokens: {} distinct",
        distinct(&img)
    );
    let (_, cat) = read_i64(&t, "catalog");
    assert!(cat.iter().any(|&v| v > 0), "catalog tokens");

    // Embeddings of every sample; all rows with a usable modality are finite.
    for (cat, name) in [
        (vec![&desi], "desi"),
        (vec![&ls], "ls"),
        (vec![&gaia, &xp], "gaia"),
        (vec![&pipe], "pipe"),
    ] {
        let o = run(EMBED, &cat, &format!("emb-{name}.h5"), &[]);
        let (shape, e) = read_f32(&o, "embedding");
        assert_eq!(shape[1], 64, "{name}");
        let (_, used) = read_i64(&o, "modalities_used");
        for (r, &u) in used.iter().enumerate() {
            let row = &e[r * 64..(r + 1) * 64];
            assert_eq!(u != 0, row.iter().all(|v| v.is_finite()), "{name} row {r}");
        }
        assert!(used.iter().any(|&u| u != 0), "{name}");
    }

    // Redshift posteriors from Legacy Survey photometry (the true Z is not an input).
    let targets = ["--target", "tok_z", "--target", "tok_ebv"];
    let o = run(PREDICT, &[&ls], "pred-ls.h5", &targets);
    let (_, z) = read_f32(&o, "pred/tok_z/mean");
    assert_eq!(z.len(), 50);
    assert!(
        z.iter().all(|v| v.is_finite() && (0.0..=1.0).contains(v)),
        "{z:?}"
    );

    // Generation: a DESI spectrum from photometry, an image from the pipeline's other
    // modalities, decoded through the codecs.
    let spectrum = ["--target", "tok_spectrum_desi", "--steps", "2"];
    let o = run(GENERATE, &[&desi], "gen-spec.h5", &spectrum);
    let (shape, flux) = read_f32(&o, "gen/tok_spectrum_desi/flux");
    assert_eq!(shape, [1, 1, 8704]);
    assert!(flux.iter().all(|v| v.is_finite()));
    let image = ["--target", "tok_image", "--steps", "2"];
    let o = run(GENERATE, &[&pipe], "gen-image.h5", &image);
    let (shape, _) = read_f32(&o, "gen/tok_image/flux");
    assert_eq!(&shape[2..], [4, 96, 96]);
    let (_, generated) = read_i64(&o, "gen/tok_image/generated");
    assert!(generated.iter().all(|&g| g == 1), "{generated:?}");
}
