//! Whole-job progress on rank 0: an indicatif bar on a terminal, log lines otherwise (Slurm
//! output files), both with the same figures: rows done, rows per second and the estimated
//! time left, counted over the rows of this run only (a resumed run does not count the rows an
//! earlier run wrote as done in no time).

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Without a terminal, a log line at least every this many seconds (besides every 10 %).
pub const LOG_EVERY: Duration = Duration::from_secs(60);

/// Progress over all ranks' rows, drawn by rank 0 only.
pub struct Progress {
    bar: Option<ProgressBar>,
    total: u64,
    done: u64,
    /// Rows done before this run (a resumed run).
    initial: Option<u64>,
    last_logged: (u64, Instant),
    start: Instant,
    what: &'static str,
}

/// `1h 02m 03s`, `2m 05s`, `45s`.
pub fn format_duration(secs: f64) -> String {
    if !secs.is_finite() {
        return "?".into();
    }
    let s = secs.round() as u64;
    let (h, m, s) = (s / 3600, s / 60 % 60, s % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m {s:02}s"),
        _ => format!("{h}h {m:02}m {s:02}s"),
    }
}

impl Progress {
    /// A progress reporter for `total` rows; silent unless `root`.
    pub fn new(root: bool, total: u64, what: &'static str) -> Self {
        let bar = (root && std::io::IsTerminal::is_terminal(&std::io::stderr())).then(|| {
            let b = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            b.set_style(
                ProgressStyle::with_template(
                    "{spinner} {msg} [{bar:40}] {pos}/{len} rows {prefix}",
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
            initial: None,
            last_logged: (0, Instant::now()),
            start: Instant::now(),
            what: if root { what } else { "" },
        }
    }

    /// Rows per second of this run and the estimated seconds left.
    pub fn rate_and_eta(&self) -> (f64, f64) {
        let this_run = self.done - self.initial.unwrap_or(0);
        let rate = this_run as f64 / self.start.elapsed().as_secs_f64().max(1e-9);
        let left = (self.total - self.done.min(self.total)) as f64;
        let eta = if rate > 0.0 { left / rate } else { f64::NAN };
        (rate, eta)
    }

    /// The figures both displays show: `(1234.5 rows/s, ETA 2m 05s)`.
    pub fn figures(&self) -> String {
        let (rate, eta) = self.rate_and_eta();
        if self.done == self.initial.unwrap_or(0) {
            return String::new();
        }
        format!("({rate:.1} rows/s, ETA {})", format_duration(eta))
    }

    /// Sets the number of rows done by all ranks together. The first call gives the rows an
    /// earlier run already did.
    pub fn set(&mut self, done: u64) {
        self.done = done;
        let first = self.initial.is_none();
        if first {
            self.initial = Some(done);
            self.start = Instant::now();
            self.last_logged = (done, self.start);
        }
        if let Some(b) = &self.bar {
            b.set_position(done);
            b.set_prefix(self.figures());
            return;
        }
        if self.what.is_empty() || first {
            return;
        }
        let (last, when) = self.last_logged;
        let step = (done - last) * 10 >= self.total.max(1);
        if step || when.elapsed() >= LOG_EVERY || done == self.total {
            self.last_logged = (done, Instant::now());
            log::info!(
                "{} {done}/{} rows ({:.0}%) {}",
                self.what,
                self.total,
                100.0 * done as f64 / self.total.max(1) as f64,
                self.figures()
            );
        }
    }

    /// Ends the bar; returns the elapsed seconds of this run.
    pub fn finish(&self) -> f64 {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
        self.start.elapsed().as_secs_f64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(format_duration(44.6), "45s");
        assert_eq!(format_duration(125.0), "2m 05s");
        assert_eq!(format_duration(3723.0), "1h 02m 03s");
        assert_eq!(format_duration(f64::NAN), "?");
    }

    #[test]
    fn a_resumed_run_counts_only_its_own_rows() {
        let mut p = Progress::new(false, 1000, "");
        p.set(900);
        assert_eq!(p.figures(), "", "nothing done yet in this run");
        std::thread::sleep(Duration::from_millis(20));
        p.set(950);
        let (rate, eta) = p.rate_and_eta();
        // 50 rows in ≥ 20 ms: at most 2500 rows/s, never the 950 rows of the earlier run.
        assert!(rate > 0.0 && rate <= 2500.0, "{rate}");
        assert!((eta - 50.0 / rate).abs() < 1e-9);
    }
}
