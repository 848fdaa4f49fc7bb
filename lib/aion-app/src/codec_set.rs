//! The codecs a run needs, loaded from a model directory, and batch tokenization of catalogue
//! rows through them.
//!
//! Unusable values (NaN/inf, or data a codec rejects) never stop a run: the row's tokens for that
//! modality are written as −1 and the row's `modalities_rejected` bit is set. Rows whose file
//! lacks the dataset are simply not `used` for that modality.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use aion_io::catalog::{ColumnInfo, ColumnKind};
use aion_io::{Catalog, Column};
use aion_model::codecs::scalar::ScalarCodec;
use aion_model::modality::ModalityInfo;
use anyhow::{Context, Result, bail};

use crate::run_config::{Binding, Source};

/// Token value written where a modality is absent or rejected.
pub const NO_TOKEN: i64 = -1;

enum Tokenizer {
    Scalar(ScalarCodec),
    Tokens,
}

/// Tokens of one modality for a block of rows.
#[derive(Debug, Clone, PartialEq)]
pub struct ModalityTokens {
    /// The modality.
    pub modality: &'static ModalityInfo,
    /// Row-major `(rows, num_tokens)` ids; [`NO_TOKEN`] where not `used`.
    pub tokens: Vec<i64>,
    /// Per row: tokens are valid and may be fed to the model.
    pub used: Vec<bool>,
    /// Per row: data was present but unusable.
    pub rejected: Vec<bool>,
}

/// The loaded codecs of a run, one per bound modality.
pub struct CodecSet {
    entries: Vec<(Binding, Tokenizer)>,
    files: Vec<PathBuf>,
}

impl CodecSet {
    /// Checks every binding against the catalogue's datasets (shape, type) and loads the codecs
    /// from `model/codecs/<name>/`. Bindings whose data is absent are dropped unless explicit.
    pub fn load(model: &Path, bindings: &[Binding], catalog: &Catalog) -> Result<Self> {
        let mut entries = Vec::new();
        let mut files = Vec::new();
        for b in bindings {
            let m = b.modality();
            let dataset = match &b.source {
                Source::Tokens { dataset } | Source::Scalar { dataset, .. } => dataset.clone(),
                Source::Group { .. } => {
                    if b.explicit {
                        bail!(
                            "{}: tokenizing {:?} columns is not supported yet",
                            b.describe(),
                            m.codec
                        );
                    }
                    continue;
                }
            };
            let Some(info) = catalog.info(&dataset)? else {
                if b.explicit {
                    bail!(
                        "{}: dataset '{dataset}' is in none of the catalogue files",
                        b.describe()
                    );
                }
                continue;
            };
            check_shape(b, &dataset, &info)?;
            let tokenizer = match &b.source {
                Source::Tokens { .. } => Tokenizer::Tokens,
                _ if m.codec.is_scalar() => {
                    let dir = model.join("codecs").join(m.codec_dir);
                    let codec = ScalarCodec::load(m, &dir).with_context(|| {
                        format!(
                            "cannot load the {} codec from {}",
                            m.token_key,
                            dir.display()
                        )
                    })?;
                    files.push(dir.join("config.json"));
                    files.push(dir.join("model.safetensors"));
                    Tokenizer::Scalar(codec)
                }
                _ => bail!(
                    "{}: tokenizing {:?} data is not supported yet",
                    b.describe(),
                    m.codec
                ),
            };
            entries.push((b.clone(), tokenizer));
        }
        if entries.is_empty() {
            bail!("no modality found in the catalogue (check the dataset names or use --map)");
        }
        Ok(Self { entries, files })
    }

    /// The bindings in use, in modality-table order.
    pub fn bindings(&self) -> impl Iterator<Item = &Binding> {
        self.entries.iter().map(|(b, _)| b)
    }

    /// Weight and config files the codecs were loaded from (for checksums).
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// Every dataset the codecs read (to size the catalogue files).
    pub fn datasets(&self) -> Vec<String> {
        self.entries
            .iter()
            .map(|(b, _)| match &b.source {
                Source::Tokens { dataset } | Source::Scalar { dataset, .. } => dataset.clone(),
                Source::Group { prefix } => prefix.clone(),
            })
            .collect()
    }

