//! The codecs a run needs, loaded from a model directory, and batch tokenization of catalogue
//! rows through them.
//!
//! Unusable values (NaN/inf, malformed spectra or catalogs, unknown bands) never stop a run: the
//! row's tokens for that modality are written as −1, its `modalities_rejected` bit is set, and the
//! reason is recorded ([`Rejection`]) for the run's per-reason counts. Rows whose file lacks the
//! data (or whose value is null) are simply not `used` for that modality.

mod catalog;
mod image;
mod scalar;
mod spectrum;

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::PathBuf;
use std::time::Instant;

use aion_io::catalog::{ColumnInfo, ColumnKind};
use aion_io::{Catalog, Column};
use aion_model::ModelDir;
use aion_model::codecs::AnyCodec;
use aion_model::modality::{CodecKind, Modality, ModalityTable};
use anyhow::{Context, Result, bail};
use burn::tensor::backend::Backend;

use crate::run_config::{Binding, Source};
use crate::stages::{Stage, Stages};

/// Token value written where a modality is absent or rejected.
pub const NO_TOKEN: i64 = -1;

/// Tokens of one modality for a block of rows.
#[derive(Debug, Clone, PartialEq)]
pub struct ModalityTokens {
    /// The modality.
    pub modality: Modality,
    /// Row-major `(rows, num_tokens)` ids; [`NO_TOKEN`] where the row is not `used`.
    pub tokens: Vec<i64>,
    /// Per row: tokens are valid and may be fed to the model.
    pub used: Vec<bool>,
    /// Per row: data was present but unusable.
    pub rejected: Vec<bool>,
    /// Per row: used after repairing values the way the reference does (spectra: NaN/inf flux
    /// or ivar mapped by `nan_to_num`, negative ivar clamped to 0).
    pub repaired: Vec<bool>,
    /// Per token (row-major), for sequence modalities: `true` = padding, leave out.
    pub token_mask: Option<Vec<bool>>,
    /// Why each rejected row was rejected.
    pub rejections: Vec<Rejection>,
}

/// Why a row's modality was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Row in the block.
    pub row: usize,
    /// What is wrong, as a fixed phrase (`"unknown band name"`): runs count rejected rows by it.
    pub reason: &'static str,
    /// The row's particulars (`bands g,r,i,z; expected one of DES-G, …`).
    pub detail: String,
}

impl ModalityTokens {
    /// `n` rows with nothing used.
    pub fn absent(modality: impl Into<Modality>, n: usize) -> Self {
        let modality = modality.into();
        Self {
            tokens: vec![NO_TOKEN; n * modality.num_tokens()],
            modality,
            used: vec![false; n],
            rejected: vec![false; n],
            repaired: vec![false; n],
            token_mask: None,
            rejections: Vec::new(),
        }
    }

    /// Marks row `row` rejected for `reason` (`detail`: the row's particulars).
    pub fn reject(&mut self, row: usize, reason: &'static str, detail: String) {
        log::debug!("{} row {row}: {reason}: {detail}", self.modality.token_key);
        self.rejected[row] = true;
        self.rejections.push(Rejection {
            row,
            reason,
            detail,
        });
    }
}

/// The codec that tokenizes a binding's data; `None` for a binding to tokens already.
type Tokenizer<B> = Option<AnyCodec<B>>;

/// Loads the codec of modality `m` from the model directory; the error names the folder.
pub fn load_codec<B: Backend>(
    model: &ModelDir,
    m: &Modality,
    device: &B::Device,
) -> Result<AnyCodec<B>> {
    model.codec(m, device).with_context(|| {
        format!(
            "cannot load the {} codec from {}",
            m.token_key,
            model.codec_dir(m).display()
        )
    })
}

/// The loaded codecs of a run, one per bound modality.
pub struct CodecSet<B: Backend> {
    entries: Vec<(Binding, Vec<String>, Tokenizer<B>)>,
    files: Vec<PathBuf>,
    device: B::Device,
    /// Zero-pad images and maps smaller than the codec's crop (`--pad`).
    pad: bool,
}

/// A modality read through a scalar codec ([`CodecSet::scalar_entry`]).
pub struct ScalarEntry<'a> {
    /// Index among [`CodecSet::encode`]'s outputs.
    pub position: usize,
    /// The catalogue dataset.
    pub dataset: &'a str,
    /// Column range of the dataset (`None`: all of it).
    pub columns: Option<(usize, usize)>,
    /// The codec.
    pub codec: &'a aion_model::codecs::scalar::ScalarCodec,
}

