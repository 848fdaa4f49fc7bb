//! `aion-search`: exact top-k similarity search over catalogue embeddings, across MPI ranks.
//!
//! 1. Every rank opens the embedding files (the `(N, D)` `embedding` datasets of `aion-embed`
//!    outputs, concatenated) and the queries are resolved: object ids are looked up by all ranks
//!    in their own blocks ([`queries::lookup`]), or vectors are read from a file; rank 0 reads
//!    the query vectors and broadcasts them.
//! 2. Each rank scans its contiguous block of rows in chunks ([`scan`]): one f32 GEMM per tile
//!    of rows and block of queries, then a bounded heap per query ([`topk`]). Rows with
//!    `modalities_used == 0`, non-finite values, or (cosine) zero norm are skipped and counted.
//! 3. The per-rank top-k lists are merged on rank 0 along a binomial tree
//!    ([`aion_mpi::Session::reduce_bytes`]); the order `(score, row)` is total, so the result is
//!    the exact global top-k, identical for any rank or thread count.
//! 4. The result (per query: neighbour object ids, rows, scores, sorted best first) goes to an
//!    HDF5 or CSV file, plus `<output>.run.json`, and, when the embedded catalogue has images,
//!    a figure of the queries' and neighbours' cutouts ([`figure`]).
//!
//! Every step that can fail on some ranks only goes through [`crate::collective::agree`].

pub mod figure;
pub mod kernel;
pub mod queries;
pub mod scan;
pub mod topk;
pub mod write;

use std::path::PathBuf;
use std::time::Instant;

use aion_mpi::{Session, block_range};
use anyhow::{Result, bail, ensure};
use burn::tensor::backend::Backend;
use clap::{ArgGroup, Parser};

use crate::cli::{Report, RunContext, Tool, ToolArgs};
use crate::collective::agree;
use crate::guard::{Existing, Inputs, Recognise, claim_output};
use crate::progress::Progress;
use crate::provenance;
pub use kernel::Metric;
use queries::{QuerySet, Status, Table};
use write::{Format, Tables};

/// Tool name.
pub const TOOL: &str = "aion-search";

/// Default rows per chunk (24 MiB of f32 at D = 768).
pub const DEFAULT_CHUNK_ROWS: usize = 8192;

/// What `--threads` defaults to.
pub const THREADS_DEFAULT: &str = "$OMP_NUM_THREADS, else 1";

/// Largest `queries × k` a run accepts (the merged lists travel between ranks as one message).
const MAX_RESULTS: usize = 50_000_000;

/// Command line of `aion-search`.
#[derive(Debug, Parser)]
#[command(name = TOOL, version,
    about = "Exact top-k similarity search over AION embeddings (aion-embed outputs), in parallel over MPI ranks.",
    after_help = "Exit codes: 0 = finished (unusable queries are flagged in query_status); \
2 = stopped on an error (printed with the file, dataset or id it concerns).")]
#[command(group(ArgGroup::new("queries").required(true).args(["query_ids", "query_file"])))]
pub struct SearchArgs {
    /// Embedding HDF5 file(s) or glob(s), read as one table in the order given: dataset
    /// `embedding` (N, D) float, optional `object_id` (N,) and `modalities_used` (N,).
    #[arg(long, value_name = "EMB.h5", num_args = 1.., required = true)]
    pub embeddings: Vec<String>,

    /// Query objects by object id (looked up in the embedding files' `object_id`).
    #[arg(long, value_name = "ID", num_args = 1.., allow_negative_numbers = true)]
    pub query_ids: Vec<i64>,

    /// Query vectors from an HDF5 file: dataset `embedding` (Q, D) (see --query-dataset),
    /// optional `object_id` (Q,) and `modalities_used` (Q,).
    #[arg(long, value_name = "Q.h5")]
    pub query_file: Option<PathBuf>,

    /// Dataset of --query-file holding the vectors.
    #[arg(long, value_name = "NAME", default_value = "embedding")]
    pub query_dataset: String,

    /// Dataset of the embedding files holding the vectors.
    #[arg(long, value_name = "NAME", default_value = "embedding")]
    pub embedding_dataset: String,

    /// Neighbours per query.
    #[arg(long, value_name = "K")]
    pub k: usize,

