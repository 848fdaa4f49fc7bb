//! The chunked, resumable, overlapped pipeline every tool runs.
//!
//! Global rows are cut into chunks of `chunk_rows` (recorded in the output: a resumed run keeps
//! them, whatever its rank count). The chunks still to do are split over the ranks in contiguous
//! runs; every rank then goes through the same number of rounds. In each round a rank writes the chunk it computed (or
//! joins the collective writes with nothing), the file is flushed, and the chunk is marked done.
//!
//! Three stages overlap through bounded channels (depth 2): a reader thread (catalogue reads and
//! tokenization), a compute thread (the model), and the main thread (collective HDF5 writes; MPI
//! is only called from the main thread). Peak memory is therefore bounded by a few chunks,
//! whatever the catalogue size.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;
use std::sync::mpsc::sync_channel;

use aion_io::OutputFile;
use aion_mpi::{Session, block_range};
use anyhow::{Context, Result, bail};
use hdf5::H5Type;

use crate::collective::agree;
use crate::fault;
use crate::stages::{Stage, Stages, Thread};

thread_local! {
    /// The chunk the main thread is writing (for fault injection).
    static CURRENT_CHUNK: std::cell::Cell<Option<usize>> = const { std::cell::Cell::new(None) };
}
use crate::resume::ResumeLog;
use crate::signals::StopFlag;

/// Element type of an output dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    /// 64-bit signed integers.
    I64,
    /// 64-bit unsigned integers (bit masks).
    U64,
    /// 32-bit floats.
    F32,
    /// Bytes (flags).
    U8,
}

/// One per-row output dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct DatasetSpec {
    /// Path in the file (`embedding`, `pred/tok_z/mean`, …).
    pub name: String,
    /// Element type.
    pub dtype: Dtype,
    /// Shape of one row.
    pub row_shape: Vec<usize>,
    /// Value of unwritten or skipped elements (−1 for tokens, 0 for masks); `None` = undefined.
    pub fill: Option<f64>,
    /// String attributes of the dataset.
    pub attrs: Vec<(String, String)>,
    /// Array-of-strings attributes of the dataset (`bit_names` of the flag masks).
    pub lists: Vec<(String, Vec<String>)>,
}

impl DatasetSpec {
    /// A dataset spec without attributes.
    pub fn new(
        name: impl Into<String>,
        dtype: Dtype,
        row_shape: &[usize],
        fill: Option<f64>,
    ) -> Self {
        Self {
            name: name.into(),
            dtype,
            row_shape: row_shape.to_vec(),
            fill,
            attrs: Vec::new(),
            lists: Vec::new(),
        }
    }

    /// Adds a string attribute.
    pub fn attr(mut self, k: &str, v: impl Into<String>) -> Self {
        self.attrs.push((k.to_string(), v.into()));
        self
    }

    /// Adds an array-of-strings attribute.
    pub fn attr_list(mut self, k: &str, v: Vec<String>) -> Self {
        self.lists.push((k.to_string(), v));
        self
    }

    /// Adds `units` (astropy / FITS notation, `""` = dimensionless) and a human `label`.
    pub fn units(self, units: &str, label: &str) -> Self {
        self.attr("units", units).attr("label", label)
    }
}

/// The datasets of an output, by name.
pub struct Outputs {
    sets: BTreeMap<String, aion_io::OutputDataset>,
}

impl Outputs {
    fn create(out: &OutputFile, n: usize, specs: &[DatasetSpec]) -> Result<Self> {
        let mut sets = BTreeMap::new();
        for s in specs {
            let ds = match s.dtype {
                Dtype::I64 => {
                    out.create_dataset::<i64>(&s.name, n, &s.row_shape, s.fill.map(|f| f as i64))?
                }
                Dtype::U64 => {
                    out.create_dataset::<u64>(&s.name, n, &s.row_shape, s.fill.map(|f| f as u64))?
                }
                Dtype::F32 => {
                    out.create_dataset::<f32>(&s.name, n, &s.row_shape, s.fill.map(|f| f as f32))?
                }
                Dtype::U8 => {
                    out.create_dataset::<u8>(&s.name, n, &s.row_shape, s.fill.map(|f| f as u8))?
                }
            };
            for (k, v) in &s.attrs {
                out.set_dataset_attr_str(&ds, k, v)?;
            }
            for (k, v) in &s.lists {
                let v: Vec<&str> = v.iter().map(String::as_str).collect();
                out.set_dataset_attr_strs(&ds, k, &v)?;
            }
            sets.insert(s.name.clone(), ds);
        }
        Ok(Self { sets })
    }

