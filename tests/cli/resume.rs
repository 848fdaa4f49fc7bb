//! Kill a run at many points (SIGKILL, even mid-write), re-run the same command, and compare
//! with an uninterrupted run; stop a run with the time-limit signal and continue it; refuse to
//! resume into an output made by another run.

use std::path::Path;
use std::process::Output;

use crate::model::pipeline_model;
use crate::util::*;

const BIN: &str = TOKENIZE;

fn args<'a>(model: &'a str, cat: &'a str, out: &'a str) -> Vec<&'a str> {
    let mut a = io_args(model, cat, out);
    a.extend(["--chunk-rows", "8", "--batch-size", "4"]);
    a
}

fn run_env(launch: Launch, a: &[&str], env: &[(&str, &str)]) -> Output {
    run_tool_env(BIN, launch, a, env)
}

fn paths(dir: &Path, name: &str) -> (String, String, String) {
    let (model, cat) = scalar_fixture();
    let [model, cat, out] = [model, cat, dir.join(name)].map(|p| s(&p).to_string());
    (model, cat, out)
}

/// The fixture's model and catalogue, and their uninterrupted one-process run `reference.h5`.
fn with_reference(dir: &Path) -> (String, String, String) {
    let (model, cat, reference) = paths(dir, "reference.h5");
    assert_ok(&run_env(
        Launch::Alone,
        &args(&model, &cat, &reference),
        &[],
    ));
    (model, cat, reference)
}

#[test]
fn sigkill_at_any_point_then_resume_gives_the_same_output() {
    let dir = tempdir();
    let (model, cat, reference) = with_reference(dir.path());
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
    let (model, cat, reference) = with_reference(dir.path());
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
    assert!(again.contains("is complete"), "{again}");
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
    assert_mentions(&err, &["made by another run", "configuration"]);
    a.push("--overwrite");
    assert_ok(&run_env(Launch::Mpirun(2), &a, &[]));
    // A file that is not ours is never overwritten silently.
    let foreign = dir.path().join("foreign.h5");
    write_foreign_h5(&foreign);
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
            self.status = command("true").status().unwrap();
        }
        self
    }
}

#[test]
fn embed_and_predict_resume_after_sigkill_to_identical_outputs() {
    let (dir, model) = pipeline_model();
    let cat = fixture("pipeline/catalog.h5");
    for (bin, extra) in [(EMBED, vec![]), (PREDICT, vec!["--target", "tok_z"])] {
        let name = Path::new(bin)
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        let base = |out: &Path| -> Vec<String> {
            let mut a = vec![
                "--model",
                s(&model),
                "--catalog",
                s(&cat),
                "--chunk-rows",
                "2",
            ];
            a.extend(&extra);
            a.extend(["--output", s(out)]);
            a.into_iter().map(String::from).collect()
        };
        let reference = dir.path().join(format!("{name}-ref.h5"));
        let a = base(&reference);
        assert_ok(&run_tool_env(bin, Launch::Alone, &a, &[]));
        for (i, (fault, launch)) in KILL_POINTS.into_iter().enumerate() {
            let out = dir.path().join(format!("{name}-k{i}.h5"));
            kill_then_resume(bin, launch, &base(&out), fault);
            assert_same_datasets(&reference, &out);
        }
    }
}
