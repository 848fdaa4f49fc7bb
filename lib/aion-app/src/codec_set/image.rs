//! Images (`<prefix>_array` or `<prefix>_flux` `(n, bands, H, W)` + `<prefix>_band` `(n, bands)`)
//! and segmentation maps (`(n, H, W)`).
//!
//! Images smaller than the crop are refused when the run is planned, or zero-padded with `--pad`.
//! A row is rejected (flagged, left out) when a pixel of its central 96×96 crop — the part the
//! codec sees — is NaN or infinite, or when a band name is unknown or repeated. Rows are batched
//! by their band list (the codec takes one band list per batch).

use std::collections::BTreeMap;

use aion_io::Column;
use aion_io::catalog::ColumnValues;
use aion_model::codecs::image::{Band, ImageCodec};
use aion_model::codecs::scalar_field::ScalarFieldCodec;
use aion_model::modality::Modality;
use anyhow::Result;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

use super::ModalityTokens;

/// Side of the central crop the image codecs see.
pub(super) const CROP: usize = 96;

/// `h × w` planes zero-padded (centred: the extra row or column of an odd difference goes at the
/// bottom or right) to at least [`CROP`] × [`CROP`]; unchanged when already as large.
fn pad_planes(px: Vec<f32>, h: usize, w: usize) -> (Vec<f32>, usize, usize) {
    let (ph, pw) = (h.max(CROP), w.max(CROP));
    if (ph, pw) == (h, w) {
        return (px, h, w);
    }
    let (y0, x0) = ((ph - h) / 2, (pw - w) / 2);
    let planes = px.len() / (h * w);
    let mut out = vec![0f32; planes * ph * pw];
    for (i, plane) in px.chunks(h * w).enumerate() {
        for (y, row) in plane.chunks(w).enumerate() {
            let at = i * ph * pw + (y0 + y) * pw + x0;
            out[at..at + w].copy_from_slice(row);
        }
    }
    (out, ph, pw)
}

/// The first non-finite pixel of the central crop of the `h × w` planes: (plane, y, x, value).
fn crop_nonfinite(planes: &[f32], h: usize, w: usize) -> Option<(usize, usize, usize, f32)> {
    let (y0, x0) = ((h - CROP) / 2, (w - CROP) / 2);
    planes.chunks(h * w).enumerate().find_map(|(i, p)| {
        (y0..y0 + CROP).find_map(|y| {
            let row = &p[y * w + x0..y * w + x0 + CROP];
            row.iter()
                .position(|v| !v.is_finite())
                .map(|x| (i, y, x0 + x, row[x]))
        })
    })
}

/// Whether every pixel of the central crop of each `h × w` plane is finite.
#[cfg(test)]
fn crop_is_finite(planes: &[f32], h: usize, w: usize) -> bool {
    crop_nonfinite(planes, h, w).is_none()
}

/// The central-crop rejection: reason and detail.
fn crop_problem((plane, y, x, v): (usize, usize, usize, f32)) -> (&'static str, String) {
    (
        "NaN or infinite pixel in the central 96x96 crop",
        format!("{v} at band {plane}, pixel (y {y}, x {x})"),
    )
}

/// The bands of a row, or why they cannot be used (reason, detail).
fn parse_bands(names: &[String]) -> Result<Vec<Band>, (&'static str, String)> {
    let list = || names.join(",");
    let mut bands = Vec::with_capacity(names.len());
    for s in names {
        if s.trim().is_empty() {
            return Err(("empty band name", format!("bands [{}]", list())));
        }
        match s.parse::<Band>() {
            Ok(b) => bands.push(b),
            Err(_) => {
                let valid: Vec<&str> = Band::ALL.iter().map(|b| b.name()).collect();
                return Err((
                    "unknown band name",
                    format!(
                        "bands [{}]: '{s}' is not one of {}",
                        list(),
                        valid.join(", ")
                    ),
                ));
            }
        }
    }
    let mut seen = bands.clone();
    seen.sort_by_key(|b| b.slot());
    seen.dedup();
    if bands.is_empty() || seen.len() != bands.len() {
        return Err(("repeated band name", format!("bands [{}]", list())));
    }
    Ok(bands)
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
    m: &Modality,
    flux: &Column,
    bands: &Column,
    pad: bool,
    device: &B::Device,
) -> Result<ModalityTokens> {
    let [nb, h, w] = [flux.row_shape[0], flux.row_shape[1], flux.row_shape[2]];
    let px = flux.to_f32().expect("checked: numeric");
    let (px, h, w) = if pad {
        pad_planes(px, h, w)
    } else {
        (px, h, w)
    };
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
        let checked = parse_bands(&names[r * nb..(r + 1) * nb])
            .and_then(|b| crop_nonfinite(row, h, w).map_or(Ok(b), |p| Err(crop_problem(p))));
        match checked {
            Ok(b) => {
                let key = b.iter().map(|b| b.slot()).collect();
                groups
                    .entry(key)
                    .or_insert_with(|| (b, Vec::new()))
                    .1
                    .push(r);
            }
            Err((reason, detail)) => t.reject(r, reason, detail),
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
    m: &Modality,
    field: &Column,
    pad: bool,
    device: &B::Device,
) -> Result<ModalityTokens> {
    let [h, w] = [field.row_shape[0], field.row_shape[1]];
    let px = field.to_f32().expect("checked: numeric");
    let (px, h, w) = if pad {
        pad_planes(px, h, w)
    } else {
        (px, h, w)
    };
    let n = field.present.len();
    let mut t = ModalityTokens::absent(m, n);
    let mut rows = Vec::new();
    for r in 0..n {
        if !field.present[r] {
            continue;
        }
        match crop_nonfinite(&px[r * h * w..(r + 1) * h * w], h, w) {
            None => rows.push(r),
            Some(p) => {
                let (reason, detail) = crop_problem(p);
                t.reject(r, reason, detail);
            }
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
    fn padding_centres_the_planes_and_keeps_every_pixel() {
        let (h, w) = (3, 2);
        let px: Vec<f32> = (1..=12).map(|v| v as f32).collect(); // two planes
        let (out, ph, pw) = super::pad_planes(px.clone(), h, w);
        assert_eq!((ph, pw), (96, 96));
        assert_eq!(out.len(), 2 * 96 * 96);
        let (y0, x0) = (46, 47);
        assert_eq!(out[y0 * 96 + x0], 1.0);
        assert_eq!(out[(y0 + 2) * 96 + x0 + 1], 6.0);
        assert_eq!(out[96 * 96 + y0 * 96 + x0], 7.0);
        assert_eq!(out.iter().sum::<f32>(), px.iter().sum::<f32>());
        assert_eq!(super::pad_planes(vec![0.0; 96 * 97], 96, 97).1, 96);
    }

    #[test]
    fn bands_parse_case_insensitively_and_reject_duplicates() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert!(super::parse_bands(&s(&["des-g", "DES-R"])).is_ok());
        let e = |v: &[&str]| super::parse_bands(&s(v)).unwrap_err();
        assert_eq!(e(&["des-g", "des-g"]).0, "repeated band name");
        assert_eq!(e(&["des-g", ""]).0, "empty band name");
        let (reason, detail) = e(&["g", "r", "i", "z"]);
        assert_eq!(reason, "unknown band name");
        assert!(
            detail.contains("[g,r,i,z]") && detail.contains("DES-G"),
            "{detail}"
        );
    }
}
