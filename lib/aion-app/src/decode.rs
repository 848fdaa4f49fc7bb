//! `aion-tokenize --decode`: token datasets (named by token key, as `aion-tokenize` writes them)
//! back into data through the same codecs, into `decoded/<token_key>`.
//!
//! * scalars: the value each token stands for (the upper edge of its bin, as the reference
//!   decodes), `(N,)`, or `(N, 55)` for Gaia XP;
//! * images: `(N, bands, 96, 96)` in the survey's units (`tok_image`: DES g,r,i,z; `tok_image_hsc`:
//!   HSC g,r,i,z,y; HSC decoding works here, it crashes in the reference);
//! * spectra: flux on the latent grid λ = 3500 + 0.8·i Å, `(N, 8704)`;
//! * segmentation maps: `(N, 96, 96)` in [0, 1];
//! * catalogs: `decoded/catalog/{X,Y,SHAPE_E1,SHAPE_E2,SHAPE_R}` `(N, slots)`, X/Y in the 96-px
//!   crop, NaN for empty slots.
//!
//! Rows whose tokens are −1 (absent) or invalid decode to NaN and are flagged in
//! `modalities_rejected`.

use std::ops::Range;
use std::path::PathBuf;

use aion_io::Catalog;
use aion_io::catalog::{ColumnKind, ColumnValues};
use aion_model::ModelDir;
use aion_model::codecs::AnyCodec;
use aion_model::codecs::catalog::FIELDS;
use aion_model::codecs::image::Band;
use aion_model::codecs::spectrum::SpectrumCodec;
use aion_model::modality::{MODALITIES, ModalityInfo};
use anyhow::{Result, bail};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

use crate::codec_set::{ModalityTokens, NO_TOKEN, load_codec};
use crate::output::Constant;
use crate::pipeline::{DatasetSpec, Dtype};

/// A codec used for decoding, with the bands an image codec decodes to (empty for the other
/// kinds). `aion-generate` decodes its target through the same type.
pub struct Decoder<B: Backend> {
    /// The codec.
    pub codec: AnyCodec<B>,
    /// The bands of an image codec's output.
    pub bands: Vec<Band>,
}

impl<B: Backend> Decoder<B> {
    /// `codec`, decoding images to `bands` (ignored for the other kinds).
    pub fn new(codec: AnyCodec<B>, bands: Vec<Band>) -> Self {
        let bands = match codec {
            AnyCodec::Image(_) => bands,
            _ => Vec::new(),
        };
        Self { codec, bands }
    }
}

/// The decoders of the token datasets found in a catalogue.
pub struct DecoderSet<B: Backend> {
    entries: Vec<(&'static ModalityInfo, Decoder<B>)>,
    files: Vec<PathBuf>,
    device: B::Device,
}

/// One chunk, decoded: per modality, row-major values (NaN where not decoded) and validity.
pub struct Decoded {
    /// Per modality, one buffer per output dataset.
    pub values: Vec<Vec<Vec<f32>>>,
    /// Per modality, per row: tokens usable and decoded.
    pub tokens: Vec<ModalityTokens>,
}

/// Units and label of a decoded catalog field: positions in pixels of the 96 × 96 crop,
/// the half-light radius in arcsec, ellipticities dimensionless.
pub fn catalog_field_units(field: &str) -> (&'static str, &'static str) {
    match field {
        "X" => ("pix", "object x position in the 96 × 96 cutout"),
        "Y" => ("pix", "object y position in the 96 × 96 cutout"),
        "SHAPE_R" => ("arcsec", "object half-light radius"),
        "SHAPE_E1" => ("", "object ellipticity e1"),
        _ => ("", "object ellipticity e2"),
    }
}

/// The latent wavelength grid of a spectrum codec as a constant dataset `name` (Å).
pub fn wavelength_grid<B: Backend>(name: &str, c: &SpectrumCodec<B>) -> Constant {
    let grid = c.latent_wavelength();
    Constant {
        name: name.to_string(),
        shape: vec![grid.len()],
        data: grid.iter().map(|&w| f64::from(w)).collect(),
        units: "Angstrom".into(),
        label: format!(
            "vacuum wavelength of each pixel of the codec's latent grid ({})",
            c.config().grid_description()
        ),
    }
}

/// The bands an image modality is decoded to by default: DES g,r,i,z for `tok_image`, HSC
/// g,r,i,z,y for `tok_image_hsc`.
pub fn default_bands(m: &ModalityInfo) -> Vec<Band> {
    let names: &[&str] = if m.token_key == "tok_image_hsc" {
        &["HSC-G", "HSC-R", "HSC-I", "HSC-Z", "HSC-Y"]
    } else {
        &["DES-G", "DES-R", "DES-I", "DES-Z"]
    };
    names
        .iter()
        .map(|n| n.parse().expect("known band"))
        .collect()
}

impl<B: Backend> DecoderSet<B> {
    /// Finds every dataset named by a token key and loads its codec from the model directory.
    pub fn load(model: &ModelDir, catalog: &Catalog, device: &B::Device) -> Result<Self> {
        let mut entries = Vec::new();
        let mut files = Vec::new();
        for m in MODALITIES.iter().filter(|m| catalog.has(&m.token_key)) {
            let info = catalog.info(&m.token_key)?.expect("present");
            let n: usize = info.row_shape.iter().product();
            if info.kind != ColumnKind::Int || n != m.num_tokens() {
                bail!(
                    "dataset '{}' has rows of shape {:?} ({:?}); {} tokens need {} integers per row",
                    m.token_key,
                    info.row_shape,
                    info.kind,
                    m.token_key,
                    m.num_tokens()
                );
            }
            files.extend(model.codec_files(m));
            let d = Decoder::new(load_codec(model, &m.into(), device)?, default_bands(m));
            entries.push((m, d));
        }
        if entries.is_empty() {
            bail!("no token dataset (named by a token key, e.g. tok_flux_g) in the catalogue");
        }
        Ok(Self {
            entries,
            files,
            device: device.clone(),
        })
    }

