//! From the configuration to a trained module: everything `aion-finetune` does before and
//! around the training loop.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use aion_io::Catalog;
use aion_model::ModelDir;
use aion_model::codecs::scalar::{ScalarCodec, ScalarQuantizer};
use aion_model::codecs::scalar_fit::{FitKind, FittedCodec, linspace_f32};
use aion_model::hub::layout;
use aion_model::modality::{CodecKind, ModalityTable};
use aion_model::train::extend::{NewModality, NewRole, extended_with_roles};
use aion_model::train::init::{InitOptions, init_model};
use aion_model::weights::WeightFile;
use aion_model::{Aion, AionConfig};
use aion_mpi::{Session, block_range};
use anyhow::{Context, Result, bail, ensure};
use burn::tensor::backend::AutodiffBackend;
use sha2::{Digest, Sha256};

use super::config::{FinetuneConfig, Mode};
use super::data::{FullColumn, ModalityData, Split, read_column};
use super::setup::{Context as ExportContext, Needed, Run, Setup, new_spec};
use super::{FinetuneArgs, Outcome, checkpoint::Checkpoint, codecs, export};
use crate::collective::agree;
use crate::run_config::{Source, resolve};
use crate::signals::StopFlag;

/// The configuration with the command-line overrides applied.
pub fn effective_config(args: &FinetuneArgs) -> Result<FinetuneConfig> {
    let mut cfg = FinetuneConfig::load(&args.config)?;
    if let Some(o) = &args.output {
        cfg.output = Some(o.clone());
    }
    if !args.catalog.is_empty() {
        cfg.catalog = args.catalog.clone();
    }
    if let Some(s) = &args.survey {
        cfg.survey = Some(s.clone());
    }
    if let Some(b) = &args.base {
        cfg.model.base = Some(b.clone());
        cfg.model.init = None;
    }
    if let Some(s) = args.steps {
        cfg.train.steps = s;
    }
    cfg.validate()?;
    ensure!(
        cfg.output.is_some(),
        "no output directory: give --output or output in the config"
    );
    ensure!(
        !cfg.catalog.is_empty(),
        "no catalogue: give --catalog or catalog in the config"
    );
    Ok(cfg)
}

/// Where a path setting came from, for error messages: the command-line `flag` when it was
/// given, else `key` of the config file.
fn origin(config: &Path, flag_given: bool, flag: &str, key: &str) -> String {
    if flag_given {
        flag.to_string()
    } else {
        format!("{key} in {}", config.display())
    }
}

