//! Data safety: the checks every tool runs on every path it writes, before doing any work.
//!
//! 1. **Never an input.** No output (the HDF5 file, `<output>.run.json`, plots, search results,
//!    model directories, lock files) may be an input of the run: a catalogue file, a model file,
//!    the model directory, a configuration or query file. Paths are compared canonically and,
//!    for existing files, by device and inode, so a symbolic or hard link to the catalogue is
//!    the catalogue. No flag lifts this ([`Inputs::refuse`]).
//! 2. **Only our own files are replaced.** An existing output is continued, or replaced with
//!    `--overwrite`, only when it carries an aion-hpc marker ([`Existing`]): an HDF5 file with
//!    the root attribute `tool` = `aion-…`, a `.run.json` with a `provenance` record, a PNG with
//!    the text chunk `Software = aion-hpc`, a CSV with the search header, a model directory
//!    holding [`MODEL_MARKER`], an export (Parquet file metadata key `aion-hpc`, FITS
//!    `CREATOR = 'aion-hpc …'`, a HATS directory whose `properties` say
//!    `hats_builder = aion-hpc …`). Anything else is refused, with or without `--overwrite`.
//! 3. **One run per output.** [`OutputLock`]: rank 0 holds an advisory `flock` on
//!    `<output>.lock` for the whole run; a second run on the same output stops at once, naming
//!    the first one's tool, host and process id.
//! 4. **All or nothing.** Files written at the end of a run go to a temporary sibling that is
//!    renamed into place ([`write_file`]); model directories are built in a temporary sibling
//!    directory and swapped in ([`replace_dir`]). A failure leaves the previous content (or
//!    nothing), never a truncated file.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read as _, Write as _};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use aion_mpi::Session;
use anyhow::{Context, Result, bail};

use crate::collective::agree;

/// The marker file of a model directory written by an aion-hpc tool.
pub const MODEL_MARKER: &str = "aion-hpc.json";

/// First line of a lock file.
const LOCK_HEADER: &str = "aion-hpc lock";

/// The text chunk that marks our PNG plots.
pub const PNG_SOFTWARE: (&str, &str) = ("Software", "aion-hpc");

/// The element our SVG figures carry right after the `<svg …>` tag, by which they are recognised.
pub const SVG_MARKER: &str = "<metadata>Software: aion-hpc</metadata>";

/// Where a path leads: its canonical form and, when it exists, its device and inode.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Identity {
    path: PathBuf,
    node: Option<(u64, u64)>,
}

impl Identity {
    fn of(p: &Path) -> Self {
        let node = std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
        let path = std::fs::canonicalize(p).unwrap_or_else(|_| {
            // Not there (yet): the canonical parent directory and the name.
            let abs = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
            match (abs.parent(), abs.file_name()) {
                (Some(dir), Some(name)) => std::fs::canonicalize(dir)
                    .map(|d| d.join(name))
                    .unwrap_or(abs),
                _ => abs,
            }
        });
        Self { path, node }
    }

    fn same(&self, other: &Self) -> bool {
        self.path == other.path || (self.node.is_some() && self.node == other.node)
    }
}

/// The inputs of a run, which no output may be.
#[derive(Debug, Default)]
pub struct Inputs {
    entries: Vec<(String, PathBuf, Identity)>,
}

impl Inputs {
    /// No inputs yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an input file (`what`: "catalogue file", "run configuration", …).
    pub fn file(&mut self, what: &str, path: &Path) -> &mut Self {
        self.entries
            .push((what.to_string(), path.to_path_buf(), Identity::of(path)));
        self
    }