    /// Weight and config files (for checksums).
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Datasets read (to size the catalogue).
    pub fn datasets(&self) -> Vec<String> {
        self.entries
            .iter()
            .map(|(m, _)| m.token_key.to_string())
            .collect()
    }

    /// Modalities decoded, in order.
    pub fn modalities(&self) -> Vec<&'static ModalityInfo> {
        self.entries.iter().map(|(m, _)| *m).collect()
    }

    /// The output datasets.
    pub fn specs(&self) -> Vec<DatasetSpec> {
        let mut out = Vec::new();
        for (m, d) in &self.entries {
            let name = format!("decoded/{}", m.token_key);
            match &d.codec {
                AnyCodec::Scalar(c) => {
                    let shape: Vec<usize> = if c.channels() == 1 {
                        vec![]
                    } else {
                        vec![c.channels()]
                    };
                    out.push(DatasetSpec::new(name, Dtype::F32, &shape, None).units(
                        &m.units,
                        &format!("{} (upper edge of the token's bin)", m.label),
                    ));
                }
                AnyCodec::Image(_) => {
                    let bands = &d.bands;
                    let names: Vec<&str> = bands.iter().map(|b| b.name()).collect();
                    let survey = bands[0].survey();
                    out.push(
                        DatasetSpec::new(name, Dtype::F32, &[bands.len(), 96, 96], None)
                            .units(survey.units(), &m.label)
                            .attr("bands", names.join(","))
                            .attr("photometry", survey.photometry()),
                    );
                }
                AnyCodec::Spectrum(c) => {
                    let p = c.latent_wavelength().len();
                    out.push(
                        DatasetSpec::new(name.clone(), Dtype::F32, &[p], None)
                            .units(&m.units, &m.label)
                            .attr("wavelength", format!("{name}_wavelength")),
                    );
                }
                AnyCodec::Field(_) => out.push(
                    DatasetSpec::new(name, Dtype::F32, &[96, 96], None)
                        .units("", &format!("{} (object membership in [0, 1])", m.label)),
                ),
                AnyCodec::Catalog(_) => {
                    for f in FIELDS {
                        let (units, what) = catalog_field_units(f);
                        out.push(
                            DatasetSpec::new(
                                format!("{name}/{f}"),
                                Dtype::F32,
                                &[m.num_tokens() / 5],
                                None,
                            )
                            .units(units, what),
                        );
                    }
                }
            }
        }
        out
    }

    /// The wavelength grids of decoded spectra (`decoded/<key>_wavelength`, Å), written once.
    pub fn constants(&self) -> Vec<Constant> {
        self.entries
            .iter()
            .filter_map(|(m, d)| match &d.codec {
                AnyCodec::Spectrum(c) => Some(wavelength_grid(
                    &format!("decoded/{}_wavelength", m.token_key),
                    c,
                )),
                _ => None,
            })
            .collect()
    }

    /// Reads and decodes rows `rows`.
    pub fn decode(&self, catalog: &Catalog, rows: Range<usize>) -> Result<Decoded> {
        let n = rows.len();
        let mut values = Vec::new();
        let mut tokens = Vec::new();
        for (m, d) in &self.entries {
            let col = catalog.read(&m.token_key, rows.clone())?;
            let ColumnValues::I64(ids) = &col.values else {
                unreachable!("checked: integer")
            };
            let k = m.num_tokens();
            let mut t = ModalityTokens::absent(*m, n);
            let ok: Vec<usize> = (0..n)
                .filter(|&r| {
                    col.present[r] && ids[r * k..(r + 1) * k].iter().any(|&x| x != NO_TOKEN)
                })
                .collect();
            let (v, good) = self.decode_rows(m, d, ids, &ok, n)?;
            for &r in &ok {
                if good.contains(&r) {
                    t.used[r] = true;
                } else {
                    t.rejected[r] = true;
                }
            }
            values.push(v);
            tokens.push(t);
        }
        Ok(Decoded { values, tokens })
    }

