//! Kill a run at many points (SIGKILL, even mid-write), re-run the same command, and compare
//! with an uninterrupted run; stop a run with the time-limit signal and continue it; refuse to
//! resume into an output made by another run.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::util::*;

const BIN: &str = env!("CARGO_BIN_EXE_aion-tokenize");

fn args<'a>(model: &'a str, cat: &'a str, out: &'a str) -> Vec<&'a str> {
    vec![
        "--model",
        model,
        "--catalog",
        cat,
        "--output",
        out,
        "--chunk-rows",
        "8",
        "--batch-size",
        "4",
    ]
}

fn run_env(launch: Launch, a: &[&str], env: &[(&str, &str)]) -> Output {
    let a: Vec<String> = a.iter().map(|s| s.to_string()).collect();
    run_bin_env(BIN, launch, &a, env)
}

fn paths(dir: &Path, name: &str) -> (String, String, String) {
    (
        fixture("scalar_codecs/hub").to_str().unwrap().to_string(),
        fixture("scalar_codecs/catalog.h5")
            .to_str()
            .unwrap()
            .to_string(),
        dir.join(name).to_str().unwrap().to_string(),
    )
}

#[test]
fn sigkill_at_any_point_then_resume_gives_the_same_output() {
    let dir = tempdir();
    let (model, cat, reference) = paths(dir.path(), "reference.h5");
    assert_ok(&run_env(
        Launch::Alone,
        &args(&model, &cat, &reference),
        &[],
    ));
    let points = [
        ("prepare@1:0", Launch::Alone),
        ("before_write@2:0", Launch::Mpirun(2)),
        ("mid_write@5:1", Launch::Mpirun(2)),
        ("mid_write@2:0", Launch::Mpirun(3)),
        ("after_write@4:1", Launch::Mpirun(2)),
        ("after_flush@3:0", Launch::Alone),
        ("after_mark@6:2", Launch::Mpirun(3)),
    ];
    for (i, (fault, launch)) in points.iter().enumerate() {
        let out = dir
            .path()
            .join(format!("killed{i}.h5"))
            .to_str()
            .unwrap()
            .to_string();
        let a = args(&model, &cat, &out);
        let killed = run_env(*launch, &a, &[("AION_FAULT", fault)]);
        assert!(!killed.status.success(), "{fault}: the run was not killed");
        let stderr = String::from_utf8_lossy(&killed.stderr);
        assert!(
            stderr.contains("AION_FAULT: SIGKILL"),
            "{fault}: fault not reached:\n{stderr}"
        );
        let resumed = run_env(*launch, &a, &[]);
        let err = assert_ok(&resumed);
        assert!(err.contains("resuming"), "{fault}: did not resume:\n{err}");
        assert_same_datasets(reference.as_ref(), Path::new(&out));
    }
}

#[test]
fn usr1_checkpoints_with_exit_3_and_the_rerun_finishes() {
    let dir = tempdir();
    let (model, cat, reference) = paths(dir.path(), "reference.h5");
    assert_ok(&run_env(
        Launch::Alone,
        &args(&model, &cat, &reference),
        &[],
    ));
    let (_, _, out) = paths(dir.path(), "stopped.h5");
    let a = args(&model, &cat, &out);
    let stopped = run_env(Launch::Mpirun(2), &a, &[("AION_FAULT", "usr1@5:1")]);
    assert_eq!(
        stopped.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&stopped.stderr)
    );
    let f = hdf5::File::open(&out).unwrap();
    let done: Vec<u8> = f.dataset("resume/chunk_done").unwrap().read_raw().unwrap();
    assert!(
        done.contains(&0) && done.contains(&1),
        "partial progress expected: {done:?}"
    );
    drop(f);
    assert_ok(&run_env(Launch::Mpirun(2), &a, &[]));
    assert_same_datasets(Path::new(&reference), Path::new(&out));
    // A finished output is left alone by a re-run.
    let again = assert_ok(&run_env(Launch::Alone, &a, &[]));
    assert!(again.contains("0 of 8 chunk(s) left"), "{again}");
}

