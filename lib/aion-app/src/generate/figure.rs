//! The figure of a generation run (`<output>.<key>.{png,svg}`, rank 0, drawn from the output
//! file once the run is finished): the first generated objects, up to [`MAX_SAMPLES`] samples
//! each. Spectra as curves over the input's wavelengths (the `--wavelength-from` grid of the
//! row, else the codec's latent grid); images as RGB composites and segmentation maps in
//! viridis, one panel per object and sample; scalars as a histogram of every sample (Gaia XP:
//! the 55 coefficients of each object as curves).

use std::path::{Path, PathBuf};

use aion_model::codecs::AnyCodec;
use anyhow::Result;
use burn::tensor::backend::Backend;

use super::Target;
use crate::output::read_rows;
use crate::plot::charts::{
    Cell, CurvesFigure, HistogramFigure, ImageGrid, Panel, Series, cutout_cell, viridis_rgb,
};
use crate::plot::{C_BLUE, C_GREEN, C_ORANGE};

/// Objects shown at most.
pub const MAX_OBJECTS: usize = 4;
/// Samples per object shown at most.
pub const MAX_SAMPLES: usize = 3;

/// The figure's path without extension: `<output>.<key>`.
pub fn stem(output: &Path, key: &str) -> PathBuf {
    let mut p = output.as_os_str().to_owned();
    p.push(format!(".{key}"));
    PathBuf::from(p)
}

