//! From MMU Legacy Survey catalogue columns to catalog codec input — **our convention**.
//!
//! The Multimodal Universe files store, per cutout, the `N = 20` objects of the 160-px cutout
//! (`catalog_X`, `catalog_Y` pixel indices in the 160-px frame, `catalog_SHAPE_*`), padded with
//! zeros. The catalog codec expects positions in the 96-px crop the image codec works on
//! (identity codes 0–95) and 9999 for empty slots. How AION's training data went from one to the
//! other is not published (spec §2.4, "[unknown]"); this module does the obvious thing and says
//! so:
//!
//! 1. an entry whose five fields are all 0 is MMU padding and is dropped;
//! 2. positions are rounded to the nearest pixel index (identity for MMU's integer indices) and
//!    shifted by the crop offset 32 (`(160 − 96) / 2`, the image codec's centre crop);
//! 3. objects whose shifted position is outside `0..96` (or not finite) are dropped;
//! 4. the kept objects fill the first slots in file order; the rest are empty (9999). Objects
//!    beyond `slots` are dropped.

use crate::error::{Error, Result};

use super::Catalog;

/// Side of the MMU Legacy Survey cutouts (pixels).
pub const MMU_CUTOUT: i64 = 160;
/// Side of the crop the image codec (and the catalog positions) use.
pub const CROP: i64 = 96;
/// Offset of the crop in the MMU cutout: `(160 − 96) / 2` (floor, as the image codec crops).
pub const CROP_OFFSET: i64 = (MMU_CUTOUT - CROP) / 2;
/// Objects that fit the transformer's 50-token catalog sequence (`max_length` 50 / 5 fields).
pub const MODEL_MAX_OBJECTS: usize = 10;

/// MMU catalogue columns of `batch` cutouts, row-major `(batch, per_row)`.
#[derive(Debug, Clone, Copy)]
pub struct MmuCatalogColumns<'a> {
    /// Objects per cutout in the file (20 for MMU Legacy Survey).
    pub per_row: usize,
    /// `catalog_X` (pixel column in the 160-px cutout).
    pub x: &'a [f32],
    /// `catalog_Y` (pixel row in the 160-px cutout).
    pub y: &'a [f32],
    /// `catalog_SHAPE_E1`.
    pub shape_e1: &'a [f32],
    /// `catalog_SHAPE_E2`.
    pub shape_e2: &'a [f32],
    /// `catalog_SHAPE_R`.
    pub shape_r: &'a [f32],
}

/// Converts MMU columns into codec input with `slots` slots per row (see the module docs;
/// [`MODEL_MAX_OBJECTS`] fits the transformer's catalog length). `empty` is the codec's
/// `mask_value` (9999).
pub fn catalog_from_mmu(cols: &MmuCatalogColumns<'_>, slots: usize, empty: i64) -> Result<Catalog> {
    let n = cols.x.len();
    let lens = [
        n,
        cols.y.len(),
        cols.shape_e1.len(),
        cols.shape_e2.len(),
        cols.shape_r.len(),
    ];
    if cols.per_row == 0 || lens.iter().any(|&l| l != n) || !n.is_multiple_of(cols.per_row) {
        return Err(Error::Input(format!(
            "MMU catalogue columns have {lens:?} values; expected equal multiples of {}",
            cols.per_row
        )));
    }
    let batch = n / cols.per_row;
    let mut cat = Catalog::empty(batch, slots, empty);
    for r in 0..batch {
        let mut used = 0;
        for i in r * cols.per_row..(r + 1) * cols.per_row {
            let fields = [
                cols.x[i],
                cols.y[i],
                cols.shape_e1[i],
                cols.shape_e2[i],
                cols.shape_r[i],
            ];
            if used == slots || fields.iter().all(|&v| v == 0.0) {
                continue;
            }
            let (Some(x), Some(y)) = (crop_index(cols.x[i]), crop_index(cols.y[i])) else {
                continue;
            };
            let o = r * slots + used;
            cat.x[o] = x;
            cat.y[o] = y;
            cat.shape_e1[o] = cols.shape_e1[i];
            cat.shape_e2[o] = cols.shape_e2[i];
            cat.shape_r[o] = cols.shape_r[i];
            used += 1;
        }
    }
    Ok(cat)
}

/// Pixel index in the 96-px crop of a 160-px-frame position, if inside.
fn crop_index(v: f32) -> Option<i64> {
    if !v.is_finite() {
        return None;
    }
    let i = v.round() as i64 - CROP_OFFSET;
    (0..CROP).contains(&i).then_some(i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shifts_filters_compacts_and_pads() {
        // Two cutouts of 4 entries: padding (all 0), out of crop (x = 10), edges 32 and 127.
        let x = [50.0, 0.0, 10.0, 127.0, 32.0, 128.0, 40.4, 0.0];
        let y = [60.0, 0.0, 50.0, 32.0, 127.0, 50.0, 40.6, 0.0];
        let e1 = [0.1, 0.0, 0.2, 0.3, 0.4, 0.5, 0.6, 0.0];
        let e2 = [0.0; 8];
        let r = [1.0, 0.0, 2.0, 3.0, 4.0, 5.0, 6.0, 0.0];
        let cols = MmuCatalogColumns {
            per_row: 4,
            x: &x,
            y: &y,
            shape_e1: &e1,
            shape_e2: &e2,
            shape_r: &r,
        };
        let c = catalog_from_mmu(&cols, 3, 9999).unwrap();
        assert_eq!((c.batch, c.len), (2, 3));
        assert_eq!(c.x, vec![18, 95, 9999, 0, 8, 9999]);
        assert_eq!(c.y, vec![28, 0, 9999, 95, 9, 9999]);
        assert_eq!(c.shape_r, vec![1.0, 3.0, 9999.0, 4.0, 6.0, 9999.0]);
        // slots limit keeps the first objects in file order
        let c = catalog_from_mmu(&cols, 1, 9999).unwrap();
        assert_eq!(c.x, vec![18, 0]);
        let bad = MmuCatalogColumns { per_row: 3, ..cols };
        assert!(catalog_from_mmu(&bad, 3, 9999).is_err());
    }
}
