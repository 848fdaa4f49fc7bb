//! `aion-search`: exact top-k similarity search over catalogue embeddings (see `docs/cli.md`).

use std::process::ExitCode;

use aion_app::search::{SearchArgs, TOOL, run};
use aion_app::{cli, exit};

fn main() -> ExitCode {
    let args: SearchArgs = cli::parse_args();
    let Some(session) = cli::start_session(TOOL, &args.log_level) else {
        return ExitCode::from(exit::FAILURE);
    };
    let code = match run(&args, &session) {
        Ok(_) => ExitCode::from(exit::OK),
        Err(e) => exit::report(TOOL, session.rank(), session.size(), &e),
    };
    aion_app::cli::finish(session, code)
}
