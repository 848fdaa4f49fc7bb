//! `aion-tokenize`: catalogue columns → AION tokens, one HDF5 file written by all ranks.
//!
//! Output datasets (see `docs/hdf5-schema.md`): `object_id`, one `(N, tokens)` int64 dataset per
//! token key (−1 where absent or rejected), and the `modalities_used` / `modalities_rejected` bit
//! masks. The run is chunked and resumable like every tool (`pipeline`).

use std::ops::Range;

use aion_mpi::Session;
use anyhow::Result;
use burn::tensor::backend::Backend;
use clap::Parser;

use crate::args::IoArgs;
use crate::backend::ComputeArgs;
use crate::cli::{Report, RunContext, Tool};
use crate::codec_set::{CodecSet, ModalityTokens, NO_TOKEN};
use crate::collective::agree;
use crate::output::{ObjectIds, Tally, flag_specs, write_masks};
use crate::pipeline::{DatasetSpec, Dtype, Outcome, run_chunks};
use crate::run_config;
use crate::signals::StopFlag;
use crate::stages::Stage;
use crate::tool::{RunIdentity, start};

/// Tool name.
pub const TOOL: &str = "aion-tokenize";

/// Command line of `aion-tokenize`.
#[derive(Debug, Parser)]
#[command(name = TOOL, version, about = "Turn catalogue columns into AION-1 tokens, in parallel, into one HDF5 file.",
    after_help = crate::exit::EXIT_CODES_HELP)]
pub struct TokenizeArgs {
    /// Input, output and mapping options.
    #[command(flatten)]
    pub io: IoArgs,
    /// Where the image and spectrum codecs run.
    #[command(flatten)]
    pub compute: ComputeArgs,

    /// Decode instead: read datasets named by token keys (e.g. an aion-tokenize output) and
    /// write the data they stand for into `decoded/<token_key>` (see `docs/cli.md`).
    #[arg(long)]
    pub decode: bool,
}

crate::cli::model_tool_args!(TokenizeArgs);

/// The tool (`aion_app::cli::main::<TokenizeArgs>()` is the binary).
impl Tool for TokenizeArgs {
    const NAME: &'static str = TOOL;
    const STOP_SIGNALS: bool = true;

    /// Returns how the run ended and the summary (also in `<output>.run.json`).
    fn run<B: Backend>(&self, ctx: &RunContext, device: B::Device) -> Result<Report> {
        let (session, stop) = (ctx.session(), &ctx.stop);
        run_tool::<B>(self, session, stop, device).map(Report::from)
    }
}

/// One chunk, tokenized.
struct Chunk {
    ids: Vec<i64>,
    tokens: Vec<ModalityTokens>,
}

/// Loads the codecs and runs (or decodes, `--decode`).
fn run_tool<B: Backend>(
    args: &TokenizeArgs,
    session: &Session,
    stop: &StopFlag,
    device: B::Device,
) -> Result<(Outcome, serde_json::Value)> {
    if args.decode {
        return run_decode::<B>(args, session, stop, &device);
    }
    let plan = agree(
        session,
        (|| {
            let common = run_config::Common::resolve(&args.io, &[])?;
            let codecs = CodecSet::<B>::load(
                &common.model,
                &common.bindings,
                &common.catalog,
                common.pad,
                &device,
            )?;
            let ids = ObjectIds::detect(&common.catalog)?;
            Ok((common, codecs, ids))
        })(),
    )?;
    let (common, codecs, ids) = plan;
    run_plan(args, session, stop, &common, &codecs, &ids)
}

fn run_plan<B: Backend>(
    args: &TokenizeArgs,
    session: &Session,
    stop: &StopFlag,
    common: &run_config::Common,
    codecs: &CodecSet<B>,
    ids: &ObjectIds,
) -> Result<(Outcome, serde_json::Value)> {
    let catalog = &common.catalog;
    let n = catalog.n_rows();
    let chunk_rows = common.chunk_rows_for(codecs.row_bytes(catalog), session.size());
    let tokenized: Vec<&run_config::Binding> = codecs.bindings().collect();
    run_config::announce_inputs(session, "tokenized", &tokenized, common);
    let config = serde_json::json!({
        "tool": TOOL, "model": args.io.model, "catalog": args.io.catalog, "output": args.io.output,
        "batch_size": common.batch, "chunk_rows": chunk_rows.rows,
        "bindings": codecs.bindings().collect::<Vec<_>>(), "object_id": ids.source(),
    });
    let mut specs = vec![ids.spec()];
    specs.extend(flag_specs(common.model.modalities()));
    for b in codecs.bindings() {
        let m = b.modality();
        specs.push(
            DatasetSpec::new(
                &*m.token_key,
                Dtype::I64,
                &[m.num_tokens()],
                Some(NO_TOKEN as f64),
            )
            .attr("source", b.describe()),
        );
    }
    let id = RunIdentity::new(
        TOOL,
        config,
        &args.io,
        common,
        codecs.files().to_vec(),
        run_config::inputs_json(&tokenized),
    );
    let mut started = start(session, &id, chunk_rows, &specs, "tokenized")?;
    if let Some(summary) = started.already_complete(session) {
        return Ok((Outcome::Finished, summary));
    }
    let run = &started.run;
    let stages = &run.stages;
    let mut tally = Tally::default();
    let outcome = run_chunks(
        session,
        run,
        n,
        stop,
        |rows: Range<usize>| -> Result<Chunk> {
            let ids = stages.time(Stage::Read, || ids.read(catalog, &rows))?;
            Ok(Chunk {
                ids,
                tokens: codecs.encode(catalog, rows, stages)?,
            })
        },
        Ok,
        |rows, chunk| {
            let empty = Chunk {
                ids: Vec::new(),
                tokens: Vec::new(),
            };
            let c = chunk.as_ref().unwrap_or(&empty);
            run.sets.write(&run.out, "object_id", rows.start, &c.ids)?;
            write_masks(
                common.model.modalities(),
                run,
                rows.start,
                &c.tokens,
                rows.len(),
            )?;
            for (i, b) in codecs.bindings().enumerate() {
                let tokens = c.tokens.get(i).map_or(&[][..], |t| &t.tokens[..]);
                run.sets
                    .write(&run.out, b.token_key(), rows.start, tokens)?;
            }
            tally.add(rows.start, &c.ids, &c.tokens);
            Ok(())
        },
        |rows| started.progress.advance(rows),
    )?;
    let secs = started.close(session, outcome)?;
    let this_run = started.progress.this_run();
    let summary = summarize(session, tally, n, this_run, secs, outcome)?;
    let summary = started.finish(session, &args.io.output, summary)?;
    Ok((outcome, summary))
}

