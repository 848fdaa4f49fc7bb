//! Image codec vs `validation/fixtures/image_codec` (reference tokens, intermediates, decodes).
//!
//! Tolerances: preprocessing is elementwise `f32` (1e-6); the network differs from PyTorch only
//! in float summation order, which random weights amplify a little per layer (1e-4 on values
//! of order 1); decoded images go through `sinh(1000·x)` and reach 10⁷, so they are compared
//! with a relative tolerance.

use std::path::PathBuf;

use aion_model::codecs::image::{Band, ImageCodec};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData, s};

use crate::backend_test;
use crate::common::{Fixture, assert_close, assert_fsq_tokens_eq, fixtures_dir, max_errors};

const CASE: &str = "image_codec";

fn hub_dir() -> PathBuf {
    fixtures_dir().join(CASE).join("hub/codecs/image")
}

fn bands(names: &[&str]) -> Vec<Band> {
    Band::parse_list(names).unwrap()
}

fn des() -> Vec<Band> {
    bands(&["DES-G", "DES-R", "DES-I", "DES-Z"])
}

fn hsc() -> Vec<Band> {
    bands(&["HSC-G", "HSC-R", "HSC-I", "HSC-Z", "HSC-Y"])
}

fn f32s<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec().unwrap()
}

fn i64s<B: Backend, const D: usize>(t: Tensor<B, D, Int>) -> Vec<i64> {
    t.into_data().convert::<i64>().to_vec().unwrap()
}

fn tensor<B: Backend, const D: usize>(
    shape: [usize; D],
    v: Vec<f32>,
    dev: &B::Device,
) -> Tensor<B, D> {
    Tensor::from_data(TensorData::new(v, shape), dev)
}

/// Every 3rd pixel in each direction, as the fixture stores large maps.
fn thin<B: Backend>(t: Tensor<B, 4>) -> Tensor<B, 4> {
    t.slice(s![.., .., ..;3, ..;3])
}

/// The fixture's cutouts: `flux_q · scale` (exact in f32); `extra_y` repeats channel 3 as HSC-Y.
fn input<B: Backend>(
    io: &mut Fixture,
    scale: &str,
    extra_y: bool,
    dev: &B::Device,
) -> Tensor<B, 4> {
    let (shape, q) = io.i64("flux_q");
    let scale = io.f32(scale).1[0];
    let x = tensor::<B, 4>(
        [shape[0], shape[1], shape[2], shape[3]],
        q.iter().map(|&v| v as f32 * scale).collect(),
        dev,
    );
    if extra_y {
        let y = x.clone().narrow(1, 3, 1);
        Tensor::cat(vec![x, y], 1)
    } else {
        x
    }
}

/// The fixture codec, the fixture's arrays and its cutouts (see [`input`]).
fn setup<B: Backend>(
    dev: &B::Device,
    scale: &str,
    extra_y: bool,
) -> (ImageCodec<B>, Fixture, Tensor<B, 4>) {
    let mut io = Fixture::open(CASE, "io.safetensors");
    let flux = input::<B>(&mut io, scale, extra_y, dev);
    (load::<B>(dev), io, flux)
}

fn load<B: Backend>(dev: &B::Device) -> ImageCodec<B> {
    ImageCodec::load(&hub_dir(), dev).unwrap_or_else(|e| panic!("{e}"))
}

/// Largest distance from a rounding edge at which a token may differ (float noise: the
/// latents agree to ~1e-5).
const EDGE_TOL: f32 = 1e-4;

/// Tokens identical, except at FSQ bin edges (see [`assert_fsq_tokens_eq`]).
fn check_tokens(
    what: &str,
    got: &[i64],
    want: &[i64],
    ref_pre_quant: &[f32],
    levels: &[u32],
) -> usize {
    assert_fsq_tokens_eq(what, got, want, ref_pre_quant, levels, 576, EDGE_TOL)
}

