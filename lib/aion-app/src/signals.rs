//! Graceful stop on the Slurm time-limit signal.
//!
//! `#SBATCH --signal=USR1@<seconds>` makes Slurm send SIGUSR1 to every task some time before the
//! limit; at the limit it sends SIGTERM (then SIGKILL after `KillWait`). On SIGUSR1, SIGTERM or
//! SIGINT the tools finish the round of chunks in flight, record it as done, flush the output and
//! exit with [`crate::exit::CHECKPOINTED`]; the sbatch scripts then requeue the job, and the
//! requeued run resumes from the recorded chunks.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set when a stop signal arrived.
#[derive(Clone, Debug)]
pub struct StopFlag(Arc<AtomicBool>);

impl StopFlag {
    /// Installs handlers for SIGUSR1, SIGTERM and SIGINT.
    pub fn install() -> std::io::Result<Self> {
        let flag = Arc::new(AtomicBool::new(false));
        for sig in [
            signal_hook::consts::SIGUSR1,
            signal_hook::consts::SIGTERM,
            signal_hook::consts::SIGINT,
        ] {
            signal_hook::flag::register(sig, Arc::clone(&flag))?;
        }
        Ok(Self(flag))
    }

    /// A flag no signal sets (tests, library use).
    pub fn never() -> Self {
        Self(Arc::new(AtomicBool::new(false)))
    }

    /// Whether a stop was requested on this rank.
    pub fn requested(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// Requests a stop (as a signal would).
    pub fn request(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}