    fn open(out: &OutputFile, n: usize, specs: &[DatasetSpec]) -> Result<Self> {
        let mut sets = BTreeMap::new();
        for s in specs {
            let ds = out.dataset(&s.name)?;
            let mut want = vec![n];
            want.extend(&s.row_shape);
            if ds.shape() != want {
                bail!(
                    "{}: dataset {} has shape {:?}, this run writes {want:?}",
                    out.path().display(),
                    s.name,
                    ds.shape()
                );
            }
            sets.insert(s.name.clone(), ds);
        }
        Ok(Self { sets })
    }

    /// Writes rows starting at `start` of dataset `name` (collective; empty slice to just join).
    pub fn write<T: H5Type>(
        &self,
        out: &OutputFile,
        name: &str,
        start: usize,
        data: &[T],
    ) -> Result<()> {
        let ds = self
            .sets
            .get(name)
            .with_context(|| format!("no output dataset {name}"))?;
        out.write_rows(ds, start, data)?;
        fault::dataset_written(CURRENT_CHUNK.with(std::cell::Cell::get));
        Ok(())
    }
}

/// An output opened for a run: fresh, or resumed with the chunks still to do.
pub struct RunOutput {
    /// The file.
    pub out: OutputFile,
    /// Its datasets.
    pub sets: Outputs,
    /// The resume record.
    pub log: ResumeLog,
    /// Chunks not yet done, in order.
    pub todo: Vec<usize>,
    /// Whether an earlier run's output is being continued.
    pub resumed: bool,
    /// Where this rank's time goes in this run (filled by [`run_chunks`] and the tools' stages).
    pub stages: Stages,
}

impl RunOutput {
    /// Closes the file (collective; agreed like every step of the write path).
    pub fn close(self) -> Result<()> {
        let Self { out, sets, log, .. } = self;
        drop((sets, log));
        out.close()?;
        Ok(())
    }
}

/// Opens `path` for a run (collective): resumes it when it `exists` (an output of ours, see
/// [`crate::guard::claim_output`]) and holds a matching, unfinished run, else creates it
/// (`overwrite` replaces an existing output). `init` writes the root attributes of a fresh file.
/// If creating the file fails (a full disk, say), the incomplete file is removed: nothing of the
/// run is in it yet, and a later run then starts afresh instead of refusing a damaged file.
#[allow(clippy::too_many_arguments)]
pub fn open_output(
    session: &Session,
    path: &Path,
    exists: bool,
    overwrite: bool,
    n_rows: usize,
    chunk_rows: usize,
    key: &serde_json::Value,
    specs: &[DatasetSpec],
    init: impl FnOnce(&OutputFile) -> Result<()>,
) -> Result<RunOutput> {
    if exists && !overwrite {
        let out = OutputFile::open_rw(path, session.world()).with_context(|| {
            format!("{} exists but cannot be opened for writing", path.display())
        })?;
        let (log, done) = agree(session, ResumeLog::open(&out, key))?;
        let sets = agree(session, Outputs::open(&out, n_rows, specs))?;
        let todo: Vec<usize> = (0..log.n_chunks).filter(|&c| !done[c]).collect();
        return Ok(RunOutput {
            out,
            sets,
            log,
            todo,
            resumed: true,
            stages: Stages::default(),
        });
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        agree(
            session,
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display())),
        )?;
    }
    let remove_incomplete = |e: anyhow::Error| {
        // Every rank has given up the file (the error is agreed); rank 0 removes what is left,
        // unless the creation failed before touching an earlier output (still intact).
        if session.is_root()
            && (!exists || crate::guard::Existing::hdf5(path) != crate::guard::Existing::Ours)
        {
            let _ = std::fs::remove_file(path);
        }
        e.context(format!(
            "{} could not be created; nothing of this run was written",
            path.display()
        ))
    };
    let out = OutputFile::create(path, session.world()).map_err(|e| remove_incomplete(e.into()))?;
    let created = (|| -> Result<(ResumeLog, Outputs)> {
        init(&out)?;
        let log = ResumeLog::create(&out, n_rows, chunk_rows, key)?;
        let sets = Outputs::create(&out, n_rows, specs)?;
        out.flush()?;
        out.created();
        Ok((log, sets))
    })();
    let (log, sets) = match created {
        Ok(c) => c,
        Err(e) => {
            drop(out);
            return Err(remove_incomplete(e));
        }
    };
    let todo = (0..log.n_chunks).collect();
    Ok(RunOutput {
        out,
        sets,
        log,
        todo,
        resumed: false,
        stages: Stages::default(),
    })
}

