//! `aion-finetune`: fine-tune AION-1 on a catalogue, data-parallel over MPI (see
//! `docs/finetune.md`).

use std::process::ExitCode;

use aion_app::finetune::{FinetuneArgs, Outcome, TOOL, run};
use aion_app::signals::StopFlag;
use aion_app::{exit, logging};
use aion_mpi::Session;
use clap::Parser;

fn main() -> ExitCode {
    let args = FinetuneArgs::parse();
    let Some(session) = Session::init() else {
        eprintln!("{TOOL}: MPI could not be initialised");
        return ExitCode::from(exit::FAILURE);
    };
    logging::init(TOOL, session.rank(), session.size(), &args.log_level);
    aion_app::fault::set_rank(session.rank());
    let stop = match StopFlag::install() {
        Ok(s) => s,
        Err(e) => return exit::report(TOOL, session.rank(), session.size(), &e.into()),
    };
    match run(&args, &session, &stop) {
        Ok(Outcome::Finished) => ExitCode::from(exit::OK),
        Ok(Outcome::Stopped) => ExitCode::from(exit::CHECKPOINTED),
        Err(e) => exit::report(TOOL, session.rank(), session.size(), &e),
    }
}
