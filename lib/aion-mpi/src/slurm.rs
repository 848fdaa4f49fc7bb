//! The Slurm job environment (`SLURM_*` variables) as a typed struct.
//!
//! The user asked for a `slurm-env` crate; none exists on crates.io, so the handful of variables
//! the tools use are read here. Everything is optional: outside Slurm every field is `None`.
//! The decomposition itself always uses the MPI rank and size, never these values.

use serde::Serialize;

/// What Slurm tells a task about its job.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SlurmEnv {
    /// `SLURM_JOB_ID`.
    pub job_id: Option<u64>,
    /// `SLURM_ARRAY_JOB_ID`.
    pub array_job_id: Option<u64>,
    /// `SLURM_ARRAY_TASK_ID`.
    pub array_task_id: Option<u64>,
    /// `SLURM_PROCID` (global task rank).
    pub procid: Option<u32>,
    /// `SLURM_NTASKS` (number of tasks).
    pub ntasks: Option<u32>,
    /// `SLURM_LOCALID` (task rank on its node): the GPU index to use.
    pub localid: Option<u32>,
    /// `SLURM_JOB_NODELIST` (compressed host list, e.g. `nid[001-004]`).
    pub node_list: Option<String>,
    /// `SLURM_JOB_NUM_NODES`.
    pub num_nodes: Option<u32>,
    /// `SLURM_CPUS_PER_TASK`.
    pub cpus_per_task: Option<u32>,
    /// `SLURM_JOB_END_TIME` (Unix seconds), when the job's time limit runs out.
    pub end_time: Option<u64>,
    /// `SLURM_RESTART_COUNT` (number of requeues so far).
    pub restart_count: Option<u32>,
}

impl SlurmEnv {
    /// Reads the variables of the current process.
    pub fn from_env() -> Self {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads the variables through `get` (testable without touching the process environment).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Self {
        let num = |k: &str| get(k).and_then(|v| v.trim().parse().ok());
        let num32 = |k: &str| get(k).and_then(|v| v.trim().parse().ok());
        Self {
            job_id: num("SLURM_JOB_ID"),
            array_job_id: num("SLURM_ARRAY_JOB_ID"),
            array_task_id: num("SLURM_ARRAY_TASK_ID"),
            procid: num32("SLURM_PROCID"),
            ntasks: num32("SLURM_NTASKS"),
            localid: num32("SLURM_LOCALID"),
            node_list: get("SLURM_JOB_NODELIST").filter(|s| !s.is_empty()),
            num_nodes: num32("SLURM_JOB_NUM_NODES"),
            cpus_per_task: num32("SLURM_CPUS_PER_TASK"),
            end_time: num("SLURM_JOB_END_TIME"),
            restart_count: num32("SLURM_RESTART_COUNT"),
        }
    }

    /// Whether this process runs inside a Slurm job.
    pub fn in_job(&self) -> bool {
        self.job_id.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn parses_a_step_environment() {
        let vars: HashMap<&str, &str> = [
            ("SLURM_JOB_ID", "4242"),
            ("SLURM_PROCID", "1"),
            ("SLURM_NTASKS", "2"),
            ("SLURM_LOCALID", "1"),
            ("SLURM_JOB_NODELIST", "vm"),
            ("SLURM_ARRAY_TASK_ID", "not-a-number"),
        ]
        .into_iter()
        .collect();
        let env = SlurmEnv::from_lookup(|k| vars.get(k).map(|v| v.to_string()));
        assert_eq!(env.job_id, Some(4242));
        assert_eq!(env.procid, Some(1));
        assert_eq!(env.ntasks, Some(2));
        assert_eq!(env.localid, Some(1));
        assert_eq!(env.node_list.as_deref(), Some("vm"));
        assert_eq!(env.array_task_id, None);
        assert!(env.in_job());
    }

    #[test]
    fn empty_outside_slurm() {
        let env = SlurmEnv::from_lookup(|_| None);
        assert_eq!(env, SlurmEnv::default());
        assert!(!env.in_job());
    }
}
