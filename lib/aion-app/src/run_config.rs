//! The run configuration (TOML) and the dataset → modality mapping.
//!
//! Precedence, highest first: `--map` on the command line, `[map]` in the run config, the survey
//! preset's `[map]` (`--survey`, [`crate::survey`]), a dataset named exactly by the token key (pre-tokenized input, e.g. the output of `aion-tokenize`), and
//! the Multimodal Universe default dataset of the modality (`aion_model::modality`).
//!
//! **Labels are never inputs by default.** A modality that is a label rather than an observation
//! ([`LABELS`]: the redshift `tok_z`) is bound only when the run names it: `--map` / `[map]`
//! (then it is an input), a `--target` of `aion-predict` (its true value, never an input), a
//! fine-tuning config's `[data]`. A catalogue's `Z` column is otherwise left out, so embeddings do
//! not carry the label a probe is later trained on.

use std::collections::BTreeMap;
use std::path::Path;

use aion_model::ModelDir;
use aion_model::modality::{CodecKind, Modality, ModalityInfo, ModalityTable, by_token_key};
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

/// A run configuration file. Unknown keys are errors, so a typo fails loudly.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Rows per batch per rank.
    pub batch_size: Option<usize>,
    /// Rows per chunk (unit of work, writes and resume).
    pub chunk_rows: Option<usize>,
    /// Catalogue format (`hdf5`, `parquet`, `hats`, `fits`); default: told from the files.
    pub format: Option<aion_io::Format>,
    /// `token_key = "DATASET"` (or `"none"`).
    #[serde(default)]
    pub map: BTreeMap<String, String>,
    /// Survey preset: a built-in name or a preset file (relative to this config file).
    pub survey: Option<String>,
    /// Zero-pad images smaller than the codec's crop (as `--pad`).
    pub pad: Option<bool>,
}

impl RunConfig {
    /// Reads a TOML run config.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read run config {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("invalid run config {}", path.display()))
    }
}

/// What every tool resolves first: the model directory, run config, mapping, sized catalogue,
/// batch and chunk sizes.
pub struct Common {
    /// The model directory (opened once: its modality table built, `config.json` read).
    pub model: ModelDir,
    /// The catalogue, sized by the datasets the bindings may read.
    pub catalog: aion_io::Catalog,
    /// Candidate bindings (the codec set drops those whose data is absent).
    pub bindings: Vec<Binding>,
    /// Rows per model batch.
    pub batch: usize,
    /// Rows per chunk, if set (else [`Common::chunk_rows_for`] sizes it from the data).
    pub chunk_rows: Option<usize>,
    /// The run config file's content (or defaults).
    pub config: RunConfig,
    /// Labels the catalogue holds that were left out because the run did not name them
    /// (`tok_z <- Z`), for the inputs report.
    pub labels_left_out: Vec<String>,
    /// The survey preset's name, if one is used.
    pub survey: Option<String>,
    /// Whether images smaller than the codec's crop are zero-padded (`--pad`).
    pub pad: bool,
}

