//! The 4M transformer vs `validation/fixtures/fourm` (two tiny configurations, reference
//! contexts and logits), decoder modes and batch independence. Loading and training checks are
//! in `fourm_loading.rs`.

use aion_model::fourm::{DecoderMode, Encoded};
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Tensor};

use crate::common::{Fixture, assert_close};

/// Absolute tolerance against the reference (aion-spec §5: float32 vs float64 differ by ≤ 2e-6).
const ATOL: f32 = 1e-5;
pub(crate) use crate::fourm_io::{
    ENCODE_KEYS, PREDICT_KEYS, ROWS, hub_dir, inputs, io, load, modality,
};

fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec::<f32>().unwrap()
}

/// Compares a tensor with a fixture array (shape and values).
pub(crate) fn check<B: Backend, const D: usize>(
    what: &str,
    got: Tensor<B, D>,
    io: &mut Fixture,
    name: &str,
) {
    let (shape, want) = io.f32(name);
    assert_eq!(got.dims().to_vec(), shape, "{what}: shape");
    assert_close(what, &values(got), &want, ATOL, 0.0);
}

/// Compares large logits with their reduced fixture form (`.head`: first 128 vocabulary entries
/// of every position, `.ends`: everything at the first and last position).
fn check_reduced<B: Backend>(what: &str, got: Tensor<B, 3>, io: &mut Fixture, name: &str) {
    let n = got.dims()[1];
    let head = got.clone().narrow(2, 0, 128);
    let ends = Tensor::cat(
        vec![got.clone().narrow(1, 0, 1), got.narrow(1, n - 1, 1)],
        1,
    );
    check(
        &format!("{what} (first 128)"),
        head,
        io,
        &format!("{name}.head"),
    );
    check(&format!("{what} (ends)"), ends, io, &format!("{name}.ends"));
}

fn check_mask<B: Backend>(what: &str, got: Tensor<B, 2, Bool>, io: &mut Fixture, name: &str) {
    let (_, want) = io.i64(name);
    let got: Vec<i64> = got
        .into_data()
        .convert::<bool>()
        .to_vec::<bool>()
        .unwrap()
        .iter()
        .map(|&m| i64::from(m))
        .collect();
    assert_eq!(got, want, "{what}");
}

macro_rules! both_variants {
    ($name:ident, $body:ident) => {
        mod $name {
            fn swiglu<B: burn::tensor::backend::Backend>(device: &B::Device) {
                super::$body::<B>("swiglu_qknorm_nobias", device)
            }
            fn gelu<B: burn::tensor::backend::Backend>(device: &B::Device) {
                super::$body::<B>("gelu_bias", device)
            }
            crate::backend_test!(swiglu_qknorm_nobias, swiglu);
            crate::backend_test!(gelu_bias, gelu);
        }
    };
}

/// The fixture of `variant` and the model's encoding of its inputs (`masked`: with the fixture's
/// input masks; `num_encoder_tokens` as [`Aion::encode`](aion_model::Aion::encode) takes it).
fn encoded<B: Backend>(
    variant: &str,
    device: &B::Device,
    masked: bool,
    num_encoder_tokens: Option<usize>,
) -> (Fixture, Encoded<B>) {
    let (model, mut io) = (load::<B>(variant, device), io(variant));
    let inp = inputs(&mut io, &ENCODE_KEYS, masked, 0..ROWS, device);
    let enc = model.encode(&inp, num_encoder_tokens).unwrap();
    (io, enc)
}

fn encode_all_tokens<B: Backend>(variant: &str, device: &B::Device) {
    let (mut io, enc) = encoded::<B>(variant, device, false, None);
    check(
        &format!("{variant} context"),
        enc.context,
        &mut io,
        "encode.all",
    );
}
both_variants!(encode_all_tokens_matches_reference, encode_all_tokens);

fn encode_with_masks<B: Backend>(variant: &str, device: &B::Device) {
    let (mut io, enc) = encoded::<B>(variant, device, true, None);
    check(
        &format!("{variant} context_with_mask"),
        enc.context,
        &mut io,
        "encode.masked",
    );
    check_mask("key mask", enc.mask, &mut io, "encode.masked.mask");
    let (_, want) = io.i64("encode.masked.modality");
    let got = enc
        .modality
        .into_data()
        .convert::<i64>()
        .to_vec::<i64>()
        .unwrap();
    assert_eq!(got, want, "modality ids");
}
both_variants!(encode_with_masks_matches_reference, encode_with_masks);

fn encode_truncated<B: Backend>(variant: &str, device: &B::Device) {
    let (mut io, enc) = encoded::<B>(variant, device, true, Some(700));
    let what = format!("{variant} context_num_encoder_tokens_700 (masked)");
    check(&what, enc.context, &mut io, "encode.masked.k700");
    check_mask(
        "key mask k700",
        enc.mask,
        &mut io,
        "encode.masked.k700.mask",
    );
}
both_variants!(
    encode_num_encoder_tokens_matches_reference,
    encode_truncated
);

fn encode_truncated_unmasked<B: Backend>(variant: &str, device: &B::Device) {
    let (mut io, enc) = encoded::<B>(variant, device, false, Some(300));
    let what = format!("{variant} context_num_encoder_tokens_300");
    check(&what, enc.context, &mut io, "encode.k300");
}
both_variants!(encode_prefix_matches_reference, encode_truncated_unmasked);