    /// Output: `.h5` / `.hdf5` (HDF5) or `.csv`.
    #[arg(long, value_name = "OUT.h5|OUT.csv")]
    pub output: PathBuf,

    /// Similarity: cosine, dot (higher is closer) or l2 (Euclidean distance, smaller is closer).
    #[arg(long, value_enum, default_value_t = Metric::Cosine)]
    pub metric: Metric,

    /// Leave out hits that are the query object itself (every row with the query's object id).
    #[arg(long)]
    pub exclude_self: bool,

    /// Rows per chunk read and scored at a time (memory: about 3 chunks of N×D floats per rank).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_CHUNK_ROWS)]
    pub chunk_rows: usize,

    /// Scoring threads per rank.
    #[arg(long, value_name = "N",
        help = crate::args::with_default("Scoring threads per rank", THREADS_DEFAULT))]
    pub threads: Option<usize>,

    /// Replace an existing output file.
    #[arg(long)]
    pub overwrite: bool,

    /// Log level (error, warn, info, debug, trace); `RUST_LOG` overrides it.
    #[arg(long, default_value = "info")]
    pub log_level: String,
}

impl ToolArgs for SearchArgs {
    fn log_level(&self) -> &str {
        &self.log_level
    }

    /// `--threads`, else `OMP_NUM_THREADS`, else 1 ([`THREADS_DEFAULT`]).
    fn threads(&self) -> usize {
        self.threads
            .or_else(|| {
                std::env::var("OMP_NUM_THREADS")
                    .ok()
                    .and_then(|v| v.trim().parse().ok())
            })
            .unwrap_or(1)
            .max(1)
    }
}

/// The tool (`aion_app::cli::main::<SearchArgs>()` is the binary).
impl Tool for SearchArgs {
    const NAME: &'static str = TOOL;
    /// No checkpoints: a stop signal ends the search.
    const STOP_SIGNALS: bool = false;

    /// Returns the run summary (also in `<output>.run.json`).
    fn run<B: Backend>(&self, ctx: &RunContext, _device: B::Device) -> Result<Report> {
        run(self, ctx.session(), ctx.threads).map(Report::finished)
    }
}

impl SearchArgs {
    fn check(&self) -> Result<Format> {
        ensure!(self.k > 0, "--k must be at least 1");
        ensure!(self.chunk_rows > 0, "--chunk-rows must be at least 1");
        Format::of(&self.output)
    }
}

/// Whether a CSV file is a search result of ours (for the output guard).
fn our_csv(path: &std::path::Path) -> Existing {
    Existing::csv(path, write::CSV_HEADER)
}

