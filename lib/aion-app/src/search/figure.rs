//! The figure of a search (`<output>.cutouts.{png,svg}`, rank 0): the image cutouts of the
//! first queries and of their nearest neighbours, when the catalogue behind the embedding files
//! has images.
//!
//! An `aion-embed` output records the catalogue it was made from (root attribute `catalog`:
//! its files, whose concatenated rows are the embedding rows) and the image binding (the
//! `bindings` of its `config`: e.g. `tok_image <- image`, read from `image_array` or
//! `image_flux` and `image_band`). A neighbour's global row is located in its embedding file,
//! then in that file's catalogue.

use std::path::{Path, PathBuf};

use aion_io::Catalog;
use aion_io::catalog::ColumnValues;
use anyhow::{Context, Result, bail};

use super::kernel::Metric;
use super::queries::{QuerySet, Status, Table};
use super::write::Tables;
use crate::plot::charts::{Cell, ImageGrid, cutout_cell, sig3};

/// Queries and neighbours shown at most.
const MAX_QUERIES: usize = 6;
const MAX_NEIGHBOURS: usize = 6;

/// The figure's path without extension: `<output>.cutouts`.
pub fn stem(output: &Path) -> PathBuf {
    let mut p = output.as_os_str().to_owned();
    p.push(".cutouts");
    PathBuf::from(p)
}

/// The images behind one embedding file: its catalogue and the image datasets.
struct Images {
    catalog: Catalog,
    pixels: String,
    bands: String,
}

impl Images {
    /// Reads what `embedding_file` records; `Ok(None)` when it was made without images.
    fn of(embedding_file: &Path) -> Result<Option<Self>> {
        let f = hdf5::File::open(embedding_file)
            .with_context(|| format!("cannot open {}", embedding_file.display()))?;
        let attr = |name: &str| -> Option<serde_json::Value> {
            let a = f.attr(name).ok()?;
            let s: hdf5::types::VarLenUnicode = a.read_scalar().ok()?;
            serde_json::from_str(s.as_str()).ok()
        };
        let (Some(config), Some(catalog)) = (attr("config"), attr("catalog")) else {
            return Ok(None);
        };
        let prefix = config["bindings"].as_array().and_then(|b| {
            b.iter().find_map(|b| {
                let image = matches!(b["token_key"].as_str(), Some("tok_image" | "tok_image_hsc"));
                (image && b["source"]["kind"] == "group")
                    .then(|| b["source"]["prefix"].as_str().map(str::to_string))
                    .flatten()
            })
        });
        let Some(prefix) = prefix else {
            return Ok(None);
        };
        let files: Vec<String> = catalog["files"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        if files.is_empty() || files.iter().any(|p| !Path::new(p).exists()) {
            bail!(
                "the catalogue of {} ({}) is not readable from here",
                embedding_file.display(),
                files.join(", ")
            );
        }
        // A catalogue read through a survey preset is reopened through the same preset (the
        // embedding run records its content), so its computed image columns exist again.
        let preset: Option<aion_io::Preset> = config
            .get("survey_preset")
            .map(|p| serde_json::from_value(p.clone()))
            .transpose()
            .with_context(|| {
                format!(
                    "unreadable survey preset in {}'s config",
                    embedding_file.display()
                )
            })?;
        let mut cat = Catalog::open_with(&files, None, preset.as_ref())?;
        let pixels = [format!("{prefix}_array"), format!("{prefix}_flux")]
            .into_iter()
            .find(|d| cat.has(d))
            .with_context(|| {
                format!("no {prefix}_array or {prefix}_flux in {}", files.join(", "))
            })?;
        let bands = format!("{prefix}_band");
        cat.size_by(&[pixels.clone(), bands.clone()])?;
        Ok(Some(Self {
            catalog: cat,
            pixels,
            bands,
        }))
    }

    /// The cutout of catalogue row `row` with `caption`.
    fn cell(&self, row: usize, caption: String) -> Result<Option<Cell>> {
        let col = self.catalog.read(&self.pixels, row..row + 1)?;
        if !col.present[0] || col.row_shape.len() != 3 {
            return Ok(None);
        }
        let (h, w) = (col.row_shape[1], col.row_shape[2]);
        let pixels = col.to_f32().context("image pixels are not numeric")?;
        let names = match self.catalog.read(&self.bands, row..row + 1) {
            Ok(c) => match c.values {
                ColumnValues::Str(v) => v,
                _ => Vec::new(),
            },
            Err(_) => Vec::new(),
        };
        Ok(Some(cutout_cell(&pixels, &names, h, w, caption)))
    }
}

/// Draws the figure; `Ok(None)` when the embeddings were made without images.
pub fn write(
    output: &Path,
    table: &Table,
    queries: &QuerySet,
    status: &[Status],
    t: &Tables,
    metric: Metric,
) -> Result<Option<[PathBuf; 2]>> {
    let files: Vec<PathBuf> = table
        .catalog
        .paths()
        .iter()
        .map(|p| p.to_path_buf())
        .collect();
    let mut images = Vec::new();
    for f in &files {
        match Images::of(f)? {
            Some(i) => images.push(i),
            None => return Ok(None),
        }
    }
    // A global embedding row → its file's images and the row in that file's catalogue.
    let cell = |row: i64, caption: String| -> Result<Option<Cell>> {
        let Ok(row) = usize::try_from(row) else {
            return Ok(None);
        };
        let Some((path, local)) = table.catalog.locate(row) else {
            return Ok(None);
        };
        let i = files
            .iter()
            .position(|f| f == path)
            .expect("a file of the table");
        images[i].cell(local, caption)
    };
    // Similarities in [−1, 1] to 3 decimals; dot products and distances to 3 digits.
    let score = |s: f32| match metric {
        Metric::Cosine => format!("{s:.3}"),
        _ => sig3(f64::from(s)),
    };
    let k = t.k;
    let shown: Vec<usize> = (0..queries.len())
        .filter(|&j| status[j] == Status::Ok)
        .take(MAX_QUERIES)
        .collect();
    let cols = k.min(MAX_NEIGHBOURS);
    let mut cells = Vec::new();
    let mut row_titles = Vec::new();
    for &j in &shown {
        let id = queries.object_ids[j];
        row_titles.push(format!("query {}", j + 1));
        let mut row = vec![cell(queries.rows[j], format!("id {id}"))?];
        for i in 0..(t.count[j] as usize).min(cols) {
            row.push(cell(
                t.row[j * k + i],
                format!(
                    "id {} · {}",
                    t.object_id[j * k + i],
                    score(t.score[j * k + i])
                ),
            )?);
        }
        cells.push(row);
    }
    let mut col_titles = vec!["query".to_string()];
    col_titles.extend((1..=cols).map(|i| format!("neighbour {i}")));
    let what = match metric {
        Metric::L2 => "Euclidean distance",
        Metric::Dot => "dot product",
        Metric::Cosine => "cosine similarity",
    };
    let grid = ImageGrid {
        title: format!(
            "aion-search: nearest neighbours in embedding space ({what} under each image)"
        ),
        row_titles,
        col_titles,
        cells,
        note: "g, r, i (or z) as blue, green, red; arcsinh stretch (Lupton et al. 2004) per cutout"
            .into(),
    };
    Ok(Some(crate::plot::save(&grid, &stem(output))?))
}
