//! `aion-generate`: cross-modal generation for catalogue objects (see `docs/cli.md`).

use std::process::ExitCode;

use aion_app::generate::{GenerateArgs, TOOL, run};
use aion_app::pipeline::Outcome;
use aion_app::signals::StopFlag;
use aion_app::{backend, exit, fault, logging};
use aion_mpi::Session;
use clap::Parser;

fn main() -> ExitCode {
    let args = GenerateArgs::parse();
    backend::set_threads(backend::thread_budget_from_env(&args.compute));
    let Some(session) = Session::init() else {
        eprintln!("{TOOL}: MPI could not be initialised");
        return ExitCode::from(exit::FAILURE);
    };
    logging::init(TOOL, session.rank(), session.size(), &args.io.log_level);
    fault::set_rank(session.rank());
    let stop = match StopFlag::install() {
        Ok(s) => s,
        Err(e) => return exit::report(TOOL, session.rank(), session.size(), &e.into()),
    };
    match run(&args, &session, &stop) {
        Ok((Outcome::Finished, _)) => ExitCode::from(exit::OK),
        Ok((Outcome::Stopped, _)) => ExitCode::from(exit::CHECKPOINTED),
        Err(e) => exit::report(TOOL, session.rank(), session.size(), &e),
    }
}