impl ScalarEntry<'_> {
    /// `clean` (this modality's tokens from [`CodecSet::encode`]) with the values `values` of
    /// the chunk's rows redrawn within their errors `errors` ([`scalar::redraw`]).
    pub fn redraw(
        &self,
        clean: &ModalityTokens,
        values: &Column,
        errors: &Column,
        rng: impl FnMut(usize) -> aion_model::rng::Rng,
    ) -> ModalityTokens {
        scalar::redraw(self.codec, clean, values, errors, self.columns, rng)
    }
}

/// The datasets a binding reads, in the order its tokenizer expects them.
fn datasets_of(b: &Binding, catalog: &Catalog) -> Vec<String> {
    match &b.source {
        Source::Tokens { dataset } | Source::Scalar { dataset, .. } => vec![dataset.clone()],
        Source::Group { prefix } => match b.modality().codec {
            CodecKind::Spectrum => ["flux", "ivar", "lambda", "mask"]
                .map(|s| format!("{prefix}_{s}"))
                .to_vec(),
            CodecKind::Catalog => catalog::FIELDS.map(|s| format!("{prefix}_{s}")).to_vec(),
            CodecKind::Image => {
                let array = format!("{prefix}_array");
                let flux = if catalog.has(&array) {
                    array
                } else {
                    format!("{prefix}_flux")
                };
                vec![flux, format!("{prefix}_band")]
            }
            _ => vec![prefix.clone()],
        },
    }
}

impl<B: Backend> CodecSet<B> {
    /// Checks every binding against the catalogue's datasets (shape, type) and loads the codecs
    /// from the model directory. Default bindings whose data is absent are dropped; an
    /// explicit binding to absent data is an error. Images and maps smaller than the codec's
    /// 96×96 crop are refused with what to do, or zero-padded when `pad` (`--pad`).
    pub fn load(
        model: &ModelDir,
        bindings: &[Binding],
        catalog: &Catalog,
        pad: bool,
        device: &B::Device,
    ) -> Result<Self> {
        let mut entries = Vec::new();
        let mut files = Vec::new();
        let mut skipped = Vec::new();
        for b in bindings {
            let m = b.modality();
            let names = datasets_of(b, catalog);
            let optional = usize::from(
                m.codec == CodecKind::Spectrum && !matches!(b.source, Source::Tokens { .. }),
            );
            let required = &names[..names.len() - optional];
            let missing: Vec<&String> = required.iter().filter(|d| !catalog.has(d)).collect();
            if !missing.is_empty() {
                if b.explicit {
                    bail!(
                        "{}: dataset(s) {missing:?} are in none of the catalogue files ({}); the \
                         catalogue's columns: {}",
                        b.describe(),
                        files_list(catalog),
                        crate::run_config::column_list(catalog)
                    );
                }
                continue;
            }
            let mut infos = Vec::with_capacity(required.len());
            for d in required {
                let info = catalog
                    .info(d)?
                    .with_context(|| format!("{}: dataset '{d}' cannot be read", b.describe()))?;
                check_shape(b, d, &info, catalog, pad)?;
                infos.push(info);
            }
            check_group(b, required, &infos, catalog)?;
            if let [flux, .., mask] = &names[..]
                && optional == 1
                && let Some(mi) = catalog.info(mask)?
                && mi.row_shape != infos[0].row_shape
            {
                bail!(
                    "{}: '{mask}' has rows of shape {:?} but '{flux}' has {:?} (first file {})",
                    b.describe(),
                    mi.row_shape,
                    infos[0].row_shape,
                    first_file(catalog, &mi, mask)
                );
            }
            let needs_codec = !matches!(b.source, Source::Tokens { .. });
            if needs_codec && !b.explicit && !model.has_codec(m) {
                log::debug!(
                    "{}: no codec folder {}; left out",
                    b.describe(),
                    model.codec_dir(m).display()
                );
                skipped.push(format!(
                    "{} (its data {:?} is in the catalogue, but there is no {})",
                    b.token_key(),
                    required,
                    model.codec_config(m).display()
                ));
                continue;
            }
            let tokenizer = if needs_codec {
                files.extend(model.codec_files(m));
                Some(load_codec(model, m, device)?)
            } else {
                None
            };
            entries.push((b.clone(), names, tokenizer));
        }
        if entries.is_empty() {
            let why = if skipped.is_empty() {
                String::new()
            } else {
                format!("; without a codec: {}", skipped.join(", "))
            };
            bail!(
                "no modality found in the catalogue (check the dataset names or use --map){why}; \
                 the catalogue's columns: {}; the default names: {}",
                crate::run_config::column_list(catalog),
                default_names(model.modalities())
            );
        }
        if !skipped.is_empty() {
            log::warn!(
                "left out for lack of a codec in the model, so the results are computed without \
                 them: {}; map a modality explicitly (--map) to make its missing codec an error",
                skipped.join("; ")
            );
        }
        files.sort();
        files.dedup();
        Ok(Self {
            entries,
            files,
            device: device.clone(),
            pad,
        })
    }