    /// Decodes rows `ok` of `ids`; returns the output buffers and the rows decoded.
    fn decode_rows(
        &self,
        m: &ModalityInfo,
        d: &Decoder<B>,
        ids: &[i64],
        ok: &[usize],
        n: usize,
    ) -> Result<(Vec<Vec<f32>>, Vec<usize>)> {
        let k = m.num_tokens();
        let valid: Vec<usize> = ok
            .iter()
            .copied()
            .filter(|&r| {
                ids[r * k..(r + 1) * k]
                    .iter()
                    .all(|&x| x >= 0 && (x as usize) < m.vocab)
            })
            .collect();
        let batch = |rows: &[usize]| -> Tensor<B, 2, Int> {
            let data: Vec<i64> = rows
                .iter()
                .flat_map(|&r| ids[r * k..(r + 1) * k].iter().copied())
                .collect();
            Tensor::from_data(TensorData::new(data, [rows.len(), k]), &self.device)
        };
        let host =
            |t: Tensor<B, 4>| -> Vec<f32> { t.into_data().convert::<f32>().to_vec().expect("f32") };
        let scatter = |per_row: usize, vals: &[f32], rows: &[usize]| {
            let mut out = vec![f32::NAN; n * per_row];
            for (i, &r) in rows.iter().enumerate() {
                out[r * per_row..(r + 1) * per_row]
                    .copy_from_slice(&vals[i * per_row..(i + 1) * per_row]);
            }
            out
        };
        if valid.is_empty() {
            let widths: Vec<usize> = match &d.codec {
                AnyCodec::Scalar(c) => vec![c.channels()],
                AnyCodec::Image(_) => vec![d.bands.len() * 96 * 96],
                AnyCodec::Spectrum(c) => vec![c.latent_wavelength().len()],
                AnyCodec::Field(_) => vec![96 * 96],
                AnyCodec::Catalog(_) => vec![k / 5; 5],
            };
            return Ok((
                widths.into_iter().map(|w| vec![f32::NAN; n * w]).collect(),
                valid,
            ));
        }
        Ok(match &d.codec {
            AnyCodec::Scalar(c) => {
                let vals: Vec<f32> = valid
                    .iter()
                    .flat_map(|&r| c.decode(&ids[r * k..(r + 1) * k]))
                    .collect();
                (vec![scatter(c.channels(), &vals, &valid)], valid)
            }
            AnyCodec::Image(c) => {
                let vals = host(c.decode(batch(&valid), &d.bands)?);
                (vec![scatter(d.bands.len() * 96 * 96, &vals, &valid)], valid)
            }
            AnyCodec::Spectrum(c) => {
                let dec = c.decode(batch(&valid), None)?;
                let vals: Vec<f32> = dec.flux.concat();
                (
                    vec![scatter(c.latent_wavelength().len(), &vals, &valid)],
                    valid,
                )
            }
            AnyCodec::Field(c) => {
                let vals: Vec<f32> = c
                    .decode(batch(&valid))?
                    .into_data()
                    .convert::<f32>()
                    .to_vec()
                    .expect("f32");
                (vec![scatter(96 * 96, &vals, &valid)], valid)
            }
            AnyCodec::Catalog(c) => {
                let mut good = Vec::new();
                let mut fields: Vec<Vec<f32>> = vec![vec![f32::NAN; n * k / 5]; 5];
                for &r in &valid {
                    let Ok(codes) = c.from_model_ids(&ids[r * k..(r + 1) * k]) else {
                        continue;
                    };
                    let Ok(cat) = c.decode(&codes, 1) else {
                        continue;
                    };
                    let cols: [Vec<f32>; 5] = [
                        cat.x.iter().map(|&v| v as f32).collect(),
                        cat.y.iter().map(|&v| v as f32).collect(),
                        cat.shape_e1.clone(),
                        cat.shape_e2.clone(),
                        cat.shape_r.clone(),
                    ];
                    for (f, col) in cols.iter().enumerate() {
                        for (s, &v) in col.iter().enumerate() {
                            let empty = cat.x[s] < 0;
                            fields[f][r * k / 5 + s] = if empty { f32::NAN } else { v };
                        }
                    }
                    good.push(r);
                }
                (fields, good)
            }
        })
    }
}
