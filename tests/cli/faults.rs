//! The fault-injection suite: what an adversarial user (or a bad day on a cluster) does to the
//! tools, and what must hold. Each case checks the exit code, a message naming the file, that
//! the inputs are byte-for-byte unchanged, and that the output is resumable to the bit-identical
//! result or refused. Uses the bundled tiny photo-z model and SDSS catalogues.
//!
//! - outputs that are inputs (also through links), foreign files and directories, `--overwrite`;
//! - a catalogue edited in place; two runs on one output;
//! - a full disk at creation and mid-run on 1, 2 and 3 ranks (a size-limited tmpfs in a user
//!   namespace: `unshare -rm`), then the resume after space is freed; aion-search on a full disk;
//! - HDF5 groups mapped as columns, a directory as catalogue, empty catalogues in every tool,
//!   duplicate object ids, a model without one of its codecs;
//! - SIGUSR1 and SIGTERM sent to `mpirun`;
//! - 20 random SIGKILLs (some of one rank only), resumed on other rank counts.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use crate::util::*;

fn model() -> PathBuf {
    repo().join("data/models/sdss-photoz-tiny")
}

/// 1000 galaxies.
fn small_catalog() -> PathBuf {
    repo().join("data/sdss_mgs/sdss_mgs_test_split.h5")
}

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

fn strings(a: &[&str]) -> Vec<String> {
    a.iter().map(|x| x.to_string()).collect()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A tool's standard arguments for `catalog` → `output` (the bundled model), plus `extra`.
fn std_args(catalog: &Path, output: &Path, extra: &[&str]) -> Vec<String> {
    let mut a = strings(&["--model", &s(&model()), "--catalog", &s(catalog)]);
    a.extend(strings(&["--output", &s(output)]));
    a.extend(strings(extra));
    a
}

/// Runs a tool with its standard arguments for `catalog` → `output`, plus `extra`.
fn tool(bin: &str, launch: Launch, catalog: &Path, output: &Path, extra: &[&str]) -> Output {
    run_tool(bin, launch, &std_args(catalog, output, extra))
}

/// The extra arguments a tool needs beyond model, catalogue and output.
fn needs(bin: &str) -> &'static [&'static str] {
    if bin == PREDICT || bin == GENERATE {
        &["--target", "tok_z"]
    } else {
        &[]
    }
}

/// Every file under `dir` with its bytes (to check that inputs are left untouched).
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    if dir.is_file() {
        return vec![(dir.to_path_buf(), std::fs::read(dir).unwrap())];
    }
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// Copies an SDSS catalogue's datasets (`rows` of them) into `dst`, letting `edit` change
/// `object_id`; `group` turns that dataset into an HDF5 group.
fn write_catalog(
    src: &Path,
    dst: &Path,
    rows: usize,
    edit_ids: impl Fn(&mut Vec<i64>),
    group: Option<&str>,
) {
    let f = hdf5::File::open(src).unwrap();
    let out = hdf5::File::create(dst).unwrap();
    for name in f.member_names().unwrap() {
        if Some(name.as_str()) == group {
            out.create_group(&name)
                .unwrap()
                .new_dataset_builder()
                .with_data(&ndarray::Array1::<f32>::zeros(rows))
                .create("x")
                .unwrap();
            continue;
        }
        let ds = f.dataset(&name).unwrap();
        if name == "object_id" {
            let mut v: Vec<i64> = ds.read_raw().unwrap();
            v.truncate(rows);
            edit_ids(&mut v);
            out.new_dataset_builder()
                .with_data(&ndarray::Array1::from(v))
                .create(name.as_str())
                .unwrap();
        } else {
            let mut v: Vec<f32> = ds.read_raw().unwrap();
            v.truncate(rows);
            out.new_dataset_builder()
                .with_data(&ndarray::Array1::from(v))
                .create(name.as_str())
                .unwrap();
        }
    }
}