/// Draws the figure of `target` from the finished output `file`.
pub fn write<B: Backend>(
    output: &Path,
    file: &hdf5::File,
    target: &Target<B>,
    samples: usize,
) -> Result<[PathBuf; 2]> {
    let m = &target.modality;
    let key = &*m.token_key;
    let ds = |name: &str| file.dataset(&format!("gen/{key}/{name}"));
    let generated: Vec<u8> = ds("generated")?.read_raw()?;
    let ids: Vec<i64> = file.dataset("object_id")?.read_raw()?;
    let rows: Vec<usize> = (0..generated.len())
        .filter(|&r| generated[r] == 1)
        .take(MAX_OBJECTS)
        .collect();
    let shown = samples.min(MAX_SAMPLES);
    let n_gen = generated.iter().filter(|&&g| g == 1).count();
    let title = format!(
        "{} generated from the other modalities: the first {} of {n_gen} objects, {shown} of {samples} sample(s) each",
        m.label,
        rows.len()
    );
    let colours = [C_BLUE, C_ORANGE, C_GREEN];
    let stem = stem(output, key);
    // The first samples of one object as curves, `points(s)` giving sample `s`'s.
    let sample_curves = |points: &dyn Fn(usize) -> Vec<(f64, f64)>| -> Vec<Series> {
        (0..shown)
            .map(|s| Series::line(format!("sample {}", s + 1), colours[s], points(s)))
            .collect()
    };
    // Panels of curves, `columns` across, each of `panel_size` pixels.
    let save_curves = |panels: Vec<Panel>, columns: usize, panel_size: (u32, u32)| {
        let figure = CurvesFigure {
            title: title.clone(),
            panels,
            columns,
            panel_size,
        };
        crate::plot::save(&figure, &stem)
    };
    // A grid of images: a row per object shown, its first samples across, each drawn by `cell`
    // from the object's row of `data` and the sample's index.
    let image_grid = |data: &hdf5::Dataset,
                      note: String,
                      cell: &dyn Fn(&[f32], usize) -> Cell|
     -> Result<[PathBuf; 2]> {
        let mut cells = Vec::new();
        for &r in &rows {
            let row: Vec<f32> = read_rows(data, r..r + 1)?;
            cells.push((0..shown).map(|s| Some(cell(&row, s))).collect());
        }
        let grid = ImageGrid {
            title: title.clone(),
            row_titles: rows.iter().map(|&r| format!("object {}", ids[r])).collect(),
            col_titles: (1..=shown).map(|s| format!("sample {s}")).collect(),
            cells,
            note,
        };
        crate::plot::save(&grid, &stem)
    };
    match &target.codec.codec {
        AnyCodec::Spectrum(_) => {
            let resampled = target.grid.is_some();
            let (flux_name, wave_name) = if resampled {
                ("flux_resampled", "wavelength_resampled")
            } else {
                ("flux", "wavelength")
            };
            let flux_ds = ds(flux_name)?;
            let wave_ds = ds(wave_name)?;
            let latent: Option<Vec<f64>> = (!resampled).then(|| wave_ds.read_raw()).transpose()?;
            let mut panels = Vec::new();
            for &r in &rows {
                let flux: Vec<f32> = read_rows(&flux_ds, r..r + 1)?;
                let wave: Vec<f64> = match &latent {
                    Some(w) => w.clone(),
                    None => read_rows::<f32>(&wave_ds, r..r + 1)?
                        .into_iter()
                        .map(f64::from)
                        .collect(),
                };
                let l = wave.len();
                let series = sample_curves(&|s| {
                    let flux = &flux[s * l..(s + 1) * l];
                    wave.iter()
                        .zip(flux)
                        .map(|(&w, &f)| (w, f64::from(f)))
                        .collect()
                });
                panels.push(Panel::new(
                    format!("object {}: {}", ids[r], m.label),
                    "wavelength λ [Angstrom]",
                    format!("flux [{}]", m.units),
                    series,
                ));
            }
            save_curves(panels, 1, (1100, 400))
        }
        AnyCodec::Image(_) => {
            let bands = &target.codec.bands;
            let names: Vec<String> = bands.iter().map(|b| b.name().to_string()).collect();
            let per = bands.len() * 96 * 96;
            let [b, g, r] = crate::plot::charts::rgb_bands(&names);
            let note = format!(
                "bands {}, {}, {} as blue, green, red of an arcsinh stretch (Lupton et al. 2004)",
                names[b], names[g], names[r]
            );
            image_grid(&ds("flux")?, note, &|flux, s| {
                cutout_cell(&flux[s * per..(s + 1) * per], &names, 96, 96, String::new())
            })
        }
        AnyCodec::Field(_) => {
            let note = "object membership from 0 (dark violet) to 1 (yellow), viridis".into();
            image_grid(&ds("map")?, note, &|map, s| Cell {
                width: 96,
                height: 96,
                rgb: viridis_rgb(&map[s * 9216..(s + 1) * 9216], 0.0, 1.0),
                caption: String::new(),
            })
        }
        AnyCodec::Scalar(c) if c.channels() > 1 => {
            let value_ds = ds("value")?;
            let ch = c.channels();
            let mut panels = Vec::new();
            for &r in &rows {
                let v: Vec<f32> = read_rows(&value_ds, r..r + 1)?;
                let series = sample_curves(&|s| {
                    let v = &v[s * ch..(s + 1) * ch];
                    v.iter()
                        .enumerate()
                        .map(|(i, &x)| (i as f64, f64::from(x)))
                        .collect()
                });
                let title = format!("object {}", ids[r]);
                panels.push(Panel::new(
                    title,
                    "coefficient index",
                    m.axis_title(),
                    series,
                ));
            }
            save_curves(panels, 2, (620, 400))
        }
        AnyCodec::Catalog(_) => unreachable!("refused when loading the target"),
        AnyCodec::Scalar(_) => {
            let values: Vec<f64> = ds("value")?
                .read_raw::<f32>()?
                .into_iter()
                .map(f64::from)
                .collect();
            crate::plot::save(
                &HistogramFigure {
                    values: &values,
                    xtitle: &format!("generated {}", m.axis_title()),
                    title: &format!(
                        "aion-generate: {} ({n_gen} objects × {samples} sample(s))",
                        m.label
                    ),
                },
                &stem,
            )
        }
    }
}
