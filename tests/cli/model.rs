//! `aion-embed` and `aion-predict` end to end against the reference pipeline fixture
//! (`validation/fixtures/pipeline`): raw MMU-style columns and pre-tokenized input, 1/2/3 ranks.

use std::path::{Path, PathBuf};

use crate::util::*;

const EMBED: &str = env!("CARGO_BIN_EXE_aion-embed");
const PREDICT: &str = env!("CARGO_BIN_EXE_aion-predict");

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
    vec![
        "--model",
        model,
        "--catalog",
        cat,
        "--output",
        out,
        "--batch-size",
        "3",
        "--chunk-rows",
        "3",
    ]
}

#[test]
fn embeddings_match_the_reference_from_raw_and_from_tokens() {
    let dir = tempdir();
    let model = assemble_model(dir.path());
    let (_, want) = expected("embedding");
    for (input, launch) in [
        ("catalog.h5", Launch::Alone),
        ("catalog.h5", Launch::Mpirun(3)),
        ("tokens.h5", Launch::Mpirun(2)),
    ] {
        let out = dir.path().join(format!("emb-{input}-{launch:?}.h5"));
        let cat = fixture("pipeline").join(input);
        assert_ok(&run_tool(
            EMBED,
            launch,
            &common(
                model.to_str().unwrap(),
                cat.to_str().unwrap(),
                out.to_str().unwrap(),
            ),
        ));
        let got = read_f32(&out, "embedding");
        assert!(max_abs(&format!("embedding from {input} ({launch:?})"), &got, &want) <= 1e-5);
    }
}

#[test]
fn logits_and_posteriors_match_the_reference() {
    let dir = tempdir();
    let model = assemble_model(dir.path());
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
        let png = PathBuf::from(format!("{}.tok_z.png", out.display()));
        assert!(
            std::fs::read(&png).unwrap().starts_with(b"\x89PNG"),
            "no plot at {}",
            png.display()
        );
        match &first {
            None => first = Some(out),
            Some(f) => assert_same_datasets(f, &out),
        }
    }
}