impl Common {
    /// Reads the run config, merges `--map` entries, opens and sizes the catalogue. `named`
    /// are the token keys the tool itself asks for (`aion-predict`'s targets): labels among them
    /// are bound to their default datasets too.
    pub fn resolve(io: &crate::args::IoArgs, named: &[&str]) -> Result<Self> {
        let config = io
            .config
            .as_deref()
            .map(RunConfig::load)
            .transpose()?
            .unwrap_or_default();
        let survey = match (&io.survey, &config.survey) {
            (Some(s), _) => Some(s.clone()),
            (None, Some(s)) => {
                let dir = io.config.as_deref().and_then(Path::parent);
                // A preset file named in a config is relative to the config; a name is a name.
                Some(match dir {
                    Some(d) if s.ends_with(".toml") => crate::config_path::resolve_pattern(d, s),
                    _ => s.clone(),
                })
            }
            (None, None) => None,
        };
        let preset = survey.as_deref().map(crate::survey::load).transpose()?;
        // Precedence (later wins): the preset's [map], the run config's [map], --map.
        let mut explicit: Vec<(String, String)> = preset
            .iter()
            .flat_map(|p| p.map.iter())
            .chain(config.map.iter())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for m in &io.maps {
            explicit.push(parse_map(m)?);
        }
        let batch = io
            .batch_size
            .or(config.batch_size)
            .unwrap_or(crate::args::DEFAULT_BATCH_SIZE);
        let chunk_rows = io.chunk_rows.or(config.chunk_rows);
        anyhow::ensure!(
            batch > 0 && chunk_rows != Some(0),
            "--batch-size and --chunk-rows must be positive"
        );
        anyhow::ensure!(
            io.model.is_dir(),
            "model directory {} does not exist",
            io.model.display()
        );
        // Extra (new-survey) modalities of the model must be known before the mapping.
        let model = ModelDir::open(&io.model)?;
        let modalities = model.modalities();
        let mut catalog =
            aion_io::Catalog::open_with(&io.catalog, io.format.or(config.format), preset.as_ref())?;
        if let Some(p) = &preset {
            log::debug!("survey preset '{}': {}", p.name, p.about);
        }
        let bindings = resolve(modalities, &explicit, |d| catalog.has(d), named)
            .map_err(|e| with_columns(e, &catalog))?;
        let labels_left_out = labels_left_out(&bindings, |d| catalog.has(d));
        catalog.size_by(&candidate_datasets(&bindings))?;
        Ok(Self {
            model,
            catalog,
            bindings,
            batch,
            chunk_rows,
            pad: io.pad || config.pad.unwrap_or(false),
            config,
            labels_left_out,
            survey: preset.map(|p| p.name),
        })
    }
}

