//! `aion-embed`: one AION-1 embedding per catalogue object, into one HDF5 file.
//!
//! Raw catalogue columns are tokenized on the fly (or token datasets used as they are), each
//! row's available modalities are encoded together (absent or rejected ones are left out, not
//! zero-filled), and the context vectors are averaged over the row's valid tokens — all of
//! them, not the reference `encode`'s default first 256. With `--pool none` the per-token
//! context vectors are written too, in a fixed layout (input modalities in model order, their
//! tokens in order) with a validity mask.

use std::ops::Range;
use std::time::Instant;

use aion_model::fourm::pool_mean;
use aion_mpi::Session;
use anyhow::{Context, Result};
use burn::tensor::backend::Backend;
use clap::{Parser, ValueEnum};

use crate::args::IoArgs;
use crate::backend::ComputeArgs;
use crate::batching::{batches, inputs};
use crate::cli::{Report, RunContext, Tool};
use crate::codec_set::ModalityTokens;
use crate::collective::agree;
use crate::model_plan::ModelPlan;
use crate::output::{Tally, flag_specs, write_masks};
use crate::pipeline::{DatasetSpec, Dtype, Outcome, run_chunks};
use crate::run_config::{announce_inputs, inputs_json};
use crate::signals::StopFlag;
use crate::stages::{Stage, Stages};
use crate::tool::{RunIdentity, start};

/// Tool name.
pub const TOOL: &str = "aion-embed";

/// How token vectors become the object's embedding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
pub enum Pool {
    /// Mean over the row's valid tokens (`embedding`).
    Mean,
    /// The mean, plus every token's context vector (`tokens/context`, `tokens/valid`).
    None,
}

/// Command line of `aion-embed`.
#[derive(Debug, Parser)]
#[command(name = TOOL, version, about = "Compute AION-1 embeddings of every catalogue object, in parallel, into one HDF5 file.",
    after_help = crate::exit::EXIT_CODES_HELP)]
pub struct EmbedArgs {
    /// Input, output and mapping options.
    #[command(flatten)]
    pub io: IoArgs,
    /// Device, precision, threads.
    #[command(flatten)]
    pub compute: ComputeArgs,
    /// Pooling of the context vectors.
    #[arg(long, value_enum, default_value = "mean")]
    pub pool: Pool,
}

crate::cli::model_tool_args!(EmbedArgs);

/// The tool (`aion_app::cli::main::<EmbedArgs>()` is the binary).
impl Tool for EmbedArgs {
    const NAME: &'static str = TOOL;
    const STOP_SIGNALS: bool = true;

    /// Returns how the run ended and the summary (also in `<output>.run.json`).
    fn run<B: Backend>(&self, ctx: &RunContext, device: B::Device) -> Result<Report> {
        let session = ctx.session();
        let plan = agree(
            session,
            ModelPlan::<B>::load(&self.io, &device, &[], session.size()),
        )?;
        run_plan(self, session, &ctx.stop, &plan, &device).map(Report::from)
    }
}

/// A chunk's embeddings.
struct Out {
    ids: Vec<i64>,
    tokens: Vec<ModalityTokens>,
    embedding: Vec<f32>,
    context: Vec<f32>,
    valid: Vec<u8>,
}

/// Layout of `--pool none`: (token offset, modality) of each input modality.
fn layout<B: Backend>(plan: &ModelPlan<B>) -> (Vec<usize>, usize) {
    let mut offsets = Vec::new();
    let mut k = 0;
    for (b, &inp) in plan.codecs.bindings().zip(&plan.is_input) {
        offsets.push(k);
        if inp {
            k += b.modality().num_tokens();
        }
    }
    (offsets, k)
}

