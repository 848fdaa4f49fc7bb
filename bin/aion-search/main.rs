//! `aion-search`: exact top-k similarity search over catalogue embeddings (see `docs/cli.md`).

use std::process::ExitCode;

use aion_app::search::{SearchArgs, TOOL, run};
use aion_app::{exit, logging};
use aion_mpi::Session;
use clap::Parser;

fn main() -> ExitCode {
    let args = SearchArgs::parse();
    let Some(session) = Session::init() else {
        eprintln!("{TOOL}: MPI could not be initialised");
        return ExitCode::from(exit::FAILURE);
    };
    logging::init(TOOL, session.rank(), session.size(), &args.log_level);
    let code = match run(&args, &session) {
        Ok(_) => ExitCode::from(exit::OK),
        Err(e) => exit::report(TOOL, session.rank(), session.size(), &e),
    };
    aion_app::cli::finish(session, code)
}
