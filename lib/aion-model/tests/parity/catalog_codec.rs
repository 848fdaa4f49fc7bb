//! Catalog codec vs `validation/fixtures/catalog_codec` (reference tokens and decodes, the
//! transformer vocabulary facts of `MODALITY_INFO`), plus the glue to model ids and the errors
//! the reference does not raise.

use aion_model::codecs::catalog::{self, Catalog, CatalogCodec};
use aion_model::modality::by_token_key;

use crate::common::{
    Fixture, assert_close, assert_mentions, assert_tokens_eq, codec_copy, fixtures_dir,
};

fn load() -> CatalogCodec {
    CatalogCodec::load(&fixtures_dir().join("catalog_codec/hub/codecs/catalog"))
        .unwrap_or_else(|e| panic!("{e}"))
}

/// The fixture codec, the fixture's arrays and its input catalogue.
fn setup() -> (CatalogCodec, Fixture, Catalog) {
    let mut io = Fixture::open("catalog_codec", "io.safetensors");
    let cat = input(&mut io);
    (load(), io, cat)
}

fn input(io: &mut Fixture) -> Catalog {
    let (shape, x) = io.i64("X");
    Catalog {
        batch: shape[0],
        len: shape[1],
        x,
        y: io.i64("Y").1,
        shape_e1: io.f32("SHAPE_E1").1,
        shape_e2: io.f32("SHAPE_E2").1,
        shape_r: io.f32("SHAPE_R").1,
    }
}

fn check_decoded(io: &mut Fixture, prefix: &str, got: &Catalog) {
    assert_eq!(got.x, io.i64(&format!("{prefix}X")).1, "{prefix}X");
    assert_eq!(got.y, io.i64(&format!("{prefix}Y")).1, "{prefix}Y");
    for (name, v) in [
        ("SHAPE_E1", &got.shape_e1),
        ("SHAPE_E2", &got.shape_e2),
        ("SHAPE_R", &got.shape_r),
    ] {
        let (_, want) = io.f32(&format!("{prefix}{name}"));
        assert_close(&format!("{prefix}{name}"), v, &want, 0.0, 0.0);
    }
}

#[test]
fn catalog_tokens_and_decode_match_reference() {
    let (codec, mut io, cat) = setup();
    let tokens = codec.encode(&cat).unwrap();
    let (shape, want) = io.i64("tokens");
    assert_eq!(shape, vec![cat.batch, 5 * cat.len]);
    // Exact on every processor: X and Y are integers and the SHAPE tables are compared with the
    // given f32 values as they are (no arithmetic before the comparison, unlike the log and
    // arcsinh scalar codecs).
    assert_tokens_eq("catalog tokens", &tokens, &want);
    check_decoded(
        &mut io,
        "decoded_",
        &codec.decode(&tokens, cat.batch).unwrap(),
    );
    let (shape, custom) = io.i64("custom_tokens");
    check_decoded(
        &mut io,
        "custom_decoded_",
        &codec.decode(&custom, shape[0]).unwrap(),
    );
}

#[test]
fn catalog_vocabulary_facts_match_modality_info() {
    let text = std::fs::read_to_string(fixtures_dir().join("catalog_codec/facts.json")).unwrap();
    let facts: serde_json::Value = serde_json::from_str(&text).unwrap();
    let n = |k: &str| facts[k].as_i64().unwrap();
    assert_eq!(n("vocab_offset"), catalog::VOCAB_OFFSET);
    assert_eq!(n("padding_idx"), catalog::PAD_ID);
    assert_eq!(n("codec_pad_id"), load().mask_value);
    assert_eq!(n("codec_codebook_size"), CatalogCodec::codebook_size());
    let offsets: Vec<i64> = serde_json::from_value(facts["codec_offsets"].clone()).unwrap();
    assert_eq!(offsets, CatalogCodec::offsets());
    let m = by_token_key("catalog").unwrap();
    assert_eq!(n("vocab_size") as usize, m.vocab);
    assert_eq!(n("max_length") as usize, m.num_tokens());
    assert_eq!(
        catalog::VOCAB_OFFSET + CatalogCodec::codebook_size(),
        m.vocab as i64
    );
}

#[test]
fn catalog_model_ids_round_trip() {
    let (codec, _, cat) = setup();
    let tokens = codec.encode(&cat).unwrap();
    let (ids, mask) = codec.to_model_ids(&tokens, 5 * cat.len).unwrap();
    for ((&t, &id), &m) in tokens.iter().zip(&ids).zip(&mask) {
        if t == 9999 {
            assert_eq!((id, m), (0, true));
        } else {
            assert_eq!((id, m), (t + 204, false));
            assert!((204..3468).contains(&id));
        }
    }
    assert_eq!(codec.from_model_ids(&ids).unwrap(), tokens);
    let e = codec.from_model_ids(&[204, 3]).unwrap_err().to_string();
    assert!(e.contains("model id 3 at index 1"), "{e}");
    let e = codec.from_model_ids(&[3468]).unwrap_err().to_string();
    assert!(e.contains("3468"), "{e}");
}

#[test]
fn catalog_errors_name_row_and_slot() {
    let (codec, _, cat) = setup();
    let slot = cat.len + 3; // row 1, slot 3 (row 1 is empty in the fixture)
    let mut partly = cat.clone();
    partly.shape_r[slot] = 1.0;
    let e = codec.encode(&partly).unwrap_err().to_string();
    assert!(
        e.contains("row 1, slot 3") && e.contains("\"X\", \"Y\", \"SHAPE_E1\", \"SHAPE_E2\""),
        "{e}"
    );
    let mut off_crop = cat.clone();
    off_crop.x[0] = 96;
    let e = codec.encode(&off_crop).unwrap_err().to_string();
    assert!(e.contains("row 0, slot 0: X = 96"), "{e}");
    let mut short = cat.clone();
    short.shape_e2.pop();
    assert!(codec.encode(&short).is_err());

    let tokens = codec.encode(&cat).unwrap();
    let row_len = 5 * cat.len;
    let mut t = tokens.clone();
    t[row_len + 5 * 2 + 4] = 2240; // row 1, slot 2: only SHAPE_R filled
    let e = codec.to_model_ids(&t, row_len).unwrap_err().to_string();
    assert!(e.contains("row 1, slot 2"), "{e}");
    let mut t = tokens.clone();
    t[1] = 50; // Y position holds an X code
    let e = codec.to_model_ids(&t, row_len).unwrap_err().to_string();
    assert!(
        e.contains("row 0, slot 0: Y token 50 is not in 96..192"),
        "{e}"
    );
    assert!(codec.to_model_ids(&tokens, 7).is_err());
    assert!(codec.decode(&tokens, 3).is_err());
}

#[test]
fn catalog_loading_is_strict() {
    let src = fixtures_dir().join("catalog_codec/hub/codecs/catalog");
    let removed = "_quantizer.quantizers.SHAPE_E2._index_to_val";
    // Renamed with the Hub-style `quantizer.` prefix: accepted as an alias.
    let tmp = codec_copy(&src, "catalog-strict", &[removed], &[], None, |n| {
        n.trim_start_matches('_')
    });
    let err = CatalogCodec::load(&tmp).unwrap_err().to_string();
    std::fs::remove_dir_all(&tmp).ok();
    let missing = format!("missing tensor {removed} [1024]");
    assert_mentions(&err, &[&missing, "1 problem"]);
}