    /// Adds input files.
    pub fn files<'p>(
        &mut self,
        what: &str,
        paths: impl IntoIterator<Item = &'p Path>,
    ) -> &mut Self {
        for p in paths {
            self.file(what, p);
        }
        self
    }

    /// Adds a model directory: the directory itself and every file under it.
    pub fn model_dir(&mut self, dir: &Path) -> &mut Self {
        self.file("model directory", dir);
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in entries.flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    self.file("model file", &p);
                }
            }
        }
        self
    }

    /// Refuses `output` if it is one of the inputs.
    pub fn refuse(&self, output: &Path) -> Result<()> {
        let out = Identity::of(output);
        if let Some((what, path, _)) = self.entries.iter().find(|(_, _, id)| id.same(&out)) {
            let alias = if path == output {
                String::new()
            } else {
                format!(" {}", path.display())
            };
            bail!(
                "refusing to write {}: it is the {what}{alias}, an input of this run \
                 (outputs may never replace inputs, whatever the flags); choose another output",
                output.display()
            );
        }
        Ok(())
    }
}

/// How to tell whether what is at a path is ours (one of [`Existing`]'s constructors).
pub type Recognise = fn(&Path) -> Existing;

/// What is at an output path before the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Existing {
    /// Nothing.
    Absent,
    /// A file or directory an aion-hpc tool wrote (it carries our marker).
    Ours,
    /// An empty directory (nothing to lose).
    EmptyDir,
    /// Something else: why it is not recognised as ours.
    Foreign(String),
}

impl Existing {
    /// An HDF5 output: ours when its root attribute `tool` names an aion-hpc tool.
    pub fn hdf5(path: &Path) -> Self {
        if !path.exists() {
            return Self::Absent;
        }
        if path.is_dir() {
            return Self::Foreign("it is a directory".into());
        }
        match hdf5::File::open(path) {
            Err(e) => Self::Foreign(format!(
                "it cannot be read as HDF5 ({e}), so it cannot be recognised as an aion-hpc output"
            )),
            Ok(f) => {
                let tool = f
                    .attr("tool")
                    .and_then(|a| a.read_scalar::<hdf5::types::VarLenUnicode>())
                    .map(|s| s.as_str().to_string());
                match tool {
                    Ok(t) if t.starts_with("aion-") => Self::Ours,
                    _ => Self::Foreign(
                        "it was not written by an aion-hpc tool (no resume record)".into(),
                    ),
                }
            }
        }
    }

    /// A `<output>.run.json` record: ours when it holds a `provenance` object.
    pub fn run_json(path: &Path) -> Self {
        Self::text_file(path, |text| {
            serde_json::from_str::<serde_json::Value>(text)
                .ok()
                .is_some_and(|v| v.get("provenance").is_some_and(|p| p.is_object()))
        })
    }

    /// A CSV file: ours when its first line is `header`.
    pub fn csv(path: &Path, header: &str) -> Self {
        Self::text_file(path, |text| text.lines().next() == Some(header))
    }

    /// A PNG plot: ours when it carries the [`PNG_SOFTWARE`] text chunk.
    pub fn png(path: &Path) -> Self {
        if !path.exists() {
            return Self::Absent;
        }
        let ours = File::open(path).ok().is_some_and(|f| {
            png::Decoder::new(std::io::BufReader::new(f))
                .read_info()
                .ok()
                .is_some_and(|r| {
                    r.info()
                        .uncompressed_latin1_text
                        .iter()
                        .any(|t| t.keyword == PNG_SOFTWARE.0 && t.text == PNG_SOFTWARE.1)
                })
        });
        if ours {
            Self::Ours
        } else {
            Self::Foreign("it is not a plot written by an aion-hpc tool".into())
        }
    }

    /// An SVG figure: ours when it carries [`SVG_MARKER`].
    pub fn svg(path: &Path) -> Self {
        match Self::text_file(path, |text| text.contains(SVG_MARKER)) {
            Self::Foreign(_) => {
                Self::Foreign("it is not a figure written by an aion-hpc tool".into())
            }
            other => other,
        }
    }