#[test]
fn refuses_to_resume_into_another_runs_output() {
    let dir = tempdir();
    let (model, cat, out) = paths(dir.path(), "o.h5");
    assert_ok(
        &run_env(
            Launch::Alone,
            &args(&model, &cat, &out),
            &[("AION_FAULT", "after_mark@0")],
        )
        .pipe_ok_or_killed(),
    );
    let mut a = args(&model, &cat, &out);
    a.extend(["--map", "tok_ebv=none"]);
    let err = assert_fails(&run_env(Launch::Mpirun(2), &a, &[]));
    assert!(
        err.contains("made by another run") && err.contains("configuration"),
        "{err}"
    );
    a.push("--overwrite");
    assert_ok(&run_env(Launch::Mpirun(2), &a, &[]));
    // A file that is not ours is never overwritten silently.
    let foreign = dir.path().join("foreign.h5");
    hdf5::File::create(&foreign)
        .unwrap()
        .new_dataset::<f32>()
        .shape(3)
        .create("x")
        .unwrap();
    let err = assert_fails(&run_env(
        Launch::Alone,
        &args(&model, &cat, foreign.to_str().unwrap()),
        &[],
    ));
    assert!(err.contains("not written by an aion-hpc tool"), "{err}");
}

trait KilledOk {
    fn pipe_ok_or_killed(self) -> Output;
}

impl KilledOk for Output {
    /// A run killed by its fault hook counts as "done what we wanted"; turn it into success.
    fn pipe_ok_or_killed(mut self) -> Output {
        if String::from_utf8_lossy(&self.stderr).contains("AION_FAULT: SIGKILL") {
            self.status = Command::new("true").status().unwrap();
        }
        self
    }
}

#[test]
fn embed_and_predict_resume_after_sigkill_to_identical_outputs() {
    let dir = tempdir();
    let model = crate::model::assemble_model(dir.path());
    let cat = fixture("pipeline/catalog.h5");
    for (bin, extra) in [
        (env!("CARGO_BIN_EXE_aion-embed"), vec![]),
        (
            env!("CARGO_BIN_EXE_aion-predict"),
            vec!["--target", "tok_z"],
        ),
    ] {
        let name = Path::new(bin)
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        let base = |out: &Path| -> Vec<String> {
            let mut a: Vec<String> = [
                "--model",
                model.to_str().unwrap(),
                "--catalog",
                cat.to_str().unwrap(),
                "--chunk-rows",
                "2",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            a.extend(extra.iter().map(|s| s.to_string()));
            a.extend(["--output".to_string(), out.to_str().unwrap().to_string()]);
            a
        };
        let reference = dir.path().join(format!("{name}-ref.h5"));
        let a = base(&reference);
        assert_ok(&run_bin_env(bin, Launch::Alone, &a, &[]));
        for (i, (fault, launch)) in [
            ("mid_write@1:0", Launch::Mpirun(2)),
            ("after_flush@3:1", Launch::Mpirun(2)),
            ("prepare@2:1", Launch::Mpirun(3)),
        ]
        .into_iter()
        .enumerate()
        {
            let out = dir.path().join(format!("{name}-k{i}.h5"));
            let a = base(&out);
            let killed = run_bin_env(bin, launch, &a, &[("AION_FAULT", fault)]);
            assert!(!killed.status.success(), "{name} {fault}: not killed");
            let err = assert_ok(&run_bin_env(bin, launch, &a, &[]));
            assert!(
                err.contains("resuming"),
                "{name} {fault}: did not resume:\n{err}"
            );
            assert_same_datasets(&reference, &out);
        }
    }
}

/// Runs `bin` with `a` under `launch` with extra environment variables (passed through mpirun).
pub(crate) fn run_bin_env(bin: &str, launch: Launch, a: &[String], env: &[(&str, &str)]) -> Output {
    let mut cmd = match launch {
        Launch::Alone => Command::new(bin),
        Launch::Mpirun(n) => {
            let mut c = Command::new("mpirun");
            c.args(["-n", &n.to_string(), "--oversubscribe"]);
            for (k, _) in env {
                c.args(["-x", k]);
            }
            c.arg(bin);
            c
        }
    };
    cmd.args(a)
        .envs(env.iter().copied())
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}
