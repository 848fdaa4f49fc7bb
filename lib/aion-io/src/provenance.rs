//! Provenance: what every output file records about the run that made it.

use serde::Serialize;

/// Root attributes of an output file (also written as `<output>.run.json`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Provenance {
    /// Tool name (`aion-tokenize`, …).
    pub tool: String,
    /// Tool version (crate version).
    pub version: String,
    /// Git commit the tool was built from (`unknown` outside a git checkout).
    pub git_commit: String,
    /// The full effective configuration, as JSON.
    pub config_json: String,
    /// Model (or codec) directory.
    pub model_dir: String,
    /// SHA-256 of every weight/config file used, as JSON `{relative path: hex}`.
    pub checksums_json: String,
    /// Catalogue files and their row counts, as JSON.
    pub catalog_json: String,
    /// Number of MPI ranks.
    pub n_ranks: usize,
    /// Slurm job id, if any.
    pub slurm_job_id: Option<u64>,
    /// Start time (UTC, RFC 3339).
    pub start_time: String,
}

impl Provenance {
    /// Writes the provenance as root attributes (collective; identical on all ranks).
    pub fn write(&self, out: &crate::OutputFile) -> crate::Result<()> {
        out.set_attr_str("tool", &self.tool)?;
        out.set_attr_str("version", &self.version)?;
        out.set_attr_str("git_commit", &self.git_commit)?;
        out.set_attr_str("config", &self.config_json)?;
        out.set_attr_str("model_dir", &self.model_dir)?;
        out.set_attr_str("checksums", &self.checksums_json)?;
        out.set_attr_str("catalog", &self.catalog_json)?;
        out.set_attr_i64("n_ranks", self.n_ranks as i64)?;
        out.set_attr_i64("slurm_job_id", self.slurm_job_id.map_or(-1, |j| j as i64))?;
        out.set_attr_str("start_time", &self.start_time)
    }
}