/// Runs `aion-search` with `threads` scoring threads per rank; returns the run summary.
fn run(args: &SearchArgs, session: &Session, threads: usize) -> Result<serde_json::Value> {
    let start = Instant::now();
    let root = session.is_root();
    let format = agree(session, args.check())?;
    let table = agree(
        session,
        Table::open(&args.embeddings, &args.embedding_dataset),
    )?;
    // The output check looks at the file system: rank 0's view decides.
    let mut inputs = Inputs::new();
    inputs.files("embedding file", table.catalog.paths());
    if let Some(q) = &args.query_file {
        inputs.file("query file", q);
    }
    let recognise: Recognise = match format {
        Format::Hdf5 => Existing::hdf5,
        Format::Csv => our_csv,
    };
    let figures: Vec<(PathBuf, Recognise)> = crate::plot::paths(&figure::stem(&args.output))
        .into_iter()
        .map(|p| (p, Existing::figure as Recognise))
        .collect();
    let claim = claim_output(session, TOOL, &inputs, &args.output, recognise, &figures)?;
    if claim.exists && !args.overwrite {
        // Every rank knows `exists`: the error is the same everywhere.
        return Err(crate::collective::AgreedError(format!(
            "{} exists (pass --overwrite to replace it)",
            args.output.display()
        ))
        .into());
    }
    phase("open", &start);
    let n = table.catalog.n_rows();
    let queries = match &args.query_file {
        Some(path) => queries::from_file(session, path, &args.query_dataset, table.d)?,
        None => queries::from_ids(session, &table, &args.query_ids)?,
    };
    let q = queries.len();
    phase("queries", &start);
    // Identical on every rank; `agree` makes the error print once.
    agree(session, check_queries(args, &queries))?;
    let status = queries.status(args.metric);
    agree(session, report_statuses(root, &queries, &status))?;
    let prepared = queries.prepare(args.metric, args.exclude_self);
    if root {
        log::info!(
            "{q} quer{} × {n} rows (D = {}) in {} file(s), k = {}, metric {}, {} rank(s) × {threads} thread(s)",
            if q == 1 { "y" } else { "ies" },
            table.d,
            table.catalog.paths().len(),
            args.k,
            args.metric.name(),
            session.size()
        );
    }

    let block = block_range(n, session.rank(), session.size());
    let mut progress = Progress::new(root, block.len() as u64, "scanned (rank 0's block)");
    progress.set(0);
    let scanned = scan::scan_block(
        &table,
        block,
        args.chunk_rows,
        threads,
        &prepared,
        args.metric,
        args.k,
        &mut progress,
    );
    progress.finish();
    let scanned = agree(session, scanned)?;
    phase("scan", &start);

    let k = args.k;
    let merged = session.reduce_bytes(topk::encode(&scanned.topk), |a, b| {
        topk::merge_encoded(a, b, k)
    });
    let tables = merged.map(|bytes| {
        let results: Vec<_> = topk::decode(&bytes, k)
            .into_iter()
            .map(topk::TopK::into_sorted)
            .collect();
        Tables::new(&results, k, args.metric)
    });

    phase("merge", &start);
    let micros = |s: f64| (s * 1e6) as u64;
    let scan_s = session.max_u64(micros(scanned.seconds)) as f64 / 1e6;
    let wait_s = session.max_u64(micros(scanned.read_wait)) as f64 / 1e6;
    let cpu = scanned.cpu_seconds.map_or(u64::MAX, micros);
    let cpu_s = (session.max_u64(cpu) != u64::MAX).then(|| session.sum_u64(cpu) as f64 / 1e6);
    let rows = session.sum_u64(scanned.rows);
    let unused = session.sum_u64(scanned.skipped.unused);
    let nonfinite = session.sum_u64(scanned.skipped.nonfinite);
    let zero = session.sum_u64(scanned.skipped.zero);
    let valid = rows - unused - nonfinite - zero;
    let short = session.broadcast_bytes(
        &tables
            .as_ref()
            .map_or(0u64, |t| {
                t.count
                    .iter()
                    .zip(&status)
                    .filter(|&(&c, &s)| s == Status::Ok && (c as usize) < k)
                    .count() as u64
            })
            .to_le_bytes(),
    );
    let short = u64::from_le_bytes(short[..8].try_into().expect("8 bytes"));
    let summary = serde_json::json!({
        "queries": q,
        "queries_searched": status.iter().filter(|&&s| s == Status::Ok).count(),
        "k": k,
        "metric": args.metric.name(),
        "rows": rows,
        "rows_valid": valid,
        "rows_skipped": {"modalities_used_0": unused, "nonfinite": nonfinite, "zero_norm": zero},
        "queries_with_fewer_than_k": short,
        "ranks": session.size(),
        "threads_per_rank": threads,
        "scan_seconds": scan_s,
        "read_wait_seconds": wait_s,
        "scan_cpu_seconds": cpu_s,
        "rows_per_second": rows as f64 / scan_s.max(1e-9),
        "rows_per_second_per_core": rows as f64 / scan_s.max(1e-9) / (session.size() * threads) as f64,
    });
    if root {
        if unused + nonfinite + zero > 0 {
            log::warn!(
                "skipped {} row(s) without a valid embedding: {unused} with modalities_used = 0, \
                 {nonfinite} with NaN/inf values, {zero} all-zero (cosine)",
                unused + nonfinite + zero
            );
        }
        if short > 0 {
            log::warn!(
                "{short} quer{} found fewer than k = {k} neighbours ({valid} valid rows{}); \
                 the missing slots hold -1 / NaN (see neighbors/count)",
                if short == 1 { "y" } else { "ies" },
                if args.exclude_self {
                    ", minus the excluded query objects"
                } else {
                    ""
                }
            );
        }
        log::info!(
            "scanned {rows} rows in {scan_s:.2} s ({:.3e} rows/s; waited {wait_s:.2} s for reads)",
            rows as f64 / scan_s.max(1e-9)
        );
    }

    let config = serde_json::json!({
        "tool": TOOL, "embeddings": args.embeddings, "embedding_dataset": args.embedding_dataset,
        "query_ids": args.query_ids, "query_file": args.query_file,
        "query_dataset": args.query_file.as_ref().map(|_| &args.query_dataset),
        "k": k, "metric": args.metric, "exclude_self": args.exclude_self,
        "chunk_rows": args.chunk_rows, "threads_per_rank": threads, "output": args.output,
        "object_id": table.ids.source(),
    });
    let prov = provenance::build(
        session,
        TOOL,
        config.to_string(),
        std::path::Path::new(""),
        "{}".to_string(),
        &table.catalog,
    );
    let written = match (&tables, format) {
        (None, _) => Ok(()),
        (Some(t), Format::Hdf5) => write::hdf5(
            &args.output,
            &prov,
            &write::Meta {
                metric: args.metric,
                k,
                exclude_self: args.exclude_self,
                summary: &summary,
            },
            &queries,
            &status,
            t,
        ),
        (Some(t), Format::Csv) => write::csv(&args.output, &queries, &status, t),
    };
    agree(session, written)?;
    phase("write", &start);
    let mut summary = summary;
    if let Some(t) = &tables {
        // The figure is a convenience: a catalogue moved since the embedding only costs it.
        match figure::write(&args.output, &table, &queries, &status, t, args.metric) {
            Ok(Some(files)) => {
                log::info!("figure {} (and .svg)", files[0].display());
                summary["figure"] = serde_json::json!(files);
            }
            Ok(None) => log::info!("no image in the embedded catalogue: no cutout figure"),
            Err(e) => log::warn!("no cutout figure: {e:#}"),
        }
    }
    summary["seconds"] =
        serde_json::json!(session.max_u64(micros(start.elapsed().as_secs_f64())) as f64 / 1e6);
    agree(
        session,
        crate::guard::write_run_json(session, &args.output, &prov, &summary),
    )?;
    if root {
        log::info!("wrote {}", args.output.display());
    }
    Ok(summary)
}

