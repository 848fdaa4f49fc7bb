//! What every tool does around its chunk loop: the output guard and lock, checksums and
//! provenance, opening (or resuming) the output, progress, and closing the run.

use std::path::{Path, PathBuf};

use aion_io::Provenance;
use aion_mpi::Session;
use anyhow::Result;

use crate::args::IoArgs;
use crate::collective::agree;
use crate::guard::{Existing, Inputs, OutputLock, Recognise, claim_output};
use crate::pipeline::{DatasetSpec, Outcome, RunOutput, open_output};
use crate::progress::Progress;
use crate::resume::chunk_range;
use crate::run_config::ChunkRows;
use crate::run_config::Common;
use crate::stages::{self, Stages};
use crate::{provenance, resume};

/// A run whose output is open.
pub struct Started {
    /// The output, its datasets, resume record and the chunks to do.
    pub run: RunOutput,
    /// What the root attributes record.
    pub prov: Provenance,
    /// Whole-job progress (rank 0).
    pub progress: Tracker,
    /// An earlier run finished this output (every chunk done, end time recorded): there is
    /// nothing to do and nothing may change ([`Started::already_complete`]).
    pub complete: bool,
    /// The output file.
    output: PathBuf,
    /// Rows of the catalogue.
    rows: usize,
    cpu_at_start: f64,
    /// What each rank did, gathered by [`Started::close`] (the summary's `stages`).
    per_rank: serde_json::Value,
    /// Held until the run ends.
    _lock: OutputLock,
}

/// Rows done by all ranks, and their display.
pub struct Tracker {
    display: Progress,
    done: u64,
    /// Rows an earlier run had done.
    initial: u64,
    /// Rounds of the chunk loop done in this run.
    rounds: usize,
}

impl Tracker {
    /// Rows done so far (including those of a resumed run's earlier runs).
    pub fn done(&self) -> u64 {
        self.done
    }

    /// Rows done by this run (all ranks).
    pub fn this_run(&self) -> u64 {
        self.done - self.initial
    }

    /// Adds the rows all ranks finished in a round (the `on_round` callback of `run_chunks`).
    pub fn advance(&mut self, rows: u64) {
        self.done += rows;
        self.rounds += 1;
        self.display.set(self.done);
    }
}

/// What identifies a run: its tool, effective configuration and inputs.
pub struct RunIdentity<'a> {
    /// Tool name.
    pub tool: &'static str,
    /// Effective configuration (becomes the `config` attribute and part of the resume key).
    pub config: serde_json::Value,
    /// The model directory (checksums are relative to it), the output, `--overwrite` and the
    /// TOML run configuration (an input: never overwritten).
    pub io: &'a IoArgs,
    /// Weight and config files whose checksums are recorded.
    pub files: Vec<PathBuf>,
    /// The catalogue (`common.catalog`) and the model's modalities (the bits of the flag masks,
    /// `modality_bits`).
    pub common: &'a Common,
    /// Files written beside the output (plots), checked like the output before the run.
    pub side_outputs: Vec<PathBuf>,
    /// The modalities fed to the model (tokenized, for `aion-tokenize`), as
    /// [`crate::run_config::inputs_json`] gives them: the `inputs` root attribute.
    pub inputs: serde_json::Value,
}

impl<'a> RunIdentity<'a> {
    /// A run of `tool` on `common`'s catalogue and model (its modality table), with no side
    /// outputs.
    pub fn new(
        tool: &'static str,
        config: serde_json::Value,
        io: &'a IoArgs,
        common: &'a Common,
        files: Vec<PathBuf>,
        inputs: serde_json::Value,
    ) -> Self {
        Self {
            tool,
            config,
            io,
            files,
            common,
            side_outputs: Vec::new(),
            inputs,
        }
    }

    /// Every input of the run: catalogue files, the model directory and its files, the
    /// configuration.
    pub fn inputs(&self) -> Inputs {
        let mut inputs = Inputs::new();
        inputs
            .files("catalogue file", self.common.catalog.paths())
            .model_dir(&self.io.model)
            .files("model file", self.files.iter().map(PathBuf::as_path));
        if let Some(c) = self.io.config.as_deref() {
            inputs.file("run configuration", c);
        }
        inputs
    }
}

