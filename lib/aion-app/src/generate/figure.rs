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
use plotters::chart::SeriesLabelPosition;

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
                let series = (0..shown)
                    .map(|s| {
                        let pts = wave
                            .iter()
                            .zip(&flux[s * l..(s + 1) * l])
                            .map(|(&w, &f)| (w, f64::from(f)))
                            .collect();
                        Series::line(format!("sample {}", s + 1), colours[s], pts)
                    })
                    .collect();
                panels.push(Panel {
                    title: format!("object {}: {}", ids[r], m.label),
                    xtitle: "wavelength λ [Angstrom]".into(),
                    ytitle: format!("flux [{}]", m.units),
                    series,
                    y_range: None,
                    x_range: None,
                    legend: SeriesLabelPosition::UpperRight,
                });
            }
            crate::plot::save(
                &CurvesFigure {
                    title,
                    panels,
                    columns: 1,
                    panel_size: (1100, 400),
                },
                &stem,
            )
        }
        AnyCodec::Image(_) => {
            let bands = &target.codec.bands;
            let names: Vec<String> = bands.iter().map(|b| b.name().to_string()).collect();
            let flux_ds = ds("flux")?;
            let per = bands.len() * 96 * 96;
            let mut cells = Vec::new();
            for &r in &rows {
                let flux: Vec<f32> = read_rows(&flux_ds, r..r + 1)?;
                cells.push(
                    (0..shown)
                        .map(|s| {
                            Some(cutout_cell(
                                &flux[s * per..(s + 1) * per],
                                &names,
                                96,
                                96,
                                String::new(),
                            ))
                        })
                        .collect(),
                );
            }
            crate::plot::save(
                &ImageGrid {
                    title,
                    row_titles: rows.iter().map(|&r| format!("object {}", ids[r])).collect(),
                    col_titles: (1..=shown).map(|s| format!("sample {s}")).collect(),
                    cells,
                    note: format!(
                        "bands {} as blue, green, red of an arcsinh stretch (Lupton et al. 2004)",
                        {
                            let [b, g, r] = crate::plot::charts::rgb_bands(&names);
                            format!("{}, {}, {}", names[b], names[g], names[r])
                        }
                    ),
                },
                &stem,
            )
        }
        AnyCodec::Field(_) => {
            let map_ds = ds("map")?;
            let mut cells = Vec::new();
            for &r in &rows {
                let map: Vec<f32> = read_rows(&map_ds, r..r + 1)?;
                cells.push(
                    (0..shown)
                        .map(|s| {
                            Some(Cell {
                                width: 96,
                                height: 96,
                                rgb: viridis_rgb(&map[s * 9216..(s + 1) * 9216], 0.0, 1.0),
                                caption: String::new(),
                            })
                        })
                        .collect(),
                );
            }
            crate::plot::save(
                &ImageGrid {
                    title,
                    row_titles: rows.iter().map(|&r| format!("object {}", ids[r])).collect(),
                    col_titles: (1..=shown).map(|s| format!("sample {s}")).collect(),
                    cells,
                    note: "object membership from 0 (dark violet) to 1 (yellow), viridis".into(),
                },
                &stem,
            )
        }
        AnyCodec::Scalar(c) if c.channels() > 1 => {
            let value_ds = ds("value")?;
            let ch = c.channels();
            let mut panels = Vec::new();
            for &r in &rows {
                let v: Vec<f32> = read_rows(&value_ds, r..r + 1)?;
                let series = (0..shown)
                    .map(|s| {
                        let pts = (0..ch)
                            .map(|i| (i as f64, f64::from(v[s * ch + i])))
                            .collect();
                        Series::line(format!("sample {}", s + 1), colours[s], pts)
                    })
                    .collect();
                panels.push(Panel {
                    title: format!("object {}", ids[r]),
                    xtitle: "coefficient index".into(),
                    ytitle: m.axis_title(),
                    series,
                    y_range: None,
                    x_range: None,
                    legend: SeriesLabelPosition::UpperRight,
                });
            }
            crate::plot::save(
                &CurvesFigure {
                    title,
                    panels,
                    columns: 2,
                    panel_size: (620, 400),
                },
                &stem,
            )
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
