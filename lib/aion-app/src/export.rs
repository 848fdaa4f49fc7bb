//! `aion-export`: the per-object results of an aion-hpc output joined with chosen catalogue
//! columns, as a Parquet file, a FITS binary table or a HATS catalogue (see `docs/cli.md`).
//!
//! 1. Every rank opens the output ([`results::Results`]: a finished run's per-object datasets
//!    with their units, labels and grids) and the catalogue; row `i` of the output is catalogue
//!    row `i`, and where the output's `object_id` came from the catalogue, every exported row's
//!    id is compared with the catalogue's, so a different catalogue cannot be joined silently.
//! 2. The output is claimed like every tool's ([`crate::guard::claim_output`]): never an input,
//!    never a file we did not write, one run at a time.
//! 3. Rows go out in blocks of `--chunk-rows` (memory bounded): one Parquet row group, or one
//!    append to the FITS table, per block.
//!    - A single Parquet or FITS file is one sequential stream: rank 0 writes it alone, into a
//!      temporary sibling renamed into place at the end; other ranks wait. Reading a block
//!      costs far less than encoding and writing it, so more ranks would only queue on the one
//!      file.
//!    - A HATS catalogue is many files: each partition of the input catalogue becomes the same
//!      partition of the export (same `Norder/Dir/Npix` paths, same rows), and the ranks share
//!      the partitions (contiguous, balanced by rows) and write them in parallel into a staging
//!      directory; rank 0 then writes the catalogue's metadata (`properties`,
//!      `partition_info.csv`, `dataset/_common_metadata`) and swaps the directory into place.
//!      LSDB opens it and can cross-match it at once, with the input's partitioning.

mod hats;
pub mod results;

use std::path::{Path, PathBuf};
use std::time::Instant;

use aion_io::catalog::{ColumnKind, ColumnValues};
use aion_io::export::fits::FitsTable;
use aion_io::export::parquet::{MARKER_KEY, ParquetTable};
use aion_io::export::{Block, Dtype, Field, Values};
use aion_io::{Catalog, Format as CatalogFormat, Provenance};
use aion_mpi::Session;
use anyhow::{Context, Result, bail, ensure};
use burn::tensor::backend::Backend;
use clap::{Parser, ValueEnum};

use crate::cli::{Report, RunContext, Tool, ToolArgs};
use crate::collective::{AgreedError, agree};
use crate::guard::{Existing, Inputs, Recognise, claim_output};
use crate::output::ObjectIds;
use crate::progress::Progress;
use crate::provenance;
use results::{ResultDataset, Results};

/// Tool name.
pub const TOOL: &str = "aion-export";

/// What `--chunk-rows` defaults to.
pub const CHUNK_ROWS_DEFAULT: &str = "rows of about 64 MiB, at most 65536";

/// Bytes of row data per block when `--chunk-rows` is not given.
const BLOCK_BYTES: usize = 64 << 20;

/// Most rows per block when `--chunk-rows` is not given.
const MAX_BLOCK_ROWS: usize = 65536;

/// Name of the FITS table extension.
const FITS_EXTNAME: &str = "AION";

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    /// One Parquet file (arrow-rs), for pandas, pyarrow, polars, DuckDB, TOPCAT.
    Parquet,
    /// One FITS file with a binary table (cfitsio), for TOPCAT and astropy.
    Fits,
    /// A HATS catalogue with the input's partitioning (the input must be HATS), for LSDB.
    Hats,
}

impl ExportFormat {
    /// The format `output`'s name implies: `.parquet`/`.pq` → Parquet, `.fits`/`.fit`/`.fts`
    /// → FITS; anything else must be named with `--format`.
    fn from_path(output: &Path) -> Result<Self> {
        let name = output
            .file_name()
            .map(|n| n.to_string_lossy().to_lowercase())
            .unwrap_or_default();
        if name.ends_with(".gz") {
            bail!(
                "{}: compressed FITS is not written (cfitsio would build the whole file in \
                 memory); write {} and compress it afterwards (gzip), or export Parquet",
                output.display(),
                name.trim_end_matches(".gz")
            );
        }
        match output.extension().and_then(|e| e.to_str()) {
            Some(e) if ["parquet", "pq"].contains(&e.to_lowercase().as_str()) => Ok(Self::Parquet),
            Some(e) if ["fits", "fit", "fts"].contains(&e.to_lowercase().as_str()) => {
                Ok(Self::Fits)
            }
            _ => bail!(
                "cannot tell the format of {} from its name: end it in .parquet or .fits, or \
                 give --format (parquet, fits or hats)",
                output.display()
            ),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Parquet => "parquet",
            Self::Fits => "fits",
            Self::Hats => "hats",
        }
    }
}