    /// A figure (`.png` or `.svg`, by extension): see [`Existing::png`] and [`Existing::svg`].
    pub fn figure(path: &Path) -> Self {
        if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("svg"))
        {
            Self::svg(path)
        } else {
            Self::png(path)
        }
    }

    /// A Parquet export: ours when its file metadata holds the key
    /// [`aion_io::export::parquet::MARKER_KEY`].
    pub fn parquet(path: &Path) -> Self {
        Self::exported(path, |p| {
            aion_io::export::parquet::marker(p).map(|m| m.is_some())
        })
    }

    /// A FITS export: ours when its primary header's `CREATOR` starts with `aion-hpc`.
    pub fn fits(path: &Path) -> Self {
        Self::exported(path, |p| {
            aion_io::export::fits::marker(p)
                .map(|m| m.is_some_and(|v| v.starts_with(aion_io::export::fits::MARKER_PREFIX)))
        })
    }

    /// A HATS catalogue exported by `aion-export`: ours when its `properties` has
    /// `hats_builder` starting with `aion-hpc`; an empty directory is [`Existing::EmptyDir`].
    pub fn hats(path: &Path) -> Self {
        if !path.exists() {
            return Self::Absent;
        }
        if !path.is_dir() {
            return Self::Foreign("it is not a directory".into());
        }
        let ours = std::fs::read_to_string(path.join("properties"))
            .ok()
            .is_some_and(|t| {
                t.lines().any(|l| {
                    l.split_once('=').is_some_and(|(k, v)| {
                        k.trim() == "hats_builder" && v.trim().starts_with("aion-hpc")
                    })
                })
            });
        if ours {
            return Self::Ours;
        }
        match std::fs::read_dir(path).map(|mut e| e.next().is_none()) {
            Ok(true) => Self::EmptyDir,
            Ok(false) => Self::Foreign(
                "it is not a HATS catalogue written by aion-export (no hats_builder = \
                 aion-hpc … in its properties)"
                    .into(),
            ),
            Err(e) => Self::Foreign(format!("it cannot be listed ({e})")),
        }
    }

    /// A single-file export, ours when `marked` says so.
    fn exported(path: &Path, marked: impl FnOnce(&Path) -> Result<bool, String>) -> Self {
        if !path.exists() {
            return Self::Absent;
        }
        if path.is_dir() {
            return Self::Foreign("it is a directory".into());
        }
        match marked(path) {
            Ok(true) => Self::Ours,
            Ok(false) => Self::Foreign("it was not written by aion-export".into()),
            Err(e) => Self::Foreign(format!(
                "it cannot be read ({e}), so it cannot be recognised as an aion-export output"
            )),
        }
    }

    /// A model directory: ours when it holds [`MODEL_MARKER`].
    pub fn model_dir(path: &Path) -> Self {
        if !path.exists() {
            return Self::Absent;
        }
        if !path.is_dir() {
            return Self::Foreign("it is not a directory".into());
        }
        if path.join(MODEL_MARKER).is_file() {
            return Self::Ours;
        }
        match std::fs::read_dir(path).map(|mut e| e.next().is_none()) {
            Ok(true) => Self::EmptyDir,
            Ok(false) => Self::Foreign(format!(
                "it was not written by an aion-hpc tool (no {MODEL_MARKER})"
            )),
            Err(e) => Self::Foreign(format!("it cannot be listed ({e})")),
        }
    }

    fn text_file(path: &Path, ours: impl FnOnce(&str) -> bool) -> Self {
        if !path.exists() {
            return Self::Absent;
        }
        let mut text = String::new();
        let read = File::open(path).and_then(|f| f.take(1 << 20).read_to_string(&mut text));
        if read.is_ok() && ours(&text) {
            Self::Ours
        } else {
            Self::Foreign("it was not written by an aion-hpc tool".into())
        }
    }

    /// Refuses a foreign file or directory at `path`, naming it and why.
    pub fn refuse_foreign(&self, path: &Path) -> Result<()> {
        if let Self::Foreign(why) = self {
            bail!(
                "{} exists and {why}; refusing to write into it or replace it, even with \
                 --overwrite: move it away or choose another output",
                path.display()
            );
        }
        Ok(())
    }
}

/// `<path><suffix>`: a sidecar of an output (`.run.json`, `.lock`).
pub fn sidecar(path: &Path, suffix: &str) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

