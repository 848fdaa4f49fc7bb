//! Jobs submitted for real to a local Slurm (`slurm/start-local-slurm.sh` brings it up; the
//! README test command does so). Without a reachable Slurm these tests fail when
//! `AION_REQUIRE_SLURM=1` (CI) and are skipped otherwise.

use std::path::{Path, PathBuf};
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

/// `sbatch --parsable ARGS` with the debug binaries (`AION_BIN`), submitted as a user would from
/// a folder outside the repository (a script argument `slurm/NAME.sbatch` is the repository's,
/// given by its absolute path); returns the job id.
pub fn sbatch(args: &[&str]) -> String {
    Cluster::local().sbatch_in(&submit_dir(), args)
}

/// A folder outside the repository to submit from (jobs run in it; kept, it stays empty when
/// the jobs name their logs with `-o`).
pub fn submit_dir() -> PathBuf {
    let d = std::env::temp_dir().join("aion-cli-submit");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `scontrol show job` fields (local cluster).
pub fn job_field(job: &str, field: &str) -> String {
    Cluster::local().job_field(job, field)
}

/// Waits until the job reaches a final state; returns it (local cluster).
pub fn wait_job(job: &str, timeout: Duration) -> String {
    Cluster::local().wait_job(job, timeout)
}

/// A Slurm cluster to submit to, as the environment of its commands (and so of its jobs): the
/// local one (nothing), or the two-node one (its `SLURM_CONF` and Open MPI's TCP settings).
#[derive(Debug, Default)]
pub struct Cluster {
    env: Vec<(String, String)>,
}

impl Cluster {
    /// The local single-node cluster.
    pub fn local() -> Self {
        Self::default()
    }

    /// The same cluster with `key=value` in the environment of its commands (and jobs).
    pub fn with(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.envs(self.env.iter().map(|(k, v)| (k, v)));
        c
    }

    /// `sbatch --parsable ARGS` from `dir` (see [`sbatch`]); returns the job id.
    pub fn sbatch_in(&self, dir: &Path, args: &[&str]) -> String {
        let bin_dir = Path::new(env!("CARGO_BIN_EXE_aion-tokenize"))
            .parent()
            .unwrap();
        let args: Vec<String> = args
            .iter()
            .map(|a| match a.strip_prefix("slurm/") {
                Some(_) if a.ends_with(".sbatch") => repo().join(a).display().to_string(),
                _ => a.to_string(),
            })
            .collect();
        let out = self
            .command("sbatch")
            .arg("--parsable")
            .args(&args)
            .current_dir(dir)
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
    pub fn job_field(&self, job: &str, field: &str) -> String {
        let out = self
            .command("scontrol")
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
    pub fn wait_job(&self, job: &str, timeout: Duration) -> String {
        let t0 = Instant::now();
        loop {
            let state = self.job_field(job, "JobState");
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

    /// Sends the job's steps SIGUSR1, what Slurm sends before the time limit with
    /// `--signal=USR1@…`.
    pub fn signal_time_limit(&self, job: &str) {
        let sent = self
            .command("scancel")
            .args(["--signal=USR1", job])
            .status()
            .unwrap();
        assert!(sent.success());
    }

    /// Waits for a final state after at least one restart. Slurm makes a requeued job eligible
    /// only two minutes later; the test moves that forward (`scontrol update StartTime=now`).
    pub fn wait_job_restarted(&self, job: &str, timeout: Duration) -> String {
        let t0 = Instant::now();
        let state = |c: &Self| c.job_field(job, "JobState");
        while !(state(self) == "PENDING" && self.job_field(job, "Restarts") == "1") {
            if t0.elapsed() > timeout
                || ["COMPLETED", "FAILED", "CANCELLED"].contains(&state(self).as_str())
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = self
            .command("scontrol")
            .args(["update", &format!("JobId={job}"), "StartTime=now"])
            .status();
        loop {
            let state = self.wait_job(job, timeout);
            if self.job_field(job, "Restarts") != "0" || t0.elapsed() > timeout {
                return state;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
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
    Cluster::local().signal_time_limit(&job);
    let state = Cluster::local().wait_job_restarted(&job, Duration::from_secs(240));
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
    Cluster::local().signal_time_limit(&job);
    let state = Cluster::local().wait_job_restarted(&job, Duration::from_secs(300));
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

/// The array template shares a list of catalogue files out over the array's tasks (task i takes
/// lines i, i+T, …), one output per file, each the same as a single-process run on that file.
/// Submitted from the folder that holds the (relative) list, with `AION_HOME` naming the
/// installation; a list whose files would share an output is refused before anything runs.
#[test]
fn array_template_spreads_files_over_tasks() {
    if !slurm_available() {
        return;
    }
    let dir = tempdir();
    let d = dir.path();
    let model = fixture("scalar_codecs/hub");
    let cat = fixture("scalar_codecs/catalog.h5");
    std::fs::create_dir_all(d.join("in")).unwrap();
    for name in ["a", "b", "c"] {
        std::fs::copy(&cat, d.join(format!("in/{name}.h5"))).unwrap();
    }
    std::fs::write(
        d.join("files.txt"),
        "# three files\nin/a.h5\n\nin/b.h5\nin/c.h5\n",
    )
    .unwrap();
    let cluster = Cluster::local().with("AION_HOME", repo().to_str().unwrap());
    let log = d.join("arr-%A_%a.out");
    let args = |list: &'static str, tasks: &'static str| {
        vec![
            tasks.to_string(),
            "-n".into(),
            "1".into(),
            "-o".into(),
            log.display().to_string(),
            "slurm/array.sbatch".into(),
            "aion-tokenize".into(),
            list.into(),
            "out".into(),
            "--model".into(),
            model.display().to_string(),
        ]
    };
    let a = args("files.txt", "--array=0-1");
    let job = cluster.sbatch_in(d, &a.iter().map(String::as_str).collect::<Vec<_>>());
    for task in 0..2 {
        let state = cluster.wait_job(&format!("{job}_{task}"), Duration::from_secs(300));
        let text =
            std::fs::read_to_string(d.join(format!("arr-{job}_{task}.out"))).unwrap_or_default();
        assert_eq!(state, "COMPLETED", "array task {task}:\n{text}");
        let mine: &[&str] = if task == 0 { &["a", "c"] } else { &["b"] };
        for name in ["a", "b", "c"] {
            assert_eq!(
                text.contains(&format!("in/{name}.h5 -> out/{name}.h5")),
                mine.contains(&name),
                "task {task}, file {name}:\n{text}"
            );
        }
    }
    let single = d.join("single.h5");
    let s_args = [
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
        &s_args,
    ));
    for name in ["a", "b", "c"] {
        assert_same_datasets(&single, &d.join(format!("out/{name}.h5")));
    }

    std::fs::create_dir_all(d.join("other")).unwrap();
    std::fs::copy(&cat, d.join("other/a.h5")).unwrap();
    std::fs::write(d.join("dup.txt"), "in/a.h5\nother/a.h5\n").unwrap();
    let a = args("dup.txt", "--array=0-0");
    let job = cluster.sbatch_in(d, &a.iter().map(String::as_str).collect::<Vec<_>>());
    let state = cluster.wait_job(&format!("{job}_0"), Duration::from_secs(120));
    let text = std::fs::read_to_string(d.join(format!("arr-{job}_0.out"))).unwrap_or_default();
    assert_eq!(state, "FAILED", "{text}");
    assert!(text.contains("would both write"), "{text}");
}

/// The two-node test cluster of `slurm/start-two-node-slurm.sh` (two slurmd in network
/// namespaces of this machine, MPI over TCP), if it is up; it must be when
/// `AION_REQUIRE_SLURM=1` (scripts/test.sh starts it).
fn two_node_cluster() -> Option<Cluster> {
    let required = std::env::var("AION_REQUIRE_SLURM").is_ok_and(|v| v == "1");
    let missing = "no two-node test cluster (run slurm/start-two-node-slurm.sh as root)";
    let Ok(text) = std::fs::read_to_string("/etc/slurm-aion2n/env.sh") else {
        assert!(!required, "AION_REQUIRE_SLURM=1 but {missing}");
        eprintln!("skipped: {missing}");
        return None;
    };
    let mut cluster = Cluster::local();
    for kv in text
        .lines()
        .filter_map(|l| l.strip_prefix("export "))
        .flat_map(str::split_whitespace)
    {
        let (k, v) = kv.split_once('=').unwrap();
        cluster = cluster.with(k, v);
    }
    let up = cluster
        .command("scontrol")
        .arg("ping")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("UP"));
    assert!(
        up || !required,
        "AION_REQUIRE_SLURM=1 but the two-node cluster does not answer"
    );
    if !up {
        eprintln!("skipped: {missing}");
    }
    up.then_some(cluster)
}

/// aion-embed on 4 ranks over two Slurm nodes (2 per node): every rank logs its node and its
/// node-local rank from SLURM_LOCALID (the GPU `--device cuda` takes), the ranks of both nodes
/// write the one output collectively, the time-limit signal mid-run checkpoints and requeues the
/// job, the requeued run resumes on both nodes, and the result equals a one-process run.
#[test]
fn embed_across_two_nodes_requeues_and_matches_one_process() {
    let Some(cluster) = two_node_cluster() else {
        return;
    };
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
        "--nodes=2",
        "--ntasks-per-node=2",
        "-o",
        log.to_str().unwrap(),
        "--export=ALL,AION_TEST_SLOW_MS=700",
        "slurm/embed.sbatch",
    ];
    args.extend(tool_args);
    args.extend(["--output", out.to_str().unwrap()]);
    let job = cluster.sbatch_in(&submit_dir(), &args);
    let t0 = Instant::now();
    while !(cluster.job_field(&job, "JobState") == "RUNNING" && out.exists()) {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "job {job} did not start"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(1500));
    cluster.signal_time_limit(&job);
    let state = cluster.wait_job_restarted(&job, Duration::from_secs(300));
    let text =
        std::fs::read_to_string(dir.path().join(format!("job-{job}.out"))).unwrap_or_default();
    assert_eq!(state, "COMPLETED", "job log:\n{text}");
    assert!(
        text.contains("requeueing job") && text.contains("resuming"),
        "no checkpoint + resume:\n{text}"
    );
    assert_eq!(cluster.job_field(&job, "Restarts"), "1");
    // Both runs (before and after the requeue) had two ranks on each node.
    for (rank, host, local) in [
        (0, "aion2n-n1", 0),
        (1, "aion2n-n1", 1),
        (2, "aion2n-n2", 0),
        (3, "aion2n-n2", 1),
    ] {
        let line = format!(
            "aion-embed {rank}/4] INFO  aion-hpc {} (commit",
            env!("CARGO_PKG_VERSION")
        );
        let want = format!("on host {host}: node-local rank {local} of 2 (SLURM_LOCALID)");
        let n = text
            .lines()
            .filter(|l| l.contains(&line) && l.contains(&want))
            .count();
        assert_eq!(
            n, 2,
            "rank {rank} on {host} as local rank {local}, twice:\n{text}"
        );
    }
    let f = hdf5::File::open(&out).unwrap();
    assert_eq!(f.attr("n_ranks").unwrap().read_scalar::<i64>().unwrap(), 4);
    drop(f);
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