/// Command line of `aion-export`.
#[derive(Debug, Parser)]
#[command(name = TOOL, version,
    about = "Export an aion-hpc output joined with catalogue columns as Parquet, FITS or a HATS catalogue.",
    after_help = "Exit codes: 0 = written; 2 = stopped on an error (printed with the file, \
column or row it concerns; nothing is left at --output).")]
pub struct ExportArgs {
    /// The output of aion-tokenize, aion-embed, aion-predict or aion-generate to export (its
    /// run must have finished).
    #[arg(long, value_name = "OUT.h5")]
    pub results: PathBuf,

    /// The catalogue the results were computed from (the same files, in the same order; a
    /// HATS catalogue directory for --format hats).
    #[arg(long, value_name = "FILE|DIR|GLOB", num_args = 1..)]
    pub catalog: Vec<String>,

    /// Catalogue columns to add, as NAME or NEW=NAME (`ra dec z_spec=Z`). Floats are written
    /// as float64, exactly as stored.
    #[arg(long, value_name = "[NEW=]NAME", num_args = 1..)]
    pub columns: Vec<String>,

    /// Datasets (or groups) of the results to export, e.g. `embedding pred/tok_z`.
    #[arg(long, value_name = "NAME", num_args = 1..,
        help = crate::args::with_default(
            "Datasets (or groups) of the results to export, e.g. `embedding pred/tok_z`",
            "every per-object dataset but resume/, tokens/ and logits/"))]
    pub datasets: Vec<String>,

    /// The export: a `.parquet` or `.fits` file, or a directory (--format hats).
    #[arg(long, value_name = "PATH")]
    pub output: PathBuf,

    /// Output format.
    #[arg(long, value_enum,
        help = crate::args::with_default("Output format", "from the --output extension"))]
    pub format: Option<ExportFormat>,

    /// Rows read and written per block (a Parquet row group).
    #[arg(long, value_name = "N",
        help = crate::args::with_default("Rows read and written per block (a Parquet row group)", CHUNK_ROWS_DEFAULT))]
    pub chunk_rows: Option<usize>,

    /// Replace an existing export written by aion-export.
    #[arg(long)]
    pub overwrite: bool,

    /// Log level (error, warn, info, debug, trace); `RUST_LOG` overrides it.
    #[arg(long, default_value = "info")]
    pub log_level: String,
}

impl ToolArgs for ExportArgs {
    fn log_level(&self) -> &str {
        &self.log_level
    }

    /// One thread per rank: reading, joining and writing are sequential.
    fn threads(&self) -> usize {
        1
    }
}

/// The tool (`aion_app::cli::main::<ExportArgs>()` is the binary).
impl Tool for ExportArgs {
    const NAME: &'static str = TOOL;
    /// A stop signal does not end an export midway: it finishes what it writes.
    const STOP_SIGNALS: bool = true;

    /// Returns the run summary (also in `<output>.run.json`).
    fn run<B: Backend>(&self, ctx: &RunContext, _device: B::Device) -> Result<Report> {
        run(self, ctx.session()).map(Report::finished)
    }
}

/// A catalogue column to copy: its name in the catalogue and in the export.
#[derive(Debug, Clone)]
struct CatalogColumn {
    source: String,
    field: Field,
}

/// What to write, the same on every rank.
struct Plan {
    format: ExportFormat,
    results: Results,
    datasets: Vec<ResultDataset>,
    catalog: Option<Catalog>,
    columns: Vec<CatalogColumn>,
    ids: Option<ObjectIds>,
    chunk_rows: usize,
}