    /// The bindings in use, in modality-table order.
    pub fn bindings(&self) -> impl Iterator<Item = &Binding> {
        self.entries.iter().map(|(b, _, _)| b)
    }

    /// Where the modality `token_key` is among [`Self::encode`]'s outputs, with its dataset,
    /// column range and codec, when it is read from one dataset through a scalar codec.
    pub fn scalar_entry(&self, token_key: &str) -> Option<ScalarEntry<'_>> {
        self.entries
            .iter()
            .enumerate()
            .find_map(|(position, (b, _, tok))| match (&b.source, tok) {
                (Source::Scalar { dataset, columns }, Some(AnyCodec::Scalar(codec)))
                    if b.token_key() == token_key =>
                {
                    Some(ScalarEntry {
                        position,
                        dataset,
                        columns: *columns,
                        codec,
                    })
                }
                _ => None,
            })
    }

    /// Weight and config files the codecs were loaded from (for checksums).
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Bytes read per catalogue row (to size chunks).
    pub fn row_bytes(&self, catalog: &Catalog) -> usize {
        let mut total = 0;
        for (_, names, _) in &self.entries {
            for d in names {
                if let Ok(Some(i)) = catalog.info(d) {
                    total += i.row_shape.iter().product::<usize>() * 4;
                }
            }
        }
        total.max(1)
    }

    /// Reads rows `rows` and tokenizes every bound modality, counting the reads and each
    /// codec's time in `stages`.
    pub fn encode(
        &self,
        catalog: &Catalog,
        rows: Range<usize>,
        stages: &Stages,
    ) -> Result<Vec<ModalityTokens>> {
        let mut cache: BTreeMap<String, Column> = BTreeMap::new();
        let mut out = Vec::with_capacity(self.entries.len());
        for (b, names, tok) in &self.entries {
            // The binding's columns (shared ones are read once), then its codec.
            let mut cols: Vec<Option<Column>> = Vec::with_capacity(names.len());
            let reading = Instant::now();
            for name in names {
                if !catalog.has(name) {
                    cols.push(None);
                    continue;
                }
                if !cache.contains_key(name) {
                    cache.insert(name.clone(), catalog.read(name, rows.clone())?);
                }
                cols.push(cache.get(name).cloned());
            }
            stages.add(Stage::Read, reading);
            let m = b.modality();
            let need = |c: &mut Option<Column>| -> Column {
                c.take().expect("checked at load: required datasets exist")
            };
            let coding = Instant::now();
            let (stage, tokens) = match (tok, &mut cols[..]) {
                (None, [c]) => (Stage::Tokens, scalar::pass_tokens(m, &need(c))),
                (Some(AnyCodec::Scalar(codec)), [c]) => {
                    let columns = match &b.source {
                        Source::Scalar { columns, .. } => *columns,
                        _ => None,
                    };
                    (Stage::ScalarCodec, scalar::encode(codec, &need(c), columns))
                }
                (Some(AnyCodec::Spectrum(codec)), [flux, ivar, lambda, mask]) => {
                    let cols = spectrum::SpectrumColumns {
                        flux: need(flux),
                        ivar: need(ivar),
                        lambda: need(lambda),
                        mask: mask.take(),
                    };
                    let t = spectrum::encode(codec, m, &cols, rows.start)?;
                    (Stage::SpectrumCodec, t)
                }
                (Some(AnyCodec::Image(codec)), [flux, band]) => {
                    let t = image::encode_images(
                        codec,
                        m,
                        &need(flux),
                        &need(band),
                        self.pad,
                        &self.device,
                    )?;
                    (Stage::ImageCodec, t)
                }
                (Some(AnyCodec::Field(codec)), [c]) => (
                    Stage::FieldCodec,
                    image::encode_fields(codec, m, &need(c), self.pad, &self.device)?,
                ),
                (Some(AnyCodec::Catalog(codec)), cols) => {
                    let cols: Vec<Column> = cols.iter_mut().map(need).collect();
                    let cols: [Column; 5] = cols.try_into().expect("five catalog fields");
                    (Stage::CatalogCodec, catalog::encode(codec, m, &cols))
                }
                _ => unreachable!("datasets_of gives each tokenizer its columns"),
            };
            stages.add(stage, coding);
            out.push(tokens);
        }
        Ok(out)
    }
}