fn summarize(
    session: &Session,
    tally: Tally,
    n: usize,
    this_run: u64,
    secs: f64,
    outcome: Outcome,
) -> Result<serde_json::Value> {
    let per = tally.finish(session)?;
    if session.is_root() {
        match outcome {
            Outcome::Finished => log::info!(
                "tokenized {this_run} rows in {secs:.2} s on {} rank(s)",
                session.size()
            ),
            Outcome::Stopped => log::warn!(
                "stopped by a signal after {secs:.2} s; progress saved, run again to continue"
            ),
        }
    }
    Ok(
        serde_json::json!({ "rows": n, "seconds": secs, "ranks": session.size(), "finished": outcome == Outcome::Finished, "modalities": per }),
    )
}

fn run_decode<B: Backend>(
    args: &TokenizeArgs,
    session: &Session,
    stop: &StopFlag,
    device: &B::Device,
) -> Result<(Outcome, serde_json::Value)> {
    let (common, decoders, ids) = agree(
        session,
        (|| {
            let common = run_config::Common::resolve(&args.io, &[])?;
            let decoders =
                crate::decode::DecoderSet::<B>::load(&common.model, &common.catalog, device)?;
            let ids = ObjectIds::detect(&common.catalog)?;
            Ok((common, decoders, ids))
        })(),
    )?;
    let catalog = &common.catalog;
    let n = catalog.n_rows();
    let chunk_rows = common.chunk_rows_for(64 * 1024, session.size());
    let config = serde_json::json!({
        "tool": TOOL, "mode": "decode", "model": args.io.model, "catalog": args.io.catalog,
        "output": args.io.output, "chunk_rows": chunk_rows.rows, "decoded": decoders.datasets(),
    });
    let mut specs = vec![ids.spec()];
    specs.extend(flag_specs(common.model.modalities()));
    let out_specs = decoders.specs();
    specs.extend(out_specs.iter().cloned());
    let id = RunIdentity::new(
        TOOL,
        config,
        &args.io,
        &common,
        decoders.files().to_vec(),
        decoders
            .datasets()
            .into_iter()
            .map(|d| (d.clone(), serde_json::Value::from(format!("{d} (tokens)"))))
            .collect::<serde_json::Map<_, _>>()
            .into(),
    );
    let mut started = start(session, &id, chunk_rows, &specs, "decoded")?;
    if let Some(summary) = started.already_complete(session) {
        return Ok((Outcome::Finished, summary));
    }
    let run = &started.run;
    let stages = &run.stages;
    crate::output::write_constants(session, run, &decoders.constants())?;
    let outcome = run_chunks(
        session,
        run,
        n,
        stop,
        |rows: Range<usize>| -> Result<(Vec<i64>, crate::decode::Decoded)> {
            Ok((
                stages.time(Stage::Read, || ids.read(catalog, &rows))?,
                stages.time(Stage::Decode, || decoders.decode(catalog, rows))?,
            ))
        },
        Ok,
        |rows, chunk| {
            run.sets.write(
                &run.out,
                "object_id",
                rows.start,
                chunk.as_ref().map_or(&[][..], |c| &c.0[..]),
            )?;
            write_masks(
                common.model.modalities(),
                run,
                rows.start,
                chunk.as_ref().map_or(&[][..], |c| &c.1.tokens[..]),
                rows.len(),
            )?;
            let values: Vec<&Vec<f32>> = chunk
                .as_ref()
                .map(|c| c.1.values.iter().flatten().collect())
                .unwrap_or_default();
            for (i, spec) in out_specs.iter().enumerate() {
                run.sets.write(
                    &run.out,
                    &spec.name,
                    rows.start,
                    values.get(i).map_or(&[][..], |v| &v[..]),
                )?;
            }
            Ok(())
        },
        |r| started.progress.advance(r),
    )?;
    let secs = started.close(session, outcome)?;
    let summary = serde_json::json!({ "rows": n, "seconds": secs, "ranks": session.size(), "finished": outcome == Outcome::Finished, "decoded": decoders.datasets() });
    let summary = started.finish(session, &args.io.output, summary)?;
    Ok((outcome, summary))
}
