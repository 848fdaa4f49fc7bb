//! Helpers for the CLI tests: temp dirs, spawning tools with or without mpirun, reading outputs.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The `aion-model` binary under test.
pub const MODEL: &str = env!("CARGO_BIN_EXE_aion-model");
/// The `aion-tokenize` binary under test.
pub const TOKENIZE: &str = env!("CARGO_BIN_EXE_aion-tokenize");
/// The `aion-embed` binary under test.
pub const EMBED: &str = env!("CARGO_BIN_EXE_aion-embed");
/// The `aion-predict` binary under test.
pub const PREDICT: &str = env!("CARGO_BIN_EXE_aion-predict");
/// The `aion-generate` binary under test.
pub const GENERATE: &str = env!("CARGO_BIN_EXE_aion-generate");
/// The `aion-search` binary under test.
pub const SEARCH: &str = env!("CARGO_BIN_EXE_aion-search");
/// The `aion-fit-codecs` binary under test.
pub const FIT: &str = env!("CARGO_BIN_EXE_aion-fit-codecs");
/// The `aion-finetune` binary under test.
pub const FINETUNE: &str = env!("CARGO_BIN_EXE_aion-finetune");
/// The `aion-export` binary under test.
pub const EXPORT: &str = env!("CARGO_BIN_EXE_aion-export");

/// Repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `validation/fixtures/<case>`.
pub fn fixture(case: &str) -> PathBuf {
    repo().join("validation/fixtures").join(case)
}

/// The scalar codecs' fixture: its model (codecs only, for aion-tokenize) and its catalogue.
pub fn scalar_fixture() -> (PathBuf, PathBuf) {
    (
        fixture("scalar_codecs/hub"),
        fixture("scalar_codecs/catalog.h5"),
    )
}

/// A fresh temporary directory, removed on drop.
///
/// With `AION_CLI_KEEP=<dir>`, the directories are kept instead, under `<dir>`, named after the
/// test and a counter (`<test>.<k>`), so that two runs of the suite (e.g. before and after a
/// refactor) can be compared file by file (`validation/compare_outputs.py`).
pub fn tempdir() -> tempfile::TempDir {
    if let Some(root) = std::env::var_os("AION_CLI_KEEP") {
        thread_local!(static COUNT: std::cell::Cell<usize> = const { std::cell::Cell::new(0) });
        let k = COUNT.with(|c| c.replace(c.get() + 1));
        let test = std::thread::current()
            .name()
            .unwrap_or("main")
            .replace("::", ".");
        std::fs::create_dir_all(&root).expect("AION_CLI_KEEP dir");
        return tempfile::Builder::new()
            .prefix(&format!("{test}.{k}"))
            .rand_bytes(0)
            .disable_cleanup(true)
            .tempdir_in(root)
            .expect("kept temp dir");
    }
    tempfile::Builder::new()
        .prefix("aion-cli-")
        .tempdir()
        .expect("temp dir")
}

/// How to launch a tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Launch {
    /// No launcher: one process (MPI singleton).
    Alone,
    /// `mpirun -n N` (with `--oversubscribe` when N exceeds the cores).
    Mpirun(usize),
}

/// Runs binary `bin` with `args` under `launch`; stdin is closed (CI has none).
pub fn run_tool<S: AsRef<OsStr>>(bin: &str, launch: Launch, args: &[S]) -> Output {
    run_tool_env(bin, launch, args, &[])
}

/// `Command::new(program)` for every process a test starts: the child closes, at `exec`, every
/// file descriptor it would inherit from the test process. The HDF5 library opens files without
/// `O_CLOEXEC` and holds a `flock` on them; a tool started by one test while another test of the
/// same process has an HDF5 file open would otherwise keep that lock after the test closes the
/// file, and a later tool run on that file would fail to lock it ("unable to lock file").
#[allow(unsafe_code)]
pub fn command(program: impl AsRef<OsStr>) -> Command {
    use std::os::unix::process::CommandExt as _;
    let mut cmd = Command::new(program);
    // SAFETY: the closure only makes one system call (async-signal-safe) between fork and exec
    // and touches no memory of the parent. On kernels before 5.11 (no CLOSE_RANGE_CLOEXEC) it
    // fails and the descriptors are inherited as before.
    unsafe {
        cmd.pre_exec(|| {
            libc::syscall(
                libc::SYS_close_range,
                3u32,
                u32::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            );
            Ok(())
        });
    }
    cmd
}

