//! `aion-generate`: cross-modal generation for every catalogue object (a DESI spectrum from
//! photometry and an image, a segmentation map from an image, any modality the model has a
//! decoder head for), decoded back to data through the target's codec.
//!
//! Each row is conditioned on exactly the modalities it has (the target is never an input; rows
//! are batched by modality set, as in `aion-embed`), and `--samples M` samples of the target's
//! tokens are drawn with the sampler of `aion_model::fourm::generate` (MaskGIT, ROAR or a single
//! pass). Random draws are keyed by (seed, object id, sample, step, position), so outputs are the
//! same for any rank count and after a resume. A finished run also draws the first objects'
//! generated data ([`figure`]).

mod figure;

use std::ops::Range;

use aion_io::Catalog;
use aion_io::catalog::ColumnKind;
use aion_model::codecs::AnyCodec;
use aion_model::codecs::image::Band;
use aion_model::fourm::generate::{
    Filter, Schedule, SeededDraws, TemperatureSchedule, TokenSchedule,
};
use aion_model::modality::{CodecKind, Modality, ModalityTable, TokenLayout};
use aion_mpi::Session;
use anyhow::{Context, Result, bail};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use clap::{Parser, ValueEnum};

use crate::args::IoArgs;
use crate::backend::ComputeArgs;
use crate::batching::{Batch, batches, inputs};
use crate::cli::{Report, RunContext, Tool};
use crate::codec_set::{ModalityTokens, NO_TOKEN, load_codec};
use crate::collective::agree;
use crate::decode::{Decoder, default_bands, wavelength_grid};
use crate::model_plan::ModelPlan;
use crate::output::{Tally, flag_specs, write_constants, write_masks};
use crate::pipeline::{DatasetSpec, Dtype, Outcome, RunOutput, run_chunks};
use crate::run_config::{announce_inputs, inputs_json};
use crate::signals::StopFlag;
use crate::stages::{Stage, Stages};
use crate::tool::{RunIdentity, start};

/// Tool name.
pub const TOOL: &str = "aion-generate";

/// Decoding schedule (`--schedule`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SchemeArg {
    /// MaskGIT: each step samples every masked position and keeps the most confident ones.
    Maskgit,
    /// ROAR: each step decodes a random subset of the masked positions and keeps them all.
    Roar,
    /// Every token in one decoder pass (MaskGIT with one step).
    SinglePass,
}

/// MaskGIT token schedule (`--token-schedule`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenScheduleArg {
    /// Few tokens first, most in the middle steps (`cosine_schedule`).
    Cosine,
    /// About the same number per step (`linear_schedule`).
    Linear,
}

/// Command line of `aion-generate`.
#[derive(Debug, Parser)]
#[command(name = TOOL, version, about = "Generate a modality (spectrum, image, segmentation map, …) of every catalogue object with AION-1, decoded to physical units.",
    after_help = crate::exit::EXIT_CODES_HELP)]
