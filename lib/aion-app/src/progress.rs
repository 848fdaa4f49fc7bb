//! Whole-job progress on rank 0: an indicatif bar on a terminal, periodic log lines otherwise
//! (Slurm output files).

use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Progress over all ranks' rows, drawn by rank 0 only.
pub struct Progress {
    bar: Option<ProgressBar>,
    total: u64,
    done: u64,
    last_logged: u64,
    start: Instant,
    what: &'static str,
}

impl Progress {
    /// A progress reporter for `total` rows; silent unless `root`.
    pub fn new(root: bool, total: u64, what: &'static str) -> Self {
        let bar = (root && std::io::IsTerminal::is_terminal(&std::io::stderr())).then(|| {
            let b = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            b.set_style(
                ProgressStyle::with_template(
                    "{spinner} {msg} [{bar:40}] {pos}/{len} rows ({per_sec}, eta {eta})",
                )
                .expect("static template is valid")
                .progress_chars("=> "),
            );
            b.set_message(what);
            b
        });
        Self {
            bar,
            total,
            done: 0,
            last_logged: 0,
            start: Instant::now(),
            what: if root { what } else { "" },
        }
    }

    /// Sets the number of rows done by all ranks together.
    pub fn set(&mut self, done: u64) {
        self.done = done;
        if let Some(b) = &self.bar {
            b.set_position(done);
        } else if !self.what.is_empty() && (done - self.last_logged) * 10 >= self.total.max(1) {
            self.last_logged = done;
            let rate = done as f64 / self.start.elapsed().as_secs_f64().max(1e-9);
            log::info!(
                "{} {done}/{} rows ({:.0}%, {rate:.1} rows/s)",
                self.what,
                self.total,
                100.0 * done as f64 / self.total.max(1) as f64
            );
        }
    }

    /// Ends the bar; returns the elapsed seconds.
    pub fn finish(&self) -> f64 {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
        self.start.elapsed().as_secs_f64()
    }
}