fn run_plan<B: Backend>(
    args: &EmbedArgs,
    session: &Session,
    stop: &StopFlag,
    plan: &ModelPlan<B>,
    device: &B::Device,
) -> Result<(Outcome, serde_json::Value)> {
    let catalog = &plan.common.catalog;
    let n = catalog.n_rows();
    let d = plan.aion.config().dim;
    let (offsets, k_all) = layout(plan);
    let inputs = plan.inputs();
    announce_inputs(session, "inputs", &inputs, &plan.common);
    let config = serde_json::json!({
        "tool": TOOL, "model": args.io.model, "catalog": args.io.catalog, "output": args.io.output,
        "batch_size": plan.common.batch, "chunk_rows": plan.chunk.rows, "pool": args.pool,
        "device": format!("{:?}", args.compute.device), "precision": args.compute.precision,
        "bindings": plan.codecs.bindings().collect::<Vec<_>>(), "object_id": plan.ids.source(),
    });
    let mut specs = vec![plan.ids.spec()];
    specs.extend(flag_specs(plan.common.model.modalities()));
    specs.push(
        DatasetSpec::new("embedding", Dtype::F32, &[d], None)
            .units(
                "",
                "AION embedding: mean context vector over the row's valid tokens",
            )
            .attr("pooling", "mean over the row's valid tokens"),
    );
    if args.pool == Pool::None {
        let layout_desc: Vec<String> = plan
            .inputs()
            .iter()
            .map(|b| format!("{}:{}", b.token_key(), b.modality().num_tokens()))
            .collect();
        specs.push(
            DatasetSpec::new("tokens/context", Dtype::F32, &[k_all, d], None)
                .units("", "AION context vector of each token")
                .attr("layout", layout_desc.join(",")),
        );
        specs.push(DatasetSpec::new(
            "tokens/valid",
            Dtype::U8,
            &[k_all],
            Some(0.0),
        ));
    }
    let id = RunIdentity::new(
        TOOL,
        config,
        &args.io,
        &plan.common,
        plan.files(),
        inputs_json(&inputs),
    );
    let mut started = start(session, &id, plan.chunk, &specs, "embedded")?;
    if let Some(summary) = started.already_complete(session) {
        return Ok((Outcome::Finished, summary));
    }
    let run = &started.run;
    let stages = &run.stages;
    let (mut embedded, mut processed) = (0u64, 0u64);
    let mut tally = Tally::default();
    let outcome = run_chunks(
        session,
        run,
        n,
        stop,
        |rows: Range<usize>| -> Result<(Vec<i64>, Vec<ModalityTokens>)> {
            Ok((
                stages.time(Stage::Read, || plan.ids.read(catalog, &rows))?,
                plan.codecs.encode(catalog, rows, stages)?,
            ))
        },
        |(ids, tokens)| {
            let layout = (&offsets[..], k_all);
            compute(plan, args.pool, device, ids, tokens, layout, stages)
        },
        |rows, out| {
            let empty = Out {
                ids: Vec::new(),
                tokens: Vec::new(),
                embedding: Vec::new(),
                context: Vec::new(),
                valid: Vec::new(),
            };
            let o = out.as_ref().unwrap_or(&empty);
            let w =
                |name: &str, start| -> Result<()> { run.sets.write(&run.out, name, start, &o.ids) };
            w("object_id", rows.start)?;
            embedded += (0..rows.len())
                .filter(|&r| o.tokens.iter().any(|t| t.used[r]))
                .count() as u64;
            processed += rows.len() as u64;
            tally.add(rows.start, &o.ids, &o.tokens);
            write_masks(
                plan.common.model.modalities(),
                run,
                rows.start,
                &o.tokens,
                rows.len(),
            )?;
            run.sets
                .write(&run.out, "embedding", rows.start, &o.embedding)?;
            if args.pool == Pool::None {
                run.sets
                    .write(&run.out, "tokens/context", rows.start, &o.context)?;
                run.sets
                    .write(&run.out, "tokens/valid", rows.start, &o.valid)?;
            }
            Ok(())
        },
        |r| started.progress.advance(r),
    )?;
    let secs = started.close(session, outcome)?;
    let cpu = started.cpu_seconds(session);
    let this_run = started.progress.this_run();
    let embedded_now = session.sum_u64(embedded);
    let processed = session.sum_u64(processed);
    let modalities = tally.finish(session)?;
    // Over the whole file (a resumed run wrote only some rows): each rank counts its block.
    let embedded = if outcome == Outcome::Finished {
        let block = aion_mpi::block_range(n, session.rank(), session.size());
        let used: Vec<u64> = agree(
            session,
            crate::output::read_rows(&*started.run.out.dataset("modalities_used")?, block),
        )?;
        session.sum_u64(used.iter().filter(|&&u| u != 0).count() as u64)
    } else {
        embedded_now
    };
    if session.is_root() {
        log::info!(
            "embedded {embedded_now} of {this_run} rows in {secs:.2} s on {} rank(s) ({:.1} rows/s)",
            session.size(),
            this_run as f64 / secs.max(1e-9)
        );
        if outcome == Outcome::Finished && embedded < n as u64 {
            log::warn!(
                "{} row(s) have no usable modality: their embedding is NaN (modalities_used = 0)",
                n as u64 - embedded
            );
        }
    }
    let summary = serde_json::json!({ "rows": n, "processed": processed, "embedded": embedded, "seconds": secs, "cpu_seconds": cpu, "ranks": session.size(), "finished": outcome == Outcome::Finished, "modalities": modalities });
    let summary = started.finish(session, &args.io.output, summary)?;
    Ok((outcome, summary))
}

