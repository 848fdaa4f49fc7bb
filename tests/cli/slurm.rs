//! Jobs submitted for real to a local Slurm (`slurm/start-local-slurm.sh` brings it up; the
//! README test command does so). Without a reachable Slurm these tests fail when
//! `AION_REQUIRE_SLURM=1` (CI) and are skipped otherwise.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::util::*;

/// Whether a Slurm controller answers; panics if it must.
pub fn slurm_available() -> bool {
    let up = command("scontrol")
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

/// A temporary folder for a Slurm test; `None` (the test is skipped) where no Slurm answers (see
/// [`slurm_available`]).
pub fn slurm_test_dir() -> Option<tempfile::TempDir> {
    slurm_available().then(tempdir)
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

/// Waits until the job reaches a final state; returns it (local cluster).
pub fn wait_job(job: &str, timeout: Duration) -> String {
    Cluster::local().wait_job(job, timeout)
}

/// Submits `sbatch -n RANKS -o LOG ARGS` (`ARGS`: more sbatch options, the script, the tool's
/// arguments), waits up to `timeout` and asserts that the job COMPLETED; returns its id and log.
pub fn sbatch_completed(
    ranks: &str,
    log: &Path,
    args: &[&str],
    timeout: Duration,
) -> (String, String) {
    let job = sbatch(&[&["-n", ranks, "-o", s(log)], args].concat());
    let state = wait_job(&job, timeout);
    let text = job_log(log, &job);
    assert_eq!(state, "COMPLETED", "job log:\n{text}");
    (job, text)
}

/// The log of `job` (`log` as given to `sbatch -o`: `%j` the job id, `%A_%a` an array task's
/// `JOB_TASK`); empty if there is none.
pub fn job_log(log: &Path, job: &str) -> String {
    let path = s(log).replace("%j", job).replace("%A_%a", job);
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Asserts that `out` records the Slurm job that wrote it and its rank count.
pub fn assert_job_recorded(out: &Path, job: &str, ranks: i64) {
    let f = hdf5::File::open(out).unwrap();
    assert_eq!(
        f.attr("n_ranks").unwrap().read_scalar::<i64>().unwrap(),
        ranks
    );
    let id = f
        .attr("slurm_job_id")
        .unwrap()
        .read_scalar::<i64>()
        .unwrap();
    assert_eq!(id.to_string(), job);
}

/// A job slowed down (`AION_TEST_SLOW_MS`) so that the time-limit signal lands mid-run.
pub struct SlowJob<'a> {
    /// sbatch options placing the tasks (`-n 2`, `--nodes=2 …`).
    pub tasks: &'a [&'a str],
    /// Milliseconds each chunk sleeps.
    pub slow_ms: u32,
    /// The sbatch script (`slurm/NAME.sbatch`).
    pub script: &'a str,
    /// The tool's arguments but `--output`.
    pub tool_args: &'a [&'a str],
    /// The tool's output.
    pub out: &'a Path,
    /// The job log (`-o`, with `%j`).
    pub log: &'a Path,
    /// How long the job may take to start and create `out`.
    pub start_within: Duration,
    /// How long after that the signal comes.
    pub signal_after: Duration,
    /// How long the job may take to finish after its requeue.
    pub finish_within: Duration,
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
        let mut c = command(program);
        c.envs(self.env.iter().map(|(k, v)| (k, v)));
        c
    }

    /// `sbatch --parsable ARGS` from `dir` (see [`sbatch`]); returns the job id.
    pub fn sbatch_in(&self, dir: &Path, args: &[&str]) -> String {
        let bin_dir = Path::new(TOKENIZE).parent().unwrap();
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

    /// Submits `job`, sends it the time-limit signal mid-run, and asserts that it checkpoints,
    /// is requeued once, resumes and completes; returns the job id and its log.
    pub fn requeue_mid_run(&self, job: &SlowJob) -> (String, String) {
        let slow = format!("--export=ALL,AION_TEST_SLOW_MS={}", job.slow_ms);
        let head = ["-o", s(job.log), slow.as_str(), job.script];
        let tail = ["--output", s(job.out)];
        let args = [job.tasks, &head, job.tool_args, &tail].concat();
        let id = self.sbatch_in(&submit_dir(), &args);
        let t0 = Instant::now();
        while !(self.job_field(&id, "JobState") == "RUNNING" && job.out.exists()) {
            assert!(t0.elapsed() < job.start_within, "job {id} did not start");
            std::thread::sleep(Duration::from_millis(200));
        }
        std::thread::sleep(job.signal_after);
        self.signal_time_limit(&id);
        let state = self.wait_job_restarted(&id, job.finish_within);
        let text = job_log(job.log, &id);
        assert_eq!(state, "COMPLETED", "job log:\n{text}");
        assert!(
            text.contains("requeueing job"),
            "no checkpoint/requeue in the log:\n{text}"
        );
        assert!(
            text.contains("resuming"),
            "the requeued run did not resume:\n{text}"
        );
        assert_eq!(self.job_field(&id, "Restarts"), "1");
        (id, text)
    }
}

