//! The output file: created by all ranks together, written collectively.
//!
//! Every rank takes part in creating each group, dataset and attribute (HDF5 metadata
//! operations are collective under MPI-IO) with identical arguments, then writes its own rows
//! with an `H5FD_MPIO_COLLECTIVE` transfer. hdf5-metno's high-level `write_slice` always uses
//! independent I/O, so the write itself goes through `hdf5-sys` (the only `unsafe` of the crate).
//! A rank with nothing to write still joins each collective write with an empty selection.
//!
//! Datasets are chunked (about 1 MiB per chunk, whole rows) and allocated at creation, so that
//! later raw-data writes never touch file metadata: a process killed mid-write leaves a file
//! whose structure is intact (see the resume logic of the tools).
//!
//! **Failures.** Every collective method returns the same `Ok` or `Err` on every rank: the ranks
//! agree on the outcome (one `MPI_Allreduce`, plus a gather of the messages on failure) before
//! returning, so a rank whose write failed (a full disk on its aggregator, say) never leaves the
//! others waiting in the next collective call. The error names the file, the object, each
//! failing rank, HDF5's account and what the file system says when asked to store the same
//! amount next to the output (HDF5 1.10 over OpenMPI's OMPIO reports a short write without the
//! OS error, so the error text is obtained from the file system itself: "No space left on
//! device", "Disk quota exceeded", …). A flush also reads back what the rank wrote since the
//! previous one: OpenMPI 4.1's OMPIO can report success for a collective write that failed. A
//! rank stuck inside MPI-IO after another rank failed is covered by a watchdog that aborts the
//! job after [`watchdog_secs`] (see `Watch`).
//!
//! After a failed write, HDF5 cannot be trusted to close the file: closing flushes the metadata
//! cache (which fails again on a full disk), and HDF5 1.10 then crashes when `MPI_Finalize`
//! shuts the library down with the half-closed file. So a file with a failed write is left open
//! ([`io_failed`] turns true and the handles are not released), and the tools exit without
//! finalising MPI. The bytes on disk are those of the last successful flush, which the resume
//! record of the tools describes exactly.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use hdf5::H5Type;
use hdf5::types::VarLenUnicode;
use mpi::raw::AsRaw;
use mpi::topology::{Communicator, SimpleCommunicator};
use sha2::Digest as _;

use crate::error::{Error, Result};

/// Target size of one chunk.
const CHUNK_BYTES: usize = 1 << 20;

/// Bytes the file system is asked to store when an operation without a known size failed.
const PROBE_BYTES: usize = 1 << 20;

static IO_FAILED: AtomicBool = AtomicBool::new(false);

/// Whether an operation on an open output file failed in this process, on this rank or (agreed)
/// on another. The file's HDF5 handles are then deliberately not released, and the process must
/// end without finalising MPI (see the module documentation).
pub fn io_failed() -> bool {
    IO_FAILED.load(Ordering::Relaxed)
}

/// Seconds without progress after which a rank stuck inside a collective step aborts the job if
/// the file system refuses writes (a rank whose own step failed waits 10 s more)
/// (`AION_IO_WATCHDOG_SECS`, default 30).
pub fn watchdog_secs() -> u64 {
    std::env::var("AION_IO_WATCHDOG_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&s| s > 0)
        .unwrap_or(30)
}

/// An output file open on every rank through the MPI-IO driver.
pub struct OutputFile {
    /// `None` only once closed (or given up after a failure).
    file: Option<hdf5::File>,
    path: PathBuf,
    /// The ranks sharing the file (a duplicate of the world communicator, for the agreements);
    /// `None` for a file opened by one process ([`OutputFile::create_serial`]).
    comm: Option<SimpleCommunicator>,
    /// Created by this run and not yet complete ([`OutputFile::created`]): a watchdog abort
    /// removes it, as it holds nothing of value.
    creating: std::cell::Cell<bool>,
    /// This rank's collective writes since the last flush, checked by reading them back after
    /// it ([`OutputFile::flush`]).
    unchecked: std::cell::RefCell<Vec<Written>>,
}

/// A collective write to check: where it went and the SHA-256 of the bytes it carried.
struct Written {
    ds: hdf5::Dataset,
    dtype: hdf5::Datatype,
    start: Vec<u64>,
    count: Vec<u64>,
    row_bytes: usize,
    sha256: Vec<u8>,
}

/// Bytes read back at a time by the write check.
const CHECK_BLOCK: usize = 64 << 20;

impl std::fmt::Debug for OutputFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutputFile")
            .field("path", &self.path)
            .finish()
    }
}

