//! `aion-fit-codecs`: fit scalar quantile codecs on catalogue columns, MPI-parallel, and write
//! them in the Hub layout (see `docs/finetune.md`).

use std::process::ExitCode;

use aion_app::fit_codecs::{FitCodecsArgs, TOOL, run};
use aion_app::{cli, exit};

fn main() -> ExitCode {
    let args: FitCodecsArgs = cli::parse_args();
    let Some(session) = cli::start_session(TOOL, &args.log_level) else {
        return ExitCode::from(exit::FAILURE);
    };
    let code = match run(&args, &session) {
        Ok(_) => ExitCode::from(exit::OK),
        Err(e) => exit::report(TOOL, session.rank(), session.size(), &e),
    };
    aion_app::cli::finish(session, code)
}