fn setup(args: &FinetuneArgs) -> Result<Setup> {
    let cfg = effective_config(args)?;
    let out = cfg.output.clone().expect("checked");
    let base = match &cfg.model.base {
        Some(base) => {
            ensure!(
                layout::config(base).is_file(),
                "base model {} ({}) has no config.json",
                base.display(),
                origin(&args.config, args.base.is_some(), "--base", "[model] base")
            );
            Some(ModelDir::open(base)?)
        }
        None => None,
    };
    let mut modalities = base
        .as_ref()
        .map_or_else(ModalityTable::builtin, |b| b.modalities().clone());
    for n in &cfg.new_modalities {
        modalities
            .add(&new_spec(n))
            .with_context(|| format!("[[new_modality]] {}", n.token_key))?;
    }
    let preset = cfg.survey.as_deref().map(crate::survey::load).transpose()?;
    let mut catalog =
        Catalog::open_with(&cfg.catalog, cfg.format, preset.as_ref()).with_context(|| {
            origin(
                &args.config,
                !args.catalog.is_empty(),
                "--catalog",
                "catalog",
            )
        })?;
    // Precedence (later wins): the survey preset's [map], then the config's [map].
    let explicit: Vec<(String, String)> = preset
        .iter()
        .flat_map(|p| p.map.iter())
        .chain(cfg.map.iter())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    // The run names its inputs and targets in [data]: a label there (tok_z) is bound to its
    // default dataset like any other modality.
    let named: Vec<&str> = cfg
        .data
        .inputs
        .iter()
        .chain(&cfg.data.targets)
        .map(String::as_str)
        .collect();
    let bindings = resolve(&modalities, &explicit, |d| catalog.has(d), &named)?;
    let mut keys: Vec<&String> = cfg.data.inputs.iter().collect();
    keys.extend(
        cfg.data
            .targets
            .iter()
            .filter(|t| !cfg.data.inputs.contains(t)),
    );
    let mut needed = Vec::new();
    for key in keys {
        let m = modalities
            .get(key)
            .with_context(|| format!("unknown modality {key} in [data]"))?;
        let b = bindings
            .iter()
            .find(|b| b.token_key() == m.token_key)
            .with_context(|| format!("{key}: no dataset (map it in [map])"))?;
        let (dataset, columns, tokens) = match &b.source {
            Source::Scalar { dataset, columns } => (dataset.clone(), *columns, false),
            Source::Tokens { dataset } => (dataset.clone(), None, true),
            Source::Group { .. } => {
                bail!("{key}: only scalar modalities can be fine-tuned on so far")
            }
        };
        ensure!(
            catalog.has(&dataset),
            "{key}: dataset {dataset} is in none of the catalogue files"
        );
        needed.push(Needed {
            modality: m,
            dataset,
            columns,
            tokens,
        });
    }
    let mut datasets: Vec<String> = needed.iter().map(|n| n.dataset.clone()).collect();
    datasets.extend(cfg.data.noise.values().cloned());
    if let Some(p) = &cfg.probe {
        datasets.push(p.target.clone());
    }
    for d in &datasets {
        ensure!(
            catalog.has(d),
            "dataset {d} is in none of the catalogue files"
        );
    }
    catalog.size_by(&datasets)?;
    ensure!(
        catalog.n_rows() > 0,
        "the catalogue ({}) has no rows: there is nothing to train on",
        catalog.paths_text()
    );
    let identity = crate::resume::catalog_identity(&catalog.paths())?;
    let base_id = cfg
        .model
        .base
        .as_ref()
        .map(|b| crate::resume::FileIdentity::of(&layout::weights(b)))
        .transpose()?;
    // The preset's content too: an edited preset file converts the columns differently.
    let mut key = serde_json::json!({ "config": cfg, "catalog": identity, "base": base_id });
    if let Some(p) = &preset {
        key["survey_preset"] = serde_json::to_value(p)?;
    }
    let hash = Sha256::digest(key.to_string().as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(Setup {
        cfg,
        final_out: out.clone(),
        out: work_dir(&out),
        catalog,
        base,
        modalities,
        needed,
        hash,
        config_file: args.config.clone(),
    })
}

/// Whether `out/finetune.json` records a finished run of this configuration.
fn already_finished(out: &Path, hash: &str) -> bool {
    std::fs::read_to_string(out.join(export::SUMMARY))
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .is_some_and(|v| v["finished"] == true && v["config_hash"] == hash)
}

/// Where a run builds its output directory `out`: `<out>.partial`, which holds the checkpoint,
/// the training log and the split while training, then the model; renamed to `out` when the run
/// has finished, so `out` only ever holds a complete model (and an earlier model stays usable
/// until the new one replaces it).
pub fn work_dir(out: &Path) -> PathBuf {
    crate::guard::sidecar(out, ".partial")
}

/// Checks the output and work directories before any work (collective): neither may be an
/// input; both must be absent, empty or ours; an existing model in the output directory is
/// replaced only with `--overwrite`. Returns the lock of the output, held until the run ends.
fn claim(session: &Session, args: &FinetuneArgs, s: &Setup) -> Result<crate::guard::OutputLock> {
    use crate::guard::{Existing, Inputs, claim_output};
    let mut inputs = Inputs::new();
    inputs
        .file("run configuration", &args.config)
        .files("catalogue file", s.catalog.paths());
    if let Some(b) = &s.cfg.model.base {
        inputs.model_dir(b);
    }
    if let Some(f) = &s.cfg.data.split_file {
        inputs.file("split file", f);
    }
    let c = claim_output(
        session,
        super::TOOL,
        &inputs,
        &s.final_out,
        Existing::model_dir,
        &[(s.out.clone(), Existing::model_dir)],
    )?;
    Ok(c.lock)
}

/// Readies the work directory (rank 0): created and marked; emptied first with `overwrite`.
fn prepare_output(s: &Setup, overwrite: bool) -> Result<()> {
    if overwrite && s.out.exists() {
        std::fs::remove_dir_all(&s.out)
            .with_context(|| format!("cannot empty {}", s.out.display()))?;
    }
    std::fs::create_dir_all(&s.out)
        .with_context(|| format!("cannot create {}", s.out.display()))?;
    crate::guard::mark_model_dir(&s.out, super::TOOL)
}

/// Refuses (without `overwrite`) to replace the finished model of another run in the output
/// directory (rank 0).
fn refuse_replacing(s: &Setup, overwrite: bool) -> Result<()> {
    let has_model = std::fs::read_dir(&s.final_out)
        .map(|mut e| e.next().is_some())
        .unwrap_or(false);
    if has_model && !overwrite {
        bail!(
            "{} holds the model of another run (another configuration, catalogue or base); \
             use --overwrite to replace it (it is replaced only when this run has finished)",
            s.final_out.display()
        );
    }
    Ok(())
}

/// The split of the catalogue's rows.
fn split(s: &Setup) -> Result<Split> {
    let n = s.catalog.n_rows();
    let sp = match &s.cfg.data.split_file {
        Some(f) => {
            let text = std::fs::read_to_string(f).with_context(|| {
                format!(
                    "cannot read split file {} ([data] split_file in {})",
                    f.display(),
                    s.config_file.display()
                )
            })?;
            serde_json::from_str(&text)
                .with_context(|| format!("invalid split file {}", f.display()))?
        }
        None => {
            let p = &s.cfg.data.split;
            Split::random(n, p.val, p.test, p.seed.unwrap_or(s.cfg.seed))
        }
    };
    sp.check(n)?;
    Ok(sp)
}

/// Fitted codecs of the new modalities (on the training rows, across ranks) and the codecs of
/// every other modality read (from the base model, or the redshift grid for a new model).
fn codecs_of(
    session: &Session,
    s: &Setup,
    cols: &BTreeMap<String, FullColumn>,
    train_rows: &[usize],
) -> Result<(BTreeMap<String, ScalarCodec>, Vec<FittedCodec>)> {
    let mut loaded = BTreeMap::new();
    let mut fitted = Vec::new();
    let mine = &train_rows[block_range(train_rows.len(), session.rank(), session.size())];
    for n in &s.needed {
        let m = &n.modality;
        if n.tokens {
            continue;
        }
        if let Some(nm) = s
            .cfg
            .new_modalities
            .iter()
            .find(|x| x.token_key == m.token_key)
        {
            let kind = match m.codec {
                CodecKind::LogScalar => FitKind::LogScalar {
                    min_log_value: nm.min_log_value,
                },
                _ => FitKind::Scalar,
            };
            let col = &cols[&n.dataset];
            let f = codecs::fit_distributed(
                session,
                &m.codec_dir,
                kind,
                nm.codebook_size,
                nm.reservoir_size,
                s.cfg.seed,
                mine.iter().map(|&r| (r as u64, col.values[r])),
            )
            .with_context(|| format!("fitting the codec of {}", m.token_key))?;
            let quantizer = match kind {
                FitKind::Scalar => ScalarQuantizer::Reservoir {
                    table: f.table.clone(),
                },
                FitKind::LogScalar { min_log_value } => ScalarQuantizer::LogReservoir {
                    table: f.table.clone(),
                    min_value: min_log_value.exp() as f32,
                },
            };
            loaded.insert(
                m.token_key.to_string(),
                ScalarCodec {
                    modality: m.clone(),
                    quantizer,
                },
            );
            fitted.push(f);
        } else if let Some(base) = s
            .base
            .as_ref()
            .filter(|b| m.codec != CodecKind::GridScalar || has_codec(b.path(), m))
        {
            loaded.insert(m.token_key.to_string(), codecs::load(base.path(), m)?);
        } else if m.codec == CodecKind::GridScalar {
            let buckets = linspace_f32(export::GRID_K);
            loaded.insert(
                m.token_key.to_string(),
                ScalarCodec {
                    modality: m.clone(),
                    quantizer: ScalarQuantizer::Grid { buckets },
                },
            );
        } else {
            bail!(
                "{}: a new model has no codec for it; add it as a [[new_modality]] or start from a base model",
                m.token_key
            );
        }
    }
    Ok((loaded, fitted))
}

/// Whether `model` holds a codec for `m` (`codecs/<codec_dir>/`). A base model without the
/// redshift grid codec (a backbone pre-trained on photometry only) gets the grid, as a new model.
pub(super) fn has_codec(model: &Path, m: &aion_model::modality::Modality) -> bool {
    layout::codec(model, &m.codec_dir).is_dir()
}

/// The roles the base model lacks for the run's built-in (or base-extra) modalities: an input
/// with no encoder embedding, a target with no decoder embedding and head (e.g. `tok_z` as the
/// target of a backbone pre-trained on photometry only). `[[new_modality]]` entries are added
/// separately. A probe trains only its head, so it gets none: its inputs must be the base's.
pub(super) fn roles_to_add(s: &Setup) -> Result<Vec<NewRole>> {
    let c = &s.cfg;
    let Some(base) = s.base.as_ref().filter(|_| c.mode != Mode::Probe) else {
        return Ok(Vec::new());
    };
    let bc = base.config()?;
    let mut roles: Vec<NewRole> = Vec::new();
    for k in c.data.inputs.iter().chain(&c.data.targets) {
        if c.new_modalities.iter().any(|n| &n.token_key == k)
            || roles.iter().any(|r| &r.token_key == k)
        {
            continue;
        }
        let input = c.data.inputs.contains(k) && !bc.domains_in.contains(k);
        let output = c.data.targets.contains(k) && !bc.domains_out.contains(k);
        if input || output {
            roles.push(NewRole {
                token_key: k.clone(),
                input,
                output,
            });
        }
    }
    Ok(roles)
}

/// The model to train: the base (with new modalities added) or a new one.
fn build_model<B: AutodiffBackend>(s: &Setup, device: &B::Device) -> Result<Aion<B>> {
    let c = &s.cfg;
    let opts = InitOptions {
        seed: c.seed,
        ordinal_scalars: c.model.ordinal_init,
    };
    let model = if let Some(base) = &s.base {
        let news: Vec<NewModality> = c
            .new_modalities
            .iter()
            .map(|n| NewModality {
                spec: new_spec(n),
                input: c.data.inputs.contains(&n.token_key),
                output: c.data.targets.contains(&n.token_key),
            })
            .collect();
        let roles = roles_to_add(s)?;
        for r in &roles {
            log::info!(
                "{}: new {} for it (the base model {} has none)",
                r.token_key,
                match (r.input, r.output) {
                    (true, true) => "encoder and decoder embeddings",
                    (true, false) => "encoder embedding",
                    _ => "decoder embedding and output head",
                },
                base.path().display()
            );
        }
        if news.is_empty() && roles.is_empty() {
            base.transformer(device)?
        } else {
            let (cfg, bytes, _) = extended_with_roles(base, &news, &roles, opts)?;
            let mut w = WeightFile::from_bytes(layout::weights(base.path()), bytes)?;
            let m = Aion::from_weights(cfg, &mut w, device)?;
            w.finish()?;
            m
        }
    } else {
        let preset = c.model.init.as_deref().unwrap_or("tiny");
        let mut cfg = match preset {
            "tiny" => AionConfig::tiny(),
            "base" => AionConfig::base(),
            "large" => AionConfig::large(),
            other => bail!("[model] init = {other:?}: use tiny, base or large"),
        };
        cfg.modalities = s.modalities.clone();
        cfg.domains_in = c.data.inputs.clone();
        cfg.domains_out = c.data.targets.clone();
        if c.mode == Mode::Probe {
            cfg.domains_out = c.data.inputs.clone();
        }
        let m = &c.model;
        cfg.dim = m.dim.unwrap_or(cfg.dim);
        cfg.encoder_depth = m.encoder_depth.unwrap_or(cfg.encoder_depth);
        cfg.decoder_depth = m.decoder_depth.unwrap_or(cfg.decoder_depth);
        cfg.num_heads = m.num_heads.unwrap_or(cfg.num_heads);
        init_model(&cfg, opts, device)?
    };
    let mc = model.config();
    for k in &c.data.inputs {
        ensure!(
            mc.domains_in.contains(k),
            "{k} is not an input of the model (domains_in)"
        );
    }
    if c.mode != Mode::Probe {
        for k in &c.data.targets {
            ensure!(
                mc.domains_out.contains(k),
                "{k} is not an output of the model (domains_out)"
            );
        }
    }
    Ok(model)
}

/// Runs the whole tool on backend `B`.
pub fn run<B: AutodiffBackend>(
    args: &FinetuneArgs,
    session: &Session,
    stop: &StopFlag,
    device: B::Device,
) -> Result<Outcome> {
    let s = agree(session, setup(args))?;
    let _lock = claim(session, args, &s)?;
    if !args.overwrite && agree(session, Ok(already_finished(&s.final_out, &s.hash)))? {
        if session.is_root() {
            log::info!(
                "{} already holds the finished run of this configuration; nothing to do",
                s.final_out.display()
            );
        }
        return Ok(Outcome::Finished);
    }
    if !args.overwrite && agree(session, Ok(already_finished(&s.out, &s.hash)))? {
        // Finished, but stopped before its work directory was renamed into place.
        let moved = if session.is_root() {
            crate::guard::replace_dir(&s.out, &s.final_out)
        } else {
            Ok(())
        };
        agree(session, moved)?;
        return Ok(Outcome::Finished);
    }
    let root_prepares = if session.is_root() {
        refuse_replacing(&s, args.overwrite).and_then(|()| prepare_output(&s, args.overwrite))
    } else {
        Ok(())
    };
    agree(session, root_prepares)?;
    let t0 = std::time::Instant::now();
    let sp = agree(session, split(&s))?;
    export::write_split(session, &s.out, &sp)?;
    let cols = read_columns(session, &s)?;
    let (codec_map, fitted) = agree(session, codecs_of(session, &s, &cols, &sp.train))?;
    let model = agree(session, build_model::<B>(&s, &device))?;
    let data = modality_data(&s, &cols, codec_map)?;
    let run = Run {
        session,
        stop,
        setup: &s,
        split: &sp,
        cols: &cols,
        data: &data,
        ckpt: Checkpoint::new(&s.out, &s.hash),
        ctx: ExportContext {
            session,
            setup: &s,
            split: &sp,
            fitted: &fitted,
            seconds_before: t0,
        },
    };
    let outcome = if s.cfg.mode == Mode::Probe {
        super::modes::probe(&run, model, device)?
    } else {
        super::modes::tokens(&run, model, device)?
    };
    if outcome == Outcome::Finished {
        if !s.cfg.train.keep_checkpoint {
            run.ckpt.remove(session);
        }
        let moved = if session.is_root() {
            crate::guard::replace_dir(&s.out, &s.final_out)
        } else {
            Ok(())
        };
        agree(session, moved)?;
        if session.is_root() {
            log::info!("wrote {}", s.final_out.display());
        }
    }
    Ok(outcome)
}

/// Every dataset the run reads (modalities, noise, probe target), all rows, on every rank.
fn read_columns(session: &Session, s: &Setup) -> Result<BTreeMap<String, FullColumn>> {
    let mut wanted: Vec<(String, Option<(usize, usize)>)> = s
        .needed
        .iter()
        .map(|n| (n.dataset.clone(), n.columns))
        .collect();
    wanted.extend(s.cfg.data.noise.values().map(|d| (d.clone(), None)));
    if let Some(p) = &s.cfg.probe {
        wanted.push((p.target.clone(), None));
    }
    let mut cols = BTreeMap::new();
    for (d, c) in wanted {
        if let std::collections::btree_map::Entry::Vacant(e) = cols.entry(d) {
            let col = read_column(session, &s.catalog, e.key(), c)?;
            e.insert(col);
        }
    }
    Ok(cols)
}

/// Per-modality data with roles, weights and noise.
fn modality_data(
    s: &Setup,
    cols: &BTreeMap<String, FullColumn>,
    mut codecs: BTreeMap<String, ScalarCodec>,
) -> Result<Vec<ModalityData>> {
    let c = &s.cfg;
    let mut out = Vec::new();
    for n in &s.needed {
        let key = &*n.modality.token_key;
        let codec = codecs.remove(key);
        let mut d = ModalityData::new(&n.modality, codec, cols[&n.dataset].clone());
        d.is_input = c.data.inputs.iter().any(|k| k == key);
        d.is_target = c.mode != Mode::Probe && c.data.targets.iter().any(|k| k == key);
        d.weight = c.train.target_weights.get(key).copied().unwrap_or(1.0) as f32;
        if let Some(ds) = c.data.noise.get(key) {
            ensure!(
                d.codec.is_some(),
                "{key}: noise needs raw values, not tokens"
            );
            d.noise = Some(cols[ds].clone());
        }
        out.push(d);
    }
    for k in c.data.noise.keys() {
        ensure!(
            s.needed.iter().any(|n| n.modality.token_key == **k),
            "[data.noise] {k} is neither an input nor a target"
        );
    }
    Ok(out)
}