#[test]
fn outputs_that_are_inputs_are_refused_whatever_the_flags() {
    let dir = tempdir();
    let d = dir.path();
    let cat = d.join("cat.h5");
    std::fs::copy(small_catalog(), &cat).unwrap();
    std::fs::hard_link(&cat, d.join("hard.h5")).unwrap();
    std::os::unix::fs::symlink(&cat, d.join("soft.h5")).unwrap();
    let (cat_before, model_before) = (snapshot(&cat), snapshot(&model()));
    let m = model();
    let targets = [
        (cat.clone(), "catalogue file"),
        (d.join("hard.h5"), "catalogue file"),
        (d.join("soft.h5"), "catalogue file"),
        (m.join("model.safetensors"), "model file"),
        (m.join("codecs/mag_u/config.json"), "model file"),
        (m.clone(), "model directory"),
    ];
    for (i, (out, what)) in targets.iter().enumerate() {
        let launch = if i % 2 == 0 {
            Launch::Alone
        } else {
            Launch::Mpirun(2)
        };
        let err = assert_fails(&tool(EMBED, launch, &cat, out, &["--overwrite"]));
        assert!(
            err.contains("refusing to write") && err.contains(what),
            "{}: {err}",
            out.display()
        );
    }
    // The other tools, with the catalogue as output.
    for bin in [TOKENIZE, PREDICT, GENERATE] {
        let mut extra = needs(bin).to_vec();
        extra.push("--overwrite");
        let err = assert_fails(&tool(bin, Launch::Alone, &cat, &cat, &extra));
        assert!(err.contains("it is the catalogue file"), "{bin}: {err}");
    }
    let err = assert_fails(&run_tool(
        FIT,
        Launch::Alone,
        &[
            "--catalog",
            &s(&cat),
            "--output",
            &s(&cat),
            "--column",
            "tok_x=mag_u",
        ],
    ));
    assert!(err.contains("it is the catalogue file"), "{err}");
    // aion-search: the embeddings file as its result.
    let emb = d.join("emb.h5");
    assert_ok(&tool(EMBED, Launch::Alone, &cat, &emb, &[]));
    let emb_before = snapshot(&emb);
    let err = assert_fails(&run_tool(
        SEARCH,
        Launch::Mpirun(2),
        &[
            "--embeddings",
            &s(&emb),
            "--query-ids",
            "3",
            "--k",
            "2",
            "--output",
            &s(&emb),
            "--overwrite",
        ],
    ));
    assert!(err.contains("it is the embedding file"), "{err}");
    // aion-finetune into its base model.
    let cfg = d.join("probe.toml");
    std::fs::write(&cfg, probe_config(&m, &m, &cat)).unwrap();
    let err = assert_fails(&run_tool(
        FINETUNE,
        Launch::Alone,
        &["--config", &s(&cfg), "--overwrite"],
    ));
    assert!(err.contains("it is the model directory"), "{err}");
    assert_eq!(snapshot(&cat), cat_before, "the catalogue changed");
    assert_eq!(snapshot(&emb), emb_before, "the embeddings changed");
    assert_eq!(snapshot(&m), model_before, "the model changed");
}

/// A probe fine-tuning of the bundled model (tiny: 3 steps).
fn probe_config(base: &Path, out: &Path, cat: &Path) -> String {
    format!(
        "mode = \"probe\"\ncatalog = [\"{}\"]\noutput = \"{}\"\n[model]\nbase = \"{}\"\n\
         [data]\ninputs = [\"tok_mag_g_sdss\", \"tok_mag_r_sdss\"]\n\
         split = {{ val = 0.1, test = 0.1 }}\n[probe]\ntarget = \"Z\"\n[train]\nsteps = 3\n\
         batch_size = 64\neval_every = 3\ncheckpoint_every = 3\n",
        cat.display(),
        out.display(),
        base.display()
    )
}