    /// Reads rows `rows` and tokenizes every bound modality.
    pub fn encode(&self, catalog: &Catalog, rows: Range<usize>) -> Result<Vec<ModalityTokens>> {
        let mut cache: BTreeMap<String, Column> = BTreeMap::new();
        let mut out = Vec::with_capacity(self.entries.len());
        for (b, tok) in &self.entries {
            let dataset = match &b.source {
                Source::Tokens { dataset } | Source::Scalar { dataset, .. } => dataset,
                Source::Group { prefix } => prefix,
            };
            if !cache.contains_key(dataset) {
                cache.insert(dataset.clone(), catalog.read(dataset, rows.clone())?);
            }
            let col = &cache[dataset];
            out.push(match (tok, &b.source) {
                (Tokenizer::Scalar(codec), Source::Scalar { columns, .. }) => {
                    encode_scalar(codec, col, *columns)
                }
                (Tokenizer::Tokens, _) => pass_tokens(b.modality(), col),
                _ => unreachable!("tokenizer and source are paired at load time"),
            });
        }
        Ok(out)
    }
}

fn check_shape(b: &Binding, dataset: &str, info: &ColumnInfo) -> Result<()> {
    let m = b.modality();
    let row_len: usize = info.row_shape.iter().product();
    let ok = match &b.source {
        Source::Tokens { .. } => info.kind == ColumnKind::Int && row_len == m.num_tokens(),
        Source::Scalar {
            columns: Some((_, end)),
            ..
        } => info.kind != ColumnKind::Str && info.row_shape.len() == 1 && info.row_shape[0] >= *end,
        Source::Scalar { columns: None, .. } => {
            info.kind != ColumnKind::Str && row_len == m.num_tokens()
        }
        Source::Group { .. } => true,
    };
    if !ok {
        bail!(
            "{}: dataset '{dataset}' has rows of shape {:?} ({:?}); {} needs {} value(s) per row{}",
            b.describe(),
            info.row_shape,
            info.kind,
            m.token_key,
            m.num_tokens(),
            if matches!(b.source, Source::Tokens { .. }) {
                " of integer tokens"
            } else {
                ""
            }
        );
    }
    Ok(())
}

fn encode_scalar(
    codec: &ScalarCodec,
    col: &Column,
    columns: Option<(usize, usize)>,
) -> ModalityTokens {
    let values = col.to_f32().expect("checked: scalar datasets are numeric");
    let width = col.row_len();
    let (a, b) = columns.unwrap_or((0, width));
    let c = b - a;
    let n = col.present.len();
    let mut tokens = vec![NO_TOKEN; n * c];
    let mut used = vec![false; n];
    let mut rejected = vec![false; n];
    for r in 0..n {
        if !col.present[r] {
            continue;
        }
        let row = &values[r * width + a..r * width + b];
        if row.iter().any(|v| !v.is_finite()) {
            rejected[r] = true;
            continue;
        }
        for (j, &v) in row.iter().enumerate() {
            tokens[r * c + j] = codec.encode_value(j, v);
        }
        used[r] = true;
    }
    ModalityTokens {
        modality: codec.modality,
        tokens,
        used,
        rejected,
    }
}

fn pass_tokens(m: &'static ModalityInfo, col: &Column) -> ModalityTokens {
    let n = col.present.len();
    let k = m.num_tokens();
    let ids = match &col.values {
        aion_io::catalog::ColumnValues::I64(v) => v.clone(),
        _ => unreachable!("checked: token datasets are integer"),
    };
    let mut tokens = vec![NO_TOKEN; n * k];
    let mut used = vec![false; n];
    let mut rejected = vec![false; n];
    for r in 0..n {
        let row = &ids[r * k..(r + 1) * k];
        if !col.present[r] || row.iter().all(|&t| t == NO_TOKEN) {
            continue;
        }
        if row.iter().any(|&t| t < 0 || t as usize >= m.vocab) {
            rejected[r] = true;
            continue;
        }
        tokens[r * k..(r + 1) * k].copy_from_slice(row);
        used[r] = true;
    }
    ModalityTokens {
        modality: m,
        tokens,
        used,
        rejected,
    }
}