impl Drop for OutputFile {
    fn drop(&mut self) {
        if io_failed()
            && let Some(file) = self.file.take()
        {
            // Not closed: see the module documentation.
            std::mem::forget(file);
            std::mem::forget(self.unchecked.take());
        }
    }
}

/// A dataset of an [`OutputFile`]; like the file, its handle is not released after a failed
/// write (see the module documentation).
pub struct OutputDataset(Option<hdf5::Dataset>);

impl std::ops::Deref for OutputDataset {
    type Target = hdf5::Dataset;

    fn deref(&self) -> &hdf5::Dataset {
        self.0.as_ref().expect("dataset handle held until drop")
    }
}

impl Drop for OutputDataset {
    fn drop(&mut self) {
        if io_failed()
            && let Some(ds) = self.0.take()
        {
            std::mem::forget(ds);
        }
    }
}

/// What a failed HDF5 call says: its outermost and innermost error records.
fn hdf5_text(e: &hdf5::Error) -> String {
    match e.stack() {
        Some(s) if s.is_empty() => "HDF5 gives no details".to_string(),
        _ => e.to_string(),
    }
}

/// What the file system says when asked to store `bytes` bytes next to `path` (a scratch file,
/// written, synced and removed): `Some(error)` when it refuses, such as "No space left on
/// device (os error 28)".
pub fn fs_refuses(path: &Path, bytes: usize) -> Option<std::io::Error> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let probe = dir_of(path).join(format!(".{name}.aion-probe-{}", std::process::id()));
    let stored = (|| -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&probe)?;
        f.write_all(&vec![0u8; bytes])?;
        f.sync_all()
    })();
    let _ = std::fs::remove_file(&probe);
    stored.err()
}