impl Plan {
    fn fields(&self) -> Vec<Field> {
        self.datasets
            .iter()
            .map(|d| d.field.clone())
            .chain(self.columns.iter().map(|c| c.field.clone()))
            .collect()
    }

    /// The blocks of rows `rows`, one per field, after checking that the catalogue's object
    /// ids are the results' there.
    fn blocks(&self, rows: std::ops::Range<usize>) -> Result<Vec<Block>> {
        if let (Some(cat), Some(ids)) = (&self.catalog, &self.ids) {
            let theirs = ids.read(cat, &rows)?;
            let ours = self.results.object_ids(rows.clone())?;
            if let Some(i) = (0..ours.len()).find(|&i| ours[i] != theirs[i]) {
                let at = cat
                    .locate(rows.start + i)
                    .map(|(f, r)| format!(" ({} row {r})", f.display()))
                    .unwrap_or_default();
                bail!(
                    "row {}: object_id {} in {} but {} in the catalogue{at}: the catalogue is not \
                     the one the results were computed from (give the same files in the same \
                     order)",
                    rows.start + i,
                    ours[i],
                    self.results.path.display(),
                    theirs[i]
                );
            }
        }
        let mut out = Vec::with_capacity(self.datasets.len() + self.columns.len());
        for d in &self.datasets {
            out.push(self.results.read(d, rows.clone())?);
        }
        for c in &self.columns {
            let cat = self.catalog.as_ref().expect("columns need a catalogue");
            let col = cat.read_f64(&c.source, rows.clone())?;
            let present = col.present.iter().any(|&p| !p).then_some(col.present);
            let values = match col.values {
                ColumnValues::F64(v) => Values::F64(v),
                ColumnValues::F32(v) => Values::F64(v.into_iter().map(f64::from).collect()),
                ColumnValues::I64(v) => Values::I64(v),
                ColumnValues::Bool(v) => Values::Bool(v),
                ColumnValues::Str(v) => Values::Str(v),
            };
            out.push(Block { values, present });
        }
        Ok(out)
    }

    /// Rows per block: `--chunk-rows`, else about [`BLOCK_BYTES`] of row data.
    fn block_rows(fields: &[Field], chunk_rows: Option<usize>) -> usize {
        chunk_rows.unwrap_or_else(|| {
            let bytes: usize = fields
                .iter()
                .map(|f| {
                    f.row_len()
                        * match f.dtype {
                            Dtype::F64 | Dtype::I64 | Dtype::U64 => 8,
                            Dtype::F32 => 4,
                            Dtype::U8 | Dtype::Bool => 1,
                            Dtype::Str => 32,
                        }
                })
                .sum();
            (BLOCK_BYTES / bytes.max(1)).clamp(1, MAX_BLOCK_ROWS)
        })
    }
}

/// Splits `NEW=NAME` (or `NAME`) into (export name, catalogue name).
fn parse_column(spec: &str) -> Result<(String, String)> {
    let (new, src) = spec.split_once('=').unwrap_or((spec, spec));
    let (new, src) = (new.trim(), src.trim());
    ensure!(
        !new.is_empty() && !src.is_empty(),
        "--columns {spec}: expected NAME or NEW=NAME"
    );
    Ok((new.to_string(), src.to_string()))
}

