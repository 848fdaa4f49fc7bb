//! Codec fitting vs the reference's table construction: for every reservoir codec of
//! `validation/fixtures/scalar_codecs`, the table built here from the stored reservoir
//! (`quantizer._reservoir`) must equal the reference's `quantizer._index_to_val` bit for bit,
//! and the redshift grid must equal `GridScalarCodec("Z", 1024)`'s buckets.

use aion_model::codecs::scalar_fit::{linspace_f32, quantile_table};
use aion_model::weights::WeightFile;

use crate::common::fixtures_dir;

fn check(dir: &str, prefix: &str) {
    let path = fixtures_dir()
        .join("scalar_codecs/hub/codecs")
        .join(dir)
        .join("model.safetensors");
    let mut w = WeightFile::open(&path).unwrap();
    let r = w.shape(&format!("{prefix}_reservoir")).unwrap()[0];
    let k = w.shape(&format!("{prefix}_index_to_val")).unwrap()[0];
    let reservoir = w.f32s(&format!("{prefix}_reservoir"), &[r]);
    let want = w.f32s(&format!("{prefix}_index_to_val"), &[k]);
    let got = quantile_table(&reservoir, k);
    let bad: Vec<usize> = (0..k)
        .filter(|&i| got[i].to_bits() != want[i].to_bits())
        .collect();
    assert!(
        bad.is_empty(),
        "{dir} {prefix}: {} of {k} entries differ, first at {}: {} vs {}",
        bad.len(),
        bad[0],
        got[bad[0]],
        want[bad[0]]
    );
}

#[test]
fn tables_equal_the_reference_scalar() {
    check("EBV", "quantizer.");
}

#[test]
fn tables_equal_the_reference_log_scalar() {
    check("FLUX_G", "quantizer.");
}

#[test]
fn tables_equal_the_reference_multi_scalar() {
    for i in [0, 1, 17, 54] {
        check("bp_coefficients", &format!("quantizer.quantizers.{i}."));
        check("rp_coefficients", &format!("quantizer.quantizers.{i}."));
    }
}

#[test]
fn redshift_grid_equals_the_reference() {
    let path = fixtures_dir().join("scalar_codecs/hub/codecs/Z/model.safetensors");
    let mut w = WeightFile::open(&path).unwrap();
    let want = w.f32s("quantizer.buckets", &[1024]);
    let got = linspace_f32(1024);
    assert!(
        got.iter()
            .zip(&want)
            .all(|(a, b)| a.to_bits() == b.to_bits())
    );
}
