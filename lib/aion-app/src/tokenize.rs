//! `aion-tokenize`: catalogue columns → AION tokens, one HDF5 file written by all ranks.
//!
//! Rows are split over ranks in contiguous blocks; each rank reads its rows in batches,
//! tokenizes every bound modality and writes the batch collectively. Output datasets (see
//! `docs/hdf5-schema.md`): `object_id`, one `(N, tokens)` int64 dataset per token key (−1 where
//! absent or rejected), `modalities_used` and `modalities_rejected` bit masks.

use std::ops::Range;

use aion_io::OutputFile;
use aion_mpi::{Session, block_range, blocks};
use anyhow::{Context, Result};
use clap::Parser;

use crate::args::IoArgs;
use crate::codec_set::{CodecSet, ModalityTokens, NO_TOKEN};
use crate::collective::agree;
use crate::output::{ObjectIds, RowFlags};
use crate::progress::Progress;
use crate::run_config::{self, RunConfig};
use crate::{output, provenance};

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
}

/// Everything resolved before the first collective write.
struct Plan {
    catalog: aion_io::Catalog,
    codecs: CodecSet,
    ids: ObjectIds,
    batch: usize,
    config_json: String,
}

fn plan(args: &TokenizeArgs) -> Result<Plan> {
    let io = &args.io;
    let cfg = io
        .config
        .as_deref()
        .map(RunConfig::load)
        .transpose()?
        .unwrap_or_default();
    let mut explicit: Vec<(String, String)> = cfg
        .map
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for m in &io.maps {
        explicit.push(run_config::parse_map(m)?);
    }
    let batch = io.batch_size.or(cfg.batch_size).unwrap_or(256).max(1);
    anyhow::ensure!(
        io.model.is_dir(),
        "model directory {} does not exist",
        io.model.display()
    );
    let mut catalog = aion_io::Catalog::open(&io.catalog)?;
    let bindings = run_config::resolve(&explicit, |d| catalog.has(d))?;
    let candidates = output::candidate_datasets(&bindings);
    catalog.size_by(&candidates)?;
    let codecs = CodecSet::load(&io.model, &bindings, &catalog)?;
    let ids = ObjectIds::detect(&catalog)?;
    let used: Vec<_> = codecs.bindings().cloned().collect();
    let config_json = serde_json::json!({
        "tool": TOOL, "model": io.model, "catalog": io.catalog, "output": io.output,
        "batch_size": batch, "bindings": used, "object_id": ids.source(),
    })
    .to_string();
    Ok(Plan {
        catalog,
        codecs,
        ids,
        batch,
        config_json,
    })
}

/// Runs `aion-tokenize`; returns the run summary (also written to `<output>.run.json`).
pub fn run(args: &TokenizeArgs, session: &Session) -> Result<serde_json::Value> {
    let plan = agree(session, plan(args))?;
    let n = plan.catalog.n_rows();
    let mine = block_range(n, session.rank(), session.size());
    for b in plan.codecs.bindings() {
        if session.is_root() {
            log::info!("{}", b.describe());
        }
    }
    log::info!(
        "rows {}..{} of {n} (batch {})",
        mine.start,
        mine.end,
        plan.batch
    );

    let files = plan.codecs.files().to_vec();
    let checksums = agree(
        session,
        provenance::checksums(session, &args.io.model, &files),
    )?;
    let prov = provenance::build(
        session,
        TOOL,
        plan.config_json.clone(),
        &args.io.model,
        checksums,
        &plan.catalog,
    );
    let out = OutputFile::create(&args.io.output, session.world())
        .with_context(|| format!("cannot create {}", args.io.output.display()))?;
    prov.write(&out)?;
    let ids_ds = plan.ids.create(&out, n)?;
    let flags = RowFlags::create(&out, n)?;
    let token_ds: Vec<_> = plan
        .codecs
        .bindings()
        .map(|b| {
            let m = b.modality();
            let ds =
                out.create_dataset::<i64>(m.token_key, n, &[m.num_tokens()], Some(NO_TOKEN))?;
            out.set_dataset_attr_str(&ds, "source", &b.describe())?;
            Ok(ds)
        })
        .collect::<Result<_>>()?;

    let mut progress = Progress::new(session.is_root(), n as u64, "tokenized");
    let rounds = n.div_ceil(session.size()).div_ceil(plan.batch);
    let mut my_blocks = blocks(mine, plan.batch);
    let mut counts = vec![[0u64; 2]; token_ds.len()];
    let mut done = 0u64;
    for _ in 0..rounds {
        let rows: Range<usize> = my_blocks.next().unwrap_or(0..0);
        let step = encode_block(&plan, &rows);
        let batch = agree(session, step)?;
        plan.ids.write(&out, &ids_ds, &plan.catalog, &rows)?;
        for ((ds, t), c) in token_ds.iter().zip(&batch).zip(&mut counts) {
            out.write_rows(ds, rows.start, &t.tokens)?;
            c[0] += t.used.iter().filter(|&&u| u).count() as u64;
            c[1] += t.rejected.iter().filter(|&&r| r).count() as u64;
        }
        flags.write(&out, rows.start, &batch)?;
        done += session.sum_u64(rows.len() as u64);
        progress.set(done);
    }
    let secs = progress.finish();
    out.set_attr_str(
        "end_time",
        &session.broadcast_string(&provenance::now_utc()),
    )?;
    out.flush()?;
    let summary = summarize(session, &plan, &counts, n, secs);
    provenance::write_sidecar(session, &args.io.output, &prov, &summary)?;
    Ok(summary)
}

fn encode_block(plan: &Plan, rows: &Range<usize>) -> Result<Vec<ModalityTokens>> {
    plan.codecs.encode(&plan.catalog, rows.clone())
}

fn summarize(
    session: &Session,
    plan: &Plan,
    counts: &[[u64; 2]],
    n: usize,
    secs: f64,
) -> serde_json::Value {
    let mut per = serde_json::Map::new();
    for (b, c) in plan.codecs.bindings().zip(counts) {
        let (used, rejected) = (session.sum_u64(c[0]), session.sum_u64(c[1]));
        per.insert(
            b.token_key.to_string(),
            serde_json::json!({ "used": used, "rejected": rejected }),
        );
        if session.is_root() && rejected > 0 {
            log::warn!(
                "{}: {rejected} row(s) with unusable values (flagged in modalities_rejected)",
                b.token_key
            );
        }
    }
    if session.is_root() {
        log::info!(
            "tokenized {n} rows in {secs:.2} s ({:.0} rows/s) on {} rank(s)",
            n as f64 / secs.max(1e-9),
            session.size()
        );
    }
    serde_json::json!({ "rows": n, "seconds": secs, "ranks": session.size(), "modalities": per })
}
