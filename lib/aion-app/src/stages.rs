//! Where a rank's time goes: wall time per stage of the pipeline, accumulated over a run.
//!
//! The three threads of [`crate::pipeline::run_chunks`] overlap, so a rank's stages are kept
//! per thread: the reader (catalogue reads, tokenization per codec kind), the compute thread
//! (encoder and pooling, prediction and posteriors, sampler, decoding) and the main thread (collective writes, waiting
//! for its own pipeline, waiting for the other ranks). Within one thread the stages do not
//! overlap, so each thread's stages add up to at most the run's wall time; what is left is time
//! the thread spent blocked on a channel (reader, compute) or outside the timed calls.
//!
//! Timing is an [`Instant`] pair around calls that already exist, added to an atomic counter: no
//! synchronisation is added to the hot path. [`Stages::gather`] collects every rank's counters at
//! the end of a run (one reduction, with the per-rank rows and CPU seconds of
//! `tool::Started::close`).

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// A pipeline thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Thread {
    /// Reads chunks and tokenizes them.
    Reader,
    /// Runs the model.
    Compute,
    /// Writes (collective) and keeps the ranks in step; also everything outside the pipeline.
    Main,
}

impl Thread {
    /// Every thread, in report order.
    pub const ALL: [Thread; 3] = [Thread::Reader, Thread::Compute, Thread::Main];

    /// Name in the run summary.
    pub fn name(self) -> &'static str {
        match self {
            Thread::Reader => "reader",
            Thread::Compute => "compute",
            Thread::Main => "main",
        }
    }

    /// Marks the calling thread as this pipeline thread (its stages are counted under it).
    pub fn enter(self) {
        CURRENT.with(|c| c.set(self));
    }

    fn current() -> Self {
        CURRENT.with(Cell::get)
    }
}

thread_local! {
    static CURRENT: Cell<Thread> = const { Cell::new(Thread::Main) };
}

/// A stage of the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Catalogue reads (columns, object ids, true values).
    Read,
    /// Pre-tokenized columns taken as they are.
    Tokens,
    /// The quantile / grid scalar codecs.
    ScalarCodec,
    /// The object-catalog codec.
    CatalogCodec,
    /// The spectrum codec.
    SpectrumCodec,
    /// The image codec.
    ImageCodec,
    /// The segmentation-map (scalar field) codec.
    FieldCodec,
    /// The transformer's encoder (`Aion::encode`, and `Aion::predict`'s encoder pass).
    Encoder,
    /// Pooling of the context vectors into embeddings (and the per-token layout).
    Pooling,
    /// `aion-predict`'s model pass: encoder, decoder and heads (`Aion::predict`), logits back.
    Predict,
    /// `aion-predict`'s posteriors from the logits: summaries, PDFs, scores against the truth.
    Posteriors,
    /// A probe head (`--probe`), with the embedding it reads.
    Probe,
    /// The generation sampler (encoder and decoder passes of every step).
    Sampler,
    /// Codec decoding of tokens to values.
    Decode,
    /// Collective writes of the output, flushes, the resume record.
    Write,
    /// The main thread waiting for its own reader and compute threads.
    WaitPipeline,
    /// Waiting for the other ranks (the agreement before each round, progress counts).
    WaitRanks,
}

impl Stage {
    /// Every stage, in report order.
    pub const ALL: [Stage; 17] = [
        Stage::Read,
        Stage::Tokens,
        Stage::ScalarCodec,
        Stage::CatalogCodec,
        Stage::SpectrumCodec,
        Stage::ImageCodec,
        Stage::FieldCodec,
        Stage::Encoder,
        Stage::Pooling,
        Stage::Predict,
        Stage::Posteriors,
        Stage::Probe,
        Stage::Sampler,
        Stage::Decode,
        Stage::Write,
        Stage::WaitPipeline,
        Stage::WaitRanks,
    ];

    /// Name in the run summary.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Read => "read",
            Stage::Tokens => "tokens",
            Stage::ScalarCodec => "scalar_codec",
            Stage::CatalogCodec => "catalog_codec",
            Stage::SpectrumCodec => "spectrum_codec",
            Stage::ImageCodec => "image_codec",
            Stage::FieldCodec => "segmap_codec",
            Stage::Encoder => "encoder",
            Stage::Pooling => "pooling",
            Stage::Predict => "predict",
            Stage::Posteriors => "posteriors",
            Stage::Probe => "probe",
            Stage::Sampler => "sampler",
            Stage::Decode => "decode",
            Stage::Write => "write",
            Stage::WaitPipeline => "wait_pipeline",
            Stage::WaitRanks => "wait_ranks",
        }
    }
}

