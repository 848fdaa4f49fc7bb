//! The `main` every tool shares: parse, set the thread budget before MPI starts, initialise MPI,
//! logging and the stop-signal handler, run, map the result to an exit code.

use std::process::ExitCode;

use aion_mpi::Session;
use clap::Parser;

use crate::backend;
use crate::pipeline::Outcome;
use crate::signals::StopFlag;
use crate::{exit, fault, logging};

/// A tool's command line: what `main` needs to know about it.
pub trait ToolArgs: Parser {
    /// `--threads`: CPU threads per rank, if given (else [`backend::thread_budget_from_env`]).
    fn threads(&self) -> Option<usize>;
    /// Log level.
    fn log_level(&self) -> &str;
}

/// Runs a tool: `run` does the work on an initialised session.
pub fn tool_main<A: ToolArgs>(
    tool: &'static str,
    run: impl FnOnce(&A, &Session, &StopFlag) -> anyhow::Result<(Outcome, serde_json::Value)>,
) -> ExitCode {
    let args = A::parse();
    backend::set_threads(backend::thread_budget_from_env(args.threads()));
    let Some(session) = Session::init() else {
        eprintln!("{tool}: MPI could not be initialised");
        return ExitCode::from(exit::FAILURE);
    };
    logging::init(tool, session.rank(), session.size(), args.log_level());
    fault::set_rank(session.rank());
    let stop = match StopFlag::install() {
        Ok(s) => s,
        Err(e) => return exit::report(tool, session.rank(), session.size(), &e.into()),
    };
    let code = match run(&args, &session, &stop) {
        Ok((Outcome::Finished, _)) => ExitCode::from(exit::OK),
        Ok((Outcome::Stopped, _)) => ExitCode::from(exit::CHECKPOINTED),
        Err(e) => exit::report(tool, session.rank(), session.size(), &e),
    };
    finish(session, code)
}

/// Ends a tool's process: returns `code`, after finalising MPI, except after a failed write of
/// an output (then HDF5 would try to close the half-written file inside `MPI_Finalize`, and
/// HDF5 1.10 crashes doing so; see `aion_io::output`), when MPI is left as it is and the
/// process simply exits. Every rank gets there, since output failures are agreed.
pub fn finish(session: Session, code: ExitCode) -> ExitCode {
    if aion_io::output::io_failed() {
        std::mem::forget(session);
    }
    code
}