/// The catalogue's data files, for messages (at most 3, then a count).
fn files_list(catalog: &Catalog) -> String {
    let files = catalog.files();
    let mut s: Vec<String> = files
        .iter()
        .take(3)
        .map(|p| p.display().to_string())
        .collect();
    if files.len() > 3 {
        s.push(format!("… {} files in all", files.len()));
    }
    s.join(", ")
}

/// The first file holding a column (for messages).
/// The first file that holds `column`'s values (for a survey preset, the joined file they come
/// from, e.g. the `.npy` cutouts rather than the FITS catalogue).
fn first_file(catalog: &Catalog, info: &ColumnInfo, column: &str) -> String {
    info.present_in
        .iter()
        .position(|&p| p)
        .and_then(|i| catalog.source_file(i, column))
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

/// `FLUX_G, image_array|image_flux + image_band, …`: what the defaults read.
fn default_names(modalities: &ModalityTable) -> String {
    modalities
        .iter()
        .filter(|m| m.token_key != "tok_z")
        .map(|m| match m.codec {
            CodecKind::Image => format!("{0}_array|{0}_flux + {0}_band", m.dataset),
            CodecKind::Spectrum => format!("{0}_flux/_ivar/_lambda[/_mask]", m.dataset),
            CodecKind::Catalog => format!("{0}_X/_Y/_SHAPE_E1/_SHAPE_E2/_SHAPE_R", m.dataset),
            _ => m.dataset.to_string(),
        })
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect::<Vec<_>>()
        .join(", ")
}

/// The datasets of one group binding must fit together: in every file all or none of them, one
/// spectrum length, one band name per image band, one length for the catalog's five fields.
fn check_group(
    b: &Binding,
    names: &[String],
    infos: &[ColumnInfo],
    catalog: &Catalog,
) -> Result<()> {
    let Some(first) = infos.first() else {
        return Ok(());
    };
    for (i, file) in catalog.files().iter().enumerate() {
        let has: Vec<&String> = names
            .iter()
            .zip(infos)
            .filter(|(_, c)| c.present_in[i])
            .map(|(n, _)| n)
            .collect();
        if !has.is_empty() && has.len() != names.len() {
            let lacks: Vec<&String> = names.iter().filter(|n| !has.contains(n)).collect();
            let rows = catalog.part_rows(i);
            bail!(
                "{}: {} has {has:?} but not {lacks:?} (catalogue rows {}..{}); every file must hold \
                 all of them or none",
                b.describe(),
                file.display(),
                rows.start,
                rows.end
            );
        }
    }
    let differ = |what: &str, a: &str, sa: &[usize], c: &str, sc: &[usize], info: &ColumnInfo| {
        anyhow::anyhow!(
            "{}: '{c}' has rows of shape {sc:?} but '{a}' has {sa:?} ({what}; first file {})",
            b.describe(),
            first_file(catalog, info, c)
        )
    };
    match (&b.source, b.modality().codec) {
        (Source::Tokens { .. }, _) => {}
        (_, CodecKind::Spectrum | CodecKind::Catalog) => {
            for (n, c) in names.iter().zip(infos).skip(1) {
                if c.row_shape != first.row_shape {
                    let what = "they must be the same length";
                    return Err(differ(
                        what,
                        &names[0],
                        &first.row_shape,
                        n,
                        &c.row_shape,
                        c,
                    ));
                }
            }
        }
        (_, CodecKind::Image) if infos.len() == 2 => {
            let bands = infos[1].row_shape.first().copied().unwrap_or(0);
            if first.row_shape.first() != Some(&bands) {
                let what = "one band name per image band";
                return Err(differ(
                    what,
                    &names[0],
                    &first.row_shape,
                    &names[1],
                    &infos[1].row_shape,
                    &infos[1],
                ));
            }
        }
        _ => {}
    }
    Ok(())
}

fn check_shape(
    b: &Binding,
    dataset: &str,
    info: &ColumnInfo,
    catalog: &Catalog,
    pad: bool,
) -> Result<()> {
    let m = b.modality();
    let row_len: usize = info.row_shape.iter().product();
    let numeric = info.kind != ColumnKind::Str;
    let (ok, need) = match (&b.source, m.codec) {
        (Source::Tokens { .. }, _) => (
            info.kind == ColumnKind::Int && row_len == m.num_tokens(),
            format!("{} integer token(s) per row", m.num_tokens()),
        ),
        (
            Source::Scalar {
                columns: Some((_, end)),
                ..
            },
            _,
        ) => (
            numeric && info.row_shape.len() == 1 && info.row_shape[0] >= *end,
            format!("at least {end} columns"),
        ),
        (Source::Scalar { columns: None, .. }, k) if k.is_scalar() => (
            numeric && row_len == m.num_tokens(),
            format!("{} value(s) per row", m.num_tokens()),
        ),
        (_, CodecKind::Spectrum) => (
            numeric && info.row_shape.len() == 1 && info.row_shape[0] >= 2,
            "a 1-D spectrum per row".into(),
        ),
        (_, CodecKind::Catalog) => (
            numeric && info.row_shape.len() == 1,
            "one value per catalog slot".into(),
        ),
        (_, CodecKind::Image) if dataset.ends_with("_band") => (
            info.kind == ColumnKind::Str && info.row_shape.len() == 1,
            "band names (strings) per row".into(),
        ),
        (_, CodecKind::Image) if numeric && info.row_shape.len() == 3 => {
            return check_size(b, dataset, &info.row_shape[1..], info, catalog, pad);
        }
        (_, CodecKind::Image) => (false, "(bands, H, W) pixels per row".into()),
        (_, CodecKind::ScalarField) if numeric && info.row_shape.len() == 2 => {
            return check_size(b, dataset, &info.row_shape, info, catalog, pad);
        }
        (_, CodecKind::ScalarField) => (false, "an (H, W) map per row".into()),
        _ => (true, String::new()),
    };
    if !ok {
        bail!(
            "{}: dataset '{dataset}' has rows of shape {:?} ({:?}) in {}; {} needs {need}",
            b.describe(),
            info.row_shape,
            info.kind,
            first_file(catalog, info, dataset),
            m.token_key
        );
    }
    Ok(())
}

/// The image size policy: the codec sees the central 96×96 crop. Smaller images are refused
/// with what to do, or zero-padded (centred) with `--pad`; a warning says so either way.
fn check_size(
    b: &Binding,
    dataset: &str,
    hw: &[usize],
    info: &ColumnInfo,
    catalog: &Catalog,
    pad: bool,
) -> Result<()> {
    let (h, w) = (hw[0], hw[1]);
    if h >= image::CROP && w >= image::CROP {
        return Ok(());
    }
    if h == 0 || w == 0 {
        bail!(
            "{}: dataset '{dataset}' has empty images ({h}×{w} px) in {}",
            b.describe(),
            first_file(catalog, info, dataset)
        );
    }
    if pad {
        log::warn!(
            "{}: images of {h}×{w} px zero-padded to {}×{} (--pad): the codec sees {:.0} % \
             zeros, so these tokens are not those of full-size cutouts",
            b.describe(),
            h.max(image::CROP),
            w.max(image::CROP),
            100.0 * (1.0 - (h.min(image::CROP) * w.min(image::CROP)) as f64 / 9216.0)
        );
        return Ok(());
    }
    bail!(
        "{}: dataset '{dataset}' has images of {h}×{w} px ({}), smaller than the {c}×{c} crop \
         the {} codec sees. Give cutouts of at least {c}×{c} px; or pass --pad to zero-pad these \
         (centred; the codec then sees mostly zeros, so the tokens are not those of full-size \
         cutouts); or leave the modality out with --map {}=none",
        b.describe(),
        first_file(catalog, info, dataset),
        b.token_key(),
        b.token_key(),
        c = image::CROP,
    )
}