/// Runs the model on a chunk: embeddings (NaN for rows without input) and, for `--pool none`,
/// the per-token context in the fixed `layout` (token offset of each input modality, tokens in
/// all).
fn compute<B: Backend>(
    plan: &ModelPlan<B>,
    pool: Pool,
    device: &B::Device,
    ids: Vec<i64>,
    tokens: Vec<ModalityTokens>,
    (offsets, k_all): (&[usize], usize),
    stages: &Stages,
) -> Result<Out> {
    let n = ids.len();
    let d = plan.aion.config().dim;
    let mut embedding = vec![f32::NAN; n * d];
    let mut context = if pool == Pool::None {
        vec![f32::NAN; n * k_all * d]
    } else {
        Vec::new()
    };
    let mut valid = if pool == Pool::None {
        vec![0u8; n * k_all]
    } else {
        Vec::new()
    };
    for b in batches(&tokens, &plan.is_input, n, plan.common.batch) {
        let encoding = Instant::now();
        let inp = inputs::<B>(&tokens, &b, device);
        let enc = plan
            .aion
            .encode(&inp, None)
            .context("cannot encode a batch")?;
        let mask: Vec<bool> = enc
            .mask
            .clone()
            .into_data()
            .to_vec()
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        let ctx: Vec<f32> = enc
            .context
            .into_data()
            .convert::<f32>()
            .to_vec()
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        stages.add(Stage::Encoder, encoding);
        let pooling = Instant::now();
        let k = mask.len() / b.rows.len();
        for (j, &r) in b.rows.iter().enumerate() {
            let row_ctx = &ctx[j * k * d..(j + 1) * k * d];
            let row_mask = &mask[j * k..(j + 1) * k];
            let e = &mut embedding[r * d..(r + 1) * d];
            pool_mean(row_ctx, row_mask, e);
            if pool == Pool::None {
                scatter(
                    &tokens,
                    &b.modalities,
                    r,
                    row_ctx,
                    row_mask,
                    offsets,
                    k_all,
                    &mut context,
                    &mut valid,
                );
            }
        }
        stages.add(Stage::Pooling, pooling);
    }
    Ok(Out {
        ids,
        tokens,
        embedding,
        context,
        valid,
    })
}

/// Puts a row's context vectors (valid tokens first in input order, as the encoder returns
/// them) back at their fixed positions.
#[allow(clippy::too_many_arguments)]
fn scatter(
    tokens: &[ModalityTokens],
    modalities: &[usize],
    r: usize,
    ctx: &[f32],
    mask: &[bool],
    offsets: &[usize],
    k_all: usize,
    context: &mut [f32],
    valid: &mut [u8],
) {
    let d = ctx.len() / mask.len();
    let mut next = 0;
    for &i in modalities {
        let t = &tokens[i];
        let nt = t.modality.num_tokens();
        for j in 0..nt {
            let masked = t.token_mask.as_ref().is_some_and(|m| m[r * nt + j]);
            if masked {
                continue;
            }
            let pos = r * k_all + offsets[i] + j;
            context[pos * d..(pos + 1) * d].copy_from_slice(&ctx[next * d..(next + 1) * d]);
            valid[pos] = 1;
            next += 1;
        }
    }
    debug_assert_eq!(next, mask.iter().filter(|&&m| !m).count());
}

#[cfg(test)]
mod tests {
    #[test]
    fn pool_mean_skips_masked_tokens() {
        let ctx = [1.0, 2.0, 100.0, 100.0, 3.0, 4.0];
        let mut out = [0.0; 2];
        aion_model::fourm::pool_mean(&ctx, &[false, true, false], &mut out);
        assert_eq!(out, [2.0, 3.0]);
        aion_model::fourm::pool_mean(&ctx, &[true, true, true], &mut out);
        assert!(out[0].is_nan());
    }
}
