//! What every tool does around its chunk loop: the output guard and lock, checksums and
//! provenance, opening (or resuming) the output, progress, and closing the run.

use std::path::{Path, PathBuf};

use aion_io::{Catalog, Provenance};
use aion_mpi::Session;
use anyhow::Result;

use crate::collective::agree;
use crate::guard::{Existing, Inputs, OutputLock, Recognise, claim_output};
use crate::pipeline::{DatasetSpec, Outcome, RunOutput, open_output};
use crate::progress::Progress;
use crate::tokenize::chunk_len;
use crate::{provenance, resume};

/// A run whose output is open.
pub struct Started {
    /// The output, its datasets, resume record and the chunks to do.
    pub run: RunOutput,
    /// What the root attributes record.
    pub prov: Provenance,
    /// Whole-job progress (rank 0).
    pub progress: Tracker,
    cpu_at_start: f64,
    /// Held until the run ends.
    _lock: OutputLock,
}

/// CPU time (user + system, all threads) this process has used, in seconds (Linux
/// `/proc/self/stat`, 100 ticks per second); 0 where unavailable.
pub fn process_cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name (which may contain spaces) start at `) `.
    let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) / 100.0
}

/// Rows done by all ranks, and their display.
pub struct Tracker {
    display: Progress,
    done: u64,
}

impl Tracker {
    /// Rows done so far (including those of a resumed run's earlier runs).
    pub fn done(&self) -> u64 {
        self.done
    }

    /// Adds the rows all ranks finished in a round (the `on_round` callback of `run_chunks`).
    pub fn advance(&mut self, rows: u64) {
        self.done += rows;
        self.display.set(self.done);
    }
}

/// What identifies a run: its tool, effective configuration and inputs.
pub struct RunIdentity<'a> {
    /// Tool name.
    pub tool: &'static str,
    /// Effective configuration (becomes the `config` attribute and part of the resume key).
    pub config: serde_json::Value,
    /// Model directory (checksums are relative to it).
    pub model: &'a Path,
    /// Weight and config files whose checksums are recorded.
    pub files: Vec<PathBuf>,
    /// The catalogue.
    pub catalog: &'a Catalog,
    /// The TOML run configuration, if any (an input: never overwritten).
    pub config_file: Option<&'a Path>,
    /// Files written beside the output (plots), checked like the output before the run.
    pub side_outputs: Vec<PathBuf>,
    /// The modalities fed to the model (tokenized, for `aion-tokenize`), as
    /// [`crate::run_config::inputs_json`] gives them: the `inputs` root attribute.
    pub inputs: serde_json::Value,
}

impl RunIdentity<'_> {
    /// Every input of the run: catalogue files, the model directory and its files, the
    /// configuration.
    pub fn inputs(&self) -> Inputs {
        let mut inputs = Inputs::new();
        inputs
            .files("catalogue file", self.catalog.paths())
            .model_dir(self.model)
            .files("model file", self.files.iter().map(PathBuf::as_path));
        if let Some(c) = self.config_file {
            inputs.file("run configuration", c);
        }
        inputs
    }
}

/// Claims `output` (guard and lock, see [`crate::guard`]), computes checksums and catalogue
/// identities (rank 0) and provenance, opens or resumes `output` with `specs`, and sets up the
/// progress display (`what` = "embedded", …). Collective.
pub fn start(
    session: &Session,
    id: &RunIdentity<'_>,
    output: &Path,
    overwrite: bool,
    chunk_rows: usize,
    specs: &[DatasetSpec],
    what: &'static str,
) -> Result<Started> {
    let n = id.catalog.n_rows();
    if n == 0 && session.is_root() {
        log::warn!(
            "the catalogue has no rows: {} will hold 0 rows",
            output.display()
        );
    }
    let side: Vec<(PathBuf, Recognise)> = id
        .side_outputs
        .iter()
        .map(|p| (p.clone(), Existing::png as Recognise))
        .collect();
    let claim = claim_output(
        session,
        id.tool,
        &id.inputs(),
        output,
        Existing::hdf5,
        &side,
    )?;
    let checksums = agree(session, provenance::checksums(session, id.model, &id.files))?;
    let identity = if session.is_root() {
        resume::catalog_identity(&id.catalog.paths()).and_then(|c| Ok(serde_json::to_string(&c)?))
    } else {
        Ok(String::new())
    };
    let identity: Vec<resume::FileIdentity> =
        serde_json::from_str(&session.broadcast_string(&agree(session, identity)?))?;
    let key = resume::key_json(id.tool, &id.config, &checksums, &identity);
    crate::output::warn_duplicate_ids(session, id.catalog)?;
    let prov = provenance::build(
        session,
        id.tool,
        id.config.to_string(),
        id.model,
        checksums,
        id.catalog,
    );
    let run = open_output(
        session,
        output,
        claim.exists,
        overwrite,
        n,
        chunk_rows,
        &key,
        specs,
        |out| {
            prov.write(out)?;
            out.set_attr_str("inputs", &id.inputs.to_string())?;
            crate::output::write_modality_bits(out)
        },
    )?;
    if run.resumed {
        log::info!(
            "resuming {}: {} of {} chunk(s) left",
            output.display(),
            run.todo.len(),
            run.log.n_chunks
        );
    }
    let mut display = Progress::new(session.is_root(), n as u64, what);
    let done = (n - run
        .todo
        .iter()
        .map(|&c| chunk_len(c, chunk_rows, n))
        .sum::<usize>()) as u64;
    display.set(done);
    Ok(Started {
        run,
        prov,
        progress: Tracker { display, done },
        cpu_at_start: process_cpu_seconds(),
        _lock: claim.lock,
    })
}

impl Started {
    /// Ends the progress display, records the end time if the run finished, flushes; returns the
    /// elapsed seconds. Collective.
    pub fn close(&self, session: &Session, outcome: Outcome) -> Result<f64> {
        let secs = self.progress.display.finish();
        if outcome == Outcome::Finished {
            self.run.out.set_attr_str(
                "end_time",
                &session.broadcast_string(&provenance::now_utc()),
            )?;
        }
        self.run.out.flush()?;
        Ok(secs)
    }

    /// CPU seconds all ranks spent since the output was opened (collective).
    pub fn cpu_seconds(&self, session: &Session) -> f64 {
        session.sum_f64s(&[process_cpu_seconds() - self.cpu_at_start])[0]
    }

    /// Closes the output file, writes `<output>.run.json` (rank 0) and releases the lock.
    /// Collective.
    pub fn finish(
        self,
        session: &Session,
        output: &Path,
        summary: &serde_json::Value,
    ) -> Result<()> {
        self.run.close()?;
        agree(
            session,
            provenance::write_sidecar(session, output, &self.prov, summary),
        )
    }
}