/// The `inputs` root attribute: `{token_key: source}` of each input, e.g.
/// `{"tok_flux_g": "FLUX_G", "tok_image": "image_*", "tok_xp_bp": "coeff[0:55]"}`.
pub fn inputs_json(inputs: &[&Binding]) -> serde_json::Value {
    inputs
        .iter()
        .map(|b| {
            (
                b.token_key().to_string(),
                serde_json::Value::from(b.source.describe()),
            )
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// Logs (rank 0) the survey preset, the modalities the run feeds in (`what`: "input",
/// "tokenized"), and the labels it leaves out, before the run starts.
pub fn announce_inputs(
    session: &aion_mpi::Session,
    what: &str,
    inputs: &[&Binding],
    common: &Common,
) {
    if !session.is_root() {
        return;
    }
    let left_out = &common.labels_left_out;
    if let Some(s) = &common.survey {
        log::info!("survey preset: {s}");
    }
    let list: Vec<String> = inputs.iter().map(|b| b.describe()).collect();
    log::info!("{what}: {}", list.join(", "));
    if !left_out.is_empty() {
        log::info!(
            "not used (a label, never an input unless mapped explicitly, e.g. --map tok_z=Z): {}",
            left_out.join(", ")
        );
    }
}

/// Modalities that are labels (prediction targets), never inputs unless the run maps them.
pub const LABELS: &[&str] = &["tok_z"];

/// Whether `token_key` is a label ([`LABELS`]).
pub fn is_label(token_key: &str) -> bool {
    LABELS.contains(&token_key)
}

/// `tok_z <- Z` for each label whose data the catalogue holds but no binding reads.
fn labels_left_out(bindings: &[Binding], has_dataset: impl Fn(&str) -> bool) -> Vec<String> {
    LABELS
        .iter()
        .filter(|k| !bindings.iter().any(|b| b.token_key() == **k))
        .filter_map(|k| by_token_key(k))
        .filter_map(|m| {
            [&*m.token_key, &*m.dataset]
                .into_iter()
                .find(|d| has_dataset(d))
                .map(|d| format!("{} <- {d}", m.token_key))
        })
        .collect()
}

/// Adds the catalogue's column names to a mapping error.
fn with_columns(e: anyhow::Error, catalog: &aion_io::Catalog) -> anyhow::Error {
    anyhow::anyhow!("{e:#}; the catalogue's columns: {}", column_list(catalog))
}

/// The catalogue's column names, for messages (at most 60, then a count).
pub fn column_list(catalog: &aion_io::Catalog) -> String {
    let names = catalog.columns();
    let shown: Vec<&str> = names.iter().take(60).map(String::as_str).collect();
    let more = names.len().saturating_sub(shown.len());
    if more > 0 {
        format!("{} … and {more} more", shown.join(", "))
    } else if shown.is_empty() {
        "(none)".into()
    } else {
        shown.join(", ")
    }
}

/// Every token key of `modalities` (built-in and the model's extras), for messages.
pub fn token_key_list(modalities: &ModalityTable) -> String {
    modalities
        .iter()
        .map(|m| m.token_key.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

impl Common {
    /// Rows per chunk: the configured value, else [`adaptive_chunk_rows`] for this catalogue,
    /// `row_bytes` of input per row and `ranks` ranks.
    pub fn chunk_rows_for(&self, row_bytes: usize, ranks: usize) -> ChunkRows {
        match self.chunk_rows {
            Some(rows) => ChunkRows {
                rows,
                adaptive: false,
            },
            None => ChunkRows {
                rows: adaptive_chunk_rows(self.catalog.n_rows(), row_bytes, self.batch, ranks),
                adaptive: true,
            },
        }
    }
}

/// Rows per chunk of a run, and who chose them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkRows {
    /// Rows per chunk.
    pub rows: usize,
    /// Chosen by the run ([`adaptive_chunk_rows`]), not by `--chunk-rows` or the run config.
    /// It then depends on the rank count, so it is left out of the resume key and a resumed
    /// run keeps the chunks the output records, whatever its rank count.
    pub adaptive: bool,
}

/// The chunk size a run picks for `n` rows of `row_bytes` input each on `ranks` ranks: chunks
/// hold at most about [`crate::args::CHUNK_INPUT_BYTES`] of input (1 to
/// [`crate::args::MAX_CHUNK_ROWS`] rows, a multiple of `batch` when above it), and the work is
/// spread over every rank: with `rounds` the fewest rounds of such chunks, the chunk is the rows
/// per rank per round, so each rank does `rounds` chunks of nearly equal size, and every rank has
/// rows whenever `n ≥ ranks` (a 64-row catalogue on 2 ranks: 2 chunks of 32).
pub fn adaptive_chunk_rows(n: usize, row_bytes: usize, batch: usize, ranks: usize) -> usize {
    use crate::args::{CHUNK_INPUT_BYTES, MAX_CHUNK_ROWS};
    let ranks = ranks.max(1);
    let mut budget = (CHUNK_INPUT_BYTES / row_bytes.max(1)).clamp(1, MAX_CHUNK_ROWS);
    if budget > batch {
        budget = budget / batch.max(1) * batch.max(1);
    }
    if n == 0 {
        return budget;
    }
    let rounds = n.div_ceil(ranks * budget);
    let rows = n.div_ceil(ranks * rounds);
    if n.div_ceil(rows) < ranks {
        // Few rows per rank (n < 2·ranks or so): equal chunks rounded up leave a rank without
        // one; rounded down they cover every rank (1 row per chunk when n < ranks).
        (n / ranks).max(1)
    } else {
        rows
    }
}

/// Where a modality's values come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Source {
    /// Already tokens: the dataset holds token ids.
    Tokens {
        /// Dataset name.
        dataset: String,
    },
    /// Scalar values, optionally a column range of a 2-D dataset (Gaia XP `coeff[0:55]`).
    Scalar {
        /// Dataset name.
        dataset: String,
        /// Column range `[start, end)`.
        columns: Option<(usize, usize)>,
    },
    /// A group of datasets sharing a prefix (images: `<p>_array|<p>_flux` + `<p>_band`;
    /// spectra: `<p>_flux`, `<p>_ivar`, `<p>_lambda`, `<p>_mask`; catalogs: `<p>_X`, …).
    Group {
        /// Dataset prefix.
        prefix: String,
    },
}

/// Dataset suffixes read for a group source (images, spectra, catalogs).
const GROUP_SUFFIXES: &[&str] = &[
    "array", "flux", "band", "ivar", "lambda", "mask", "X", "Y", "SHAPE_E1", "SHAPE_E2", "SHAPE_R",
];

/// Every dataset that may be read for `bindings`, plus `object_id` (used to size the files).
fn candidate_datasets(bindings: &[Binding]) -> Vec<String> {
    let mut out = vec!["object_id".to_string()];
    for b in bindings {
        match &b.source {
            Source::Tokens { dataset } | Source::Scalar { dataset, .. } => {
                out.push(dataset.clone())
            }
            Source::Group { prefix } => {
                out.extend(GROUP_SUFFIXES.iter().map(|s| format!("{prefix}_{s}")))
            }
        }
    }
    out
}

impl Source {
    /// `DATASET`, `DATASET[a:b]`, `PREFIX_*` or `DATASET (tokens)`.
    pub fn describe(&self) -> String {
        match self {
            Self::Tokens { dataset } => format!("{dataset} (tokens)"),
            Self::Scalar {
                dataset,
                columns: Some((a, b)),
            } => format!("{dataset}[{a}:{b}]"),
            Self::Scalar {
                dataset,
                columns: None,
            } => dataset.clone(),
            Self::Group { prefix } => format!("{prefix}_*"),
        }
    }
}

/// A modality bound to its source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Binding {
    /// The modality (recorded by its token key).
    #[serde(rename = "token_key", serialize_with = "token_key_of")]
    modality: Modality,
    /// Where its values come from.
    pub source: Source,
    /// Whether the user asked for it (then a missing dataset is an error, not a skip).
    pub explicit: bool,
}

fn token_key_of<S: serde::Serializer>(m: &Modality, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(&m.token_key)
}

impl Binding {
    /// The modality.
    pub fn modality(&self) -> &Modality {
        &self.modality
    }

    /// The modality's token key.
    pub fn token_key(&self) -> &str {
        &self.modality.token_key
    }

    /// Human-readable `tok_x <- DATASET`.
    pub fn describe(&self) -> String {
        format!("{} <- {}", self.token_key(), self.source.describe())
    }
}

/// Parses `TOKEN_KEY=DATASET` (from `--map`).
pub fn parse_map(entry: &str) -> Result<(String, String)> {
    let (k, v) = entry
        .split_once('=')
        .with_context(|| format!("--map {entry}: expected TOKEN_KEY=DATASET"))?;
    let (k, v) = (k.trim(), v.trim());
    if k.is_empty() || v.is_empty() {
        bail!("--map {entry}: expected TOKEN_KEY=DATASET");
    }
    Ok((k.to_string(), v.to_string()))
}

fn parse_source(m: &ModalityInfo, value: &str) -> Result<Source> {
    if let Some(dataset) = value.strip_prefix("tokens:") {
        return Ok(Source::Tokens {
            dataset: dataset.to_string(),
        });
    }
    Ok(match m.codec {
        CodecKind::Image | CodecKind::Spectrum | CodecKind::Catalog => Source::Group {
            prefix: value.to_string(),
        },
        _ => match value.split_once('[') {
            Some((ds, rest)) => {
                let range = rest.strip_suffix(']').and_then(|r| r.split_once(':'));
                let parsed =
                    range.and_then(|(a, b)| Some((a.trim().parse().ok()?, b.trim().parse().ok()?)));
                let Some((a, b)) = parsed.filter(|(a, b): &(usize, usize)| a < b) else {
                    bail!(
                        "{}={value}: expected DATASET[start:end] with start < end",
                        m.token_key
                    );
                };
                Source::Scalar {
                    dataset: ds.to_string(),
                    columns: Some((a, b)),
                }
            }
            None => Source::Scalar {
                dataset: value.to_string(),
                columns: m.columns,
            },
        },
    })
}

/// Builds the bindings of `modalities` from explicit entries (config then CLI, later wins) and
/// the defaults.
/// `has_dataset` tells whether the catalogue holds a dataset (used for pre-tokenized input).
/// Labels ([`LABELS`]) get a default binding only when in `named`. Returns every candidate
/// binding; callers drop the non-explicit ones whose data is absent.
pub fn resolve(
    modalities: &ModalityTable,
    explicit: &[(String, String)],
    has_dataset: impl Fn(&str) -> bool,
    named: &[&str],
) -> Result<Vec<Binding>> {
    let mut chosen: BTreeMap<String, Option<Binding>> = BTreeMap::new();
    for (key, value) in explicit {
        let m = modalities.get(key).with_context(|| {
            format!(
                "unknown token key '{key}' in mapping {key}={value}; the token keys are: {}",
                token_key_list(modalities)
            )
        })?;
        let b = if value.eq_ignore_ascii_case("none") {
            None
        } else {
            Some(Binding {
                source: parse_source(&m, value)?,
                modality: m.clone(),
                explicit: true,
            })
        };
        chosen.insert(m.token_key.to_string(), b);
    }
    let taken: Vec<Source> = chosen
        .values()
        .flatten()
        .map(|b| b.source.clone())
        .collect();
    let mut out: Vec<Binding> = Vec::new();
    for m in modalities.iter() {
        match chosen.get(&*m.token_key) {
            Some(Some(b)) => out.push(b.clone()),
            Some(None) => {}
            None if is_label(&m.token_key) && !named.contains(&&*m.token_key) => {}
            None if has_dataset(&m.token_key) => out.push(Binding {
                source: Source::Tokens {
                    dataset: m.token_key.to_string(),
                },
                modality: m,
                explicit: false,
            }),
            None => {
                let source = parse_source(&m, &m.dataset)?;
                // A default source already claimed explicitly (or by an earlier default, e.g.
                // `image` for tok_image before tok_image_hsc) feeds only one token key.
                if !taken.contains(&source) && !out.iter().any(|b| b.source == source) {
                    out.push(Binding {
                        modality: m,
                        source,
                        explicit: false,
                    });
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(b: &[Binding]) -> Vec<&str> {
        b.iter().map(|b| b.token_key()).collect()
    }

    #[test]
    fn defaults_give_each_source_one_key() {
        let b = resolve(&ModalityTable::builtin(), &[], |_| false, &[]).unwrap();
        let k = keys(&b);
        assert!(k.contains(&"tok_image") && !k.contains(&"tok_image_hsc"));
        assert!(k.contains(&"tok_spectrum_desi") && !k.contains(&"tok_spectrum_sdss"));
        let xp = b.iter().find(|b| b.token_key() == "tok_xp_rp").unwrap();
        assert_eq!(
            xp.source,
            Source::Scalar {
                dataset: "coeff".into(),
                columns: Some((55, 110))
            }
        );
    }

    #[test]
    fn explicit_maps_move_a_source_and_disable_keys() {
        let ex = vec![
            ("tok_spectrum_sdss".to_string(), "spectrum".to_string()),
            ("tok_flux_g".to_string(), "MAG_G_FLUX".to_string()),
            ("tok_z".to_string(), "none".to_string()),
        ];
        let b = resolve(&ModalityTable::builtin(), &ex, |_| false, &[]).unwrap();
        let k = keys(&b);
        assert!(k.contains(&"tok_spectrum_sdss") && !k.contains(&"tok_spectrum_desi"));
        assert!(!k.contains(&"tok_z"));
        let g = b.iter().find(|b| b.token_key() == "tok_flux_g").unwrap();
        assert!(g.explicit);
        assert_eq!(
            g.source,
            Source::Scalar {
                dataset: "MAG_G_FLUX".into(),
                columns: None
            }
        );
    }

    #[test]
    fn pre_tokenized_datasets_are_preferred_to_raw_defaults() {
        let b = resolve(&ModalityTable::builtin(), &[], |d| d == "tok_flux_r", &[]).unwrap();
        let r = b.iter().find(|b| b.token_key() == "tok_flux_r").unwrap();
        assert_eq!(
            r.source,
            Source::Tokens {
                dataset: "tok_flux_r".into()
            }
        );
    }

    #[test]
    fn bad_entries_are_clear_errors() {
        assert!(parse_map("tok_flux_g").is_err());
        let e = resolve(
            &ModalityTable::builtin(),
            &[("tok_nope".into(), "X".into())],
            |_| false,
            &[],
        )
        .unwrap_err();
        let e = e.to_string();
        assert!(
            e.contains("unknown token key 'tok_nope'") && e.contains("tok_flux_g"),
            "{e}"
        );
        let e = resolve(
            &ModalityTable::builtin(),
            &[("tok_xp_bp".into(), "coeff[5:2]".into())],
            |_| false,
            &[],
        )
        .unwrap_err();
        assert!(e.to_string().contains("start < end"), "{e}");
        let ok = resolve(
            &ModalityTable::builtin(),
            &[("tok_xp_bp".into(), "coeff[0:55]".into())],
            |_| false,
            &[],
        )
        .unwrap();
        assert!(ok.iter().any(|b| b.source
            == Source::Scalar {
                dataset: "coeff".into(),
                columns: Some((0, 55))
            }));
    }

    #[test]
    fn labels_are_bound_only_when_named_or_mapped() {
        let has = |d: &str| d == "Z" || d == "FLUX_G";
        let b = resolve(&ModalityTable::builtin(), &[], has, &[]).unwrap();
        assert!(!keys(&b).contains(&"tok_z"), "tok_z bound by default");
        assert_eq!(labels_left_out(&b, has), ["tok_z <- Z"]);
        let b = resolve(&ModalityTable::builtin(), &[], has, &["tok_z"]).unwrap();
        let z = b.iter().find(|b| b.token_key() == "tok_z").unwrap();
        assert!(!z.explicit);
        let b = resolve(
            &ModalityTable::builtin(),
            &[("tok_z".into(), "Z".into())],
            has,
            &[],
        )
        .unwrap();
        let z = b.iter().find(|b| b.token_key() == "tok_z").unwrap();
        assert!(z.explicit);
        assert!(labels_left_out(&b, has).is_empty());
        // A pre-tokenized tok_z dataset is a label too.
        let tok = |d: &str| d == "tok_z";
        assert!(
            !keys(&resolve(&ModalityTable::builtin(), &[], tok, &[]).unwrap()).contains(&"tok_z")
        );
        assert_eq!(
            labels_left_out(
                &resolve(&ModalityTable::builtin(), &[], tok, &[]).unwrap(),
                tok
            ),
            ["tok_z <- tok_z"]
        );
    }

    #[test]
    fn config_parses_and_rejects_typos() {
        let c: RunConfig = toml::from_str("batch_size = 8\n[map]\ntok_z = \"Z_SPEC\"\n").unwrap();
        assert_eq!(c.batch_size, Some(8));
        assert_eq!(c.map["tok_z"], "Z_SPEC");
        assert!(toml::from_str::<RunConfig>("batchsize = 8\n").is_err());
        let c: RunConfig = toml::from_str("format = \"hats\"\n").unwrap();
        assert_eq!(c.format, Some(aion_io::Format::Hats));
    }

    #[test]
    fn adaptive_chunks_give_every_rank_rows_and_stay_in_the_budget() {
        use crate::args::{CHUNK_INPUT_BYTES, MAX_CHUNK_ROWS};
        // The case of issue 14: 64 image rows (400 KB each) on 2 ranks, 1 rank as before.
        let image = 4 * 160 * 160 * 4;
        assert_eq!(adaptive_chunk_rows(64, image, 256, 2), 32);
        assert_eq!(adaptive_chunk_rows(64, image, 256, 1), 64);
        for batch in [1, 7, 256] {
            for row_bytes in [8, 4096, image, CHUNK_INPUT_BYTES * 2] {
                let budget = (CHUNK_INPUT_BYTES / row_bytes).clamp(1, MAX_CHUNK_ROWS);
                for ranks in 1..=9 {
                    for n in (1..=200).chain([4095, 4097, 100_000, 1_000_003]) {
                        let c = adaptive_chunk_rows(n, row_bytes, batch, ranks);
                        assert!(c >= 1 && c <= budget, "n {n} ranks {ranks}: chunk {c}");
                        let chunks = n.div_ceil(c);
                        let busy = (0..ranks)
                            .filter(|&r| !aion_mpi::block_range(chunks, r, ranks).is_empty())
                            .count();
                        assert_eq!(busy, ranks.min(n), "n {n} ranks {ranks} chunk {c}");
                        // No rank does more than one round beyond the fewest possible with
                        // chunks of whole batches (the budget rounded down to a multiple of
                        // the batch, as the function does).
                        let whole = if budget > batch {
                            budget / batch * batch
                        } else {
                            budget
                        };
                        let rounds = n.div_ceil(ranks * whole);
                        assert!(chunks.div_ceil(ranks) <= rounds + 1, "n {n} ranks {ranks}");
                    }
                }
            }
        }
    }
}