#[test]
fn foreign_files_and_directories_are_never_replaced() {
    let dir = tempdir();
    let d = dir.path();
    let cat = small_catalog();
    // A foreign HDF5 file, a foreign .run.json, a foreign plot: refused even with --overwrite.
    let foreign = d.join("foreign.h5");
    write_foreign_h5(&foreign);
    let before = snapshot(&foreign);
    for launch in [Launch::Alone, Launch::Mpirun(2)] {
        let err = assert_fails(&tool(EMBED, launch, &cat, &foreign, &["--overwrite"]));
        assert_mentions(&err, &["foreign.h5", "not written by an aion-hpc tool"]);
        assert!(err.contains("even with --overwrite"), "{err}");
    }
    assert_eq!(snapshot(&foreign), before);
    let out = d.join("o.h5");
    std::fs::write(d.join("o.h5.run.json"), "my notes\n").unwrap();
    let err = assert_fails(&tool(EMBED, Launch::Alone, &cat, &out, &[]));
    assert!(err.contains("o.h5.run.json"), "{err}");
    assert!(!out.exists());
    std::fs::write(d.join("p.h5.tok_z.png"), "not a plot of ours").unwrap();
    let err = assert_fails(&tool(
        PREDICT,
        Launch::Alone,
        &cat,
        &d.join("p.h5"),
        &["--target", "tok_z", "--overwrite"],
    ));
    assert!(err.contains("p.h5.tok_z.png"), "{err}");
    // Our own output, plot and record are replaced with --overwrite.
    std::fs::remove_file(d.join("p.h5.tok_z.png")).unwrap();
    let p = d.join("p.h5");
    assert_ok(&tool(
        PREDICT,
        Launch::Alone,
        &cat,
        &p,
        &["--target", "tok_z"],
    ));
    assert_ok(&tool(
        PREDICT,
        Launch::Alone,
        &cat,
        &p,
        &["--target", "tok_z", "--overwrite"],
    ));
    // aion-search: a foreign CSV.
    let emb = d.join("emb.h5");
    assert_ok(&tool(EMBED, Launch::Alone, &cat, &emb, &[]));
    let csv = d.join("r.csv");
    std::fs::write(&csv, "a,b\n1,2\n").unwrap();
    let query = read_i64(&emb, "object_id").1[3].to_string();
    let search = |extra: &[&str]| {
        let mut a = vec![
            "--embeddings".to_string(),
            s(&emb),
            "--query-ids".into(),
            query.clone(),
            "--k".into(),
            "2".into(),
            "--output".into(),
            s(&csv),
        ];
        a.extend(strings(extra));
        run_tool_env(SEARCH, Launch::Alone, &a, &[])
    };
    let err = assert_fails(&search(&["--overwrite"]));
    assert_mentions(&err, &["r.csv", "even with --overwrite"]);
    assert_eq!(std::fs::read_to_string(&csv).unwrap(), "a,b\n1,2\n");
    std::fs::remove_file(&csv).unwrap();
    assert_ok(&search(&[]));
    assert_ok(&search(&["--overwrite"]));

    // Model directories: a copy of the bundled model (no marker) is foreign.
    let copy = d.join("model-copy");
    copy_tree(&model(), &copy);
    let copy_before = snapshot(&copy);
    let fit = |out: &Path, col: &str, extra: &[&str]| {
        let mut a = strings(&["--catalog", &s(&cat), "--output", &s(out), "--column", col]);
        a.extend(strings(&["--reservoir-size", "500"]));
        a.extend(strings(extra));
        run_tool_env(FIT, Launch::Alone, &a, &[])
    };
    let err = assert_fails(&fit(
        &copy,
        "tok_mag_u_sdss=mag_u",
        &["--codebook-size", "64", "--overwrite"],
    ));
    assert_mentions(&err, &["model-copy", "not written by an aion-hpc tool"]);
    assert_eq!(
        snapshot(&copy),
        copy_before,
        "aion-fit-codecs changed a foreign model"
    );
    let cfg = d.join("probe.toml");
    std::fs::write(&cfg, probe_config(&model(), &copy, &cat)).unwrap();
    let err = assert_fails(&run_tool(
        FINETUNE,
        Launch::Alone,
        &["--config", &s(&cfg), "--overwrite"],
    ));
    assert!(err.contains("not written by an aion-hpc tool"), "{err}");
    assert_eq!(
        snapshot(&copy),
        copy_before,
        "aion-finetune changed a foreign model"
    );
    // Ours: a codec is added freely, replaced only with --overwrite.
    let codecs = d.join("codecs");
    assert_ok(&fit(&codecs, "tok_a=mag_u", &["--codebook-size", "64"]));
    assert_ok(&fit(&codecs, "tok_b=mag_g", &["--codebook-size", "64"]));
    let first = snapshot(&codecs.join("codecs/mag_u"));
    let err = assert_fails(&run_tool(
        FIT,
        Launch::Mpirun(2),
        &[
            "--catalog",
            &s(&cat),
            "--output",
            &s(&codecs),
            "--column",
            "tok_a=mag_u",
            "--codebook-size",
            "32",
        ],
    ));
    assert!(err.contains("use --overwrite"), "{err}");
    assert_eq!(snapshot(&codecs.join("codecs/mag_u")), first);
    assert_ok(&fit(
        &codecs,
        "tok_a=mag_u",
        &["--codebook-size", "32", "--overwrite"],
    ));
    let reg = std::fs::read_to_string(codecs.join("modalities.json")).unwrap();
    assert_mentions(&reg, &["tok_a", "tok_b"]);
    let left: Vec<_> = std::fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("aion-tmp") || n.contains("aion-old") || n.ends_with(".lock"))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    // aion-finetune: a finished model of another configuration needs --overwrite.
    let ft = d.join("ft");
    std::fs::write(&cfg, probe_config(&model(), &ft, &cat)).unwrap();
    assert_ok(&run_tool(FINETUNE, Launch::Alone, &["--config", &s(&cfg)]));
    assert!(ft.join("aion-hpc.json").is_file() && !d.join("ft.partial").exists());
    let again = assert_ok(&run_tool(FINETUNE, Launch::Alone, &["--config", &s(&cfg)]));
    assert!(again.contains("nothing to do"), "{again}");
    let other = probe_config(&model(), &ft, &cat).replace("steps = 3", "steps = 4");
    std::fs::write(&cfg, other).unwrap();
    let err = assert_fails(&run_tool(FINETUNE, Launch::Alone, &["--config", &s(&cfg)]));
    assert!(err.contains("use --overwrite"), "{err}");
    assert_ok(&run_tool(
        FINETUNE,
        Launch::Alone,
        &["--config", &s(&cfg), "--overwrite"],
    ));
}

