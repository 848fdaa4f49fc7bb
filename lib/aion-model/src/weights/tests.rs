//! The one description drives loading, initialising and saving alike: what the initialiser
//! writes, the strict loader takes without a problem, and saving gives back; a renamed tensor
//! is refused with its name.

use burn_ndarray::NdArray;

use super::*;
use crate::codecs::catalog::{CatalogCodec, CatalogConfig};
use crate::codecs::image::{ImageCodec, ImageCodecConfig};
use crate::codecs::scalar::{ScalarCodec, ScalarConfig};
use crate::codecs::scalar_field::{ScalarFieldCodec, ScalarFieldConfig};
use crate::codecs::spectrum::network::SpectrumNetwork;
use crate::codecs::spectrum::{SpectrumCodec, SpectrumConfig};
use crate::config::AionConfig;
use crate::error::Error;
use crate::fourm::Aion;
use crate::modality::{MODALITIES, by_token_key};

type B = NdArray<f32>;

/// A weight file holding what `init` recorded.
fn file_of(init: &Initialiser) -> WeightFile {
    WeightFile::from_bytes("<drawn>", stored_bytes(init.tensors())).unwrap()
}

fn renamed(init: &Initialiser, from: &str, to: &str) -> WeightFile {
    let mut tensors = init.tensors().to_vec();
    let t = tensors.iter_mut().find(|t| t.name == from).unwrap();
    t.name = to.to_string();
    WeightFile::from_bytes("<renamed>", stored_bytes(&tensors)).unwrap()
}

fn problems(w: WeightFile) -> String {
    match w.finish() {
        Err(e @ Error::Weights { .. }) => e.to_string(),
        other => panic!("expected weight problems, got {other:?}"),
    }
}

#[test]
fn the_transformer_loads_what_it_draws_and_saves_what_it_loads() {
    let dev = Default::default();
    let cfg = AionConfig::tiny();
    let mut init = Initialiser::new(3);
    let drawn = Aion::<B>::from_weights(cfg.clone(), &mut init, &dev).unwrap();
    let mut w = file_of(&init);
    let loaded = Aion::<B>::from_weights(cfg.clone(), &mut w, &dev).unwrap();
    w.finish().unwrap();
    // Saving gives back every drawn tensor under its name, with its shape and values; the
    // decoder token tables the model does not keep come back as zeros.
    let saved = crate::export::state_dict(&loaded);
    let unkept = crate::export::unkept_tensor_names(&loaded);
    assert_eq!(saved.len(), init.tensors().len());
    assert!(!unkept.is_empty());
    for (s, d) in saved.iter().zip(init.tensors()) {
        assert_eq!((&s.name, &s.shape), (&d.name, &d.shape));
        if unkept.contains(&s.name) {
            assert!(s.data.iter().all(|&v| v == 0.0), "{}", s.name);
        } else {
            assert_eq!(Some(s.data.clone()), d.f32s(), "{}", s.name);
        }
    }
    // The model built from the initialiser is the loaded one.
    assert_eq!(
        crate::export::state_dict(&drawn),
        crate::export::state_dict(&loaded)
    );
    // LoRA finds the blocks' linear layers with their packing (qkv: 3, kv: 2).
    let linears = loaded.param_names().linear_weights();
    let qkv = linears
        .iter()
        .find(|l| l.prefix == "encoder.0.attn.qkv")
        .unwrap();
    assert_eq!((qkv.shape, qkv.packed), ([192, 64], 3));
    let kv = linears
        .iter()
        .find(|l| l.prefix == "decoder.1.cross_attn.kv")
        .unwrap();
    assert_eq!((kv.shape, kv.packed), ([128, 64], 2));
}