/// Claims the output (`id.io.output`; guard and lock, see [`crate::guard`]), computes checksums
/// and catalogue identities (rank 0) and provenance, opens or resumes it with `specs` in chunks of
/// `chunk` rows, and sets up the progress display (`what` = "embedded", …). A resumed output
/// keeps the chunks it records: an adaptive chunk size ([`ChunkRows::adaptive`], which depends on
/// the rank count) is not part of the resume key, so a run may resume on another rank count.
/// Collective.
pub fn start(
    session: &Session,
    id: &RunIdentity<'_>,
    chunk: ChunkRows,
    specs: &[DatasetSpec],
    what: &'static str,
) -> Result<Started> {
    let (output, overwrite) = (id.io.output.as_path(), id.io.overwrite);
    let n = id.common.catalog.n_rows();
    if n == 0 && session.is_root() {
        log::warn!(
            "the catalogue has no rows: {} will hold 0 rows",
            output.display()
        );
    }
    let side: Vec<(PathBuf, Recognise)> = id
        .side_outputs
        .iter()
        .map(|p| (p.clone(), Existing::figure as Recognise))
        .collect();
    let claim = claim_output(
        session,
        id.tool,
        &id.inputs(),
        output,
        Existing::hdf5,
        &side,
    )?;
    let checksums = agree(
        session,
        provenance::checksums(session, &id.io.model, &id.files),
    )?;
    let identity = if session.is_root() {
        resume::catalog_identity(&id.common.catalog.paths())
            .and_then(|c| Ok(serde_json::to_string(&c)?))
    } else {
        Ok(String::new())
    };
    let identity: Vec<resume::FileIdentity> =
        serde_json::from_str(&session.broadcast_string(&agree(session, identity)?))?;
    // The preset's content, not only its name: editing a preset file and resuming would mix two
    // conversions in one output. aion-search reopens the catalogue through it (cutout figures).
    let mut config = id.config.clone();
    if let Some(p) = id.common.catalog.preset() {
        config["survey_preset"] = serde_json::to_value(p)?;
    }
    let mut key_config = config.clone();
    if chunk.adaptive {
        key_config["chunk_rows"] = "adaptive".into();
    }
    let key = resume::key_json(id.tool, &key_config, &checksums, &identity);
    crate::output::warn_duplicate_ids(session, &id.common.catalog)?;
    let mut prov = provenance::build(
        session,
        id.tool,
        config.to_string(),
        &id.io.model,
        checksums,
        &id.common.catalog,
    );
    let run = open_output(
        session,
        output,
        claim.exists,
        overwrite,
        n,
        chunk.rows,
        &key,
        specs,
        |out| {
            prov.write(out)?;
            out.set_attr_str("inputs", &id.inputs.to_string())?;
            crate::output::write_modality_bits(out, id.common.model.modalities())
        },
    )?;
    let chunk_rows = run.log.chunk_rows;
    if chunk_rows != chunk.rows {
        // Resumed with the chunks of the run that made the output: the summary says so.
        let mut config = config.clone();
        config["chunk_rows"] = chunk_rows.into();
        prov.config_json = config.to_string();
    }
    let finished_at = run
        .out
        .attr_str("end_time")
        .filter(|t| run.resumed && run.todo.is_empty() && !t.is_empty());
    let complete = finished_at.is_some();
    if let Some(at) = &finished_at {
        if session.is_root() {
            log::info!(
                "{} is complete: all {n} rows were written by an earlier run (finished {at}); \
                 nothing to do, nothing changed (--overwrite recomputes it)",
                output.display()
            );
        }
    } else if run.resumed {
        log::info!(
            "resuming {}: {} of {} chunk(s) left",
            output.display(),
            run.todo.len(),
            run.log.n_chunks
        );
    }
    let mut display = Progress::new(session.is_root() && !complete, n as u64, what);
    let done = (n - run
        .todo
        .iter()
        .map(|&c| chunk_range(c, chunk_rows, n).len())
        .sum::<usize>()) as u64;
    display.set(done);
    Ok(Started {
        run,
        prov,
        progress: Tracker {
            display,
            done,
            initial: done,
            rounds: 0,
        },
        complete,
        output: output.to_path_buf(),
        rows: n,
        cpu_at_start: cpu_seconds(),
        per_rank: serde_json::Value::Null,
        _lock: claim.lock,
    })
}

impl Started {
    /// For an output an earlier run finished: the summary it recorded in `<output>.run.json`
    /// (rank 0; `null` elsewhere or when unreadable), so the tool returns it without touching
    /// the output, the summary or the figures. `None` when there is work to do.
    pub fn already_complete(&self, session: &Session) -> Option<serde_json::Value> {
        if !self.complete {
            return None;
        }
        let mut path = self.output.as_os_str().to_owned();
        path.push(".run.json");
        let recorded = session
            .is_root()
            .then(|| std::fs::read_to_string(&path).ok())
            .flatten()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .map(|v| v["summary"].clone());
        Some(recorded.unwrap_or(serde_json::Value::Null))
    }

    /// Ends the progress display, records the end time if the run finished, flushes; returns the
    /// elapsed seconds. Gathers what each rank did (rows, CPU seconds, [`crate::stages`]) for
    /// the log and the run summary. Collective.
    pub fn close(&mut self, session: &Session, outcome: Outcome) -> Result<f64> {
        let secs = self.progress.display.finish();
        self.per_rank = self.per_rank_summary(session, secs);
        if outcome == Outcome::Finished {
            self.run.out.set_attr_str(
                "end_time",
                &session.broadcast_string(&provenance::now_utc()),
            )?;
        }
        self.run.out.flush()?;
        Ok(secs)
    }

