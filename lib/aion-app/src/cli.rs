//! The `main` every tool shares: parse, set the thread budget before MPI starts, initialise MPI,
//! logging and the stop-signal handler, run, map the result to an exit code.

use std::process::ExitCode;

use aion_mpi::Session;
use clap::Parser;

use crate::backend;
use crate::pipeline::Outcome;
use crate::signals::StopFlag;
use crate::{exit, fault, logging, version};

/// A tool's command line: what `main` needs to know about it.
pub trait ToolArgs: Parser {
    /// `--threads`: CPU threads per rank, if given (else [`backend::thread_budget_from_env`]).
    fn threads(&self) -> Option<usize>;
    /// Log level.
    fn log_level(&self) -> &str;
}

/// Parses the command line; `-V` / `--version` print [`version::describe`] (the libraries are
/// only queried when asked for).
pub fn parse_args<A: Parser>() -> A {
    let mut cmd = A::command();
    if std::env::args_os()
        .skip(1)
        .any(|a| a == "--version" || a == "-V")
    {
        // clap keeps `&'static str`s; this runs once, just before printing and exiting.
        let text: &'static str = Box::leak(version::describe().into_boxed_str());
        cmd = cmd.version(text).long_version(text);
    }
    A::from_arg_matches_mut(&mut cmd.get_matches()).unwrap_or_else(|e| e.exit())
}

/// Initialises MPI and logging, and logs where this rank runs (host, node-local rank: the GPU
/// index `--device cuda` uses). `None` (after printing why) if MPI cannot start.
pub fn start_session(tool: &'static str, log_level: &str) -> Option<Session> {
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

/// Runs a tool: `run` does the work on an initialised session.
pub fn tool_main<A: ToolArgs>(
    tool: &'static str,
    run: impl FnOnce(&A, &Session, &StopFlag) -> anyhow::Result<(Outcome, serde_json::Value)>,
) -> ExitCode {
    let args: A = parse_args();
    backend::set_threads(backend::thread_budget_from_env(args.threads()));
    let Some(session) = start_session(tool, args.log_level()) else {
        return ExitCode::from(exit::FAILURE);
    };
    fault::set_rank(session.rank());
    let stop = match StopFlag::install() {
        Ok(s) => s,
        Err(e) => return exit::report(tool, session.rank(), session.size(), &e.into()),
    };
    match run(&args, &session, &stop) {
        Ok((Outcome::Finished, _)) => ExitCode::from(exit::OK),
        Ok((Outcome::Stopped, _)) => ExitCode::from(exit::CHECKPOINTED),
        Err(e) => exit::report(tool, session.rank(), session.size(), &e),
    }
}