#[test]
fn tokenize_sbatch_runs_two_ranks() {
    let Some(dir) = slurm_test_dir() else {
        return;
    };
    let out = dir.path().join("slurm.h5");
    let log = dir.path().join("job-%j.out");
    let (model, cat) = scalar_fixture();
    let mut args = vec!["slurm/tokenize.sbatch"];
    args.extend(io_args(&model, &cat, &out));
    args.extend(["--batch-size", "9"]);
    let (job, log_text) = sbatch_completed("2", &log, &args, Duration::from_secs(120));
    assert!(
        log_text.contains("aion-tokenize 1/2]"),
        "the tool did not see 2 ranks:\n{log_text}"
    );
    assert_job_recorded(&out, &job, 2);
    let single = dir.path().join("single.h5");
    let args = ["--model", s(&model), "--catalog", s(&cat)];
    assert_same_as_alone(TOKENIZE, &args, &single, &out);
}

#[test]
fn time_limit_signal_checkpoints_requeues_and_finishes() {
    let Some(dir) = slurm_test_dir() else {
        return;
    };
    let out = dir.path().join("requeue.h5");
    let log = dir.path().join("job-%j.out");
    let (model, cat) = scalar_fixture();
    let tool_args = [
        "--model",
        s(&model),
        "--catalog",
        s(&cat),
        "--chunk-rows",
        "4",
    ];
    // Slow chunks (0.4 s each, 16 chunks over 2 ranks) so the signal lands mid-run.
    Cluster::local().requeue_mid_run(&SlowJob {
        tasks: &["-n", "2"],
        slow_ms: 400,
        script: "slurm/tokenize.sbatch",
        tool_args: &tool_args,
        out: &out,
        log: &log,
        start_within: Duration::from_secs(60),
        signal_after: Duration::from_millis(1200),
        finish_within: Duration::from_secs(240),
    });
    let single = dir.path().join("single.h5");
    assert_same_as_alone(TOKENIZE, &tool_args, &single, &out);
}

#[test]
fn embed_and_predict_sbatch_match_a_single_process() {
    let Some(dir) = slurm_test_dir() else {
        return;
    };
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
            s(&model),
            "--catalog",
            s(&cat),
            "--chunk-rows",
            "3",
        ];
        tool_args.extend(extra.iter().copied());
        let args = [&[script], &tool_args[..], &["--output", s(&out)]].concat();
        let (_, text) = sbatch_completed("2", &log, &args, Duration::from_secs(300));
        assert!(
            text.contains(&format!("{tool} 1/2]")),
            "{tool} did not run on 2 ranks:\n{text}"
        );
        let bin = Path::new(TOKENIZE).with_file_name(tool);
        assert_same_as_alone(s(&bin), &tool_args, &single, &out);
    }
}

#[test]
fn embed_job_checkpoints_on_the_time_limit_signal_and_finishes_after_requeue() {
    let Some(dir) = slurm_test_dir() else {
        return;
    };
    embed_requeued(&Cluster::local(), &["-n", "2"], dir.path());
}

/// aion-embed on the pipeline fixture in one-row chunks of 0.7 s each, with `tasks` on `cluster`:
/// requeued mid-run ([`Cluster::requeue_mid_run`]), then the same as a one-process run. Returns
/// the output and the job log.
fn embed_requeued(cluster: &Cluster, tasks: &[&str], dir: &Path) -> (PathBuf, String) {
    let model = crate::model::assemble_model(dir);
    let cat = fixture("pipeline/catalog.h5");
    let (out, log) = (dir.join("emb.h5"), dir.join("job-%j.out"));
    let tool_args = [
        "--model",
        s(&model),
        "--catalog",
        s(&cat),
        "--chunk-rows",
        "1",
    ];
    let (_, text) = cluster.requeue_mid_run(&SlowJob {
        tasks,
        slow_ms: 700,
        script: "slurm/embed.sbatch",
        tool_args: &tool_args,
        out: &out,
        log: &log,
        start_within: Duration::from_secs(120),
        signal_after: Duration::from_millis(1500),
        finish_within: Duration::from_secs(300),
    });
    assert_same_as_alone(EMBED, &tool_args, &dir.join("single.h5"), &out);
    (out, text)
}

/// The array template shares a list of catalogue files out over the array's tasks (task i takes
/// lines i, i+T, …), one output per file, each the same as a single-process run on that file.
/// Submitted from the folder that holds the (relative) list, with `AION_HOME` naming the
/// installation; a list whose files would share an output is refused before anything runs.
#[test]
fn array_template_spreads_files_over_tasks() {
    let Some(dir) = slurm_test_dir() else {
        return;
    };
    let d = dir.path();
    let (model, cat) = scalar_fixture();
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
        let text = job_log(&log, &format!("{job}_{task}"));
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
    assert_ok(&run_tool(
        TOKENIZE,
        Launch::Alone,
        &io_args(&model, &cat, &single),
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
    let text = job_log(&log, &format!("{job}_0"));
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
    let (out, text) = embed_requeued(&cluster, &["--nodes=2", "--ntasks-per-node=2"], dir.path());
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
}