fn des_parity<B: Backend>(dev: &B::Device) {
    let (codec, mut io, flux) = setup::<B>(dev, "des_scale", false);
    let enc = codec.encode_with_intermediates(flux, &des()).unwrap();
    let cmp = |io: &mut Fixture, name: &str, got: Vec<f32>, atol: f32, rtol: f32| {
        let (_, want) = io.f32(name);
        assert_close(name, &got, &want, atol, rtol);
    };
    cmp(
        &mut io,
        "des_range_compressed",
        f32s(thin(enc.range_compressed)),
        1e-6,
        1e-6,
    );
    let padded = thin(enc.padded).slice(s![.., .., ..;2, ..;2]);
    cmp(&mut io, "des_padded", f32s(padded), 1e-6, 1e-6);
    let mask: Vec<i64> = io.i64("des_channel_mask").1;
    for row in mask.chunks(9) {
        let want: Vec<bool> = row.iter().map(|&m| m != 0).collect();
        assert_eq!(enc.channel_mask.to_vec(), want, "channel_mask");
    }
    cmp(
        &mut io,
        "des_subsampled",
        f32s(thin(enc.subsampled).slice(s![.., ..;5])),
        1e-5,
        1e-5,
    );
    cmp(
        &mut io,
        "des_encoder_out",
        f32s(enc.encoder_out.slice(s![.., ..;3])),
        2e-4,
        1e-4,
    );
    cmp(&mut io, "des_pre_quant", f32s(enc.pre_quant), 2e-4, 1e-4);
    let (_, ref_pre_quant) = io.f32("des_pre_quant");
    let (_, want_tokens) = io.i64("des_tokens");
    let levels = codec.quantizer().levels().to_vec();
    let tokens = i64s(enc.tokens);
    let n_edge = check_tokens("des tokens", &tokens, &want_tokens, &ref_pre_quant, &levels);
    // `quantized` is exact wherever the token is.
    let (_, want_q) = io.f32("des_quantized");
    let got_q = f32s(enc.quantized);
    let q_diff = got_q.iter().zip(&want_q).filter(|(a, b)| a != b).count();
    assert!(q_diff <= n_edge, "des_quantized: {q_diff} values differ");
    // Decoding starts from the reference's tokens.
    let tokens = Tensor::<B, 2, Int>::from_data(TensorData::new(want_tokens, [3, 576]), dev);
    cmp(
        &mut io,
        "des_dequantized",
        f32s(codec.quantizer().decode(tokens.clone())),
        0.0,
        0.0,
    );
    let decoded = codec.decode(tokens, &des()).unwrap();
    assert_eq!(decoded.dims(), [3, 4, 96, 96]);
    cmp(&mut io, "des_decoded_flux", f32s(thin(decoded)), 1e-4, 2e-3);
}
backend_test!(des_encode_decode, des_parity);

fn hsc_parity<B: Backend>(dev: &B::Device) {
    let (codec, mut io, flux) = setup::<B>(dev, "hsc_scale", true);
    let enc = codec.encode_with_intermediates(flux, &hsc()).unwrap();
    let (_, ref_pq) = io.f32("hsc_pre_quant");
    assert_close("hsc_pre_quant", &f32s(enc.pre_quant), &ref_pq, 2e-4, 1e-4);
    let (_, want) = io.i64("hsc_tokens");
    let levels = codec.quantizer().levels().to_vec();
    check_tokens("hsc tokens", &i64s(enc.tokens), &want, &ref_pq, &levels);
    // The reference crashes here; the fixture holds its decode with the rescale fixed (×10^1.8).
    let tokens = Tensor::<B, 2, Int>::from_data(TensorData::new(want, [3, 576]), dev);
    let decoded = codec.decode(tokens.clone(), &hsc()).unwrap();
    let (_, want_flux) = io.f32("hsc_decoded_flux");
    assert_close(
        "hsc_decoded_flux",
        &f32s(thin(decoded.clone())),
        &want_flux,
        1e-3,
        2e-3,
    );
    // decode_all: HSC slots in HSC units, DES slots in nanomaggies.
    let all = codec.decode_all(tokens.clone()).unwrap();
    assert_eq!(all.dims(), [3, 9, 96, 96]);
    let des_part = codec.decode(tokens, &des()).unwrap();
    assert_eq!(f32s(all.clone().narrow(1, 0, 5)), f32s(decoded));
    assert_eq!(f32s(all.narrow(1, 5, 4)), f32s(des_part));
}
backend_test!(hsc_encode_decode, hsc_parity);