/// How a pipeline run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every chunk is done.
    Finished,
    /// A stop signal arrived; the chunks done so far are recorded.
    Stopped,
}

/// Runs the chunks of `run.todo` that belong to this rank through `prepare` (reader thread) →
/// `compute` (compute thread) → `write` (main thread, collective), marking each written chunk
/// done. `write(rows, None)` must join every collective write with nothing. `on_round` is called
/// on every rank after each round with the number of rows all ranks wrote in it. The time of
/// the writes and of the waits is counted in `run.stages` ([`crate::stages`]); `prepare` runs on
/// the reader thread and `compute` on the compute thread, so the stages they count are theirs.
#[allow(clippy::too_many_arguments)]
pub fn run_chunks<A: Send, B: Send>(
    session: &Session,
    run: &RunOutput,
    n_rows: usize,
    stop: &StopFlag,
    prepare: impl FnMut(Range<usize>) -> Result<A> + Send,
    compute: impl FnMut(A) -> Result<B> + Send,
    mut write: impl FnMut(Range<usize>, Option<B>) -> Result<()>,
    mut on_round: impl FnMut(u64),
) -> Result<Outcome> {
    let chunk_rows = run.log.chunk_rows;
    let stages = &run.stages;
    let rows_of = |c: usize| crate::resume::chunk_range(c, chunk_rows, n_rows);
    let mine: Vec<usize> =
        run.todo[block_range(run.todo.len(), session.rank(), session.size())].to_vec();
    let rounds = run.todo.len().div_ceil(session.size());
    match (mine.first(), mine.last()) {
        (Some(&a), Some(&b)) => {
            log::info!(
                "{} chunk(s): rows {}..{}",
                mine.len(),
                rows_of(a).start,
                rows_of(b).end
            )
        }
        _ => log::info!("no chunk to do on this rank"),
    }
    let (tx_a, rx_a) = sync_channel::<Result<A>>(2);
    let (tx_b, rx_b) = sync_channel::<Result<B>>(2);
    std::thread::scope(|scope| -> Result<Outcome> {
        let reader_chunks = mine.clone();
        let mut prepare = prepare;
        scope.spawn(move || {
            Thread::Reader.enter();
            for c in reader_chunks {
                fault::slow();
                fault::busy();
                fault::hit("prepare", Some(c));
                if tx_a.send(prepare(rows_of(c))).is_err() {
                    break;
                }
            }
        });
        let mut compute = compute;
        scope.spawn(move || {
            Thread::Compute.enter();
            for a in rx_a {
                if tx_b.send(a.and_then(&mut compute)).is_err() {
                    break;
                }
            }
        });
        // Owned here so that an early return drops it and unblocks the worker threads.
        let rx_b = rx_b;
        let mut mine_iter = mine.iter();
        for _ in 0..rounds {
            let chunk = mine_iter.next().copied();
            let item: Result<Option<B>> = match chunk {
                Some(_) => stages.time(Stage::WaitPipeline, || {
                    rx_b.recv()
                        .map_err(|_| anyhow::anyhow!("pipeline worker stopped"))
                        .and_then(|r| r.map(Some))
                }),
                None => Ok(None),
            };
            let item = stages.time(Stage::WaitRanks, || agree(session, item))?;
            let writing = std::time::Instant::now();
            let rows = chunk.map_or(0..0, rows_of);
            fault::hit("before_write", chunk);
            CURRENT_CHUNK.with(|c| c.set(chunk));
            fault::begin_chunk();
            // Each collective write inside is agreed by the output file itself; this keeps the
            // ranks together when `write` fails after its collective writes.
            agree(session, write(rows.clone(), item))?;
            fault::hit("after_write", chunk);
            run.out.flush()?;
            fault::hit("after_flush", chunk);
            run.log.mark(&run.out, chunk)?;
            run.out.flush()?;
            fault::hit("after_mark", chunk);
            stages.add(Stage::Write, writing);
            let waiting = std::time::Instant::now();
            let written = session.sum_u64(rows.len() as u64);
            let stopping = session.max_u64(u64::from(stop.requested())) == 1;
            stages.add(Stage::WaitRanks, waiting);
            on_round(written);
            if stopping {
                return Ok(Outcome::Stopped);
            }
        }
        Ok(Outcome::Finished)
    })
}
