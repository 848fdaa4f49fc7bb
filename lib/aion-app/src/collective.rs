//! Keeping ranks in step when something fails on some of them only.

use aion_mpi::Session;
use anyhow::{Result, anyhow};

/// Makes a fallible step collective: every rank learns whether all ranks succeeded. A rank that
/// failed returns its own error; the others return "another rank failed", so no rank is left
/// waiting in the next collective call.
pub fn agree<T>(session: &Session, step: Result<T>) -> Result<T> {
    let all_ok = session.agree(step.is_ok());
    match step {
        Ok(v) if all_ok => Ok(v),
        Ok(_) => Err(anyhow!(
            "stopped because another rank failed (its error is in the log)"
        )),
        Err(e) => Err(e),
    }
}
