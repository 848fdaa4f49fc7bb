//! Keeping ranks in step when something fails on some of them only.

use aion_mpi::Session;
use anyhow::Result;

/// An error every rank knows about (the same text on all ranks): only rank 0 prints it.
#[derive(Debug)]
pub struct AgreedError(pub String);

impl std::fmt::Display for AgreedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for AgreedError {}

/// An agreed error caused by the file system (a full disk, a lost mount, a permission) on some
/// rank: every rank prints it, since a Slurm job may keep one log per rank and each must say
/// why the job stopped.
#[derive(Debug)]
pub struct AgreedIoError(pub String);

impl std::fmt::Display for AgreedIoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for AgreedIoError {}

/// Makes a fallible step collective: every rank learns whether all ranks succeeded, and if not,
/// every rank returns the same [`AgreedError`] holding each failing rank's message (once when
/// they are identical). No rank is left waiting in the next collective call.
pub fn agree<T>(session: &Session, step: Result<T>) -> Result<T> {
    if session.agree(step.is_ok()) {
        return Ok(step.expect("all ranks succeeded"));
    }
    // A failed write of the output is already agreed (the same error on every rank): kept as
    // it is, so that every rank reports it (see `exit::report`).
    let output = step.as_ref().err().is_some_and(is_output_failure);
    if session.agree(output) {
        return step;
    }
    // Each failing rank's message, after one byte saying whether the file system caused it.
    let mine = step
        .as_ref()
        .err()
        .map(|e| format!("{}{e:#}", u8::from(is_fs_failure(e))))
        .unwrap_or_default();
    let all = session.all_gather_bytes(mine.as_bytes());
    let mut fs = false;
    let msgs: Vec<(usize, String)> = all
        .into_iter()
        .enumerate()
        .filter(|(_, m)| !m.is_empty())
        .map(|(r, m)| {
            fs |= m[0] == b'1';
            (r, String::from_utf8_lossy(&m[1..]).into_owned())
        })
        .collect();
    let text = if msgs.iter().all(|(_, m)| *m == msgs[0].1) {
        msgs[0].1.clone()
    } else {
        msgs.iter()
            .map(|(r, m)| format!("rank {r}: {m}"))
            .collect::<Vec<_>>()
            .join("; ")
    };
    if fs {
        return Err(AgreedIoError(text).into());
    }
    Err(AgreedError(text).into())
}

/// Whether the file system caused `err` (an OS error in its chain).
fn is_fs_failure(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.raw_os_error().is_some())
    })
}

/// Whether `err` is a failed write of the output file ([`aion_io::Error::Output`]: agreed by
/// every rank, and reported by every rank).
pub fn is_output_failure(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        matches!(
            c.downcast_ref::<aion_io::Error>(),
            Some(aion_io::Error::Output { .. })
        )
    })
}