/// The catalogue, its columns to copy and the id check (collective-free: every rank does the
/// same).
fn plan(args: &ExportArgs) -> Result<Plan> {
    ensure!(
        args.chunk_rows != Some(0),
        "--chunk-rows must be at least 1"
    );
    let format = match args.format {
        Some(f) => f,
        None => ExportFormat::from_path(&args.output)?,
    };
    let results = Results::open(&args.results)?;
    let datasets: Vec<ResultDataset> = if args.datasets.is_empty() {
        results.default_datasets().into_iter().cloned().collect()
    } else {
        results
            .select(&args.datasets)?
            .into_iter()
            .cloned()
            .collect()
    };
    let mut specs: Vec<(String, String)> = args
        .columns
        .iter()
        .map(|c| parse_column(c))
        .collect::<Result<_>>()?;
    if args.catalog.is_empty() {
        ensure!(
            specs.is_empty() && format != ExportFormat::Hats,
            "give --catalog: {} needs the catalogue the results were computed from",
            if specs.is_empty() {
                "--format hats"
            } else {
                "--columns"
            }
        );
        let plan = Plan {
            format,
            results,
            datasets,
            catalog: None,
            columns: Vec::new(),
            ids: None,
            chunk_rows: 0,
        };
        return finish_plan(plan, args);
    }
    let mut catalog = Catalog::open(&args.catalog)?;
    if format == ExportFormat::Hats {
        ensure!(
            catalog.format() == CatalogFormat::Hats,
            "--format hats keeps the partitioning of a HATS catalogue, but the catalogue is {}; \
             export Parquet or FITS instead",
            catalog.format()
        );
        // LSDB needs the sky position and the spatial index in every partition.
        for col in hats::required_columns(&catalog)? {
            if !specs.iter().any(|(_, src)| *src == col) {
                specs.push((col.clone(), col));
            }
        }
    }
    let id_check = results.id_source == "object_id";
    let mut size_by: Vec<String> = specs.iter().map(|(_, s)| s.clone()).collect();
    if id_check {
        size_by.push("object_id".into());
    }
    if size_by.is_empty() {
        // Sized by any column: the id check is off and no column is copied.
        size_by = catalog.columns();
    }
    catalog.size_by(&size_by)?;
    ensure!(
        catalog.n_rows() == results.rows,
        "the catalogue has {} rows but {} has {}: it is not the catalogue the results were \
         computed from (give the same files, in the same order)",
        catalog.n_rows(),
        results.path.display(),
        results.rows
    );
    let mut columns = Vec::new();
    for (name, source) in specs {
        let info = catalog.info(&source)?.with_context(|| {
            format!(
                "--columns: the catalogue has no column '{source}'; it has: {}",
                catalog.columns().join(", ")
            )
        })?;
        let dtype = match info.kind {
            ColumnKind::Float => Dtype::F64,
            ColumnKind::Int => Dtype::I64,
            ColumnKind::Bool => Dtype::Bool,
            ColumnKind::Str => Dtype::Str,
        };
        let mut field = Field::new(name, dtype, info.row_shape);
        field.nullable = true;
        field.units = catalog.units(&source);
        field.description = Some(format!("catalogue column {source}"));
        field
            .metadata
            .insert("catalogue_column".into(), source.clone());
        columns.push(CatalogColumn { source, field });
    }
    let ids = if id_check {
        Some(ObjectIds::detect(&catalog)?)
    } else {
        log::warn!(
            "{} numbers its rows (object_id = row index): rows are joined by position only",
            results.path.display()
        );
        None
    };
    let plan = Plan {
        format,
        results,
        datasets,
        catalog: Some(catalog),
        columns,
        ids,
        chunk_rows: 0,
    };
    finish_plan(plan, args)
}

/// Checks that the export's column names are distinct and sets its block size (`chunk_rows`).
fn finish_plan(mut plan: Plan, args: &ExportArgs) -> Result<Plan> {
    let mut names: Vec<&str> = plan
        .datasets
        .iter()
        .map(|d| d.field.name.as_str())
        .collect();
    for c in &plan.columns {
        if names.contains(&c.field.name.as_str()) {
            bail!(
                "--columns: '{}' is already a column of the export (from the results); name \
                 the catalogue column otherwise, e.g. cat_{0}={}",
                c.field.name,
                c.source
            );
        }
        names.push(&c.field.name);
    }
    ensure!(!names.is_empty(), "nothing to export");
    plan.chunk_rows = Plan::block_rows(&plan.fields(), args.chunk_rows);
    Ok(plan)
}

/// FITS needs the width of string columns: the longest value of each (read once).
fn measure_strings(plan: &mut Plan) -> Result<()> {
    let Some(cat) = &plan.catalog else {
        return Ok(());
    };
    for c in plan
        .columns
        .iter_mut()
        .filter(|c| c.field.dtype == Dtype::Str)
    {
        let mut width = 1;
        let n = cat.n_rows();
        for start in (0..n).step_by(plan.chunk_rows) {
            let rows = start..(start + plan.chunk_rows).min(n);
            if let ColumnValues::Str(v) = cat.read(&c.source, rows)?.values {
                width = v.iter().map(String::len).fold(width, usize::max);
            }
        }
        c.field.width = width;
    }
    Ok(())
}