/// [`run_tool`] with extra environment variables (passed on by mpirun with `-x`).
pub fn run_tool_env<S: AsRef<OsStr>>(
    bin: &str,
    launch: Launch,
    args: &[S],
    env: &[(&str, &str)],
) -> Output {
    let mut cmd = match launch {
        Launch::Alone => command(bin),
        Launch::Mpirun(n) => {
            let mut c = command("mpirun");
            c.args(["-n", &n.to_string(), "--oversubscribe"]);
            for (k, _) in env {
                c.args(["-x", k]);
            }
            c.arg(bin);
            c
        }
    };
    cmd.args(args)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("OMPI_MCA_rmaps_base_oversubscribe", "1")
        .env("OMP_NUM_THREADS", "1")
        .envs(env.iter().copied())
        .stdin(Stdio::null());
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {bin}: {e}"))
}

/// Where [`kill_then_resume`] is asked to kill runs (`AION_FAULT` points) and under which
/// launch: mid-write and after a flush on 2 ranks, while preparing on 3.
pub const KILL_POINTS: [(&str, Launch); 3] = [
    ("mid_write@1:0", Launch::Mpirun(2)),
    ("after_flush@3:1", Launch::Mpirun(2)),
    ("prepare@2:1", Launch::Mpirun(3)),
];

/// Kills a run of `bin` with `args` under `launch` at `fault` (`AION_FAULT`), runs the same
/// command again and asserts that it resumes and succeeds; returns the killed run. (The caller
/// compares the output with an uninterrupted run.)
pub fn kill_then_resume<S: AsRef<OsStr>>(
    bin: &str,
    launch: Launch,
    args: &[S],
    fault: &str,
) -> Output {
    let what = args
        .iter()
        .map(|a| a.as_ref().to_string_lossy())
        .collect::<Vec<_>>();
    let what = format!("{bin} {}, {fault}", what.join(" "));
    let killed = run_tool_env(bin, launch, args, &[("AION_FAULT", fault)]);
    assert!(!killed.status.success(), "{what}: not killed");
    let err = assert_ok(&run_tool_env(bin, launch, args, &[]));
    assert!(err.contains("resuming"), "{what}: did not resume:\n{err}");
    killed
}

/// The path as a `&str` (the tests' paths are UTF-8).
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `--model M --catalog C --output O`: what every catalogue tool is given.
pub fn io_args<'a>(
    model: &'a (impl AsRef<Path> + ?Sized),
    cat: &'a (impl AsRef<Path> + ?Sized),
    out: &'a (impl AsRef<Path> + ?Sized),
) -> Vec<&'a str> {
    let (model, cat, out) = (s(model.as_ref()), s(cat.as_ref()), s(out.as_ref()));
    vec!["--model", model, "--catalog", cat, "--output", out]
}

/// Runs `bin` alone with `args` and `--output single`, and asserts that `single` holds the same
/// datasets as `out` (a run of the same arguments on more ranks, or under Slurm).
pub fn assert_same_as_alone(bin: &str, args: &[&str], single: &Path, out: &Path) {
    let mut a = args.to_vec();
    a.extend(["--output", s(single)]);
    assert_ok(&run_tool(bin, Launch::Alone, &a));
    assert_same_datasets(single, out);
}

/// Asserts that `text` holds each of `words`, printing it otherwise.
pub fn assert_mentions(text: &str, words: &[&str]) {
    for w in words {
        assert!(text.contains(w), "no {w:?} in:\n{text}");
    }
}

/// Asserts success, printing stderr otherwise; returns stderr.
pub fn assert_ok(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        out.status.success(),
        "tool failed ({:?}):\n{err}",
        out.status.code()
    );
    err
}

/// Asserts exit code 2 and returns stderr.
pub fn assert_fails(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(
        out.status.code(),
        Some(2),
        "expected exit 2, got {:?}:\n{err}",
        out.status.code()
    );
    err
}

/// Every dataset of an HDF5 file as flat f64 values with its shape (ints and floats; NaN kept).
pub fn read_all(path: &Path) -> Datasets {
    let f =
        hdf5::File::open(path).unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
    let mut out = BTreeMap::new();
    collect(&f, "", &mut out);
    out
}

fn collect(g: &hdf5::Group, prefix: &str, out: &mut Datasets) {
    for name in g.member_names().unwrap() {
        let full = format!("{prefix}/{name}");
        if let Ok(ds) = g.dataset(&name) {
            let v: Vec<f64> = ds
                .read_raw::<f64>()
                .unwrap_or_else(|e| panic!("{full}: {e}"));
            out.insert(full, (ds.shape(), v));
        } else if let Ok(sub) = g.group(&name) {
            collect(&sub, &full, out);
        }
    }
}

/// Datasets by path: shape and values (as f64).
pub type Datasets = BTreeMap<String, (Vec<usize>, Vec<f64>)>;