/// A sibling of `path` for temporary content: `.<name>.aion-tmp-<pid>` in the same directory
/// (same file system, so the final rename is atomic).
pub fn temp_sibling(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.aion-tmp-{}", std::process::id()))
}

/// Writes a file all at once: `write` fills a temporary sibling, which is synced and renamed to
/// `path`; on any error the temporary file is removed and `path` is left as it was.
pub fn write_file(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> Result<()>,
) -> Result<()> {
    write_staged(path, |tmp| {
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        let mut w = BufWriter::new(f);
        write(&mut w)?;
        w.into_inner()
            .map_err(|e| e.into_error())
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(())
    })
}

/// Writes a file that a library creates by name (cfitsio): `write` creates and fills the
/// temporary sibling it is given, which is then synced and renamed to `path`; on any error the
/// temporary file is removed and `path` is left as it was.
pub fn write_staged(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let tmp = temp_sibling(path);
    let result = (|| -> Result<()> {
        write(&tmp)?;
        File::open(&tmp)
            .and_then(|f| f.sync_all())
            .with_context(|| format!("cannot write {}", path.display()))?;
        std::fs::rename(&tmp, path)
            .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Writes `<output>.run.json` beside the output (rank 0 only), all at once (temporary file +
/// rename). The tools check it before the run ([`claim_output`]).
pub fn write_run_json(
    session: &Session,
    output: &Path,
    prov: &aion_io::Provenance,
    summary: &serde_json::Value,
) -> Result<()> {
    if session.is_root() {
        let path = sidecar(output, ".run.json");
        let doc = serde_json::json!({ "provenance": prov, "summary": summary });
        write_file(&path, |w| {
            w.write_all((serde_json::to_string_pretty(&doc)? + "\n").as_bytes())?;
            Ok(())
        })?;
    }
    Ok(())
}

/// Writes [`MODEL_MARKER`] into `dir` (which the tool is building).
pub fn mark_model_dir(dir: &Path, tool: &str) -> Result<()> {
    let doc = serde_json::json!({
        "written_by": tool,
        "version": env!("CARGO_PKG_VERSION"),
        "git_commit": crate::provenance::GIT_COMMIT,
        "time": crate::provenance::now_utc(),
    });
    write_file(&dir.join(MODEL_MARKER), |w| {
        writeln!(w, "{}", serde_json::to_string_pretty(&doc)?)?;
        Ok(())
    })
}

/// Fills `dst` (created) with the tree of `src`: files hard-linked where the file system allows
/// (the tools replace files by rename, never in place, so the originals stay untouched), copied
/// otherwise.
pub fn link_tree(src: &Path, dst: &Path) -> Result<()> {
    std::fs::create_dir_all(dst).with_context(|| format!("cannot create {}", dst.display()))?;
    for e in std::fs::read_dir(src).with_context(|| format!("cannot list {}", src.display()))? {
        let e = e.with_context(|| format!("cannot list {}", src.display()))?;
        let (from, to) = (e.path(), dst.join(e.file_name()));
        if e.file_type()?.is_dir() {
            link_tree(&from, &to)?;
        } else if std::fs::hard_link(&from, &to).is_err() {
            std::fs::copy(&from, &to)
                .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
        }
    }
    Ok(())
}

/// Puts the directory `staged` (complete) in place of `out`: `out`, if present, is first moved
/// aside, then `staged` renamed to `out`, then the old one removed. If the second rename fails,
/// the old directory is moved back.
pub fn replace_dir(staged: &Path, out: &Path) -> Result<()> {
    let old = out.with_file_name(format!(
        ".{}.aion-old-{}",
        out.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        std::process::id()
    ));
    let had = out.exists();
    if had {
        std::fs::rename(out, &old)
            .with_context(|| format!("cannot move {} aside to replace it", out.display()))?;
    }
    if let Err(e) = std::fs::rename(staged, out) {
        if had {
            let _ = std::fs::rename(&old, out);
        }
        return Err(e)
            .with_context(|| format!("cannot rename {} to {}", staged.display(), out.display()));
    }
    if had {
        std::fs::remove_dir_all(&old)
            .with_context(|| format!("cannot remove the replaced {}", old.display()))?;
    }
    Ok(())
}

/// This machine's host name (for lock files).
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown host".into())
}

/// An exclusive advisory lock on an output (held by rank 0 for the whole run): `flock` on
/// `<output>.lock`, which records the holder's tool, host and process id. Released (and the
/// lock file removed) when dropped, or by the kernel when the process dies.
#[derive(Debug)]
pub struct OutputLock {
    held: Option<(PathBuf, File)>,
}

impl OutputLock {
    /// Takes the lock of `output` (collective: rank 0 locks, every rank learns the outcome). A
    /// second run on the same output fails at once, naming the first one.
    pub fn acquire(session: &Session, tool: &str, output: &Path) -> Result<Self> {
        let held = if session.is_root() {
            lock_file(tool, output)
        } else {
            Ok(None)
        };
        Ok(Self {
            held: agree(session, held)?,
        })
    }
}

impl Drop for OutputLock {
    fn drop(&mut self) {
        if let Some((path, file)) = self.held.take() {
            // Removed while still locked, so that no other run locks the old file meanwhile.
            let _ = std::fs::remove_file(&path);
            drop(file);
        }
    }
}

fn lock_file(tool: &str, output: &Path) -> Result<Option<(PathBuf, File)>> {
    let path = sidecar(output, ".lock");
    // The output's folder is created if missing (the run would create it for the output anyway).
    if let Some(dir) = output
        .parent()
        .filter(|d| !d.as_os_str().is_empty() && !d.exists())
    {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    for _ in 0..5 {
        match std::fs::read_to_string(&path) {
            Ok(text) if !text.is_empty() && !text.starts_with(LOCK_HEADER) => {
                Existing::Foreign("it is not an aion-hpc lock file".into()).refuse_foreign(&path)?
            }
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Existing::Foreign(format!("it cannot be read ({e})")).refuse_foreign(&path)?
            }
            _ => {}
        }
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("cannot create the lock file {}", path.display()))?;
        match f.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let holder = std::fs::read_to_string(&path).unwrap_or_default();
                let field = |k: &str| {
                    holder
                        .lines()
                        .find_map(|l| l.strip_prefix(&format!("{k}: ")))
                        .unwrap_or("?")
                        .to_string()
                };
                bail!(
                    "{} is being written by another run ({}, pid {} on host {}, started {}); \
                     refusing to start a second run on the same output: wait for it to end, or \
                     choose another output (lock file {})",
                    output.display(),
                    field("tool"),
                    field("pid"),
                    field("host"),
                    field("started"),
                    path.display()
                );
            }
            Err(std::fs::TryLockError::Error(e)) => {
                log::warn!(
                    "cannot lock {} ({e}): this file system does not support flock, so nothing \
                     stops a second run on the same output",
                    path.display()
                );
                return Ok(None);
            }
        }
        // The previous holder may have removed the file between our open and our lock: then
        // we hold a lock on an unlinked file, and start over.
        let same = std::fs::metadata(&path)
            .ok()
            .zip(f.metadata().ok())
            .is_some_and(|(a, b)| a.dev() == b.dev() && a.ino() == b.ino());
        if !same {
            continue;
        }
        let text = format!(
            "{LOCK_HEADER}\ntool: {tool}\nhost: {}\npid: {}\nstarted: {}\n",
            host_name(),
            std::process::id(),
            crate::provenance::now_utc()
        );
        if let Err(e) = f
            .set_len(0)
            .and_then(|()| f.write_all(text.as_bytes()))
            .and_then(|()| f.flush())
        {
            let _ = std::fs::remove_file(&path);
            return Err(e)
                .with_context(|| format!("cannot write the lock file {}", path.display()));
        }
        return Ok(Some((path, f)));
    }
    bail!(
        "cannot take the lock {} (it keeps being replaced)",
        path.display()
    )
}