/// Number of counters: one per (thread, stage).
const SLOTS: usize = Thread::ALL.len() * Stage::ALL.len();

fn slot(thread: Thread, stage: Stage) -> usize {
    thread as usize * Stage::ALL.len() + stage as usize
}

/// This rank's wall time per (thread, stage), in nanoseconds; shared by the pipeline threads.
pub struct Stages {
    nanos: [AtomicU64; SLOTS],
}

impl Default for Stages {
    fn default() -> Self {
        Self {
            nanos: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl std::fmt::Debug for Stages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.seconds()).finish()
    }
}

impl Stages {
    /// Runs `f`, counting its wall time as `stage` of the calling thread.
    pub fn time<T>(&self, stage: Stage, f: impl FnOnce() -> T) -> T {
        let t = Instant::now();
        let out = f();
        self.add(stage, t);
        out
    }

    /// Counts the time since `since` as `stage` of the calling thread.
    pub fn add(&self, stage: Stage, since: Instant) {
        let ns = u64::try_from(since.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.nanos[slot(Thread::current(), stage)].fetch_add(ns, Ordering::Relaxed);
    }

    /// Seconds per (thread, stage), thread-major in [`Thread::ALL`] × [`Stage::ALL`] order.
    pub fn seconds(&self) -> Vec<f64> {
        self.nanos
            .iter()
            .map(|n| n.load(Ordering::Relaxed) as f64 * 1e-9)
            .collect()
    }

    /// Number of values [`Stages::seconds`] returns.
    pub const LEN: usize = SLOTS;
}

/// One rank's stages as JSON: `{thread: {stage: seconds}}`, leaving out the stages no rank used
/// (`used[slot]`), so every rank lists the same stages.
pub fn rank_json(seconds: &[f64], used: &[bool]) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    for t in Thread::ALL {
        let mut stages = serde_json::Map::new();
        for s in Stage::ALL {
            let i = slot(t, s);
            if used[i] {
                stages.insert(s.name().into(), round_ms(seconds[i]).into());
            }
        }
        if !stages.is_empty() {
            out.insert(t.name().into(), stages.into());
        }
    }
    out.into()
}

/// One rank's stages as a log line: `reader: read 0.12 s, image_codec 3.40 s | compute: …`.
pub fn rank_line(seconds: &[f64], used: &[bool]) -> String {
    Thread::ALL
        .iter()
        .filter_map(|&t| {
            let parts: Vec<String> = Stage::ALL
                .iter()
                .filter(|&&s| used[slot(t, s)])
                .map(|&s| format!("{} {:.2} s", s.name(), seconds[slot(t, s)]))
                .collect();
            (!parts.is_empty()).then(|| format!("{}: {}", t.name(), parts.join(", ")))
        })
        .collect::<Vec<_>>()
        .join(" | ")
}

/// Seconds to the millisecond (the run summary needs no more).
fn round_ms(s: f64) -> f64 {
    (s * 1e3).round() / 1e3
}

/// CPU seconds (user + system) used so far by this process, all threads included, from
/// `/proc/self/stat` (in ticks of 1/100 s, Linux's `USER_HZ`); `None` elsewhere.
pub fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the `(comm)` one: state is field 3, utime 14, stime 15.
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i - 3).and_then(|v| v.parse::<u64>().ok());
    Some((ticks(14)? + ticks(15)?) as f64 / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_count_per_thread_and_report_the_used_ones() {
        let stages = Stages::default();
        stages.time(Stage::Write, || {
            std::thread::sleep(std::time::Duration::from_millis(20))
        });
        std::thread::scope(|s| {
            s.spawn(|| {
                Thread::Reader.enter();
                stages.time(Stage::ImageCodec, || {
                    std::thread::sleep(std::time::Duration::from_millis(10))
                });
            });
        });
        let secs = stages.seconds();
        assert_eq!(secs.len(), Stages::LEN);
        let used: Vec<bool> = secs.iter().map(|&v| v > 0.0).collect();
        assert_eq!(used.iter().filter(|&&u| u).count(), 2);
        assert!(secs[slot(Thread::Main, Stage::Write)] >= 0.02);
        assert!(secs[slot(Thread::Reader, Stage::ImageCodec)] >= 0.01);
        let json = rank_json(&secs, &used);
        assert!(json["main"]["write"].as_f64().unwrap() >= 0.02);
        assert!(json["reader"]["image_codec"].as_f64().unwrap() >= 0.01);
        assert!(json.get("compute").is_none());
        let line = rank_line(&secs, &used);
        assert!(
            line.starts_with("reader: image_codec ") && line.contains(" | main: write "),
            "{line}"
        );
    }
}