/// Logs (debug) the time since `start` at the end of a phase.
fn phase(name: &str, start: &Instant) {
    log::debug!("{name} done at {:.3} s", start.elapsed().as_secs_f64());
}

/// Checks that hold on every rank alike (so every rank fails together).
fn check_queries(args: &SearchArgs, queries: &QuerySet) -> Result<()> {
    ensure!(!queries.is_empty(), "no queries");
    ensure!(
        queries.len().saturating_mul(args.k) <= MAX_RESULTS,
        "{} queries × k = {} is more than {MAX_RESULTS} results per run; split the queries",
        queries.len(),
        args.k
    );
    if args.exclude_self && !queries.has_ids {
        bail!(
            "--exclude-self needs the query objects' ids: {} has no object_id dataset \
             (give --query-ids, or add object_id (Q,) to the query file)",
            args.query_file
                .as_deref()
                .map_or_else(String::new, |p| p.display().to_string())
        );
    }
    Ok(())
}

/// Logs the unusable queries (rank 0); an error when none is usable.
fn report_statuses(root: bool, queries: &QuerySet, status: &[Status]) -> Result<()> {
    let bad: Vec<String> = status
        .iter()
        .enumerate()
        .filter(|&(_, &s)| s != Status::Ok)
        .map(|(j, s)| {
            if queries.has_ids {
                format!(
                    "query {j} (object id {}): {}",
                    queries.object_ids[j],
                    s.name()
                )
            } else {
                format!("query {j}: {}", s.name())
            }
        })
        .collect();
    if bad.len() == status.len() {
        bail!(
            "no usable query vector: {}{}",
            bad.iter().take(10).cloned().collect::<Vec<_>>().join("; "),
            if bad.len() > 10 { "; …" } else { "" }
        );
    }
    if root && !bad.is_empty() {
        log::warn!(
            "{} of {} queries are not searched (flagged in query_status, results -1 / NaN): {}{}",
            bad.len(),
            status.len(),
            bad.iter().take(10).cloned().collect::<Vec<_>>().join("; "),
            if bad.len() > 10 { "; …" } else { "" }
        );
    }
    Ok(())
}
