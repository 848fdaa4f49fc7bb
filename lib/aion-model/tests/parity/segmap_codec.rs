//! Segmentation-map codec vs `validation/fixtures/segmap_codec` (tokens, intermediates, decode),
//! strict loading and batch independence.

use std::fs;
use std::path::PathBuf;

use aion_model::codecs::scalar_field::ScalarFieldCodec;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData, s};
use safetensors::SafeTensors;

use crate::backend_test;
use crate::common::{Fixture, assert_close, assert_fsq_tokens_eq, fixtures_dir};

const CASE: &str = "segmap_codec";

fn hub_dir() -> PathBuf {
    fixtures_dir()
        .join(CASE)
        .join("hub/codecs/segmentation_map")
}

fn f32s<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec().unwrap()
}

fn i64s<B: Backend, const D: usize>(t: Tensor<B, D, Int>) -> Vec<i64> {
    t.into_data().convert::<i64>().to_vec().unwrap()
}

fn field<B: Backend>(io: &mut Fixture, dev: &B::Device) -> Tensor<B, 3> {
    let (shape, v) = io.i64("field");
    let v: Vec<f32> = v.iter().map(|&x| x as f32).collect();
    Tensor::from_data(TensorData::new(v, [shape[0], shape[1], shape[2]]), dev)
}

fn segmap_parity<B: Backend>(dev: &B::Device) {
    let codec = ScalarFieldCodec::<B>::load(&hub_dir(), dev).unwrap_or_else(|e| panic!("{e}"));
    let mut io = Fixture::open(CASE, "io.safetensors");
    let x = field::<B>(&mut io, dev);
    let levels = codec.quantizer().levels().to_vec();
    let enc = codec.encoder_out(x.clone()).unwrap();
    assert_close(
        "encoder_out",
        &f32s(enc),
        &io.f32("encoder_out").1,
        1e-5,
        1e-5,
    );
    let pq = codec.pre_quant(x.clone()).unwrap();
    let (_, ref_pq) = io.f32("pre_quant");
    assert_close("pre_quant", &f32s(pq.clone()), &ref_pq, 1e-5, 1e-5);
    let q = f32s(codec.quantizer().quantize(pq));
    let tokens = i64s(codec.encode(x.clone()).unwrap());
    let (_, want) = io.i64("tokens");
    let n_edge = assert_fsq_tokens_eq("segmap tokens", &tokens, &want, &ref_pq, &levels, 144, 1e-4);
    let (_, want_q) = io.f32("quantized");
    assert!(
        q.iter().zip(&want_q).filter(|(a, b)| a != b).count() <= n_edge,
        "quantized"
    );
    let t = Tensor::<B, 2, Int>::from_data(TensorData::new(want.clone(), [3, 144]), dev);
    assert_close(
        "dequantized",
        &f32s(codec.quantizer().decode(t.clone())),
        &io.f32("dequantized").1,
        0.0,
        0.0,
    );
    let decoded = codec.decode(t).unwrap();
    assert_eq!(decoded.dims(), [3, 96, 96]);
    assert_close("decoded", &f32s(decoded), &io.f32("decoded").1, 1e-5, 1e-5);
    // A 100×130 cutout (floor offsets 2, 17).
    let odd = x.clone().slice(s![1..2, 20..120, 10..140]);
    let (_, ref_odd) = io.f32("odd_pre_quant");
    assert_close(
        "odd_pre_quant",
        &f32s(codec.pre_quant(odd.clone()).unwrap()),
        &ref_odd,
        1e-5,
        1e-5,
    );
    let odd_tokens = i64s(codec.encode(odd).unwrap());
    assert_fsq_tokens_eq(
        "odd segmap tokens",
        &odd_tokens,
        &io.i64("odd_tokens").1,
        &ref_odd,
        &levels,
        144,
        1e-4,
    );
    // Row 2 alone gives the batch's row-2 tokens, up to float noise at an FSQ edge of our own
    // latents (our matrix products may block another batch size differently).
    let alone = i64s(codec.encode(x.clone().narrow(0, 2, 1)).unwrap());
    let ours = f32s(codec.pre_quant(x).unwrap());
    let per_row = ours.len() / 3;
    assert_fsq_tokens_eq(
        "row 2 alone",
        &alone,
        &tokens[288..],
        &ours[2 * per_row..],
        &levels,
        144,
        1e-4,
    );
}
backend_test!(segmap_encode_decode, segmap_parity);

#[test]
fn segmap_strict_loading_and_errors() {
    type B = burn::backend::NdArray<f32>;
    let dev = Default::default();
    let tmp = std::env::temp_dir().join(format!("aion-segmap-strict-{}", std::process::id()));
    fs::create_dir_all(&tmp).unwrap();
    fs::copy(hub_dir().join("config.json"), tmp.join("config.json")).unwrap();
    let bytes = fs::read(hub_dir().join("model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let removed = "encoder.net.7.net.1.net.2.running_var";
    let views: Vec<_> = st
        .tensors()
        .into_iter()
        .filter(|(n, _)| n != removed)
        .collect();
    safetensors::serialize_to_file(views, None, &tmp.join("model.safetensors")).unwrap();
    let err = ScalarFieldCodec::<B>::load(&tmp, &dev)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("missing tensor {removed} [16]")),
        "{err}"
    );
    fs::write(
        tmp.join("config.json"),
        r#"{"encoder_output_dim": 32, "res_hidden_dims": 16}"#,
    )
    .unwrap();
    let err = ScalarFieldCodec::<B>::load(&tmp, &dev)
        .unwrap_err()
        .to_string();
    assert!(err.contains("embedding_dim = 32 but 4 FSQ levels"), "{err}");
    fs::write(
        tmp.join("config.json"),
        r#"{"encoder_output_dim": 32, "embedding_dim": 4, "dropout": 0.1}"#,
    )
    .unwrap();
    let err = ScalarFieldCodec::<B>::load(&tmp, &dev)
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown field `dropout`"), "{err}");
    fs::remove_dir_all(&tmp).ok();

    let codec = ScalarFieldCodec::<B>::load(&hub_dir(), &dev).unwrap();
    let small = Tensor::<B, 3>::zeros([1, 96, 90], &dev);
    assert!(
        codec
            .encode(small)
            .unwrap_err()
            .to_string()
            .contains("96×90")
    );
    let bad = Tensor::<B, 2, Int>::from_data(TensorData::new(vec![1000i64; 144], [1, 144]), &dev);
    assert!(
        codec
            .decode(bad)
            .unwrap_err()
            .to_string()
            .contains("0..1000")
    );
    let short = Tensor::<B, 2, Int>::zeros([1, 143], &dev);
    assert!(codec.decode(short).unwrap_err().to_string().contains("144"));
}
