//! Image codec: strict loading, configuration checks and input errors (no panics).

use std::fs;
use std::path::{Path, PathBuf};

use aion_model::codecs::image::{Band, ImageCodec};
use burn::backend::NdArray;
use burn::tensor::{Int, Tensor, TensorData};

use crate::common::{assert_mentions, fixtures_dir};

type B = NdArray<f32>;

fn hub_dir() -> PathBuf {
    fixtures_dir().join("image_codec/hub/codecs/image")
}

/// The fixture codec folder copied with tensors `drop` removed, `add` added and another
/// `config` if given (see [`codec_copy`](crate::common::codec_copy)).
fn codec_copy(
    tag: &str,
    drop: &[&str],
    add: &[(&str, Vec<usize>, Vec<u8>)],
    config: Option<&str>,
) -> PathBuf {
    let tag = format!("image-{tag}");
    crate::common::codec_copy(&hub_dir(), &tag, drop, add, config, |n| n)
}

fn load_err(dir: &Path) -> String {
    let err = ImageCodec::<B>::load(dir, &Default::default())
        .unwrap_err()
        .to_string();
    fs::remove_dir_all(dir).ok();
    err
}

#[test]
fn strict_loading_names_missing_and_unexpected_tensors() {
    let removed = "model.encoder_layers.2.1.net.4.to_k.weight";
    let extra = ("model.encoder_layers.9.conv.weight", vec![2], vec![0u8; 8]);
    let err = load_err(&codec_copy("strict", &[removed], &[extra], None));
    let missing = format!("missing tensor {removed} [1, 16, 1, 1]");
    let unexpected = "unexpected tensor model.encoder_layers.9.conv.weight";
    assert_mentions(&err, &[&missing, unexpected]);
}

#[test]
fn levels_buffer_must_match_config() {
    let cfg = fs::read_to_string(hub_dir().join("config.json")).unwrap();
    let cfg = cfg.replace(
        "7,\n    5,\n    5,\n    5,\n    5",
        "5,\n    5,\n    5,\n    5,\n    7",
    );
    assert!(cfg.contains('7'));
    let err = load_err(&codec_copy("levels", &[], &[], Some(&cfg)));
    assert!(err.contains("levels buffer [7, 5, 5, 5, 5]"), "{err}");
}

#[test]
fn config_errors_are_clear() {
    let cfg = fs::read_to_string(hub_dir().join("config.json")).unwrap();
    let unknown = cfg.replacen('{', "{\n  \"hidden_dim\": 32,", 1);
    let err = load_err(&codec_copy("unknown", &[], &[], Some(&unknown)));
    assert!(err.contains("unknown field `hidden_dim`"), "{err}");
    let bad = cfg.replace("\"embedding_dim\": 5", "\"embedding_dim\": 4");
    let err = load_err(&codec_copy("emb", &[], &[], Some(&bad)));
    assert!(
        err.contains("embedding_dim = 4 but 5 quantizer levels"),
        "{err}"
    );
    let bad = cfg.replace("\"hidden_dims\": 32", "\"hidden_dims\": 30");
    let err = load_err(&codec_copy("hidden", &[], &[], Some(&bad)));
    assert!(err.contains("hidden_dims = 30"), "{err}");
}

#[test]
fn bad_inputs_are_errors() {
    let dev = Default::default();
    let codec = ImageCodec::<B>::load(&hub_dir(), &dev).unwrap();
    let des = Band::parse_list(&["DES-G", "DES-R"]).unwrap();
    let img = |h: usize, w: usize| Tensor::<B, 4>::zeros([1, 2, h, w], &dev);
    let err = |r: aion_model::Result<Tensor<B, 2, Int>>| r.unwrap_err().to_string();
    assert!(err(codec.encode(img(95, 120), &des)).contains("95×120"));
    assert!(err(codec.encode(img(96, 96), &des[..1])).contains("2 channels but 1 bands"));
    let dup = [Band::DesG, Band::DesG];
    assert!(err(codec.encode(img(96, 96), &dup)).contains("DES-G is given twice"));
    assert!(err(codec.encode(img(96, 96), &[])).contains("empty"));
    assert!(
        Band::parse_list(&["DES-G", "LSST-U"])
            .unwrap_err()
            .to_string()
            .contains("LSST-U")
    );
    let nan = img(100, 100).slice_assign(
        [0..1, 1..2, 50..51, 50..51],
        Tensor::from_data(TensorData::new(vec![f32::NAN], [1, 1, 1, 1]), &dev),
    );
    assert!(err(codec.encode(nan.clone(), &des)).contains("NaN pixels"));
    // NaN outside the crop is never seen by the reference either.
    let outside = img(100, 100).slice_assign(
        [0..1, 1..2, 0..1, 0..1],
        Tensor::from_data(TensorData::new(vec![f32::NAN], [1, 1, 1, 1]), &dev),
    );
    assert!(codec.encode(outside, &des).is_ok());
    // Decoding: token range and count.
    let tokens = |v: i64, n: usize| {
        Tensor::<B, 2, Int>::from_data(TensorData::new(vec![v; n], [1, n]), &dev)
    };
    let dec = |r: aion_model::Result<Tensor<B, 4>>| r.unwrap_err().to_string();
    assert!(dec(codec.decode(tokens(4375, 576), &des)).contains("0..4375"));
    assert!(dec(codec.decode(tokens(-1, 576), &des)).contains("0..4375"));
    assert!(dec(codec.decode(tokens(0, 575), &des)).contains("576"));
    assert!(dec(codec.decode(tokens(0, 576), &dup)).contains("twice"));
    assert_eq!(
        codec.decode_all(tokens(0, 576)).unwrap().dims(),
        [1, 9, 96, 96]
    );
}
