//! What `--version` prints: the aion-hpc version and git commit, the backends compiled in (for
//! the LibTorch build: the LibTorch and CUDA versions it was built against, recorded by
//! `build.rs`), and the MPI, HDF5 and LibTorch libraries this process actually loads.

/// The aion-hpc version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The git commit the binaries were built from (`unknown` outside a git checkout).
pub const GIT_COMMIT: &str = env!("AION_GIT_COMMIT");

/// The backends compiled in.
#[cfg(feature = "tch")]
pub const BACKENDS: &str = concat!(
    "cpu (burn NdArray); tch-cpu, cuda (LibTorch ",
    env!("AION_LIBTORCH_VERSION"),
    ", CUDA ",
    env!("AION_LIBTORCH_CUDA"),
    ")"
);

/// The backends compiled in.
#[cfg(not(feature = "tch"))]
pub const BACKENDS: &str =
    "cpu (burn NdArray); no LibTorch/CUDA (build it with scripts/build-gpu.sh)";

/// One line for logs: `aion-hpc 0.1.0 (commit 0123abcd4567)`.
pub fn short() -> String {
    format!(
        "aion-hpc {VERSION} (commit {})",
        &GIT_COMMIT[..GIT_COMMIT.len().min(12)]
    )
}

/// The `--version` text (after the tool's name). Loads nothing heavy: the MPI and HDF5 versions
/// are library calls that need no initialisation.
pub fn describe() -> String {
    let (a, b, c) = hdf5::library_version();
    let mut lines = vec![
        VERSION.to_string(),
        format!("commit    {GIT_COMMIT}"),
        format!("backends  {BACKENDS}"),
        format!("MPI       {}", aion_mpi::library_version()),
        format!("HDF5      {a}.{b}.{c} (parallel, MPI-IO)"),
    ];
    if cfg!(feature = "tch") {
        let dir = option_env!("AION_LIBTORCH_DIR").unwrap_or("?");
        lines.push(format!("LibTorch  built against {dir}"));
        lines.push(format!(
            "          loaded: {}",
            loaded_library("libtorch_cpu.so").unwrap_or_else(|| "? (not mapped yet)".into())
        ));
    }
    lines.join("\n")
}

/// The path of the first mapped file of this process whose name starts with `name` (Linux
/// `/proc/self/maps`), e.g. the LibTorch library the dynamic loader picked.
fn loaded_library(name: &str) -> Option<String> {
    std::fs::read_to_string("/proc/self/maps")
        .ok()?
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| {
            std::path::Path::new(p)
                .file_name()
                .is_some_and(|f| f.to_string_lossy().starts_with(name))
        })
        .map(String::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_names_the_libraries() {
        let d = describe();
        assert!(d.starts_with(VERSION), "{d}");
        for key in ["commit", "backends", "MPI", "HDF5"] {
            assert!(d.lines().any(|l| l.starts_with(key)), "{key} missing:\n{d}");
        }
        // The process maps its own libc.
        assert!(loaded_library("libc.so").is_some_and(|p| p.starts_with('/')));
    }
}