fn copy_tree(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let p = e.unwrap().path();
        let to = dst.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_tree(&p, &to);
        } else {
            std::fs::copy(&p, &to).unwrap();
        }
    }
}

#[test]
fn a_catalogue_edited_in_place_is_refused_and_two_runs_never_share_an_output() {
    let dir = tempdir();
    let d = dir.path();
    let cat = d.join("cat.h5");
    std::fs::copy(small_catalog(), &cat).unwrap();
    let out = d.join("o.h5");
    let a = std_args(&cat, &out, &["--chunk-rows", "125"]);
    let killed = run_tool_env(EMBED, Launch::Alone, &a, &[("AION_FAULT", "after_mark@2")]);
    assert!(stderr(&killed).contains("AION_FAULT: SIGKILL"));
    // Same size, one value changed.
    let size = std::fs::metadata(&cat).unwrap().len();
    {
        let f = hdf5::File::open_rw(&cat).unwrap();
        let ds = f.dataset("mag_r").unwrap();
        let mut v: Vec<f32> = ds.read_raw().unwrap();
        v[500] += 0.25;
        ds.write(&ndarray::Array1::from(v)).unwrap();
    }
    assert_eq!(std::fs::metadata(&cat).unwrap().len(), size);
    for launch in [Launch::Alone, Launch::Mpirun(2)] {
        let err = assert_fails(&run_tool_env(EMBED, launch, &a, &[]));
        assert_mentions(&err, &["catalogue file", "cat.h5", "changed"]);
        assert!(err.contains("--overwrite"), "{err}");
    }
    let mut ow = a.clone();
    ow.push("--overwrite".into());
    assert_ok(&run_tool_env(EMBED, Launch::Alone, &ow, &[]));

    // A second run on the same output while the first holds it.
    let out2 = d.join("busy.h5");
    let mut b = a.clone();
    b[5] = s(&out2);
    let mut first = command(EMBED)
        .args(&b)
        .env("AION_TEST_SLOW_MS", "1200")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lock = d.join("busy.h5.lock");
    let t0 = Instant::now();
    while !std::fs::read_to_string(&lock).is_ok_and(|t| t.contains("pid:")) {
        assert!(t0.elapsed() < Duration::from_secs(60), "no lock file");
        std::thread::sleep(Duration::from_millis(50));
    }
    for launch in [Launch::Alone, Launch::Mpirun(2)] {
        let err = assert_fails(&run_tool_env(EMBED, launch, &b, &[]));
        assert!(
            err.contains("being written by another run")
                && err.contains(&format!("pid {}", first.id())),
            "{err}"
        );
    }
    let status = first.wait().unwrap();
    assert!(status.success());
    assert!(!lock.exists(), "the lock file outlived its run");
    let reference = d.join("ref.h5");
    let mut r = a.clone();
    r[5] = s(&reference);
    assert_ok(&run_tool_env(EMBED, Launch::Alone, &r, &[]));
    assert_same_datasets(&reference, &out2);
}

