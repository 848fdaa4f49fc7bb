//! The one `main` of every binary ([`main`]) and the [`Tool`] trait each tool implements.
//!
//! Every tool starts the same way: parse the command line (`--version` prints
//! [`version::describe`]); set the rank's CPU thread budget ([`ToolArgs::threads`]) before MPI or
//! anything else starts a thread; initialise MPI ([`Tool::MPI`]) and logging; record the rank for fault
//! injection (test builds, [`fault`]); install the stop-signal handler for tools that
//! checkpoint ([`Tool::STOP_SIGNALS`]); pick the backend and device ([`ToolArgs::device`],
//! [`backend::dispatch`]); run; map the result to an exit code ([`exit`]), with errors printed
//! once per job or once per rank ([`exit::report`]).
//!
//! A run ends with a [`Report`]: its exit code and its summary, the run's result as JSON (what
//! `<output>.run.json` records, for the tools that write one). Rank 0 logs the summary at debug
//! level (`--log-level debug`), one line, so that every tool reports its result the same way.

use std::process::ExitCode;

use aion_mpi::Session;
use anyhow::Result;
use burn::tensor::backend::Backend;
use clap::Parser;

use crate::args::IoArgs;
use crate::backend::{self, BackendTask, ComputeArgs, DeviceChoice, Precision};
use crate::pipeline::Outcome;
use crate::signals::StopFlag;
use crate::{exit, fault, logging, version};

/// One binary, as its command line: what it does with the arguments it was given.
/// `bin/<name>/main.rs` is `fn main() -> ExitCode { aion_app::cli::main::<T>() }`, `T` the
/// tool's argument type (`EmbedArgs`, `SearchArgs`, …).
pub trait Tool: ToolArgs {
    /// The binary's name: error lines and log lines start with it.
    const NAME: &'static str;
    /// Whether SIGUSR1, SIGTERM and SIGINT set [`RunContext::stop`] instead of ending the process:
    /// the tools that checkpoint (and `aion-export`, which finishes what it writes). Tools that
    /// leave it `false` end on those signals, as any process does.
    const STOP_SIGNALS: bool;
    /// Whether the tool runs as MPI ranks: every tool but `aion-model`, which works alone and
    /// starts no MPI (an MPI singleton takes about half a second to start).
    const MPI: bool = true;

    /// Does the work on backend `B` and `device`.
    fn run<B: Backend>(&self, ctx: &RunContext, device: B::Device) -> Result<Report>;
}

/// What [`main`] reads from a tool's command line before the tool runs. The tools that run
/// the model on a catalogue get it from their [`IoArgs`] and [`ComputeArgs`]
/// ([`ModelToolArgs`]).
pub trait ToolArgs: Parser {
    /// `--log-level`.
    fn log_level(&self) -> &str;

    /// CPU threads of this rank: by default [`backend::thread_budget_from_env`] (`--threads`
    /// where the tool has it, else `SLURM_CPUS_PER_TASK`, else the node's cores over its ranks).
    fn threads(&self) -> usize {
        backend::thread_budget_from_env(None)
    }

    /// The backend and device to run on (`--device`, `--precision`); the CPU by default.
    fn device(&self) -> Result<(DeviceChoice, Precision)> {
        Ok((DeviceChoice::Cpu, Precision::F32))
    }

    /// The weight file whose checksum the run's provenance will need: rank 0 starts hashing
    /// it at once ([`provenance::prefetch_sha256`]).
    fn weights_to_hash(&self) -> Option<std::path::PathBuf> {
        None
    }
}

/// The command line of a tool that runs the model on a catalogue (`aion-tokenize`, `-embed`,
/// `-predict`, `-generate`): its [`IoArgs`] and [`ComputeArgs`] answer [`ToolArgs`].
pub trait ModelToolArgs: Parser {
    /// Model, catalogue, output and logging.
    fn io(&self) -> &IoArgs;
    /// Threads, device and precision.
    fn compute(&self) -> &ComputeArgs;
}

/// `model_tool_args!(EmbedArgs)`: [`ModelToolArgs`] for an argument type with the fields `io`
/// and `compute`.
macro_rules! model_tool_args {
    ($args:ty) => {
        impl $crate::cli::ModelToolArgs for $args {
            fn io(&self) -> &$crate::args::IoArgs {
                &self.io
            }

            fn compute(&self) -> &$crate::backend::ComputeArgs {
                &self.compute
            }
        }
    };
}
pub(crate) use model_tool_args;

impl<A: ModelToolArgs> ToolArgs for A {
    fn log_level(&self) -> &str {
        &self.io().log_level
    }

    fn threads(&self) -> usize {
        self.compute().thread_budget()
    }

    fn device(&self) -> Result<(DeviceChoice, Precision)> {
        self.compute().device()
    }

    fn weights_to_hash(&self) -> Option<std::path::PathBuf> {
        Some(aion_model::hub::layout::weights(&self.io().model))
    }
}

/// What a tool's [`Tool::run`] gets besides its arguments.
pub struct RunContext<'a> {
    /// This rank's MPI session (`None` in a tool without MPI, [`Tool::MPI`]).
    session: Option<&'a Session>,
    /// Set by a stop signal (tools with [`Tool::STOP_SIGNALS`]; never set for the others).
    pub stop: StopFlag,
    /// This rank's CPU thread budget ([`ToolArgs::threads`]), already given to the thread pools.
    pub threads: usize,
}