/// What the export records about itself (Parquet key [`MARKER_KEY`], FITS `AIONPROV`).
fn provenance_json(plan: &Plan, args: &ExportArgs) -> String {
    serde_json::json!({
        "tool": TOOL,
        "version": env!("CARGO_PKG_VERSION"),
        "git_commit": provenance::GIT_COMMIT,
        "time": provenance::now_utc(),
        "results": args.results,
        "results_tool": plan.results.tool,
        "results_resume_key": plan.results.attr("resume_key"),
        "catalog": plan.catalog.as_ref().map(|c| {
            c.paths().iter().map(|p| p.display().to_string()).collect::<Vec<_>>()
        }),
        "columns": plan.columns.iter().map(|c| (c.field.name.clone(), c.source.clone()))
            .collect::<std::collections::BTreeMap<_, _>>(),
    })
    .to_string()
}

/// Whether a file at `path` is an export of ours (for the output guard).
fn recognise(format: ExportFormat) -> Recognise {
    match format {
        ExportFormat::Parquet => Existing::parquet,
        ExportFormat::Fits => Existing::fits,
        ExportFormat::Hats => Existing::hats,
    }
}

/// Runs `aion-export`; returns the run summary.
fn run(args: &ExportArgs, session: &Session) -> Result<serde_json::Value> {
    let start = Instant::now();
    let root = session.is_root();
    let mut plan = agree(session, plan(args))?;
    if plan.format == ExportFormat::Fits {
        // Rank 0 writes the file alone; only it needs the widths.
        agree(
            session,
            if root {
                measure_strings(&mut plan)
            } else {
                Ok(())
            },
        )?;
    }
    let mut inputs = Inputs::new();
    inputs.file("results file", &args.results);
    if let Some(cat) = &plan.catalog {
        inputs.files("catalogue file", cat.paths());
        for c in &args.catalog {
            if Path::new(c).exists() {
                inputs.file("catalogue", Path::new(c));
            }
        }
    }
    let claim = claim_output(
        session,
        TOOL,
        &inputs,
        &args.output,
        recognise(plan.format),
        &[],
    )?;
    if claim.exists && !args.overwrite {
        return Err(AgreedError(format!(
            "{} exists (pass --overwrite to replace it)",
            args.output.display()
        ))
        .into());
    }
    let n = plan.results.rows;
    if root {
        log::info!(
            "exporting {n} rows × {} columns ({} from {}, {} from the catalogue) as {} to {}, \
             {} rows per block",
            plan.datasets.len() + plan.columns.len(),
            plan.datasets.len(),
            plan.results.path.display(),
            plan.columns.len(),
            plan.format.name(),
            args.output.display(),
            plan.chunk_rows
        );
    }
    let prov = provenance_json(&plan, args);
    let files = match plan.format {
        ExportFormat::Parquet | ExportFormat::Fits => {
            let written = if root {
                write_single(&plan, &args.output, &prov)
            } else {
                Ok(())
            };
            agree(session, written)?;
            1
        }
        ExportFormat::Hats => hats::write(session, &plan, args, &prov)?,
    };
    let secs = start.elapsed().as_secs_f64();
    let summary = serde_json::json!({
        "rows": n,
        "format": plan.format.name(),
        "files": files,
        "columns": plan.fields().iter().map(|f| f.name.clone()).collect::<Vec<_>>(),
        "chunk_rows": plan.chunk_rows,
        "ranks": session.size(),
        "seconds": secs,
    });
    let record = Provenance {
        tool: TOOL.into(),
        version: env!("CARGO_PKG_VERSION").into(),
        git_commit: provenance::GIT_COMMIT.into(),
        config_json: serde_json::json!({
            "tool": TOOL, "results": args.results, "catalog": args.catalog,
            "columns": args.columns, "datasets": args.datasets, "output": args.output,
            "format": plan.format, "chunk_rows": plan.chunk_rows,
        })
        .to_string(),
        model_dir: String::new(),
        checksums_json: "{}".into(),
        catalog_json: serde_json::json!({
            "results": args.results,
            "files": plan.catalog.as_ref().map(|c| {
                c.paths().iter().map(|p| p.display().to_string()).collect::<Vec<_>>()
            }),
            "rows": n,
        })
        .to_string(),
        n_ranks: session.size(),
        slurm_job_id: session.slurm().job_id,
        start_time: session.broadcast_string(&provenance::now_utc()),
    };
    agree(
        session,
        crate::guard::write_run_json(session, &args.output, &record, &summary),
    )?;
    if root {
        log::info!("wrote {} in {secs:.1} s", args.output.display());
    }
    drop(claim);
    Ok(summary)
}