pub struct GenerateArgs {
    /// Input, output and mapping options.
    #[command(flatten)]
    pub io: IoArgs,
    /// Device, precision, threads.
    #[command(flatten)]
    pub compute: ComputeArgs,
    /// Modality to generate (token key): `tok_spectrum_desi`, `tok_image`, `tok_image_hsc`,
    /// `tok_segmap`, or any other the model has a decoder head for. Never used as an input.
    #[arg(long, value_name = "TOKEN_KEY")]
    pub target: String,
    /// Decoding schedule.
    #[arg(long, value_enum, default_value = "maskgit")]
    pub schedule: SchemeArg,
    /// Decoding steps (maskgit, roar). With the linear token schedule (and ROAR) more steps
    /// than tokens decode one token per step; the cosine schedule may reveal no token in early
    /// steps and refuses step counts it cannot fill.
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub steps: usize,
    /// Tokens revealed per MaskGIT step (ROAR always uses linear).
    #[arg(long, value_enum, default_value = "cosine")]
    pub token_schedule: TokenScheduleArg,
    /// Sampling temperature; 0 with the constant temperature schedule = argmax (deterministic,
    /// no draws). The `linear` and `onex` schedules derive each step's temperature from it.
    #[arg(long, value_name = "T", default_value_t = 1.0)]
    pub temperature: f64,
    /// Temperature per step: `constant`, `linear` (decreasing with the tokens left) or
    /// `onex:MIN:POWER` (the reference's 1/x decay towards MIN).
    #[arg(long, value_name = "SCHEDULE", default_value = "constant")]
    pub temperature_schedule: TemperatureSchedule,
    /// Keep only the K most probable tokens at each draw (0 = off).
    #[arg(long, value_name = "K", default_value_t = 0)]
    pub top_k: usize,
    /// Nucleus sampling: keep the most probable tokens up to cumulative probability P (0 = off).
    #[arg(long, value_name = "P", default_value_t = 0.0)]
    pub top_p: f64,
    /// Run seed; draws depend on (seed, object id, sample, step, position) only.
    #[arg(long, value_name = "S", default_value_t = 0)]
    pub seed: u64,
    /// Samples per object.
    #[arg(long, value_name = "M", default_value_t = 1)]
    pub samples: usize,
    /// Spectra: also resample the generated flux onto each row's wavelengths from this
    /// catalogue dataset (`(N, L)`, Å; entries ≤ 0 or NaN are padding → NaN).
    #[arg(long, value_name = "DATASET")]
    pub wavelength_from: Option<String>,
    /// Images: bands to decode.
    #[arg(long, value_name = "BAND,…", value_delimiter = ',',
        help = crate::args::with_default("Images: bands to decode", &bands_default()))]
    pub bands: Vec<String>,
}

crate::cli::model_tool_args!(GenerateArgs);

/// The tool (`aion_app::cli::main::<GenerateArgs>()` is the binary).
impl Tool for GenerateArgs {
    const NAME: &'static str = TOOL;
    const STOP_SIGNALS: bool = true;

    /// Returns how the run ended and the summary (also in `<output>.run.json`).
    fn run<B: Backend>(&self, ctx: &RunContext, device: B::Device) -> Result<Report> {
        let (session, stop) = (ctx.session(), &ctx.stop);
        let loaded = agree(
            session,
            (|| {
                let m = check_target(self)?;
                let plan = ModelPlan::<B>::load_excluding(
                    &self.io,
                    &device,
                    &[],
                    &[&m.token_key],
                    session.size(),
                )?;
                let target = load_target(self, m, &plan, &device)?;
                Ok((plan, target))
            })(),
        )?;
        run_plan(self, session, stop, &loaded.0, &loaded.1, &device).map(Report::from)
    }
}