fn embed_mean<B: Backend>(variant: &str, device: &B::Device) {
    let (model, mut io) = (load::<B>(variant, device), io(variant));
    let inp = inputs(&mut io, &ENCODE_KEYS, true, 0..ROWS, device);
    check(
        &format!("{variant} embed"),
        model.embed(&inp),
        &mut io,
        "embed.masked",
    );
}
both_variants!(embed_is_mean_over_valid_tokens, embed_mean);

fn predict_scalars<B: Backend>(variant: &str, device: &B::Device) {
    let (model, mut io) = (load::<B>(variant, device), io(variant));
    let (z, ebv) = (modality("tok_z"), modality("tok_ebv"));
    let inp = inputs(&mut io, &PREDICT_KEYS, true, 0..ROWS, device);
    let one = |t| model.predict(&inp, &[t], DecoderMode::Joint).remove(0);
    let joint = model.predict(&inp, &[z, ebv], DecoderMode::Joint);
    // The reference shuffles the target order; the result must not depend on it.
    let swapped = model.predict(&inp, &[ebv, z], DecoderMode::Joint);
    let indep = model.predict(&inp, &[z, ebv], DecoderMode::Independent);
    let plain = inputs(&mut io, &PREDICT_KEYS, false, 0..ROWS, device);
    let no_masks = model.predict(&plain, &[z], DecoderMode::Joint).remove(0);
    for (what, got, key) in [
        ("tok_z alone", one(z), "predict.z"),
        ("tok_ebv alone", one(ebv), "predict.ebv"),
        ("[z, ebv] joint: z", joint[0].clone(), "predict.z_ebv.tok_z"),
        (
            "[z, ebv] joint: ebv",
            joint[1].clone(),
            "predict.z_ebv.tok_ebv",
        ),
        (
            "[ebv, z] joint: z",
            swapped[1].clone(),
            "predict.z_ebv.tok_z",
        ),
        ("[z, ebv] independent: z", indep[0].clone(), "predict.z"),
        ("[z, ebv] independent: ebv", indep[1].clone(), "predict.ebv"),
        ("tok_z, no masks", no_masks, "predict.z.nomask"),
    ] {
        check(&format!("{variant} {what}"), got, &mut io, key);
    }
}
both_variants!(predict_scalars_matches_reference, predict_scalars);

fn predict_large_targets<B: Backend>(variant: &str, device: &B::Device) {
    let (model, mut io) = (load::<B>(variant, device), io(variant));
    let image = inputs(&mut io, &["tok_image"], true, 0..ROWS, device);
    let spec = model.predict(&image, &[modality("tok_spectrum_desi")], DecoderMode::Joint);
    let what = format!("{variant} tok_spectrum_desi from image");
    check_reduced(
        &what,
        spec[0].clone(),
        &mut io,
        "predict.spectrum_from_image",
    );
    let keys = ["tok_spectrum_desi", "tok_z", "catalog"];
    let inp = inputs(&mut io, &keys, true, 0..ROWS, device);
    let targets = [modality("tok_image"), modality("tok_flux_g")];
    let out = model.predict(&inp, &targets, DecoderMode::Joint);
    let what = format!("{variant} [image, flux_g] joint: image");
    check_reduced(
        &what,
        out[0].clone(),
        &mut io,
        "predict.image_flux.tok_image",
    );
    let what = format!("{variant} [image, flux_g] joint: flux_g");
    check(
        &what,
        out[1].clone(),
        &mut io,
        "predict.image_flux.tok_flux_g",
    );
}
both_variants!(
    predict_large_targets_matches_reference,
    predict_large_targets
);

/// A row gives the same outputs alone as in a batch whose other rows have other masks, up to
/// float summation order: the GEMMs pick their cache blocking (and so the order in which partial
/// sums are added) from the row count, which moves results by ~1e-7 relative.
fn batch_independence<B: Backend>(variant: &str, device: &B::Device) {
    let tol = ATOL;
    let (model, mut io) = (load::<B>(variant, device), io(variant));
    let batch = inputs(&mut io, &ENCODE_KEYS, true, 0..ROWS, device);
    let context = values(model.encode(&batch, None).unwrap().context);
    let z = modality("tok_z");
    let pred = values(
        model
            .predict(&batch[..5], &[z], DecoderMode::Joint)
            .remove(0),
    );
    let (per_row, per_row_z) = (context.len() / ROWS, pred.len() / ROWS);
    for r in 0..ROWS {
        let one = inputs(&mut io, &ENCODE_KEYS, true, r..r + 1, device);
        let got = values(model.encode(&one, None).unwrap().context);
        let want = &context[r * per_row..(r + 1) * per_row];
        assert_close(
            &format!("{variant} row {r} context alone vs batch"),
            &got,
            want,
            tol,
            0.0,
        );
        let got = values(model.predict(&one[..5], &[z], DecoderMode::Joint).remove(0));
        let want = &pred[r * per_row_z..(r + 1) * per_row_z];
        assert_close(
            &format!("{variant} row {r} tok_z alone vs batch"),
            &got,
            want,
            tol,
            0.0,
        );
    }
}
both_variants!(rows_are_independent_of_the_batch, batch_independence);
