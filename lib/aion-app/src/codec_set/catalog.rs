//! Object catalogs of cutouts: `<prefix>_X`, `_Y`, `_SHAPE_E1`, `_SHAPE_E2`, `_SHAPE_R`, each
//! `(n, L)` in the MMU convention (160-px frame, 0 = empty slot), converted with
//! `aion_model::codecs::catalog::mmu::catalog_from_mmu` (our documented convention: the upstream
//! preprocessing is not published) and mapped to the transformer's ids (+204, padding 0).

use aion_io::Column;
use aion_model::codecs::catalog::CatalogCodec;
use aion_model::codecs::catalog::mmu::{MmuCatalogColumns, catalog_from_mmu};
use aion_model::modality::Modality;

use super::ModalityTokens;

/// Field suffixes, in codec order.
pub const FIELDS: [&str; 5] = ["X", "Y", "SHAPE_E1", "SHAPE_E2", "SHAPE_R"];

/// Tokenizes each row on its own so that one bad row is rejected without affecting the others.
/// Rows without any object in the 96-px crop are absent (not used, not rejected).
pub fn encode(codec: &CatalogCodec, m: &Modality, cols: &[Column; 5]) -> ModalityTokens {
    let n = cols[0].present.len();
    let per_row = cols[0].row_len();
    let slots = m.num_tokens() / 5;
    let v: Vec<Vec<f32>> = cols
        .iter()
        .map(|c| c.to_f32().expect("checked: numeric"))
        .collect();
    let mut t = ModalityTokens::absent(m, n);
    let mut mask = vec![true; n * m.num_tokens()];
    for r in 0..n {
        if !cols.iter().all(|c| c.present[r]) {
            continue;
        }
        let s = r * per_row..(r + 1) * per_row;
        let row = MmuCatalogColumns {
            per_row,
            x: &v[0][s.clone()],
            y: &v[1][s.clone()],
            shape_e1: &v[2][s.clone()],
            shape_e2: &v[3][s.clone()],
            shape_r: &v[4][s],
        };
        let ids = catalog_from_mmu(&row, slots, codec.mask_value)
            .and_then(|c| codec.encode(&c))
            .and_then(|tok| codec.to_model_ids(&tok, slots * 5));
        match ids {
            Ok((ids, pad)) if pad.iter().all(|&p| p) => {
                let _ = ids;
            }
            Ok((ids, pad)) => {
                let k = m.num_tokens();
                t.tokens[r * k..(r + 1) * k].copy_from_slice(&ids);
                mask[r * k..(r + 1) * k].copy_from_slice(&pad);
                t.used[r] = true;
            }
            Err(e) => t.reject(r, "unusable catalog entries", e.to_string()),
        }
    }
    t.token_mask = Some(mask);
    t
}