/// What `--bands` defaults to: the bands of [`default_bands`] per image modality.
pub fn bands_default() -> String {
    ["tok_image", "tok_image_hsc"]
        .iter()
        .filter_map(|k| aion_model::modality::by_token_key(k))
        .map(|m| {
            let names: Vec<&str> = default_bands(m).iter().map(|b| b.name()).collect();
            format!("{} for {}", names.join(","), m.token_key)
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// One decoded output dataset: its name under `gen/<key>/` and its per-sample row shape.
struct Decoded {
    name: &'static str,
    shape: Vec<usize>,
    attrs: Vec<(String, String)>,
}

/// What a run generates, resolved before the output is touched.
struct Target<B: Backend> {
    modality: Modality,
    /// The target's codec, for decoding.
    codec: Decoder<B>,
    schedule: Schedule,
    filter: Filter,
    /// `--wavelength-from`: dataset and its row length.
    grid: Option<(String, usize)>,
}

impl<B: Backend> Target<B> {
    /// The decoded datasets, in write order.
    fn decoded(&self) -> Vec<Decoded> {
        let one = |name, shape: &[usize]| Decoded {
            name,
            shape: shape.to_vec(),
            attrs: Vec::new(),
        };
        let m = &self.modality;
        let key = &*m.token_key;
        let described = |name, shape: &[usize], units: &str, label: String| Decoded {
            attrs: vec![("units".into(), units.into()), ("label".into(), label)],
            ..one(name, shape)
        };
        match &self.codec.codec {
            AnyCodec::Scalar(c) => {
                let shape: &[usize] = if c.channels() == 1 {
                    &[]
                } else {
                    &[c.channels()]
                };
                let label = format!("{} (upper edge of the generated token's bin)", m.label);
                vec![described("value", shape, &m.units, label)]
            }
            AnyCodec::Image(_) => {
                let bands = &self.codec.bands;
                let names: Vec<&str> = bands.iter().map(|b| b.name()).collect();
                let survey = bands[0].survey();
                let mut d = described(
                    "flux",
                    &[bands.len(), 96, 96],
                    survey.units(),
                    m.label.to_string(),
                );
                d.attrs.push(("bands".into(), names.join(",")));
                d.attrs
                    .push(("photometry".into(), survey.photometry().into()));
                vec![d]
            }
            AnyCodec::Spectrum(c) => {
                let p = c.latent_wavelength().len();
                let mut flux = described("flux", &[p], &m.units, m.label.to_string());
                flux.attrs
                    .push(("wavelength".into(), format!("gen/{key}/wavelength")));
                let mut v = vec![flux];
                if let Some((ds, l)) = &self.grid {
                    let mut r = described(
                        "flux_resampled",
                        &[*l],
                        &m.units,
                        format!("{} on the wavelengths of catalogue dataset {ds}", m.label),
                    );
                    r.attrs.push((
                        "wavelength".into(),
                        format!("gen/{key}/wavelength_resampled"),
                    ));
                    v.push(r);
                }
                v
            }
            AnyCodec::Field(_) => vec![described(
                "map",
                &[96, 96],
                "",
                format!("{} (object membership in [0, 1])", m.label),
            )],
            AnyCodec::Catalog(_) => unreachable!("refused when loading the target"),
        }
    }

    /// Floats per sample of each decoded dataset.
    fn widths(&self) -> Vec<usize> {
        self.decoded()
            .iter()
            .map(|d| d.shape.iter().product::<usize>().max(1))
            .collect()
    }
}

/// Per chunk: ids, input flags, generated tokens `(n, M, T)`, generated flag, decoded buffers,
/// and the rows' `--wavelength-from` grids (padding as NaN).
struct Out {
    ids: Vec<i64>,
    tokens: Vec<ModalityTokens>,
    generated_tokens: Vec<i64>,
    generated: Vec<u8>,
    decoded: Vec<Vec<f32>>,
    wavelengths: Option<Vec<f32>>,
}

/// What the reader stage hands on per chunk: object ids, tokens per modality, and the rows'
/// wavelength grids (`--wavelength-from`).
type ChunkInput = (Vec<i64>, Vec<ModalityTokens>, Option<Vec<f32>>);

/// The target modality and the options that do not need the model (checked before the model
/// directory is opened, so the target is one of the built-in modalities).
fn check_target(args: &GenerateArgs) -> Result<Modality> {
    let key = args.target.as_str();
    let m = aion_model::modality::by_token_key(key)
        .with_context(|| format!("--target {key}: unknown token key"))?;
    if matches!(m.layout, TokenLayout::Sequence { .. }) {
        bail!(
            "--target {key}: the catalog is a sequence modality; generating it needs \
             autoregressive decoding, which aion-generate does not implement"
        );
    }
    if args.samples == 0 || args.steps == 0 {
        bail!("--samples and --steps must be at least 1");
    }
    if !(args.temperature.is_finite() && args.temperature >= 0.0) {
        bail!("--temperature must be a finite number ≥ 0");
    }
    if !(0.0..=1.0).contains(&args.top_p) {
        bail!("--top-p must be in [0, 1] (0 = off)");
    }
    if !args.bands.is_empty() && m.codec != CodecKind::Image {
        bail!("--bands applies to image targets only ({key} is not one)");
    }
    if args.wavelength_from.is_some() && m.codec != CodecKind::Spectrum {
        bail!("--wavelength-from applies to spectrum targets only ({key} is not one)");
    }
    Ok(m.into())
}

fn load_target<B: Backend>(
    args: &GenerateArgs,
    m: Modality,
    plan: &ModelPlan<B>,
    device: &B::Device,
) -> Result<Target<B>> {
    let key = m.token_key.to_string();
    let key = key.as_str();
    let cfg = plan.aion.config();
    if !cfg.domains_out.iter().any(|d| *d == key) {
        bail!(
            "--target {key}: the model has no decoder head for it (domains_out: {})",
            cfg.domains_out.join(", ")
        );
    }
    let bands = match m.codec {
        CodecKind::Catalog => bail!("--target {key}: decoding Catalog is not supported"),
        CodecKind::Image if args.bands.is_empty() => default_bands(&m),
        CodecKind::Image => Band::parse_list(&args.bands)
            .and_then(|b| Band::check_distinct(&b).map(|_| b))
            .with_context(|| format!("--bands {}", args.bands.join(",")))?,
        _ => Vec::new(),
    };
    let codec = Decoder::new(load_codec(&plan.common.model, &m, device)?, bands);
    let n = m.num_tokens();
    let t = args.temperature;
    let temps = args.temperature_schedule;
    let tokens = match args.token_schedule {
        TokenScheduleArg::Cosine => TokenSchedule::Cosine,
        TokenScheduleArg::Linear => TokenSchedule::Linear,
    };
    let schedule = match args.schedule {
        SchemeArg::Maskgit => Schedule::maskgit(args.steps, n, tokens, t, temps),
        SchemeArg::Roar => Schedule::roar(args.steps, n, t, temps),
        SchemeArg::SinglePass => Schedule::maskgit(1, n, TokenSchedule::Cosine, t, temps),
    }
    .with_context(|| format!("--schedule for {key} ({n} tokens)"))?;
    let grid = match &args.wavelength_from {
        None => None,
        Some(ds) => Some((ds.clone(), grid_len(&plan.common.catalog, ds)?)),
    };
    Ok(Target {
        modality: m,
        codec,
        schedule,
        filter: Filter {
            top_k: args.top_k,
            top_p: args.top_p,
        },
        grid,
    })
}

/// Row length of the `--wavelength-from` dataset, after checking it.
fn grid_len(catalog: &Catalog, ds: &str) -> Result<usize> {
    let info = catalog
        .info(ds)?
        .with_context(|| format!("--wavelength-from {ds}: no such dataset in the catalogue"))?;
    if info.kind == ColumnKind::Str || info.row_shape.len() != 1 || info.row_shape[0] == 0 {
        bail!(
            "--wavelength-from {ds}: need one 1-D numeric wavelength grid per row, found rows of \
             shape {:?} ({:?})",
            info.row_shape,
            info.kind
        );
    }
    if info.present_in.iter().any(|&p| !p) {
        bail!("--wavelength-from {ds}: missing from some catalogue files");
    }
    Ok(info.row_shape[0])
}

fn specs<B: Backend>(
    modalities: &ModalityTable,
    target: &Target<B>,
    samples: usize,
) -> Vec<DatasetSpec> {
    let key = &*target.modality.token_key;
    let mut specs = flag_specs(modalities);
    let schedule = serde_json::to_string(&target.schedule).expect("serialisable");
    specs.push(
        DatasetSpec::new(
            format!("gen/{key}/tokens"),
            Dtype::I64,
            &[samples, target.modality.num_tokens()],
            Some(NO_TOKEN as f64),
        )
        .attr("schedule", schedule)
        .attr(
            "seed_rule",
            "draws keyed by (seed, object_id, sample, step, position)",
        ),
    );
    specs.push(
        DatasetSpec::new(format!("gen/{key}/generated"), Dtype::U8, &[], Some(0.0))
            .attr("meaning", "1 = generated; 0 = the row had no usable input"),
    );
    for d in target.decoded() {
        let mut shape = vec![samples];
        shape.extend(&d.shape);
        let mut s = DatasetSpec::new(format!("gen/{key}/{}", d.name), Dtype::F32, &shape, None);
        for (k, v) in d.attrs {
            s = s.attr(&k, v);
        }
        specs.push(s);
    }
    if let Some((ds, l)) = &target.grid {
        specs.push(
            DatasetSpec::new(
                format!("gen/{key}/wavelength_resampled"),
                Dtype::F32,
                &[*l],
                None,
            )
            .units(
                "Angstrom",
                &format!("wavelengths of catalogue dataset {ds} (padding λ ≤ 0 as NaN)"),
            ),
        );
    }
    specs
}

fn run_plan<B: Backend>(
    args: &GenerateArgs,
    session: &Session,
    stop: &StopFlag,
    plan: &ModelPlan<B>,
    target: &Target<B>,
    device: &B::Device,
) -> Result<(Outcome, serde_json::Value)> {
    let catalog = &plan.common.catalog;
    let n = catalog.n_rows();
    let key = &*target.modality.token_key;
    let m = args.samples;
    let inputs = plan.inputs();
    announce_inputs(session, "inputs", &inputs, &plan.common);
    if session.is_root() {
        log::info!(
            "target {key}: {:?} schedule, {} step(s) {:?}, {m} sample(s) per row",
            target.schedule.scheme,
            target.schedule.steps.len(),
            target
                .schedule
                .steps
                .iter()
                .map(|s| s.tokens)
                .collect::<Vec<_>>()
        );
    }
    // Chunks sized by what is read and what is written (a row's generated images can outweigh
    // its inputs).
    let out_bytes =
        m * (8 * target.modality.num_tokens() + 4 * target.widths().iter().sum::<usize>());
    let chunk_rows = plan
        .common
        .chunk_rows_for(plan.codecs.row_bytes(catalog) + out_bytes, session.size());
    let config = serde_json::json!({
        "tool": TOOL, "model": args.io.model, "catalog": args.io.catalog, "output": args.io.output,
        "batch_size": plan.common.batch, "chunk_rows": chunk_rows.rows, "target": key,
        "schedule": args.schedule, "steps": target.schedule.steps, "scheme": target.schedule.scheme,
        "temperature": args.temperature, "temperature_schedule": args.temperature_schedule,
        "top_k": args.top_k, "top_p": args.top_p, "seed": args.seed, "samples": m,
        "wavelength_from": args.wavelength_from,
        "bands": target.codec.bands.iter().map(|b| b.name()).collect::<Vec<_>>(),
        "device": format!("{:?}", args.compute.device), "precision": args.compute.precision,
        "bindings": plan.codecs.bindings().collect::<Vec<_>>(), "object_id": plan.ids.source(),
    });
    let mut files = plan.files();
    files.extend(plan.common.model.codec_files(&target.modality));
    files.sort();
    files.dedup();
    let mut all_specs = vec![plan.ids.spec()];
    all_specs.extend(specs(plan.common.model.modalities(), target, m));
    let id = RunIdentity {
        side_outputs: crate::plot::paths(&figure::stem(&args.io.output, key)).to_vec(),
        ..RunIdentity::new(
            TOOL,
            config,
            &args.io,
            &plan.common,
            files,
            inputs_json(&inputs),
        )
    };
    let mut started = start(session, &id, chunk_rows, &all_specs, "generated")?;
    if let Some(summary) = started.already_complete(session) {
        return Ok((Outcome::Finished, summary));
    }
    let resumed_rows = started.progress.done();
    let run = &started.run;
    let stages = &run.stages;
    let mut tally = Tally::default();
    if let AnyCodec::Spectrum(c) = &target.codec.codec {
        write_constants(
            session,
            run,
            &[wavelength_grid(&format!("gen/{key}/wavelength"), c)],
        )?;
    }
    let grid_ds = target.grid.as_ref().map(|(d, _)| d.clone());
    let outcome = run_chunks(
        session,
        run,
        n,
        stop,
        |rows: Range<usize>| -> Result<ChunkInput> {
            let reading = std::time::Instant::now();
            let grids = match &grid_ds {
                Some(ds) if !rows.is_empty() => Some(
                    catalog
                        .read(ds, rows.clone())?
                        .to_f32()
                        .with_context(|| format!("--wavelength-from {ds}: not numeric"))?,
                ),
                _ => None,
            };
            let ids = plan.ids.read(catalog, &rows)?;
            stages.add(Stage::Read, reading);
            Ok((ids, plan.codecs.encode(catalog, rows, stages)?, grids))
        },
        |(ids, tokens, grids)| compute(args, plan, target, device, ids, tokens, grids, stages),
        |rows, out| {
            if let Some(o) = &out {
                tally.add(rows.start, &o.ids, &o.tokens);
            }
            write(
                plan.common.model.modalities(),
                run,
                target,
                rows,
                out.as_ref(),
            )
        },
        |r| started.progress.advance(r),
    )?;
    let secs = started.close(session, outcome)?;
    let rows_done = started.progress.done() - resumed_rows;
    let rate = rows_done as f64 / secs.max(1e-9);
    let cpu = started.cpu_seconds(session);
    let modalities = tally.finish(session)?;
    let figure = if outcome == Outcome::Finished {
        let drawn = if session.is_root() {
            figure::write(&args.io.output, started.run.out.hdf5(), target, m).map(Some)
        } else {
            Ok(None)
        };
        agree(session, drawn)?
    } else {
        None
    };
    if let Some(f) = &figure {
        log::info!("figure {} (and .svg)", f[0].display());
    }
    let summary = serde_json::json!({
        "figure": figure,
        "rows": n, "rows_this_run": rows_done, "samples_per_row": m, "seconds": secs,
        "cpu_seconds": cpu,
        "rows_per_second": rate, "samples_per_second": rate * m as f64, "ranks": session.size(),
        "finished": outcome == Outcome::Finished, "modalities": modalities,
    });
    if session.is_root() {
        log::info!(
            "generated {key} for {rows_done} rows × {m} sample(s) in {secs:.2} s on {} rank(s) \
             ({rate:.2} rows/s)",
            session.size()
        );
    }
    let summary = started.finish(session, &args.io.output, summary)?;
    Ok((outcome, summary))
}

/// Generates and decodes one chunk.
#[allow(clippy::too_many_arguments)]
fn compute<B: Backend>(
    args: &GenerateArgs,
    plan: &ModelPlan<B>,
    target: &Target<B>,
    device: &B::Device,
    ids: Vec<i64>,
    tokens: Vec<ModalityTokens>,
    grids: Option<Vec<f32>>,
    stages: &Stages,
) -> Result<Out> {
    let n = ids.len();
    let m = args.samples;
    let t = target.modality.num_tokens();
    let mut gen_tokens = vec![NO_TOKEN; n * m * t];
    let mut generated = vec![0u8; n];
    let rows_per_batch = (plan.common.batch / m).max(1);
    for b in batches(&tokens, &plan.is_input, n, rows_per_batch) {
        // Each row repeated M times: batch row j·M + s is sample s of row b.rows[j].
        let expanded = Batch {
            modalities: b.modalities.clone(),
            rows: b
                .rows
                .iter()
                .flat_map(|&r| std::iter::repeat_n(r, m))
                .collect(),
        };
        let draws = SeededDraws::new(
            args.seed,
            expanded
                .rows
                .iter()
                .enumerate()
                .map(|(i, &r)| (ids[r], (i % m) as u64))
                .collect(),
        );
        let inp = inputs::<B>(&tokens, &expanded, device);
        let g = stages
            .time(Stage::Sampler, || {
                plan.aion.generate(
                    &inp,
                    &target.modality,
                    &target.schedule,
                    target.filter,
                    &draws,
                )
            })
            .map_err(|e| anyhow::anyhow!("generating {}: {e}", target.modality.token_key))?;
        for (j, &r) in b.rows.iter().enumerate() {
            gen_tokens[r * m * t..(r + 1) * m * t]
                .copy_from_slice(&g.tokens[j * m * t..(j + 1) * m * t]);
            generated[r] = 1;
        }
    }
    let wavelengths = grids.as_ref().map(|g| {
        g.iter()
            .map(|&w| {
                if w.is_finite() && w > 0.0 {
                    w
                } else {
                    f32::NAN
                }
            })
            .collect()
    });
    let decoded = stages.time(Stage::Decode, || {
        decode(plan, target, device, &gen_tokens, &generated, m, grids)
    })?;
    Ok(Out {
        ids,
        tokens,
        generated_tokens: gen_tokens,
        generated,
        decoded,
        wavelengths,
    })
}

/// Decodes the generated samples of a chunk through the target's codec, in batches of
/// `--batch-size` samples; rows not generated stay NaN.
fn decode<B: Backend>(
    plan: &ModelPlan<B>,
    target: &Target<B>,
    device: &B::Device,
    tokens: &[i64],
    generated: &[u8],
    m: usize,
    grids: Option<Vec<f32>>,
) -> Result<Vec<Vec<f32>>> {
    let n = generated.len();
    let t = target.modality.num_tokens();
    let widths = target.widths();
    let mut out: Vec<Vec<f32>> = widths.iter().map(|w| vec![f32::NAN; n * m * w]).collect();
    // (row, sample) pairs to decode, as flat sample indices r·M + s.
    let todo: Vec<usize> = (0..n)
        .filter(|&r| generated[r] == 1)
        .flat_map(|r| r * m..(r + 1) * m)
        .collect();
    for part in todo.chunks(plan.common.batch.max(1)) {
        let ids: Vec<i64> = part
            .iter()
            .flat_map(|&i| tokens[i * t..(i + 1) * t].iter().copied())
            .collect();
        let batch = || {
            Tensor::<B, 2, Int>::from_data(TensorData::new(ids.clone(), [part.len(), t]), device)
        };
        let host = |x: TensorData| -> Result<Vec<f32>> {
            x.convert::<f32>()
                .to_vec()
                .map_err(|e| anyhow::anyhow!("cannot read decoded data: {e:?}"))
        };
        let values: Vec<Vec<f32>> = match &target.codec.codec {
            AnyCodec::Scalar(c) => vec![c.decode(&ids)],
            AnyCodec::Image(c) => {
                vec![host(c.decode(batch(), &target.codec.bands)?.into_data())?]
            }
            AnyCodec::Field(c) => vec![host(c.decode(batch())?.into_data())?],
            AnyCodec::Catalog(_) => unreachable!("refused when loading the target"),
            AnyCodec::Spectrum(c) => {
                let ws: Option<Vec<Vec<f32>>> = grids.as_ref().map(|g| {
                    let l = g.len() / n;
                    part.iter()
                        .map(|&i| g[(i / m) * l..(i / m + 1) * l].to_vec())
                        .collect()
                });
                let d = c.decode(batch(), ws.as_deref())?;
                let mut v = vec![host(d.latent_flux.into_data())?];
                if let Some(ws) = &ws {
                    let mut flat = Vec::with_capacity(part.len() * ws[0].len());
                    // Padding (λ ≤ 0, NaN) and wavelengths outside the latent grid (the
                    // codec's mask: the reference would return the bare scale there) → NaN.
                    for ((f, w), outside) in d.flux.iter().zip(ws).zip(&d.mask) {
                        flat.extend(f.iter().zip(w).zip(outside).map(|((&x, &lam), &out)| {
                            if lam.is_finite() && lam > 0.0 && !out {
                                x
                            } else {
                                f32::NAN
                            }
                        }));
                    }
                    v.push(flat);
                }
                v
            }
        };
        for ((buf, w), vals) in out.iter_mut().zip(&widths).zip(values) {
            for (k, &i) in part.iter().enumerate() {
                buf[i * w..(i + 1) * w].copy_from_slice(&vals[k * w..(k + 1) * w]);
            }
        }
    }
    Ok(out)
}

fn write<B: Backend>(
    modalities: &ModalityTable,
    run: &RunOutput,
    target: &Target<B>,
    rows: Range<usize>,
    out: Option<&Out>,
) -> Result<()> {
    let key = &*target.modality.token_key;
    let ids = out.map_or(&[][..], |o| &o.ids[..]);
    run.sets.write(&run.out, "object_id", rows.start, ids)?;
    write_masks(
        modalities,
        run,
        rows.start,
        out.map_or(&[][..], |o| &o.tokens[..]),
        rows.len(),
    )?;
    run.sets.write(
        &run.out,
        &format!("gen/{key}/tokens"),
        rows.start,
        out.map_or(&[][..], |o| &o.generated_tokens[..]),
    )?;
    run.sets.write(
        &run.out,
        &format!("gen/{key}/generated"),
        rows.start,
        out.map_or(&[][..], |o| &o.generated[..]),
    )?;
    for (i, d) in target.decoded().iter().enumerate() {
        run.sets.write(
            &run.out,
            &format!("gen/{key}/{}", d.name),
            rows.start,
            out.map_or(&[][..], |o| &o.decoded[i][..]),
        )?;
    }
    if target.grid.is_some() {
        run.sets.write(
            &run.out,
            &format!("gen/{key}/wavelength_resampled"),
            rows.start,
            out.and_then(|o| o.wavelengths.as_deref()).unwrap_or(&[]),
        )?;
    }
    Ok(())
}