/// A table written block by block: [`ParquetTable`] or [`FitsTable`].
trait Table {
    /// What finishing hands back (the Parquet file's writer).
    type Done;
    /// Appends `rows` rows.
    fn write(&mut self, rows: usize, blocks: &[Block]) -> Result<(), String>;
    /// Writes what is left (footer, header counts).
    fn finish(self) -> Result<Self::Done, String>;
}

impl<W: std::io::Write + Send> Table for ParquetTable<W> {
    type Done = W;

    fn write(&mut self, rows: usize, blocks: &[Block]) -> Result<(), String> {
        ParquetTable::write(self, rows, blocks)
    }

    fn finish(self) -> Result<W, String> {
        ParquetTable::finish(self)
    }
}

impl Table for FitsTable {
    type Done = ();

    fn write(&mut self, rows: usize, blocks: &[Block]) -> Result<(), String> {
        FitsTable::write(self, rows, blocks)
    }

    fn finish(self) -> Result<(), String> {
        FitsTable::finish(self)
    }
}

/// Writes rows `rows` of the plan into `table`, block by block, advancing `progress`, and
/// finishes it; errors name `what`.
fn write_rows<T: Table>(
    plan: &Plan,
    rows: std::ops::Range<usize>,
    progress: &mut Progress,
    done: &mut u64,
    mut table: T,
    what: &Path,
) -> Result<T::Done> {
    let mut at = rows.start;
    while at < rows.end {
        let block = at..(at + plan.chunk_rows).min(rows.end);
        let blocks = plan.blocks(block.clone())?;
        table.write(block.len(), &blocks).map_err(|m| {
            anyhow::anyhow!(
                "{}: cannot write rows {}..{}: {m}",
                what.display(),
                block.start,
                block.end
            )
        })?;
        *done += block.len() as u64;
        progress.set(*done);
        at = block.end;
    }
    table
        .finish()
        .map_err(|m| anyhow::anyhow!("{}: {m}", what.display()))
}

/// Rank 0: the whole export as one Parquet or FITS file, written to a temporary sibling and
/// renamed into place.
fn write_single(plan: &Plan, output: &Path, prov: &str) -> Result<()> {
    let n = plan.results.rows;
    let mut progress = Progress::new(true, n as u64, "exported");
    let mut done = 0;
    match plan.format {
        ExportFormat::Parquet => crate::guard::write_file(output, |w| {
            let table = ParquetTable::new(
                w,
                plan.fields(),
                vec![(MARKER_KEY.to_string(), prov.to_string())],
            )
            .map_err(|m| anyhow::anyhow!("{}: {m}", output.display()))?;
            write_rows(plan, 0..n, &mut progress, &mut done, table, output).map(drop)
        })?,
        ExportFormat::Fits => crate::guard::write_staged(output, |tmp| {
            let marker = format!(
                "{} {TOOL} {}",
                aion_io::export::fits::MARKER_PREFIX,
                env!("CARGO_PKG_VERSION")
            );
            let keys = [("AIONPROV", prov.to_string(), "aion-hpc provenance (JSON)")];
            let table = FitsTable::create(tmp, FITS_EXTNAME, plan.fields(), &marker, &keys)
                .map_err(|m| anyhow::anyhow!("{}: {m}", output.display()))?;
            write_rows(plan, 0..n, &mut progress, &mut done, table, output)
        })?,
        ExportFormat::Hats => unreachable!("HATS catalogues are written by all ranks"),
    }
    progress.finish();
    Ok(())
}