#[test]
fn a_renamed_tensor_fails_loading_with_both_names() {
    let dev = Default::default();
    let cfg = AionConfig::tiny();
    let mut init = Initialiser::new(1);
    Aion::<B>::from_weights(cfg.clone(), &mut init, &dev).unwrap();
    let (from, to) = ("encoder.1.attn.proj.weight", "encoder.1.attn.proj_weight");
    let mut w = renamed(&init, from, to);
    Aion::<B>::from_weights(cfg, &mut w, &dev).unwrap();
    let err = problems(w);
    assert!(
        err.contains(&format!("missing tensor {from} [64, 64]")),
        "{err}"
    );
    assert!(
        err.contains(&format!("unexpected tensor {to} [64, 64]")),
        "{err}"
    );

    let cfg = ImageCodecConfig::tiny();
    let mut init = Initialiser::new(1);
    ImageCodec::<B>::from_weights(cfg.clone(), &mut init, &dev).unwrap();
    let from = "model.encoder_layers.2.1.net.4.to_k.weight";
    let mut w = renamed(&init, from, "model.encoder_layers.2.1.net.4.to_q.weight");
    ImageCodec::<B>::from_weights(cfg, &mut w, &dev).unwrap();
    let err = problems(w);
    assert!(
        err.contains(&format!("missing tensor {from} [1, 16, 1, 1]")),
        "{err}"
    );
}

/// Every codec of a random model: drawn, then loaded strictly from what was drawn.
#[test]
fn every_codec_loads_what_it_draws() {
    let dev = Default::default();
    let mut init = Initialiser::new(5);
    ImageCodec::<B>::from_weights(ImageCodecConfig::tiny(), &mut init, &dev).unwrap();
    let mut w = file_of(&init);
    ImageCodec::<B>::from_weights(ImageCodecConfig::tiny(), &mut w, &dev).unwrap();
    w.finish().unwrap();
    // The FSQ levels are stored as int32, like the reference's buffer.
    let levels = init
        .tensors()
        .iter()
        .find(|t| t.name == "_quantizer.levels")
        .unwrap();
    assert_eq!(levels.dtype, safetensors::Dtype::I32);

    let mut init = Initialiser::new(5);
    SpectrumCodec::<B>::from_weights(SpectrumConfig::tiny(), &mut init, &dev).unwrap();
    let mut w = file_of(&init);
    let codec = SpectrumCodec::<B>::from_weights(SpectrumConfig::tiny(), &mut w, &dev);
    w.finish().unwrap();
    assert_eq!(codec.unwrap().num_tokens(), 273);

    let mut init = Initialiser::new(5);
    let cfg = ScalarFieldConfig::tiny();
    ScalarFieldCodec::<B>::from_weights(cfg.clone(), &mut init, &dev).unwrap();
    // BatchNorm's training counter is written, as the reference stores it.
    assert!(
        init.tensors()
            .iter()
            .any(|t| t.name.ends_with("num_batches_tracked"))
    );
    let mut w = file_of(&init);
    ScalarFieldCodec::<B>::from_weights(cfg, &mut w, &dev).unwrap();
    w.finish().unwrap();

    let mut init = Initialiser::new(5);
    CatalogCodec::from_weights(&CatalogConfig::default(), &mut init).unwrap();
    let mut w = file_of(&init);
    CatalogCodec::from_weights(&CatalogConfig::default(), &mut w).unwrap();
    w.finish().unwrap();

    for m in MODALITIES.iter().filter(|m| m.codec.is_scalar()) {
        let cfg = ScalarConfig::released(m);
        let mut init = Initialiser::new(5);
        let drawn = ScalarCodec::from_weights(m, &cfg, &mut init).unwrap();
        // Scalar codecs are written with the Hub's `quantizer.` prefix.
        assert!(
            init.tensors()
                .iter()
                .all(|t| t.name.starts_with("quantizer."))
        );
        let mut w = file_of(&init);
        let loaded = ScalarCodec::from_weights(m, &cfg, &mut w).unwrap();
        w.finish().unwrap();
        assert_eq!(drawn, loaded, "{}", m.token_key);
        assert_eq!(loaded.channels(), m.num_tokens(), "{}", m.token_key);
    }
}

