//! Scalar modalities (quantile / grid codecs) and pre-tokenized inputs.

use aion_io::Column;
use aion_io::catalog::ColumnValues;
use aion_model::codecs::scalar::ScalarCodec;
use aion_model::modality::Modality;
use aion_model::rng::Rng;

use super::{ModalityTokens, NO_TOKEN};

/// Tokenizes `col` (optionally a column range); rows with a non-finite value are rejected.
pub fn encode(
    codec: &ScalarCodec,
    col: &Column,
    columns: Option<(usize, usize)>,
) -> ModalityTokens {
    let values = col.to_f32().expect("checked: scalar datasets are numeric");
    let width = col.row_len();
    let (a, b) = columns.unwrap_or((0, width));
    let c = b - a;
    let mut t = ModalityTokens::absent(&codec.modality, col.present.len());
    for r in 0..col.present.len() {
        if !col.present[r] {
            continue;
        }
        let row = &values[r * width + a..r * width + b];
        if let Some(j) = row.iter().position(|v| !v.is_finite()) {
            let at = if c > 1 {
                format!(" (value {})", a + j)
            } else {
                String::new()
            };
            t.reject(r, "NaN or infinite value", format!("{}{at}", row[j]));
            continue;
        }
        for (j, &v) in row.iter().enumerate() {
            t.tokens[r * c + j] = codec.encode_value(j, v);
        }
        t.used[r] = true;
    }
    t
}

/// `clean` (what [`encode`] gave for `col`) with the values of every used row redrawn as
/// `x + N(0, 1)·err` and tokenized again: `err` holds the rows' errors (the same shape as `col`;
/// a non-finite or non-positive error leaves its value as it is, as the fine-tuning's noise
/// augmentation does), `rng(r)` the generator of chunk row `r` (one normal draw per value).
pub fn redraw(
    codec: &ScalarCodec,
    clean: &ModalityTokens,
    col: &Column,
    err: &Column,
    columns: Option<(usize, usize)>,
    mut rng: impl FnMut(usize) -> Rng,
) -> ModalityTokens {
    let values = col.to_f32().expect("checked: scalar datasets are numeric");
    let errors = err.to_f32().expect("checked: error datasets are numeric");
    let width = col.row_len();
    let (a, b) = columns.unwrap_or((0, width));
    let c = b - a;
    let mut t = clean.clone();
    for r in (0..clean.used.len()).filter(|&r| clean.used[r]) {
        let mut g = rng(r);
        for j in 0..c {
            let (x, e) = (values[r * width + a + j], errors[r * width + a + j]);
            let x = if e.is_finite() && e > 0.0 {
                (f64::from(x) + g.normal() * f64::from(e)) as f32
            } else {
                x
            };
            t.tokens[r * c + j] = codec.encode_value(j, x);
        }
    }
    t
}

/// Passes token ids through; a row of −1 is absent, ids outside the vocabulary are rejected.
/// For the catalog, id 0 (padding) marks a token to leave out.
pub fn pass_tokens(m: &Modality, col: &Column) -> ModalityTokens {
    let k = m.num_tokens();
    let ColumnValues::I64(ids) = &col.values else {
        unreachable!("checked: token datasets are integer")
    };
    let mut t = ModalityTokens::absent(m, col.present.len());
    let seq = matches!(m.layout, aion_model::modality::TokenLayout::Sequence { .. });
    if seq {
        t.token_mask = Some(vec![true; col.present.len() * k]);
    }
    for r in 0..col.present.len() {
        let row = &ids[r * k..(r + 1) * k];
        if !col.present[r] || row.iter().all(|&x| x == NO_TOKEN) {
            continue;
        }
        if let Some(&x) = row.iter().find(|&&x| x < 0 || x as usize >= m.vocab) {
            let detail = format!("token {x}, the vocabulary is 0..{}", m.vocab);
            t.reject(r, "token outside the vocabulary", detail);
            continue;
        }
        if seq && row.iter().all(|&x| x == 0) {
            continue;
        }
        t.tokens[r * k..(r + 1) * k].copy_from_slice(row);
        if let Some(mask) = &mut t.token_mask {
            for (j, &x) in row.iter().enumerate() {
                mask[r * k + j] = x == 0;
            }
        }
        t.used[r] = true;
    }
    t
}