#[test]
fn bad_catalogues_are_clear_errors_or_results_never_panics() {
    let dir = tempdir();
    let d = dir.path();
    let group = d.join("group.h5");
    write_catalog(&small_catalog(), &group, 50, |_| {}, Some("mag_u"));
    for (bin, launch, map) in [
        (EMBED, Launch::Alone, &[][..]),
        (PREDICT, Launch::Alone, &[][..]),
        (TOKENIZE, Launch::Alone, &[][..]),
        (GENERATE, Launch::Alone, &[][..]),
        (
            EMBED,
            Launch::Mpirun(2),
            &["--map", "tok_mag_u_sdss=mag_u"][..],
        ),
    ] {
        let mut extra = needs(bin).to_vec();
        extra.extend(map);
        let err = assert_fails(&tool(bin, launch, &group, &d.join("g.h5"), &extra));
        assert!(
            err.contains("group.h5") && err.contains("'mag_u'") && err.contains("HDF5 group"),
            "{bin}: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
    let err = assert_fails(&tool(EMBED, Launch::Alone, d, &d.join("x.h5"), &[]));
    assert!(
        err.contains("is a directory, not a catalogue file"),
        "{err}"
    );

    // Empty catalogue: the model tools write an empty output; the others say why they cannot.
    let empty = d.join("empty.h5");
    write_catalog(&small_catalog(), &empty, 0, |_| {}, None);
    for (i, (bin, launch)) in [
        (EMBED, Launch::Alone),
        (EMBED, Launch::Mpirun(2)),
        (PREDICT, Launch::Alone),
        (TOKENIZE, Launch::Alone),
        (GENERATE, Launch::Alone),
    ]
    .into_iter()
    .enumerate()
    {
        let out = d.join(format!("e{i}.h5"));
        let err = assert_ok(&tool(bin, launch, &empty, &out, needs(bin)));
        assert!(err.contains("no rows"), "{bin}: {err}");
        assert_eq!(read_i64(&out, "object_id").0, vec![0], "{bin}");
    }
    for launch in [Launch::Alone, Launch::Mpirun(2)] {
        let err = assert_fails(&run_tool(
            FIT,
            launch,
            &[
                "--catalog",
                &s(&empty),
                "--output",
                &s(&d.join("fc")),
                "--column",
                "tok_x=mag_u",
            ],
        ));
        assert!(err.contains("has no rows"), "{err}");
        let err = assert_fails(&run_tool(
            SEARCH,
            launch,
            &[
                "--embeddings",
                &s(&d.join("e0.h5")),
                "--query-ids",
                "1",
                "--k",
                "2",
                "--output",
                &s(&d.join("s.csv")),
            ],
        ));
        assert!(err.contains("no rows"), "{err}");
        let cfg = d.join("ft.toml");
        std::fs::write(&cfg, probe_config(&model(), &d.join("ft"), &empty)).unwrap();
        let err = assert_fails(&run_tool(FINETUNE, launch, &["--config", &s(&cfg)]));
        assert!(err.contains("has no rows"), "{err}");
    }
    assert!(!d.join("fc").exists() && !d.join("ft").exists() && !d.join("s.csv").exists());

    // Duplicate object ids: a warning with the count and the first example.
    let dups = d.join("dups.h5");
    write_catalog(
        &small_catalog(),
        &dups,
        40,
        |ids| {
            ids[9] = ids[4];
            ids[30] = ids[4];
            ids[12] = ids[2];
        },
        None,
    );
    let (_, ids) = read_i64(&dups, "object_id");
    let err = assert_ok(&tool(
        EMBED,
        Launch::Mpirun(2),
        &dups,
        &d.join("dups-out.h5"),
        &[],
    ));
    assert_mentions(
        &err,
        &[
            "object_id is not unique: 3 row(s)",
            &format!("object_id {} at rows 2, 12", ids[2]),
        ],
    );

    // A model without one of its input codecs: left out with a warning when mapped by default,
    // an error when mapped explicitly.
    let m = d.join("model");
    copy_tree(&model(), &m);
    std::fs::remove_dir_all(m.join("codecs/mag_u")).unwrap();
    let run = |extra: &[&str]| {
        let mut a = strings(&["--model", &s(&m), "--catalog", &s(&small_catalog())]);
        a.extend(strings(&["--output", &s(&d.join("mc.h5")), "--overwrite"]));
        a.extend(strings(extra));
        run_tool_env(EMBED, Launch::Alone, &a, &[])
    };
    let err = assert_ok(&run(&[]));
    assert_mentions(&err, &["lack of a codec", "tok_mag_u_sdss"]);
    let err = assert_fails(&run(&["--map", "tok_mag_u_sdss=mag_u"]));
    assert_mentions(&err, &["tok_mag_u_sdss", "codecs/mag_u"]);
}

/// Whether this machine lets us mount a tmpfs in a user namespace (`unshare -rm`).
fn small_fs_available() -> bool {
    let ok = command("unshare")
        .args(["-rm", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!(
            "\n*** SKIPPED: the disk-full tests need `unshare -rm` + `mount -t tmpfs` (user \
             namespaces), which this machine does not allow ***\n"
        );
    }
    ok
}

/// Runs `script` (bash) in a user + mount namespace where `$MNT` is a fresh tmpfs of `size_kb`
/// holding `cat.h5` and a filler file that leaves `leave_kb` free; `$B` = the binaries' folder,
/// `$OUT` = `out` (outside the tmpfs: logs and copies survive the namespace).
fn in_small_fs(size_kb: u64, leave_kb: u64, catalog: &Path, out: &Path, script: &str) {
    let mnt = out.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let bins = Path::new(EMBED).parent().unwrap();
    let full = format!(
        "set -u\nmount -t tmpfs -o size={size_kb}k tmpfs \"$MNT\" || exit 97\n\
         cp \"$CAT\" \"$MNT/cat.h5\"\n\
         avail=$(df -k --output=avail \"$MNT\" | tail -1)\n\
         fallocate -l $(( (avail - {leave_kb}) * 1024 )) \"$MNT/filler\" || exit 98\n{script}"
    );
    let st = command("unshare")
        .args(["-rm", "bash", "-c", &full])
        .env("MNT", &mnt)
        .env("CAT", catalog)
        .env("B", bins)
        .env("OUT", out)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("OMPI_MCA_rmaps_base_oversubscribe", "1")
        .env("AION_IO_WATCHDOG_SECS", "3")
        .stdin(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "the disk-full script failed: {st:?}");
}

fn launcher(ranks: usize) -> String {
    if ranks == 1 {
        String::new()
    } else {
        format!("mpirun -n {ranks} --oversubscribe -x AION_IO_WATCHDOG_SECS ")
    }
}

/// Asserts that every rank's report names the full disk.
fn every_rank_says_disk_full(log: &str, ranks: usize) {
    if ranks == 1 {
        assert!(log.contains("No space left on device"), "{log}");
        return;
    }
    for r in 0..ranks {
        assert!(
            log.lines().any(|l| l.contains(&format!("[rank {r}"))
                && l.contains("No space left on device")),
            "rank {r} does not report the full disk:\n{log}"
        );
    }
}

#[test]
fn a_full_disk_stops_every_rank_with_the_os_error_and_the_run_resumes_bit_identical() {
    if !small_fs_available() {
        return;
    }
    let dir = tempdir();
    let d = dir.path();
    let cat = small_catalog();
    let reference = d.join("reference.h5");
    let args = format!(
        "--model {} --catalog \"$MNT/cat.h5\" --output \"$MNT/out.h5\" --chunk-rows 100",
        model().display()
    );
    assert_ok(&run_tool(
        EMBED,
        Launch::Alone,
        &std_args(&cat, &reference, &["--chunk-rows", "100"]),
    ));
    let before = snapshot(&cat);
    // The output takes 310 kB: 40 kB free fails while it is created, 150 kB in the middle,
    // nothing at all when the lock file is written.
    for (leave_kb, when) in [(40, "creation"), (150, "mid-run"), (0, "lock")] {
        for ranks in [1, 2, 3] {
            if leave_kb == 0 && ranks != 2 {
                continue;
            }
            let case = d.join(format!("{when}-{ranks}"));
            std::fs::create_dir_all(&case).unwrap();
            let l = launcher(ranks);
            let script = format!(
                "t0=$(date +%s)\n\
                 timeout 60 {l}\"$B/aion-embed\" {args} > \"$OUT/fail.log\" 2>&1; echo $? > \"$OUT/fail.rc\"\n\
                 echo $(( $(date +%s) - t0 )) > \"$OUT/fail.secs\"\n\
                 ls -a \"$MNT\" > \"$OUT/after-fail.ls\"\n\
                 cmp -s \"$CAT\" \"$MNT/cat.h5\" && touch \"$OUT/input-unchanged\"\n\
                 rm \"$MNT/filler\"\n\
                 timeout 60 {l}\"$B/aion-embed\" {args} > \"$OUT/resume.log\" 2>&1; echo $? > \"$OUT/resume.rc\"\n\
                 cp \"$MNT/out.h5\" \"$OUT/out.h5\"\n"
            );
            let t0 = Instant::now();
            in_small_fs(1024, leave_kb, &cat, &case, &script);
            let read = |f: &str| std::fs::read_to_string(case.join(f)).unwrap_or_default();
            let log = read("fail.log");
            let what = format!("full disk at {when}, {ranks} rank(s)");
            assert_eq!(read("fail.rc").trim(), "2", "{what}: exit code\n{log}");
            let secs: u64 = read("fail.secs").trim().parse().unwrap();
            assert!(secs < 60, "{what}: took {secs} s");
            every_rank_says_disk_full(&log, ranks);
            assert!(
                log.contains("/out.h5"),
                "{what}: the message names no file:\n{log}"
            );
            assert!(
                !log.contains("panicked") && !log.contains("Segmentation"),
                "{log}"
            );
            assert!(
                case.join("input-unchanged").exists(),
                "{what}: input changed"
            );
            let ls = read("after-fail.ls");
            assert!(
                !ls.contains("aion-probe"),
                "{what}: probe left behind: {ls}"
            );
            if when != "mid-run" {
                assert!(
                    !ls.contains("out.h5\n"),
                    "{what}: incomplete output left: {ls}"
                );
            }
            let resumed = read("resume.log");
            assert_eq!(read("resume.rc").trim(), "0", "{what}: resume\n{resumed}");
            if when == "mid-run" {
                assert!(resumed.contains("resuming"), "{what}: {resumed}");
            }
            assert_same_datasets(&reference, &case.join("out.h5"));
            eprintln!("{what}: {:.1} s", t0.elapsed().as_secs_f64());
        }
    }
    assert_eq!(snapshot(&cat), before);
}

#[test]
fn search_on_a_full_disk_leaves_no_partial_result() {
    if !small_fs_available() {
        return;
    }
    let dir = tempdir();
    let d = dir.path();
    let emb = d.join("emb.h5");
    assert_ok(&tool(EMBED, Launch::Alone, &small_catalog(), &emb, &[]));
    let ids = read_i64(&emb, "object_id").1;
    let queries: Vec<String> = ids[..5].iter().map(i64::to_string).collect();
    for (ranks, name) in [(1, "r.csv"), (2, "r.csv"), (2, "r.h5")] {
        let case = d.join(format!("{ranks}-{name}"));
        std::fs::create_dir_all(&case).unwrap();
        let script = format!(
            "timeout 60 {}\"$B/aion-search\" --embeddings \"$MNT/cat.h5\" --query-ids {} \
             --k 1000 --output \"$MNT/{name}\" > \"$OUT/log\" 2>&1; echo $? > \"$OUT/rc\"\n\
             ls -a \"$MNT\" > \"$OUT/ls\"\n",
            launcher(ranks),
            queries.join(" ")
        );
        in_small_fs(1024, 40, &emb, &case, &script);
        let read = |f: &str| std::fs::read_to_string(case.join(f)).unwrap_or_default();
        assert_eq!(read("rc").trim(), "2", "{}", read("log"));
        assert!(
            read("log").contains("No space left on device"),
            "{}",
            read("log")
        );
        let ls = read("ls");
        assert_eq!(
            ls.lines().collect::<Vec<_>>(),
            [".", "..", "cat.h5", "filler"],
            "left behind after a failed search"
        );
    }
}

#[test]
fn stop_signals_sent_to_mpirun() {
    let dir = tempdir();
    let d = dir.path();
    let reference = d.join("reference.h5");
    let cat = small_catalog();
    let a = |out: &Path| std_args(&cat, out, &["--chunk-rows", "50"]);
    assert_ok(&run_tool_env(EMBED, Launch::Alone, &a(&reference), &[]));
    for sig in ["USR1", "TERM"] {
        let out = d.join(format!("{sig}.h5"));
        let child = command("mpirun")
            .args([
                "-n",
                "2",
                "--oversubscribe",
                "-x",
                "AION_TEST_SLOW_MS",
                EMBED,
            ])
            .args(a(&out))
            // 20 chunks of at least 500 ms (5 s per rank): the signal lands long before the
            // end even on a loaded machine.
            .env("AION_TEST_SLOW_MS", "500")
            .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
            .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Wait until the first chunks are done.
        let t0 = Instant::now();
        while !chunks_done(&out) {
            assert!(t0.elapsed() < Duration::from_secs(60), "{sig}: no progress");
            std::thread::sleep(Duration::from_millis(100));
        }
        let st = command("kill")
            .args([&format!("-{sig}"), &child.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
        let o = child.wait_with_output().unwrap();
        let err = stderr(&o);
        if sig == "USR1" {
            // Forwarded by mpirun: the ranks finish the chunk in flight and exit 3.
            assert_eq!(o.status.code(), Some(3), "{err}");
        } else {
            // OpenMPI's mpirun does not forward SIGTERM: it kills the ranks (exit 1), and the
            // output holds only whole, recorded chunks.
            assert!(!o.status.success(), "{err}");
        }
        let done = read_done(&out);
        assert!(
            done.contains(&0),
            "{sig}: the run was not stopped early: {done:?}"
        );
        let r = assert_ok(&run_tool_env(EMBED, Launch::Mpirun(2), &a(&out), &[]));
        assert!(r.contains("resuming"), "{r}");
        assert_same_datasets(&reference, &out);
    }
}

fn read_done(path: &Path) -> Vec<u8> {
    hdf5::File::open(path)
        .and_then(|f| f.dataset("resume/chunk_done")?.read_raw())
        .unwrap_or_default()
}

fn chunks_done(path: &Path) -> bool {
    read_done(path).iter().filter(|&&b| b == 1).count() >= 2
}

#[test]
fn twenty_random_sigkills_resume_to_bit_identical_outputs() {
    const POINTS: [&str; 6] = [
        "prepare",
        "before_write",
        "mid_write",
        "after_write",
        "after_flush",
        "after_mark",
    ];
    const CHUNKS: usize = 8;
    let dir = tempdir();
    let d = dir.path();
    // 400 galaxies in 8 chunks; mostly aion-tokenize (the bundled model's codecs), one chain in
    // three aion-embed (its transformer too), to keep the test near a minute of CI time.
    let cat = d.join("cat.h5");
    write_catalog(&small_catalog(), &cat, 400, |_| {}, None);
    let args = |out: &Path, bin: &str| {
        std_args(&cat, out, &[&["--chunk-rows", "50"], needs(bin)].concat())
    };
    let mut references = Vec::new();
    for bin in [TOKENIZE, EMBED] {
        let r = d.join(format!("ref-{}.h5", references.len()));
        assert_ok(&run_tool_env(bin, Launch::Alone, &args(&r, bin), &[]));
        references.push((bin, r));
    }
    let launches = [Launch::Alone, Launch::Mpirun(2), Launch::Mpirun(3)];
    // The project's seeded generator, so a failure reproduces.
    let mut rng = aion_model::rng::Rng::new(20_251_206, 0, 0);
    let (mut kills, mut one_rank_only, mut chain) = (0, 0, 0);
    while kills < 20 {
        assert!(chain < 40, "could not place 20 kills");
        let (bin, reference) = &references[usize::from(chain % 3 == 2)];
        let out = d.join(format!("chain-{chain}.h5"));
        chain += 1;
        let mut log = Vec::new();
        // Up to three kills on the same output, each run on a random rank count.
        for _ in 0..1 + rng.below(3) {
            let launch = launches[rng.below(3)];
            let ranks = match launch {
                Launch::Alone => 1,
                Launch::Mpirun(n) => n,
            };
            let rank = rng.below(ranks);
            let fault = format!(
                "{}@{}:{rank}",
                POINTS[rng.below(POINTS.len())],
                rng.below(CHUNKS)
            );
            let o = run_tool_env(bin, launch, &args(&out, bin), &[("AION_FAULT", &fault)]);
            let err = stderr(&o);
            log.push(format!("{fault} on {launch:?}"));
            if err.contains("AION_FAULT: SIGKILL") {
                assert!(!o.status.success(), "{log:?}: exit 0 after a kill");
                kills += 1;
                one_rank_only += usize::from(ranks > 1);
            } else {
                // That chunk was already done, or not on that rank: the run just finished.
                assert!(o.status.success(), "{log:?}:\n{err}");
                break;
            }
        }
        let launch = launches[rng.below(3)];
        let o = run_tool_env(bin, launch, &args(&out, bin), &[]);
        assert_ok(&o);
        assert_same_datasets(reference, &out);
    }
    assert!(
        one_rank_only >= 5,
        "only {one_rank_only} kills of one rank among several"
    );
}
