//! Images (`<prefix>_array` or `<prefix>_flux` `(n, bands, H, W)` + `<prefix>_band` `(n, bands)`)
//! and segmentation maps (`(n, H, W)`).
//!
//! A row is rejected (flagged, left out) when a pixel of its central 96×96 crop — the part the
//! codec sees — is NaN or infinite, or when a band name is unknown or repeated. Rows are batched
//! by their band list (the codec takes one band list per batch).

use std::collections::BTreeMap;

use aion_io::Column;
use aion_io::catalog::ColumnValues;
use aion_model::codecs::image::{Band, ImageCodec};
use aion_model::codecs::scalar_field::ScalarFieldCodec;
use aion_model::modality::ModalityInfo;
use anyhow::Result;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

use super::ModalityTokens;

const CROP: usize = 96;

/// Whether every pixel of the central crop of each `h × w` plane is finite.
fn crop_is_finite(planes: &[f32], h: usize, w: usize) -> bool {
    let (y0, x0) = ((h - CROP) / 2, (w - CROP) / 2);
    planes.chunks(h * w).all(|p| {
        (y0..y0 + CROP).all(|y| {
            p[y * w + x0..y * w + x0 + CROP]
                .iter()
                .all(|v| v.is_finite())
        })
    })
}

fn parse_bands(names: &[String]) -> Option<Vec<Band>> {
    let bands: Vec<Band> = names
        .iter()
        .map(|s| s.parse().ok())
        .collect::<Option<_>>()?;
    let mut seen = bands.clone();
    seen.sort_by_key(|b| b.slot());
    seen.dedup();
    (!bands.is_empty() && seen.len() == bands.len()).then_some(bands)
}

fn scatter<B: Backend>(t: &mut ModalityTokens, rows: &[usize], tokens: Tensor<B, 2, Int>) {
    let k = t.modality.num_tokens();
    let ids: Vec<i64> = tokens
        .into_data()
        .convert::<i64>()
        .to_vec()
        .expect("int tokens");
    for (i, &r) in rows.iter().enumerate() {
        t.tokens[r * k..(r + 1) * k].copy_from_slice(&ids[i * k..(i + 1) * k]);
        t.used[r] = true;
    }
}

/// Tokenizes the images of a block of rows.
pub fn encode_images<B: Backend>(
    codec: &ImageCodec<B>,
    m: &'static ModalityInfo,
    flux: &Column,
    bands: &Column,
    device: &B::Device,
) -> Result<ModalityTokens> {
    let [nb, h, w] = [flux.row_shape[0], flux.row_shape[1], flux.row_shape[2]];
    let px = flux.to_f32().expect("checked: numeric");
    let ColumnValues::Str(names) = &bands.values else {
        unreachable!("checked: band names are strings")
    };
    let n = flux.present.len();
    let mut t = ModalityTokens::absent(m, n);
    let mut groups: BTreeMap<Vec<usize>, (Vec<Band>, Vec<usize>)> = BTreeMap::new();
    for r in 0..n {
        if !flux.present[r] || !bands.present[r] {
            continue;
        }
        let row = &px[r * nb * h * w..(r + 1) * nb * h * w];
        match parse_bands(&names[r * nb..(r + 1) * nb]) {
            Some(b) if crop_is_finite(row, h, w) => {
                let key = b.iter().map(|b| b.slot()).collect();
                groups
                    .entry(key)
                    .or_insert_with(|| (b, Vec::new()))
                    .1
                    .push(r);
            }
            _ => t.rejected[r] = true,
        }
    }
    for (bands, rows) in groups.into_values() {
        let data: Vec<f32> = rows
            .iter()
            .flat_map(|&r| px[r * nb * h * w..(r + 1) * nb * h * w].iter().copied())
            .collect();
        let x = Tensor::<B, 4>::from_data(TensorData::new(data, [rows.len(), nb, h, w]), device);
        scatter(&mut t, &rows, codec.encode(x, &bands)?);
    }
    Ok(t)
}

/// Tokenizes the segmentation maps of a block of rows.
pub fn encode_fields<B: Backend>(
    codec: &ScalarFieldCodec<B>,
    m: &'static ModalityInfo,
    field: &Column,
    device: &B::Device,
) -> Result<ModalityTokens> {
    let [h, w] = [field.row_shape[0], field.row_shape[1]];
    let px = field.to_f32().expect("checked: numeric");
    let n = field.present.len();
    let mut t = ModalityTokens::absent(m, n);
    let mut rows = Vec::new();
    for r in 0..n {
        if !field.present[r] {
            continue;
        }
        if crop_is_finite(&px[r * h * w..(r + 1) * h * w], h, w) {
            rows.push(r);
        } else {
            t.rejected[r] = true;
        }
    }
    if !rows.is_empty() {
        let data: Vec<f32> = rows
            .iter()
            .flat_map(|&r| px[r * h * w..(r + 1) * h * w].iter().copied())
            .collect();
        let x = Tensor::<B, 3>::from_data(TensorData::new(data, [rows.len(), h, w]), device);
        scatter(&mut t, &rows, codec.encode(x)?);
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    #[test]
    fn crop_check_ignores_the_border() {
        let (h, w) = (100, 98);
        let mut p = vec![0.0f32; h * w];
        p[0] = f32::NAN; // outside the crop (rows 2..98, cols 1..97)
        assert!(super::crop_is_finite(&p, h, w));
        p[50 * w + 50] = f32::INFINITY;
        assert!(!super::crop_is_finite(&p, h, w));
    }

    #[test]
    fn bands_parse_case_insensitively_and_reject_duplicates() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert!(super::parse_bands(&s(&["des-g", "DES-R"])).is_some());
        assert!(super::parse_bands(&s(&["des-g", "des-g"])).is_none());
        assert!(super::parse_bands(&s(&["des-g", ""])).is_none());
    }
}