    /// What each rank did in this run: rows, CPU seconds and its [`crate::stages`]. Logged by
    /// rank 0 (rows and CPU at info level, stages at debug level): one line per rank up to 16
    /// ranks, else the ranks with the least, median and most CPU. Returns the `stages` entry of
    /// the run summary: `{"seconds": wall, "per_rank": [{"rows", "cpu_seconds", "seconds",
    /// "reader": {…}, "compute": {…}, "main": {…}}, …]}` (`seconds`: the rank's own wall time,
    /// which its threads' stages fit in; the first is rank 0's). Collective.
    fn per_rank_summary(&self, session: &Session, secs: f64) -> serde_json::Value {
        let (rank, size) = (session.rank(), session.size());
        let run = &self.run;
        // Round i wrote chunk i of this rank's contiguous share of the chunks to do.
        let mine = &run.todo[aion_mpi::block_range(run.todo.len(), rank, size)];
        let rows: usize = mine
            .iter()
            .take(self.progress.rounds)
            .map(|&c| chunk_range(c, run.log.chunk_rows, self.rows).len())
            .sum();
        // Per rank: rows, CPU seconds, wall seconds, then the stage seconds.
        const HEAD: usize = 3;
        let width = HEAD + Stages::LEN;
        let mut buf = vec![0.0; width * size];
        buf[width * rank] = rows as f64;
        buf[width * rank + 1] = cpu_seconds() - self.cpu_at_start;
        buf[width * rank + 2] = secs;
        buf[width * rank + HEAD..width * (rank + 1)].copy_from_slice(&run.stages.seconds());
        let all = session.sum_f64s(&buf);
        let of = |r: usize| &all[width * r..width * (r + 1)];
        let used: Vec<bool> = (0..Stages::LEN)
            .map(|i| (0..size).any(|r| of(r)[HEAD + i] > 0.0))
            .collect();
        let per_rank: Vec<serde_json::Value> = (0..size)
            .map(|r| {
                let mut v = stages::rank_json(&of(r)[HEAD..], &used);
                v["rows"] = (of(r)[0] as u64).into();
                v["cpu_seconds"] = ((of(r)[1] * 100.0).round() / 100.0).into();
                v["seconds"] = ((of(r)[2] * 1000.0).round() / 1000.0).into();
                v
            })
            .collect();
        if session.is_root() && !self.complete {
            let line = |r: usize| {
                let (rows, cpu) = (of(r)[0], of(r)[1]);
                format!(
                    "rank {r}: {rows:.0} rows, {:.1} rows/s, {cpu:.1} s CPU",
                    rows / secs.max(1e-9)
                )
            };
            let shown: Vec<(String, usize)> = if size <= 16 {
                (0..size).map(|r| (String::new(), r)).collect()
            } else {
                let mut order: Vec<usize> = (0..size).collect();
                order.sort_by(|&a, &b| of(a)[1].total_cmp(&of(b)[1]));
                [
                    ("least CPU: ", order[0]),
                    ("median CPU: ", order[size / 2]),
                    ("most CPU: ", order[size - 1]),
                ]
                .map(|(w, r)| (w.to_string(), r))
                .to_vec()
            };
            for (what, r) in &shown {
                log::info!("{what}{}", line(*r));
            }
            log::debug!(
                "stages over {secs:.2} s of wall time (each thread's add up to at most that):"
            );
            for (what, r) in &shown {
                log::debug!(
                    "{what}rank {r}: {}",
                    stages::rank_line(&of(*r)[HEAD..], &used)
                );
            }
        }
        serde_json::json!({ "seconds": secs, "per_rank": per_rank })
    }

    /// CPU seconds all ranks spent since the output was opened (collective).
    pub fn cpu_seconds(&self, session: &Session) -> f64 {
        session.sum_f64s(&[cpu_seconds() - self.cpu_at_start])[0]
    }

    /// Closes the output file, writes `<output>.run.json` (rank 0) and releases the lock.
    /// The summary gets the `stages` entry [`Started::close`] gathered; it is returned as
    /// written. Collective.
    pub fn finish(
        self,
        session: &Session,
        output: &Path,
        mut summary: serde_json::Value,
    ) -> Result<serde_json::Value> {
        summary["stages"] = self.per_rank.clone();
        self.run.close()?;
        agree(
            session,
            crate::guard::write_run_json(session, output, &self.prov, &summary),
        )?;
        Ok(summary)
    }
}

/// [`crate::stages::process_cpu_seconds`], 0 where unavailable.
fn cpu_seconds() -> f64 {
    crate::stages::process_cpu_seconds().unwrap_or(0.0)
}