/// Saving undoes the layouts modules keep their weights in (transposed linear and patch
/// convolution weights, reshaped transposed convolutions).
#[test]
fn saving_undoes_every_layout() {
    let dev = Default::default();
    let cfg = SpectrumConfig::tiny();
    let mut init = Initialiser::new(2);
    let network = SpectrumNetwork::<B>::load(&mut init, &cfg, &dev);
    let names = std::mem::take(init.names_mut());
    let saved = names.state_dict(&network);
    assert_eq!(saved.len(), names.len());
    for s in &saved {
        let drawn = init.tensors().iter().find(|t| t.name == s.name).unwrap();
        assert_eq!(Some(s.data.clone()), drawn.f32s(), "{}", s.name);
    }
}

#[test]
fn draws_follow_their_rules() {
    let mut init = Initialiser::new(9);
    let x = init.floats("w", &[30, 20], &Init::XavierUniform { packed: 3 });
    let bound = (6.0f64 / (20 + 10) as f64).sqrt() as f32;
    assert!(x.iter().all(|v| v.abs() <= bound) && x.iter().any(|v| v.abs() > bound / 2.0));
    let l = init.floats("c", &[8, 4, 3, 3], &Init::LeCunUniform);
    let bound = (3.0f64 / 36.0).sqrt() as f32;
    assert!(l.iter().all(|v| v.abs() <= bound));
    assert_eq!(init.floats("o", &[3], &Init::Ones), vec![1.0; 3]);
    // Streams: the same stream continues, another one starts afresh and is seeded alike.
    init.stream(7);
    let a = init.floats("a", &[4], &Init::Normal { std: 1.0 });
    let mut other = Initialiser::new(9);
    other.stream(7);
    assert_eq!(other.floats("a", &[4], &Init::Normal { std: 1.0 }), a);
    // A table is the quantile table of the reservoir just before.
    let r = Reservoir {
        quantity: "EBV".into(),
        channel: 0,
        space: ValueSpace::Linear,
    };
    let res = init.floats("r", &[500], &Init::Reservoir(r));
    let table = init.floats("t", &[64], &Init::QuantileTable);
    assert_eq!(table, crate::codecs::scalar_fit::quantile_table(&res, 64));
    assert!(by_token_key("tok_ebv").is_some());
}

#[test]
fn mapped_files_and_transposed_reads_give_the_stored_values() {
    use safetensors::tensor::{Dtype, TensorView};
    // [3, 70]: more than one 64-wide tile; f32, and bf16 (decoded, then transposed).
    let (rows, cols) = (3, 70);
    let vals: Vec<f32> = (0..rows * cols).map(|i| i as f32 * 0.5 - 7.0).collect();
    let f32_raw: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
    let bf_raw: Vec<u8> = vals
        .iter()
        .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
        .collect();
    let views = vec![
        (
            "w".to_string(),
            TensorView::new(Dtype::F32, vec![rows, cols], &f32_raw).unwrap(),
        ),
        (
            "b".to_string(),
            TensorView::new(Dtype::BF16, vec![rows, cols], &bf_raw).unwrap(),
        ),
    ];
    let bytes = safetensors::tensor::serialize(views, None).unwrap();
    let dir = std::env::temp_dir().join(format!("aion-weights-map-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("model.safetensors");
    std::fs::write(&path, &bytes).unwrap();
    let expected: Vec<f32> = (0..cols)
        .flat_map(|c| (0..rows).map(move |r| (r * cols + c) as f32 * 0.5 - 7.0))
        .collect();
    for mut w in [
        WeightFile::open(&path).unwrap(),
        WeightFile::from_bytes("<memory>", bytes.clone()).unwrap(),
    ] {
        assert_eq!(w.f32s_transposed("w", [rows, cols]), expected);
        // The same through the generic path (bf16 values are exact here: multiples of 0.5
        // below 128).
        assert_eq!(w.f32s_transposed("b", [rows, cols]), expected);
        w.finish().unwrap();
    }
    // A wrong shape is a problem reported by name, as for f32s.
    let mut w = WeightFile::open(&path).unwrap();
    let _ = w.f32s_transposed("w", [cols, rows]);
    let _ = w.f32s("b", &[rows, cols]);
    assert!(problems(w).contains("w"));
    // A missing file names itself.
    let e = WeightFile::open(dir.join("absent.safetensors")).unwrap_err();
    assert!(e.to_string().contains("absent.safetensors"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}