/// Asserts two outputs hold the same datasets with the same values (NaN == NaN).
pub fn assert_same_datasets(a: &Path, b: &Path) {
    let what = format!("{} vs {}", a.display(), b.display());
    assert_same_values(&what, &read_all(a), &read_all(b), |x, y| x == y);
}

/// Asserts that `da` and `db` hold the same dataset names and shapes, and values that `same`
/// takes for equal (NaN equals NaN). The resume record (`/resume/…`) is compared by name only:
/// it counts chunks, whose size depends on the rank count (issue 14).
pub fn assert_same_values(what: &str, da: &Datasets, db: &Datasets, same: fn(f64, f64) -> bool) {
    assert_eq!(
        da.keys().collect::<Vec<_>>(),
        db.keys().collect::<Vec<_>>(),
        "{what}: dataset names differ"
    );
    for (name, (sa, va)) in da.iter().filter(|(k, _)| !k.starts_with("/resume/")) {
        let (sb, vb) = &db[name];
        assert_eq!(sa, sb, "{what}: {name}: shape");
        let bad = va
            .iter()
            .zip(vb)
            .position(|(&x, &y)| !(same(x, y) || (x.is_nan() && y.is_nan())));
        assert!(bad.is_none(), "{what}: {name}: values differ at {bad:?}");
    }
}

/// Reads one dataset as i64.
pub fn read_i64(path: &Path, name: &str) -> (Vec<usize>, Vec<i64>) {
    read_as(path, name)
}

/// Reads one dataset as f32.
pub fn read_f32(path: &Path, name: &str) -> (Vec<usize>, Vec<f32>) {
    read_as(path, name)
}

fn read_as<T: hdf5::H5Type>(path: &Path, name: &str) -> (Vec<usize>, Vec<T>) {
    let f = hdf5::File::open(path).unwrap();
    let ds = f.dataset(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    (ds.shape(), ds.read_raw::<T>().unwrap())
}

/// Python of the validation venv (has h5py), if it exists.
pub fn venv_python() -> Option<PathBuf> {
    let p = std::env::var_os("AION_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("validation/.venv/bin/python"));
    p.exists().then_some(p)
}

/// The root attribute `modality_bits` of an output: the modality of each bit of its masks.
pub fn modality_bits(f: &hdf5::File) -> Vec<String> {
    let json = f
        .attr("modality_bits")
        .unwrap()
        .read_scalar::<hdf5::types::VarLenUnicode>();
    serde_json::from_str(&json.unwrap()).unwrap()
}

/// Every dataset path of an HDF5 file (without the leading `/`).
pub fn dataset_paths(path: &Path) -> Vec<String> {
    fn walk(g: &hdf5::Group, prefix: &str, out: &mut Vec<String>) {
        for name in g.member_names().unwrap() {
            let full = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}/{name}")
            };
            if g.dataset(&name).is_ok() {
                out.push(full);
            } else if let Ok(sub) = g.group(&name) {
                walk(&sub, &full, out);
            }
        }
    }
    let f = hdf5::File::open(path).unwrap();
    let mut out = Vec::new();
    walk(&f, "", &mut out);
    out
}

fn str_attr(ds: &hdf5::Dataset, name: &str) -> Option<String> {
    let a = ds.attr(name).ok()?;
    let v: hdf5::types::VarLenUnicode = a.read_scalar().ok()?;
    Some(v.as_str().to_string())
}

/// The dataset names `docs/hdf5-schema.md` documents: every `code span`, with `{a,b}`
/// alternatives expanded.
fn documented_names() -> std::collections::BTreeSet<String> {
    let doc = std::fs::read_to_string(repo().join("docs/hdf5-schema.md")).unwrap();
    let mut out = std::collections::BTreeSet::new();
    for (i, span) in doc.split('`').enumerate() {
        if i % 2 == 0 {
            continue;
        }
        match (span.find('{'), span.find('}')) {
            (Some(a), Some(b)) if a < b => {
                for alt in span[a + 1..b].split(',') {
                    out.insert(format!("{}{}{}", &span[..a], alt.trim(), &span[b + 1..]));
                }
            }
            _ => {
                out.insert(span.to_string());
            }
        }
    }
    out
}

/// A dataset path with its variable parts as `docs/hdf5-schema.md` writes them: token keys
/// `<key>` (also inside `<key>_bin_edges`, …), the probe's dataset `<dataset>`, a decoded
/// catalog field `<FIELD>`.
fn schema_name(path: &str) -> String {
    let mut parts: Vec<String> = path.split('/').map(str::to_string).collect();
    let decoded_catalog = parts.len() == 3 && parts[0] == "decoded" && parts[1] == "catalog";
    for p in parts.iter_mut() {
        if p.starts_with("tok_") || p == "catalog" {
            let suffix = ["_bin_edges", "_bin_centres", "_wavelength"]
                .into_iter()
                .find(|s| p.ends_with(s))
                .unwrap_or("");
            *p = format!("<key>{suffix}");
        }
    }
    if parts[0] == "probe" && parts.len() == 3 {
        parts[1] = "<dataset>".into();
    }
    if decoded_catalog {
        parts[2] = "<FIELD>".into();
    }
    parts.join("/")
}