fn dir_of(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// [`fs_refuses`] in words, for an error message.
pub fn os_cause(path: &Path, bytes: usize) -> String {
    let dir = dir_of(path).display();
    match fs_refuses(path, bytes) {
        Some(e) => format!("the file system refuses to store {bytes} bytes in {dir}: {e}"),
        None => format!(
            "the file system still accepts {bytes} bytes in {dir}, so the cause is not a full disk"
        ),
    }
}

/// The collective step this process is in, for the watchdog.
struct Watched {
    since: std::time::Instant,
    path: PathBuf,
    object: String,
    rank: i32,
    bytes: usize,
    /// This rank's step failed with this message; it is waiting for the others to agree.
    failed: Option<String>,
    announced: bool,
    /// A file to remove before aborting (an output whose creation did not complete).
    discard: Option<PathBuf>,
}

static WATCHED: std::sync::Mutex<Option<Watched>> = std::sync::Mutex::new(None);

/// Watches the collective steps of a multi-rank output, because a rank can be stuck inside
/// HDF5 or MPI-IO when another one failed: both HDF5 1.10 (ROMIO: the failing rank skips the
/// collective `MPI_File_set_view` that follows the write) and OpenMPI 4.1's OMPIO (a failed
/// `MPI_File_sync` returns before its barrier) leave the other ranks waiting forever. Every
/// [`watchdog_secs`], one thread per process looks at the step in progress:
/// - a rank stuck inside the step asks the file system to store the step's bytes; if it refuses
///   ("No space left on device"), the rank prints why and aborts the job (`MPI_Abort`), else it
///   waits on (a slow file system is not an error);
/// - a rank whose step failed prints its error after 2 s without agreement (it may be killed
///   by another rank's abort before it reports), and aborts the job itself 10 s after the stuck
///   ranks would have.
///
/// The thread calls `MPI_Abort` while the main thread is blocked in MPI, outside the
/// `MPI_THREAD_FUNNELED` contract; OpenMPI handles it (measured), and the job ends either way.
struct Watch;

impl Watch {
    fn start(path: &Path, object: &str, rank: i32, bytes: usize, discard: bool) -> Self {
        static THREAD: std::sync::Once = std::sync::Once::new();
        THREAD.call_once(|| {
            std::thread::spawn(watch_loop);
        });
        *WATCHED.lock().unwrap_or_else(|e| e.into_inner()) = Some(Watched {
            since: std::time::Instant::now(),
            path: path.to_path_buf(),
            object: object.to_string(),
            rank,
            bytes,
            failed: None,
            announced: false,
            discard: discard.then(|| path.to_path_buf()),
        });
        Self
    }

    /// This rank's step failed: it now waits for the others.
    fn failed(&self, detail: &str) {
        if let Some(w) = WATCHED.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            w.failed = Some(detail.to_string());
            w.since = std::time::Instant::now();
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        *WATCHED.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

fn watch_loop() {
    let secs = watchdog_secs();
    let tool = std::env::args()
        .next()
        .and_then(|a| {
            Path::new(&a)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "aion-hpc".into());
    loop {
        std::thread::sleep(std::time::Duration::from_millis(250));
        let mut guard = WATCHED.lock().unwrap_or_else(|e| e.into_inner());
        let Some(w) = guard.as_mut() else { continue };
        let waited = w.since.elapsed().as_secs();
        let head = format!(
            "{tool} [rank {}]: error: {}: cannot write '{}'",
            w.rank,
            w.path.display(),
            w.object
        );
        let say = |line: String| {
            let _ = std::io::stderr().lock().write_all(line.as_bytes());
        };
        let abort = |w: &Watched| -> ! {
            if let Some(p) = &w.discard {
                let _ = std::fs::remove_file(p);
            }
            SimpleCommunicator::world().abort(2)
        };
        match &w.failed {
            Some(detail) if waited >= 2 && !w.announced => {
                say(format!("{head}: {detail} (stopping every rank)\n"));
                w.announced = true;
            }
            Some(_) if waited >= secs + 10 => {
                say(format!(
                    "{head}: the other ranks did not answer within {} s (stuck in MPI-IO): \
                     aborting the job\n",
                    secs + 10
                ));
                abort(w);
            }
            None if waited >= secs => {
                let size = w.bytes.clamp(4096, 16 * PROBE_BYTES);
                match fs_refuses(&w.path, size) {
                    Some(e) => {
                        say(format!(
                            "{head}: no answer from the collective call for {secs} s, and the \
                             file system refuses to store {size} bytes in {}: {e}; aborting the \
                             job\n",
                            dir_of(&w.path).display()
                        ));
                        abort(w);
                    }
                    None => w.since = std::time::Instant::now(),
                }
            }
            _ => {}
        }
    }
}

/// The outcome of a collective step on every rank of `comm` (`None`: this process alone): `Ok`
/// when every rank succeeded, else the same [`Error::Output`] on every rank, holding each failing
/// rank's message. `open` says whether this rank holds the file open (then a failure marks the
/// process as [`io_failed`]). `watch` is the step's watch (multi-rank only).
fn agree_on<T>(
    comm: Option<&SimpleCommunicator>,
    path: &Path,
    object: &str,
    local: std::result::Result<T, String>,
    open: bool,
    watch: Option<Watch>,
) -> Result<T> {
    let Some(comm) = comm.filter(|c| c.size() > 1) else {
        return local.map_err(|detail| {
            if open {
                IO_FAILED.store(true, Ordering::Relaxed);
            }
            Error::Output {
                path: path.to_path_buf(),
                object: object.to_string(),
                detail,
            }
        });
    };
    if let (Some(w), Err(d)) = (&watch, &local) {
        w.failed(d);
    }
    let all_ok = aion_mpi::all_true(comm, local.is_ok());
    drop(watch);
    if all_ok {
        return local.map_err(|_| unreachable!("every rank succeeded"));
    }
    if open || local.is_ok() {
        IO_FAILED.store(true, Ordering::Relaxed);
    }
    let mine = local.as_ref().err().cloned().unwrap_or_default();
    let all = aion_mpi::all_gather_bytes(comm, mine.as_bytes());
    let failed: Vec<(usize, String)> = all
        .into_iter()
        .enumerate()
        .filter(|(_, m)| !m.is_empty())
        .map(|(r, m)| (r, String::from_utf8_lossy(&m).into_owned()))
        .collect();
    let ranks: Vec<String> = failed.iter().map(|(r, _)| r.to_string()).collect();
    let detail = if failed.iter().all(|(_, m)| *m == failed[0].1) {
        format!("on rank(s) {}: {}", ranks.join(", "), failed[0].1)
    } else {
        failed
            .iter()
            .map(|(r, m)| format!("on rank {r}: {m}"))
            .collect::<Vec<_>>()
            .join("; ")
    };
    Err(Error::Output {
        path: path.to_path_buf(),
        object: object.to_string(),
        detail,
    })
}

/// A [`Watch`] on a step of a file shared by several ranks (`discard`: the file is being
/// created).
fn watch_step(
    comm: Option<&SimpleCommunicator>,
    path: &Path,
    object: &str,
    bytes: usize,
    discard: bool,
) -> Option<Watch> {
    comm.filter(|c| c.size() > 1)
        .map(|c| Watch::start(path, object, c.rank(), bytes, discard))
}

/// Whether `T` is a plain number type (whose bytes can be compared after a read-back).
fn plain_numbers<T: H5Type>() -> bool {
    use hdf5::types::TypeDescriptor as D;
    matches!(
        T::type_descriptor(),
        D::Integer(_) | D::Unsigned(_) | D::Float(_) | D::Boolean
    )
}

impl OutputFile {
    /// Creates (truncating) `path` on all ranks of `world` (collective).
    pub fn create(path: &Path, world: &SimpleCommunicator) -> Result<Self> {
        let watch = watch_step(Some(world), path, "the file", PROBE_BYTES, true);
        let local = hdf5::File::with_options()
            .with_fapl(|p| p.mpio(world.as_raw(), None))
            .create(path)
            .map_err(|e| format!("{}; {}", hdf5_text(&e), os_cause(path, PROBE_BYTES)));
        let out = Self::agreed_open(path, world, local, watch)?;
        out.creating.set(true);
        Ok(out)
    }

    /// Marks a file made by [`OutputFile::create`] as complete (its structure written and
    /// flushed): from now on it is kept whatever happens, for the run to be resumed.
    pub fn created(&self) {
        self.creating.set(false);
    }

    /// Creates (truncating) `path` for this process alone (default driver, no MPI-IO): for small
    /// outputs written by one rank (`aion-search`'s result). The "collective" methods then
    /// involve this process only (`write_rows` becomes a plain write); the other ranks must not
    /// call them.
    pub fn create_serial(path: &Path) -> Result<Self> {
        let file = hdf5::File::create(path).map_err(|source| Error::Open {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Self {
            file: Some(file),
            path: path.to_path_buf(),
            comm: None,
            creating: std::cell::Cell::new(false),
            unchecked: std::cell::RefCell::new(Vec::new()),
        })
    }

    /// Opens an existing output for appending (collective), e.g. to resume a run.
    pub fn open_rw(path: &Path, world: &SimpleCommunicator) -> Result<Self> {
        let watch = watch_step(Some(world), path, "the file", PROBE_BYTES, false);
        let local = hdf5::File::with_options()
            .with_fapl(|p| p.mpio(world.as_raw(), None))
            .open_rw(path)
            .map_err(|e| format!("cannot open it as HDF5 ({})", hdf5_text(&e)));
        Self::agreed_open(path, world, local, watch)
    }

    fn agreed_open(
        path: &Path,
        world: &SimpleCommunicator,
        local: std::result::Result<hdf5::File, String>,
        watch: Option<Watch>,
    ) -> Result<Self> {
        let comm = world.duplicate();
        let file = agree_on(Some(&comm), path, "the file", local, false, watch)?;
        Ok(Self {
            file: Some(file),
            path: path.to_path_buf(),
            comm: Some(comm),
            creating: std::cell::Cell::new(false),
            unchecked: std::cell::RefCell::new(Vec::new()),
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The underlying HDF5 file (reads only; writes go through the collective methods).
    pub fn hdf5(&self) -> &hdf5::File {
        self.file.as_ref().expect("the output file is open")
    }

    /// One collective step: `step`'s outcome agreed on by every rank. `bytes` is what the step
    /// stores (the size of the file-system probe on failure; 0 = unknown).
    fn step<T>(
        &self,
        object: &str,
        bytes: usize,
        step: impl FnOnce(&hdf5::File) -> hdf5::Result<T>,
    ) -> Result<T> {
        let watch = watch_step(
            self.comm.as_ref(),
            &self.path,
            object,
            bytes,
            self.creating.get(),
        );
        let local = step(self.hdf5()).map_err(|e| {
            let size = if bytes == 0 { PROBE_BYTES } else { bytes };
            format!(
                "{}; {}",
                hdf5_text(&e),
                os_cause(&self.path, size.clamp(4096, 16 * PROBE_BYTES))
            )
        });
        agree_on(self.comm.as_ref(), &self.path, object, local, true, watch)
    }

    /// Creates the groups leading to `name` (`a/b/c` creates `a` and `a/b`) if missing.
    fn ensure_parents(file: &hdf5::File, name: &str) -> hdf5::Result<()> {
        let mut prefix = String::new();
        let parts: Vec<&str> = name.split('/').filter(|s| !s.is_empty()).collect();
        for part in parts.iter().take(parts.len().saturating_sub(1)) {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(part);
            if file.group(&prefix).is_err() {
                file.create_group(&prefix)?;
            }
        }
        Ok(())
    }

    /// Creates dataset `name` of `n_rows` rows of shape `row_shape` (collective). `fill` is the
    /// value unwritten elements read as (written once at allocation); without it, unwritten
    /// elements are undefined and nothing is pre-written.
    pub fn create_dataset<T>(
        &self,
        name: &str,
        n_rows: usize,
        row_shape: &[usize],
        fill: Option<T>,
    ) -> Result<OutputDataset>
    where
        T: H5Type + Into<hdf5::types::dyn_value::OwnedDynValue>,
    {
        // Agreed on its own: the dataset creation below writes its fill value collectively.
        self.step(name, 0, |f| Self::ensure_parents(f, name))?;
        let mut shape = vec![n_rows];
        shape.extend_from_slice(row_shape);
        let row_bytes = row_shape.iter().product::<usize>().max(1) * std::mem::size_of::<T>();
        let chunk_rows = (CHUNK_BYTES / row_bytes).clamp(1, n_rows.max(1));
        let mut chunk = vec![chunk_rows];
        chunk.extend(row_shape.iter().map(|&d| d.max(1)));
        let bytes = n_rows.saturating_mul(row_bytes);
        self.step(name, bytes, |f| {
            let mut b = f.new_dataset::<T>().shape(shape);
            if n_rows > 0 && row_shape.iter().all(|&d| d > 0) {
                b = b.chunk(chunk);
            }
            b = b.alloc_time(Some(hdf5::dataset::AllocTime::Early));
            b = match fill {
                Some(v) => b.fill_value(v).fill_time(hdf5::dataset::FillTime::Alloc),
                None => b.fill_time(hdf5::dataset::FillTime::Never),
            };
            b.create(name)
        })
        .map(|ds| OutputDataset(Some(ds)))
    }

    /// Opens an existing dataset.
    pub fn dataset(&self, name: &str) -> Result<OutputDataset> {
        self.hdf5()
            .dataset(name)
            .map(|ds| OutputDataset(Some(ds)))
            .map_err(|source| Error::Read {
                path: self.path.clone(),
                dataset: name.to_string(),
                rows: 0..0,
                source,
            })
    }

    /// Writes rows `start_row..` of `ds` from `data` (row-major, whole rows) in one collective
    /// transfer. Every rank must call this the same number of times for the same dataset; a rank
    /// with nothing to write passes an empty slice.
    pub fn write_rows<T: H5Type>(
        &self,
        ds: &hdf5::Dataset,
        start_row: usize,
        data: &[T],
    ) -> Result<()> {
        let name = ds.name();
        let shape = ds.shape();
        let row_len: usize = shape[1..].iter().product();
        let n = data.len().checked_div(row_len).unwrap_or(0);
        assert_eq!(
            n * row_len,
            data.len(),
            "{name}: partial row in collective write"
        );
        assert!(
            start_row + n <= shape[0] || n == 0,
            "{name}: rows {start_row}+{n} beyond {}",
            shape[0]
        );
        let bytes = std::mem::size_of_val(data);
        if self.comm.is_none() {
            return self.step(&name, bytes, |_| {
                if n == 0 {
                    return Ok(());
                }
                let mut count = shape.clone();
                count[0] = n;
                let view = ndarray::ArrayView::from_shape(ndarray::IxDyn(&count), data)
                    .expect("whole rows, checked above");
                let mut sel: Vec<hdf5::SliceOrIndex> = vec![(start_row..start_row + n).into()];
                sel.extend((1..shape.len()).map(|_| hdf5::SliceOrIndex::from(..)));
                ds.write_slice(&view, hdf5::Hyperslab::from(sel))
            });
        }
        self.step(&name, bytes, |_| {
            let dtype = hdf5::Datatype::from_type::<T>()?;
            let mut count: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
            count[0] = n as u64;
            let mut start = vec![0u64; shape.len()];
            start[0] = start_row as u64;
            raw::collective_write(ds.id(), dtype.id(), &start, &count, data.as_ptr().cast())?;
            if n > 0 && plain_numbers::<T>() {
                self.unchecked.borrow_mut().push(Written {
                    ds: ds.clone(),
                    dtype,
                    start,
                    count,
                    row_bytes: bytes / n,
                    sha256: sha2::Sha256::digest(raw::bytes_of(data)).to_vec(),
                });
            }
            Ok(())
        })
    }

    /// Reads back this rank's writes since the last flush and compares them with what was
    /// written. OpenMPI 4.1's OMPIO can lose the error of a failed collective write (measured on
    /// a full disk: `MPI_File_write_at_all` succeeds, the rows read back as zeros), and a chunk
    /// recorded as done on such a write would be lost for good; the read-back turns it into an
    /// error before the chunk is recorded.
    fn check_written(&self) -> hdf5::Result<()> {
        for w in self.unchecked.borrow_mut().drain(..) {
            let rows = w.count[0];
            let block = (CHECK_BLOCK / w.row_bytes.max(1)).max(1) as u64;
            let mut back = Vec::new();
            let mut h = sha2::Sha256::new();
            let (mut start, mut count) = (w.start.clone(), w.count.clone());
            for first in (0..rows).step_by(block as usize) {
                start[0] = w.start[0] + first;
                count[0] = block.min(rows - first);
                back.resize(count[0] as usize * w.row_bytes, 0);
                raw::read_back(&w.ds, &w.dtype, &start, &count, &mut back)?;
                h.update(&back);
            }
            if h.finalize().as_slice() != w.sha256.as_slice() {
                return Err(format!(
                    "rows {}..{} of {} read back differ from what was written (the MPI-IO layer \
                     lost a failed write)",
                    w.start[0],
                    w.start[0] + w.count[0],
                    w.ds.name()
                )
                .into());
            }
        }
        Ok(())
    }

    /// Writes a string attribute on the root group (collective; same value on every rank).
    pub fn set_attr_str(&self, name: &str, value: &str) -> Result<()> {
        let v: VarLenUnicode = value
            .parse()
            .expect("a Rust string is valid UTF-8 without NUL");
        self.step(name, value.len(), |f| {
            if f.attr(name).is_ok() {
                f.delete_attr(name)?;
            }
            f.new_attr::<VarLenUnicode>().create(name)?.write_scalar(&v)
        })
    }

    /// Writes an integer attribute on the root group (collective; same value on every rank).
    pub fn set_attr_i64(&self, name: &str, value: i64) -> Result<()> {
        self.step(name, 8, |f| {
            if f.attr(name).is_ok() {
                f.delete_attr(name)?;
            }
            f.new_attr::<i64>().create(name)?.write_scalar(&value)
        })
    }

    /// Writes a string attribute on a dataset (collective).
    pub fn set_dataset_attr_str(&self, ds: &hdf5::Dataset, name: &str, value: &str) -> Result<()> {
        let v: VarLenUnicode = value
            .parse()
            .expect("a Rust string is valid UTF-8 without NUL");
        self.step(&format!("{}@{name}", ds.name()), value.len(), |_| {
            if ds.attr(name).is_ok() {
                ds.delete_attr(name)?;
            }
            ds.new_attr::<VarLenUnicode>()
                .create(name)?
                .write_scalar(&v)
        })
    }

    /// Writes a 1-D array-of-strings attribute on a dataset (collective), e.g. the names of
    /// the bits of a flag mask: h5py reads it as an array (`ds.attrs["bit_names"][i]`).
    pub fn set_dataset_attr_strs(
        &self,
        ds: &hdf5::Dataset,
        name: &str,
        values: &[&str],
    ) -> Result<()> {
        let v: Vec<VarLenUnicode> = values
            .iter()
            .map(|s| s.parse().expect("a Rust string is valid UTF-8 without NUL"))
            .collect();
        let bytes = values.iter().map(|s| s.len()).sum();
        self.step(&format!("{}@{name}", ds.name()), bytes, |_| {
            if ds.attr(name).is_ok() {
                ds.delete_attr(name)?;
            }
            ds.new_attr::<VarLenUnicode>()
                .shape([v.len()])
                .create(name)?
                .write(&v)
        })
    }

    /// Reads a string attribute of the root group.
    pub fn attr_str(&self, name: &str) -> Option<String> {
        let a = self.hdf5().attr(name).ok()?;
        a.read_scalar::<VarLenUnicode>()
            .ok()
            .map(|s| s.as_str().to_string())
    }

    /// Flushes everything written so far to the file and checks this rank's writes by reading
    /// them back (collective).
    pub fn flush(&self) -> Result<()> {
        self.step("(flush)", 0, |f| {
            let flushed = f.flush();
            let checked = self.check_written();
            flushed.and(checked)
        })
    }

    /// Closes the file (collective): every dataset handle taken from it must be dropped first.
    pub fn close(mut self) -> Result<()> {
        let file = self.file.take().expect("the output file is open");
        let watch = watch_step(
            self.comm.as_ref(),
            &self.path,
            "(close)",
            PROBE_BYTES,
            self.creating.get(),
        );
        let local = file
            .close()
            .map_err(|e| format!("{}; {}", hdf5_text(&e), os_cause(&self.path, PROBE_BYTES)));
        agree_on(
            self.comm.as_ref(),
            &self.path,
            "(close)",
            local,
            true,
            watch,
        )
    }
}

/// The raw `H5Dwrite` with a collective transfer property list.
#[allow(unsafe_code)]
mod raw {
    use hdf5_sys::h5::herr_t;
    use hdf5_sys::h5d::H5Dwrite;
    use hdf5_sys::h5i::hid_t;
    use hdf5_sys::h5p::{H5FD_mpio_xfer_t, H5Pclose, H5Pcreate, H5Pset_dxpl_mpio};
    use hdf5_sys::h5s::{
        H5S_seloper_t, H5Sclose, H5Screate_simple, H5Sselect_hyperslab, H5Sselect_none,
    };

    /// Closes an HDF5 handle when dropped.
    struct Handle(hid_t, unsafe extern "C" fn(hid_t) -> herr_t);

    impl Drop for Handle {
        fn drop(&mut self) {
            if self.0 >= 0 {
                // SAFETY: the handle was returned valid by the HDF5 call that created it.
                unsafe { (self.1)(self.0) };
            }
        }
    }

    /// `id` as a [`Handle`] closed by `close`, or the error of the `call` that returned it.
    fn handle(
        id: hid_t,
        close: unsafe extern "C" fn(hid_t) -> herr_t,
        call: &'static str,
    ) -> hdf5::Result<Handle> {
        let h = Handle(id, close);
        if id < 0 {
            check(-1, call)?;
        }
        Ok(h)
    }

    /// HDF5's error stack after a failed `call` (or the call's name when the stack is empty).
    fn check(status: herr_t, call: &'static str) -> hdf5::Result<()> {
        if status >= 0 {
            return Ok(());
        }
        match hdf5::Error::query() {
            Ok(e) if e.stack().is_some_and(|s| !s.is_empty()) => Err(e),
            _ => Err(format!("{call} failed").into()),
        }
    }

    /// The file and memory dataspaces of a transfer of the hyperslab `start`/`count` of dataset
    /// `ds`: the file's selection is the hyperslab (none when `count[0] == 0`: an empty part of
    /// a collective call), the memory's is all of `count`.
    ///
    /// # Safety
    /// `ds` is a valid dataset and the caller holds HDF5's lock (`hdf5::sync::sync`).
    unsafe fn hyperslab(ds: hid_t, start: &[u64], count: &[u64]) -> hdf5::Result<[Handle; 2]> {
        // SAFETY: per this function's contract; every handle is checked before use and
        // closed once (by `Handle`); `start` and `count` outlive the calls.
        unsafe {
            let file_space = handle(hdf5_sys::h5d::H5Dget_space(ds), H5Sclose, "H5Dget_space")?;
            let rank = count.len() as i32;
            let mem_space = H5Screate_simple(rank, count.as_ptr(), std::ptr::null());
            let mem_space = handle(mem_space, H5Sclose, "H5Screate_simple")?;
            if count.first().copied().unwrap_or(0) == 0 {
                check(H5Sselect_none(file_space.0), "H5Sselect_none")?;
                check(H5Sselect_none(mem_space.0), "H5Sselect_none")?;
            } else {
                check(
                    H5Sselect_hyperslab(
                        file_space.0,
                        H5S_seloper_t::H5S_SELECT_SET,
                        start.as_ptr(),
                        std::ptr::null(),
                        count.as_ptr(),
                        std::ptr::null(),
                    ),
                    "H5Sselect_hyperslab",
                )?;
            }
            Ok([file_space, mem_space])
        }
    }

    /// The bytes of a slice of plain numbers.
    pub(super) fn bytes_of<T>(data: &[T]) -> &[u8] {
        // SAFETY: the caller passes plain number types (no padding, no pointers, checked by
        // `plain_numbers`); the byte slice covers exactly the elements and borrows `data`.
        unsafe { std::slice::from_raw_parts(data.as_ptr().cast(), std::mem::size_of_val(data)) }
    }

    /// Reads the hyperslab `start`/`count` of `ds` as `dtype` into `out` (this process alone).
    pub(super) fn read_back(
        ds: &hdf5::Dataset,
        dtype: &hdf5::Datatype,
        start: &[u64],
        count: &[u64],
        out: &mut [u8],
    ) -> hdf5::Result<()> {
        hdf5::sync::sync(|| {
            // SAFETY: every handle is checked before use and closed once (by `Handle`); `out`
            // holds prod(count) elements of `dtype` (the size of the bytes written there).
            unsafe {
                let [file_space, mem_space] = hyperslab(ds.id(), start, count)?;
                check(
                    hdf5_sys::h5d::H5Dread(
                        ds.id(),
                        dtype.id(),
                        mem_space.0,
                        file_space.0,
                        hdf5_sys::h5p::H5P_DEFAULT,
                        out.as_mut_ptr().cast(),
                    ),
                    "H5Dread",
                )
            }
        })
    }

    /// Writes the hyperslab `start`/`count` of dataset `ds` from `buf` collectively.
    /// `count[0] == 0` joins the collective call with an empty selection.
    pub(super) fn collective_write(
        ds: hid_t,
        mem_type: hid_t,
        start: &[u64],
        count: &[u64],
        buf: *const std::ffi::c_void,
    ) -> hdf5::Result<()> {
        hdf5::sync::sync(|| {
            // SAFETY: all handles come from HDF5 calls checked below; `buf` holds
            // prod(count) elements of `mem_type` (checked by the caller); the library lock is held.
            unsafe {
                let dxpl = H5Pcreate(*hdf5::globals::H5P_DATASET_XFER);
                let dxpl = handle(dxpl, H5Pclose, "H5Pcreate")?;
                check(
                    H5Pset_dxpl_mpio(dxpl.0, H5FD_mpio_xfer_t::H5FD_MPIO_COLLECTIVE),
                    "H5Pset_dxpl_mpio",
                )?;
                let [file_space, mem_space] = hyperslab(ds, start, count)?;
                check(
                    H5Dwrite(ds, mem_type, mem_space.0, file_space.0, dxpl.0, buf),
                    "H5Dwrite",
                )
            }
        })
    }
}
