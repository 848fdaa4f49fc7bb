//! Spectra: `<prefix>_flux`, `<prefix>_ivar`, `<prefix>_lambda`, `<prefix>_mask` (optional).

use aion_io::Column;
use aion_io::catalog::ColumnValues;
use aion_model::codecs::spectrum::preprocess::clean_row;
use aion_model::codecs::spectrum::{SpectrumCodec, SpectrumRow};
use aion_model::modality::Modality;
use anyhow::Result;
use burn::tensor::backend::Backend;

use super::ModalityTokens;

/// The four columns of a block of spectra.
pub struct SpectrumColumns {
    /// Flux `(n, L)`.
    pub flux: Column,
    /// Inverse variance `(n, L)`.
    pub ivar: Column,
    /// Wavelength `(n, L)`.
    pub lambda: Column,
    /// Bad-pixel mask `(n, L)`, if the catalogue has one.
    pub mask: Option<Column>,
}

/// Tokenizes the rows that pass the codec's per-row checks (length, padding, monotonic λ, not
/// all masked); the others are rejected, with the reason logged at debug level.
pub fn encode<B: Backend>(
    codec: &SpectrumCodec<B>,
    m: &Modality,
    cols: &SpectrumColumns,
    first_row: usize,
) -> Result<ModalityTokens> {
    let n = cols.flux.present.len();
    let l = cols.flux.row_len();
    let f32s = |c: &Column| c.to_f32().expect("checked: numeric");
    let (flux, ivar, lambda) = (f32s(&cols.flux), f32s(&cols.ivar), f32s(&cols.lambda));
    // A row without a mask value (its file lacks the dataset, or a null) has no pixel masked.
    let mut mask: Vec<bool> = match cols.mask.as_ref().map(|c| &c.values) {
        Some(ColumnValues::Bool(v)) => v.clone(),
        Some(_) => cols
            .mask
            .as_ref()
            .and_then(Column::to_f32)
            .unwrap_or_default()
            .iter()
            .map(|&x| x != 0.0)
            .collect(),
        None => vec![false; n * l],
    };
    if let Some(c) = &cols.mask {
        for (r, _) in c.present.iter().enumerate().filter(|(_, p)| !**p) {
            mask[r * l..(r + 1) * l].fill(false);
        }
    }
    let mut t = ModalityTokens::absent(m, n);
    let mut good = Vec::new();
    let mut rows = Vec::new();
    for r in 0..n {
        if !(cols.flux.present[r] && cols.ivar.present[r] && cols.lambda.present[r]) {
            continue;
        }
        let s = r * l..(r + 1) * l;
        let row = SpectrumRow {
            flux: &flux[s.clone()],
            ivar: &ivar[s.clone()],
            mask: &mask[s.clone()],
            wavelength: &lambda[s],
        };
        match clean_row(first_row + r, &row) {
            Ok(clean) => {
                t.repaired[r] = clean.flux.iter().chain(clean.ivar).any(|v| !v.is_finite())
                    || clean.ivar.iter().any(|&v| v < 0.0);
                good.push(r);
                rows.push(row);
            }
            Err(e) => t.reject(r, e.reason, e.detail),
        }
    }
    if rows.is_empty() {
        return Ok(t);
    }
    let tokens: Vec<i64> = codec
        .encode(&rows)?
        .into_data()
        .convert::<i64>()
        .to_vec()
        .expect("int tokens");
    let k = m.num_tokens();
    for (i, &r) in good.iter().enumerate() {
        t.tokens[r * k..(r + 1) * k].copy_from_slice(&tokens[i * k..(i + 1) * k]);
        t.used[r] = true;
    }
    Ok(t)
}