impl RunContext<'_> {
    /// This rank's MPI session.
    ///
    /// # Panics
    /// In a tool that starts no MPI ([`Tool::MPI`] `false`): such a tool has no session to ask
    /// for.
    pub fn session(&self) -> &Session {
        self.session
            .expect("Tool::MPI is false: this tool has no MPI session")
    }
}

/// How a run ended.
#[derive(Debug)]
pub struct Report {
    /// The process's exit code ([`exit::OK`], [`exit::CHECKPOINTED`], or [`exit::FAILURE`]
    /// when the tool itself found problems and printed them).
    pub exit: u8,
    /// The run's result (`null` when the tool has none).
    pub summary: serde_json::Value,
}

impl Report {
    /// A run that ended as `outcome` ([`exit::OK`] or [`exit::CHECKPOINTED`]).
    pub fn new(outcome: Outcome, summary: serde_json::Value) -> Self {
        let exit = match outcome {
            Outcome::Finished => exit::OK,
            Outcome::Stopped => exit::CHECKPOINTED,
        };
        Self { exit, summary }
    }

    /// A finished run.
    pub fn finished(summary: serde_json::Value) -> Self {
        Self::new(Outcome::Finished, summary)
    }
}

impl From<(Outcome, serde_json::Value)> for Report {
    fn from((outcome, summary): (Outcome, serde_json::Value)) -> Self {
        Self::new(outcome, summary)
    }
}

/// The `main` of every binary (see the module documentation for what it does, in order).
pub fn main<T: Tool>() -> ExitCode {
    backend::tune_allocator();
    let args: T = parse_args();
    let threads = args.threads();
    backend::set_threads(threads);
    let session = if T::MPI {
        let Some(session) = start_session(T::NAME, args.log_level()) else {
            return ExitCode::from(exit::FAILURE);
        };
        Some(session)
    } else {
        logging::init(T::NAME, 0, 1, args.log_level());
        None
    };
    let (rank, size, local_rank) = session
        .as_ref()
        .map_or((0, 1, 0), |s| (s.rank(), s.size(), s.local_rank()));
    fault::set_rank(rank);
    if rank == 0
        && let Some(w) = args.weights_to_hash()
    {
        crate::provenance::prefetch_sha256(&w);
    }
    let stop = if T::STOP_SIGNALS {
        StopFlag::install().map_err(anyhow::Error::from)
    } else {
        Ok(StopFlag::never())
    };
    let ran = stop.and_then(|stop| {
        let ctx = RunContext {
            session: session.as_ref(),
            stop,
            threads,
        };
        let (device, precision) = args.device()?;
        let task = RunTool::<T> {
            args: &args,
            ctx: &ctx,
        };
        backend::dispatch(device, precision, local_rank, task)
    });
    let code = match ran {
        Ok(report) => {
            if rank == 0 && !report.summary.is_null() {
                log::debug!("summary: {}", report.summary);
            }
            ExitCode::from(report.exit)
        }
        Err(e) => exit::report(T::NAME, rank, size, &e),
    };
    match session {
        Some(session) => finish(session, code),
        None => code,
    }
}

/// [`Tool::run`] as a [`BackendTask`] for [`backend::dispatch`].
struct RunTool<'a, T: Tool> {
    args: &'a T,
    ctx: &'a RunContext<'a>,
}

impl<T: Tool> BackendTask for RunTool<'_, T> {
    type Output = Report;

    fn run<B: Backend>(self, device: B::Device) -> Result<Report> {
        self.args.run::<B>(self.ctx, device)
    }
}

/// Parses the command line; `-V` / `--version` print [`version::describe`] (the libraries are
/// only queried when asked for).
pub fn parse_args<A: Parser>() -> A {
    let mut cmd = A::command();
    if std::env::args_os()
        .skip(1)
        .any(|a| a == "--version" || a == "-V")
    {
        let text = version::describe();
        cmd = cmd.version(text.clone()).long_version(text);
    }
    A::from_arg_matches_mut(&mut cmd.get_matches()).unwrap_or_else(|e| e.exit())
}

/// Initialises MPI and logging, and logs where this rank runs (host, node-local rank: the GPU
/// index `--device cuda` uses). `None` (after printing why) if MPI cannot start.
fn start_session(tool: &'static str, log_level: &str) -> Option<Session> {
    let Some(session) = Session::init() else {
        eprintln!("{tool}: MPI could not be initialised");
        return None;
    };
    logging::init(tool, session.rank(), session.size(), log_level);
    log::info!(
        "{} on host {}: node-local rank {} of {} ({}), {} rank(s) in all",
        version::short(),
        session.host(),
        session.local_rank(),
        session.node_size(),
        if session.slurm().localid.is_some() {
            "SLURM_LOCALID"
        } else {
            "MPI shared-memory split"
        },
        session.size()
    );
    Some(session)
}

/// Ends a tool's process: returns `code`, after finalising MPI, except after a failed write of
/// an output (then HDF5 would try to close the half-written file inside `MPI_Finalize`, and
/// HDF5 1.10 crashes doing so; see `aion_io::output`), when MPI is left as it is and the
/// process simply exits. Every rank gets there, since output failures are agreed.
fn finish(session: Session, code: ExitCode) -> ExitCode {
    if aion_io::output::io_failed() {
        std::mem::forget(session);
    }
    code
}
