//! The bundled SDSS photo-z model (`data/models/sdss-photoz-tiny/`) loads like any model and,
//! run through the inference path (codecs → tokens → `Aion::predict` of `tok_z`), reproduces the
//! test-split predictions its training run recorded in `eval/test_tok_z.csv`.

use std::path::PathBuf;

use aion_io::Catalog;
use aion_model::Aion;
use aion_model::fourm::TokenInput;
use aion_model::hub::layout;
use aion_model::modality::by_token_key;
use aion_model::train::objective::posterior;
use burn::tensor::{Int, Tensor, TensorData};

use super::codecs::{bin_centres, load, posterior_moments};

type B = burn::backend::NdArray<f32>;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn bundled_photoz_model_reproduces_its_test_predictions() {
    let dir = repo().join("data/models/sdss-photoz-tiny");
    assert!(
        layout::weights(&dir).exists(),
        "the bundled model {} is missing",
        dir.display()
    );
    let dev = Default::default();
    let model = Aion::<B>::load(&dir, &dev).unwrap();
    let split: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("split.json")).unwrap()).unwrap();
    let test: Vec<usize> = split["test"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    let mut cat = Catalog::open(&[repo()
        .join("data/sdss_mgs/sdss_mgs_train.h5")
        .display()
        .to_string()])
    .unwrap();
    cat.size_by(&["Z".to_string()]).unwrap();
    let rows = cat.n_rows();
    let mut inputs = Vec::new();
    for key in &model.config().domains_in {
        let m = model.config().modalities.get(key).unwrap();
        let codec = load(&dir, &m).unwrap();
        let col = cat.read(&m.dataset, 0..rows).unwrap().to_f32().unwrap();
        let ids: Vec<i64> = test
            .iter()
            .map(|&r| codec.encode_value(0, col[r]))
            .collect();
        let t = Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [test.len(), 1]), &dev);
        inputs.push(TokenInput::new(m, t));
    }
    let z = by_token_key("tok_z").unwrap();
    let p = posterior(&model, &inputs, z);
    let centres = bin_centres(&load(&dir, z).unwrap(), z.vocab);
    let csv = std::fs::read_to_string(dir.join("eval/test_tok_z.csv")).unwrap();
    let mut worst = 0.0f64;
    for (i, line) in csv.lines().skip(1).enumerate() {
        let f: Vec<f64> = line.split(',').map(|x| x.parse().unwrap()).collect();
        assert_eq!(f[0] as usize, test[i]);
        let (mean, _) = posterior_moments(&p[i * z.vocab..(i + 1) * z.vocab], &centres);
        worst = worst.max((mean - f[2]).abs());
    }
    assert!(
        worst < 1e-5,
        "posterior means differ from the recorded ones by {worst}"
    );
}