/// An output claimed by a run: its lock, and whether it existed (to resume or replace).
#[derive(Debug)]
pub struct Claim {
    /// Held until the run ends.
    pub lock: OutputLock,
    /// Whether the output existed (and is ours).
    pub exists: bool,
}

/// The standard checks for an output and its sidecars, before any work (collective: rank 0
/// looks, every rank learns the outcome): none of `output`, `<output>.run.json`,
/// `<output>.lock` and `side` (plots, …) may be an input; then the output is locked; then an
/// existing output must be ours by `existing`, and its `.run.json` and each of `side` absent or
/// ours.
pub fn claim_output(
    session: &Session,
    tool: &str,
    inputs: &Inputs,
    output: &Path,
    existing: Recognise,
    side: &[(PathBuf, Recognise)],
) -> Result<Claim> {
    let run_json = sidecar(output, ".run.json");
    let root = session.is_root();
    let not_inputs = if root {
        [output, &run_json, &sidecar(output, ".lock")]
            .into_iter()
            .chain(side.iter().map(|(p, _)| p.as_path()))
            .try_for_each(|p| inputs.refuse(p))
    } else {
        Ok(())
    };
    agree(session, not_inputs)?;
    let lock = OutputLock::acquire(session, tool, output)?;
    let verdict = if root {
        (|| -> Result<bool> {
            let state = existing(output);
            state.refuse_foreign(output)?;
            Existing::run_json(&run_json).refuse_foreign(&run_json)?;
            for (p, kind) in side {
                kind(p).refuse_foreign(p)?;
            }
            Ok(state != Existing::Absent)
        })()
    } else {
        Ok(false)
    };
    let exists = agree(session, verdict)?;
    let exists = session.broadcast_bytes(&[u8::from(exists)])[0] == 1;
    Ok(Claim { lock, exists })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_and_hard_links_to_an_input_are_the_input() {
        let dir = std::env::temp_dir().join(format!("aion-guard-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        let cat = dir.join("cat.h5");
        std::fs::write(&cat, b"x").unwrap();
        std::fs::hard_link(&cat, dir.join("hard.h5")).unwrap();
        std::os::unix::fs::symlink(&cat, dir.join("soft.h5")).unwrap();
        let mut inputs = Inputs::new();
        inputs.file("catalogue file", &cat);
        for p in ["cat.h5", "hard.h5", "soft.h5", "sub/../cat.h5"] {
            let err = inputs.refuse(&dir.join(p)).unwrap_err().to_string();
            assert!(err.contains("catalogue file"), "{p}: {err}");
        }
        inputs.refuse(&dir.join("new.h5")).unwrap();
        inputs.refuse(&dir.join("sub")).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn write_file_leaves_nothing_behind_on_error() {
        let dir = std::env::temp_dir().join(format!("aion-guard-w-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("a.csv");
        std::fs::write(&p, "old").unwrap();
        let r = write_file(&p, |w| {
            w.write_all(b"new")?;
            bail!("disk full")
        });
        assert!(r.is_err());
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "old");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        write_file(&p, |w| Ok(w.write_all(b"new")?)).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "new");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn markers() {
        let dir = std::env::temp_dir().join(format!("aion-guard-m-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("empty")).unwrap();
        assert_eq!(Existing::model_dir(&dir.join("none")), Existing::Absent);
        assert_eq!(Existing::model_dir(&dir.join("empty")), Existing::EmptyDir);
        std::fs::write(dir.join("empty/config.json"), "{}").unwrap();
        assert!(matches!(
            Existing::model_dir(&dir.join("empty")),
            Existing::Foreign(_)
        ));
        mark_model_dir(&dir.join("empty"), "test").unwrap();
        assert_eq!(Existing::model_dir(&dir.join("empty")), Existing::Ours);
        std::fs::write(dir.join("r.json"), "{\"provenance\": {}}").unwrap();
        assert_eq!(Existing::run_json(&dir.join("r.json")), Existing::Ours);
        std::fs::write(dir.join("r.json"), "{\"x\": 1}").unwrap();
        assert!(matches!(
            Existing::run_json(&dir.join("r.json")),
            Existing::Foreign(_)
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
