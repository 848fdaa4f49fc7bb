//! Scalar codecs vs `validation/fixtures/scalar_codecs` (reference tokens and decodes).

use aion_model::codecs::scalar::ScalarCodec;
use aion_model::modality::by_token_key;

use crate::common::{Fixture, assert_close, assert_table_tokens_eq, fixtures_dir};

/// Relative distance from a table entry within which the last bit of a logarithm (ours vs
/// torch's, or torch's on another processor) may put a value on the other side: 8 ulp.
const TABLE_TOL: f32 = 1e-6;

fn check(token_key: &str, codec_dir: &str) {
    let m = by_token_key(token_key).unwrap();
    let dir = fixtures_dir()
        .join("scalar_codecs/hub/codecs")
        .join(codec_dir);
    let codec = ScalarCodec::load(m, &dir).unwrap_or_else(|e| panic!("{e}"));
    let mut io = Fixture::open("scalar_codecs", "io.safetensors");
    let (_, values) = io.f32(&format!("{token_key}_values"));
    let (_, want_tokens) = io.i64(&format!("{token_key}_tokens"));
    let (_, want_decoded) = io.f32(&format!("{token_key}_decoded"));
    let (_, compressed) = io.f32(&format!("{token_key}_compressed"));
    let (table_shape, tables) = io.f32(&format!("{token_key}_table"));
    let channels = if table_shape.len() == 2 {
        table_shape[0]
    } else {
        1
    };
    let tokens = codec.encode(&values);
    assert_table_tokens_eq(
        &format!("{token_key} tokens"),
        &tokens,
        &want_tokens,
        &compressed,
        &tables,
        channels,
        TABLE_TOL,
    );
    // Decoding starts from the reference's tokens.
    let decoded = codec.decode(&want_tokens);
    // Decoding is a table look-up (+ exp / sinh): equal up to the last bit of the transcendental.
    assert_close(
        &format!("{token_key} decoded"),
        &decoded,
        &want_decoded,
        0.0,
        2e-7,
    );
}

#[test]
fn scalar_codec_ebv() {
    check("tok_ebv", "EBV");
}

#[test]
fn log_scalar_codec_flux_g() {
    check("tok_flux_g", "FLUX_G");
}

#[test]
fn multi_scalar_codec_xp_bp() {
    check("tok_xp_bp", "bp_coefficients");
}

#[test]
fn multi_scalar_codec_xp_rp() {
    check("tok_xp_rp", "rp_coefficients");
}

#[test]
fn grid_scalar_codec_z() {
    check("tok_z", "Z");
}

#[test]
fn loading_is_strict() {
    use std::fs;
    let m = by_token_key("tok_ebv").unwrap();
    let src = fixtures_dir().join("scalar_codecs/hub/codecs/EBV");
    let tmp = std::env::temp_dir().join(format!("aion-strict-{}", std::process::id()));
    fs::create_dir_all(&tmp).unwrap();
    fs::copy(src.join("config.json"), tmp.join("config.json")).unwrap();
    // A file with the table renamed: the loader must name both the missing and the unexpected tensor.
    let mut io = Fixture::open("scalar_codecs", "io.safetensors");
    let (_, table) = io.f32("tok_ebv_table");
    let bytes: Vec<u8> = table.iter().flat_map(|v| v.to_le_bytes()).collect();
    let reservoir = vec![0u8; 2000 * 4];
    let views = vec![
        (
            "quantizer._reservoir",
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![2000], &reservoir)
                .unwrap(),
        ),
        (
            "quantizer.index_to_val_renamed",
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![1024], &bytes)
                .unwrap(),
        ),
    ];
    safetensors::serialize_to_file(views, None, &tmp.join("model.safetensors")).unwrap();
    let err = ScalarCodec::load(m, &tmp).unwrap_err().to_string();
    fs::remove_dir_all(&tmp).ok();
    assert!(
        err.contains("missing tensor _quantizer._index_to_val"),
        "{err}"
    );
    assert!(
        err.contains("unexpected tensor quantizer.index_to_val_renamed"),
        "{err}"
    );
}