fn subset_parity<B: Backend>(dev: &B::Device) {
    let (codec, mut io, flux) = setup::<B>(dev, "des_scale", false);
    let levels = codec.quantizer().levels().to_vec();
    let cases: [(&str, &[usize], &[&str]); 2] = [
        ("subset", &[0, 1, 3], &["DES-G", "DES-R", "DES-Z"]),
        ("shuffled", &[3, 0], &["des-z", "des-g"]),
    ];
    for (name, channels, names) in cases {
        let x = Tensor::cat(
            channels
                .iter()
                .map(|&c| flux.clone().narrow(1, c, 1))
                .collect(),
            1,
        );
        let enc = codec.encode_with_intermediates(x, &bands(names)).unwrap();
        let (_, ref_pq) = io.f32(&format!("{name}_pre_quant"));
        assert_close(
            &format!("{name}_pre_quant"),
            &f32s(enc.pre_quant),
            &ref_pq,
            2e-4,
            1e-4,
        );
        let (_, want) = io.i64(&format!("{name}_tokens"));
        check_tokens(
            &format!("{name} tokens"),
            &i64s(enc.tokens),
            &want,
            &ref_pq,
            &levels,
        );
    }
    let (_, want) = io.i64("subset_tokens");
    let tokens = Tensor::<B, 2, Int>::from_data(TensorData::new(want, [3, 576]), dev);
    let decoded = codec
        .decode(tokens, &bands(&["DES-G", "DES-R", "DES-Z"]))
        .unwrap();
    let (_, want_flux) = io.f32("subset_decoded_flux");
    assert_close(
        "subset_decoded_flux",
        &f32s(thin(decoded)),
        &want_flux,
        1e-4,
        2e-3,
    );
}
backend_test!(band_subsets, subset_parity);

fn odd_size_and_batch_independence<B: Backend>(dev: &B::Device) {
    let (codec, mut io, flux) = setup::<B>(dev, "des_scale", false);
    let before = f32s(flux.clone());
    // A 101×97 cutout: floor offsets (2, 0).
    let odd = flux.clone().slice(s![0..1, .., 10..111, 20..117]);
    let enc = codec.encode_with_intermediates(odd, &des()).unwrap();
    let (_, ref_pq) = io.f32("odd_pre_quant");
    assert_close("odd_pre_quant", &f32s(enc.pre_quant), &ref_pq, 2e-4, 1e-4);
    let levels = codec.quantizer().levels().to_vec();
    check_tokens(
        "odd tokens",
        &i64s(enc.tokens),
        &io.i64("odd_tokens").1,
        &ref_pq,
        &levels,
    );
    // Row 1 alone and rows [2, 1] give the same row-1 results as the full batch.
    let full = codec
        .encode_with_intermediates(flux.clone(), &des())
        .unwrap();
    let row = |t: Tensor<B, 3>, r: usize| f32s(t.narrow(0, r, 1));
    let alone = codec
        .encode_with_intermediates(flux.clone().narrow(0, 1, 1), &des())
        .unwrap();
    let pair = Tensor::cat(
        vec![flux.clone().narrow(0, 2, 1), flux.clone().narrow(0, 1, 1)],
        0,
    );
    let pair = codec.encode_with_intermediates(pair, &des()).unwrap();
    let full_row = row(full.pre_quant, 1);
    let (a, b) = max_errors(&row(alone.pre_quant, 0), &full_row);
    let (c, _) = max_errors(&row(pair.pre_quant, 1), &full_row);
    eprintln!("[parity] batch composition: pre_quant max abs diff {a:.1e} (rel {b:.1e}), {c:.1e}");
    assert!(a <= 1e-5 && c <= 1e-5);
    let full_tokens = i64s(full.tokens);
    // The lean `encode` path agrees with the instrumented one.
    assert_eq!(
        i64s(codec.encode(flux.clone(), &des()).unwrap()),
        full_tokens
    );
    // Our matrix products may block another batch size differently: tokens agree up to float
    // noise at an FSQ edge of our own latents.
    let row1 = &full_tokens[576..1152];
    check_tokens("row 1 alone", &i64s(alone.tokens), row1, &full_row, &levels);
    check_tokens(
        "row 1 in a pair",
        &i64s(pair.tokens)[576..],
        row1,
        &full_row,
        &levels,
    );
    // The caller's tensor is untouched (the reference clamps it in place).
    assert_eq!(f32s(flux), before);
}
backend_test!(
    odd_size_and_batch_composition,
    odd_size_and_batch_independence
);
