//! Jobs submitted for real to a local Slurm (`slurm/start-local-slurm.sh` brings it up; the
//! README test command does so). Without a reachable Slurm these tests fail when
//! `AION_REQUIRE_SLURM=1` (CI) and are skipped otherwise.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::util::*;

/// Whether a Slurm controller answers; panics if it must.
pub fn slurm_available() -> bool {
    let up = Command::new("scontrol")
        .arg("ping")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("UP"));
    if !up && std::env::var("AION_REQUIRE_SLURM").is_ok_and(|v| v == "1") {
        panic!(
            "AION_REQUIRE_SLURM=1 but no Slurm controller answers (run slurm/start-local-slurm.sh)"
        );
    }
    if !up {
        eprintln!("skipped: no Slurm controller (run slurm/start-local-slurm.sh as root)");
    }
    up
}

/// `sbatch --parsable ARGS` from the repository root with the debug binaries; returns the job id.
pub fn sbatch(args: &[&str]) -> String {
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_aion-tokenize"))
        .parent()
        .unwrap();
    let out = Command::new("sbatch")
        .arg("--parsable")
        .args(args)
        .current_dir(repo())
        .env("AION_BIN", bin_dir)
        .output()
        .expect("sbatch");
    assert!(
        out.status.success(),
        "sbatch failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .split(';')
        .next()
        .unwrap()
        .to_string()
}

/// `scontrol show job` fields.
pub fn job_field(job: &str, field: &str) -> String {
    let out = Command::new("scontrol")
        .args(["show", "job", job])
        .output()
        .expect("scontrol");
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{field}=")))
        .unwrap_or("")
        .to_string()
}

/// Waits until the job reaches a final state; returns it.
pub fn wait_job(job: &str, timeout: Duration) -> String {
    let t0 = Instant::now();
    loop {
        let state = job_field(job, "JobState");
        if [
            "COMPLETED",
            "FAILED",
            "CANCELLED",
            "TIMEOUT",
            "NODE_FAIL",
            "OUT_OF_MEMORY",
        ]
        .contains(&state.as_str())
        {
            return state;
        }
        assert!(
            t0.elapsed() < timeout,
            "job {job} still {state} after {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn tokenize_sbatch_runs_two_ranks() {
    if !slurm_available() {
        return;
    }
    let dir = tempdir();
    let out = dir.path().join("slurm.h5");
    let log = dir.path().join("job-%j.out");
    let model = fixture("scalar_codecs/hub");
    let cat = fixture("scalar_codecs/catalog.h5");
    let job = sbatch(&[
        "-n",
        "2",
        "-o",
        log.to_str().unwrap(),
        "slurm/tokenize.sbatch",
        "--model",
        model.to_str().unwrap(),
        "--catalog",
        cat.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--batch-size",
        "9",
    ]);
    let state = wait_job(&job, Duration::from_secs(120));
    let log_text =
        std::fs::read_to_string(dir.path().join(format!("job-{job}.out"))).unwrap_or_default();
    assert_eq!(state, "COMPLETED", "job log:\n{log_text}");
    assert!(
        log_text.contains("aion-tokenize 1/2]"),
        "the tool did not see 2 ranks:\n{log_text}"
    );
    let f = hdf5::File::open(&out).unwrap();
    assert_eq!(f.attr("n_ranks").unwrap().read_scalar::<i64>().unwrap(), 2);
    assert_eq!(
        f.attr("slurm_job_id")
            .unwrap()
            .read_scalar::<i64>()
            .unwrap()
            .to_string(),
        job
    );
    drop(f);
    let single = dir.path().join("single.h5");
    let args = [
        "--model",
        model.to_str().unwrap(),
        "--catalog",
        cat.to_str().unwrap(),
        "--output",
        single.to_str().unwrap(),
    ];
    assert_ok(&run_tool(
        env!("CARGO_BIN_EXE_aion-tokenize"),
        Launch::Alone,
        &args,
    ));
    assert_same_datasets(&single, &out);
}

#[test]
fn time_limit_signal_checkpoints_requeues_and_finishes() {
    if !slurm_available() {
        return;
    }
    let dir = tempdir();
    let out = dir.path().join("requeue.h5");
    let log = dir.path().join("job-%j.out");
    let model = fixture("scalar_codecs/hub");
    let cat = fixture("scalar_codecs/catalog.h5");
    let tool_args = [
        "--model",
        model.to_str().unwrap(),
        "--catalog",
        cat.to_str().unwrap(),
        "--chunk-rows",
        "4",
    ];
    // Slow chunks (0.4 s each, 16 chunks over 2 ranks) so the signal lands mid-run.
    let mut args = vec![
        "-n",
        "2",
        "-o",
        log.to_str().unwrap(),
        "--export=ALL,AION_TEST_SLOW_MS=400",
        "slurm/tokenize.sbatch",
    ];
    args.extend(tool_args);
    args.extend(["--output", out.to_str().unwrap()]);
    let job = sbatch(&args);
    let t0 = Instant::now();
    while !(job_field(&job, "JobState") == "RUNNING" && out.exists()) {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "job {job} did not start"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(1200));
    // What Slurm sends before the time limit with `--signal=USR1@…`.
    let sig = Command::new("scancel")
        .args(["--signal=USR1", &job])
        .status()
        .unwrap();
    assert!(sig.success());
    let state = wait_job_restarted(&job, Duration::from_secs(240));
    let log_text =
        std::fs::read_to_string(dir.path().join(format!("job-{job}.out"))).unwrap_or_default();
    assert_eq!(state, "COMPLETED", "job log:\n{log_text}");
    assert!(
        log_text.contains("requeueing job"),
        "no checkpoint/requeue in the log:\n{log_text}"
    );
    assert!(
        log_text.contains("resuming"),
        "the requeued run did not resume:\n{log_text}"
    );
    assert_eq!(job_field(&job, "Restarts"), "1");
    let single = dir.path().join("single.h5");
    let mut a = tool_args.to_vec();
    a.extend(["--output", single.to_str().unwrap()]);
    assert_ok(&run_tool(
        env!("CARGO_BIN_EXE_aion-tokenize"),
        Launch::Alone,
        &a,
    ));
    assert_same_datasets(&single, &out);
}

/// Waits for a final state after at least one restart. Slurm makes a requeued job eligible only
/// two minutes later; the test moves that forward (`scontrol update StartTime=now`).
fn wait_job_restarted(job: &str, timeout: Duration) -> String {
    let t0 = Instant::now();
    while !(job_field(job, "JobState") == "PENDING" && job_field(job, "Restarts") == "1") {
        if t0.elapsed() > timeout
            || ["COMPLETED", "FAILED", "CANCELLED"].contains(&job_field(job, "JobState").as_str())
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = Command::new("scontrol")
        .args(["update", &format!("JobId={job}"), "StartTime=now"])
        .status();
    loop {
        let state = wait_job(job, timeout);
        if job_field(job, "Restarts") != "0" || t0.elapsed() > timeout {
            return state;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn embed_and_predict_sbatch_match_a_single_process() {
    if !slurm_available() {
        return;
    }
    let dir = tempdir();
    let model = crate::model::assemble_model(dir.path());
    let cat = fixture("pipeline/catalog.h5");
    for (tool, script, extra) in [
        ("aion-embed", "slurm/embed.sbatch", vec![]),
        (
            "aion-predict",
            "slurm/predict.sbatch",
            vec!["--target", "tok_z", "--save-logits"],
        ),
    ] {
        let out = dir.path().join(format!("{tool}-slurm.h5"));
        let single = dir.path().join(format!("{tool}-single.h5"));
        let log = dir.path().join(format!("{tool}-%j.out"));
        let mut tool_args = vec![
            "--model",
            model.to_str().unwrap(),
            "--catalog",
            cat.to_str().unwrap(),
            "--chunk-rows",
            "3",
        ];
        tool_args.extend(extra.iter().copied());
        let mut args = vec!["-n", "2", "-o", log.to_str().unwrap(), script];
        args.extend(tool_args.iter().copied());
        args.extend(["--output", out.to_str().unwrap()]);
        let job = sbatch(&args);
        let state = wait_job(&job, Duration::from_secs(300));
        let text = std::fs::read_to_string(dir.path().join(format!("{tool}-{job}.out")))
            .unwrap_or_default();
        assert_eq!(state, "COMPLETED", "{tool} job log:\n{text}");
        assert!(
            text.contains(&format!("{tool} 1/2]")),
            "{tool} did not run on 2 ranks:\n{text}"
        );
        let bin = Path::new(env!("CARGO_BIN_EXE_aion-tokenize")).with_file_name(tool);
        let mut a = tool_args.clone();
        a.extend(["--output", single.to_str().unwrap()]);
        assert_ok(&run_tool(bin.to_str().unwrap(), Launch::Alone, &a));
        assert_same_datasets(&single, &out);
    }
}

#[test]
fn embed_job_checkpoints_on_the_time_limit_signal_and_finishes_after_requeue() {
    if !slurm_available() {
        return;
    }
    let dir = tempdir();
    let model = crate::model::assemble_model(dir.path());
    let cat = fixture("pipeline/catalog.h5");
    let out = dir.path().join("emb.h5");
    let log = dir.path().join("job-%j.out");
    let tool_args = [
        "--model",
        model.to_str().unwrap(),
        "--catalog",
        cat.to_str().unwrap(),
        "--chunk-rows",
        "1",
    ];
    let mut args = vec![
        "-n",
        "2",
        "-o",
        log.to_str().unwrap(),
        "--export=ALL,AION_TEST_SLOW_MS=700",
        "slurm/embed.sbatch",
    ];
    args.extend(tool_args);
    args.extend(["--output", out.to_str().unwrap()]);
    let job = sbatch(&args);
    let t0 = Instant::now();
    while !(job_field(&job, "JobState") == "RUNNING" && out.exists()) {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "job {job} did not start"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        Command::new("scancel")
            .args(["--signal=USR1", &job])
            .status()
            .unwrap()
            .success()
    );
    let state = wait_job_restarted(&job, Duration::from_secs(300));
    let text =
        std::fs::read_to_string(dir.path().join(format!("job-{job}.out"))).unwrap_or_default();
    assert_eq!(state, "COMPLETED", "job log:\n{text}");
    assert!(
        text.contains("requeueing job") && text.contains("resuming"),
        "no checkpoint + resume:\n{text}"
    );
    let single = dir.path().join("single.h5");
    let mut a = tool_args.to_vec();
    a.extend(["--output", single.to_str().unwrap()]);
    assert_ok(&run_tool(
        env!("CARGO_BIN_EXE_aion-embed"),
        Launch::Alone,
        &a,
    ));
    assert_same_datasets(&single, &out);
}