/// What a user of h5py or astropy relies on, checked on a tool's output: every floating-point
/// dataset has `units` (astropy notation, "" = dimensionless) and a `label`; every
/// `pdf/<key>` names its bin edges and centres, which exist with the right shapes; the flag
/// masks carry `bit_names`, one per bit of the root attribute `modality_bits`; and every
/// dataset is documented in `docs/hdf5-schema.md`.
pub fn assert_self_describing(path: &Path) {
    let f = hdf5::File::open(path).unwrap();
    let documented = documented_names();
    let bits: Option<Vec<String>> = f
        .attr("modality_bits")
        .ok()
        .map(|a| a.read_scalar::<hdf5::types::VarLenUnicode>().unwrap())
        .map(|s| serde_json::from_str(s.as_str()).unwrap());
    for name in dataset_paths(path) {
        let ds = f.dataset(&name).unwrap();
        let what = format!("{}: {name}", path.display());
        let generic = schema_name(&name);
        assert!(
            documented.contains(&generic),
            "{what}: `{generic}` is not in docs/hdf5-schema.md"
        );
        let float = matches!(
            ds.dtype().unwrap().to_descriptor().unwrap(),
            hdf5::types::TypeDescriptor::Float(_)
        );
        if float {
            assert!(
                str_attr(&ds, "units").is_some(),
                "{what}: float data without units"
            );
            assert!(
                str_attr(&ds, "label").is_some(),
                "{what}: float data without label"
            );
        }
        if generic == "pdf/<key>" {
            let shape = ds.shape();
            for (attr, extra) in [("bin_edges", 1), ("bin_centres", 0)] {
                let grid = str_attr(&ds, attr)
                    .unwrap_or_else(|| panic!("{what}: a posterior without its {attr}"));
                let g = f
                    .dataset(&grid)
                    .unwrap_or_else(|e| panic!("{what}: {grid}: {e}"));
                assert_eq!(g.shape(), [shape[1], shape[2] + extra], "{what}: {grid}");
            }
        }
        if name.starts_with("modalities_") {
            let names: Vec<String> = ds
                .attr("bit_names")
                .unwrap_or_else(|e| panic!("{what}: no bit_names: {e}"))
                .read_raw::<hdf5::types::VarLenUnicode>()
                .unwrap()
                .iter()
                .map(|s| s.as_str().to_string())
                .collect();
            assert_eq!(
                Some(&names),
                bits.as_ref(),
                "{what}: bit_names vs modality_bits"
            );
        }
    }
}

/// The text of every `<text>` element of an SVG file, one line each.
pub fn svg_texts(path: &Path) -> String {
    let svg = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    svg.split("<text")
        .skip(1)
        .filter_map(|t| {
            let body = &t[t.find('>')? + 1..];
            Some(body[..body.find("</text>")?].trim().to_string())
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Asserts that `<stem>.png` is a PNG and that the text of `<stem>.svg` holds each of `words`.
pub fn assert_figure(stem: &str, words: &[&str]) {
    let png = std::fs::read(format!("{stem}.png")).unwrap_or_else(|e| panic!("{stem}.png: {e}"));
    assert!(png.starts_with(b"\x89PNG"), "{stem}.png is not a PNG");
    let text = svg_texts(Path::new(&format!("{stem}.svg")));
    for w in words {
        assert!(
            text.contains(w),
            "{stem}.svg: no {w:?} in its text:\n{text}"
        );
    }
}

/// The bytes of each file, for "nothing changed" checks.
pub fn snapshot(paths: &[PathBuf]) -> Vec<Vec<u8>> {
    paths
        .iter()
        .map(|p| std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .collect()
}

/// Writes an HDF5 file that no aion-hpc tool made (one dataset `x`), for the "never overwrite a
/// foreign file" checks.
pub fn write_foreign_h5(path: &Path) {
    hdf5::File::create(path)
        .unwrap()
        .new_dataset::<f32>()
        .shape(3)
        .create("x")
        .unwrap();
}

/// Copies the folder `from` to `to` (which must not exist), with everything in it.
pub fn copy_dir(from: &Path, to: &Path) {
    let status = command("cp").arg("-R").args([from, to]).status();
    assert!(status.is_ok_and(|s| s.success()), "cp -R {from:?} {to:?}");
}
