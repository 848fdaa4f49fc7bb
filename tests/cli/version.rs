//! `--version` of every tool (version, commit, backends, the MPI and HDF5 libraries in use) and
//! the start-up line every rank logs (host, node-local rank).

use std::path::Path;

use crate::util::*;

const TOOLS: [&str; 7] = [
    "aion-tokenize",
    "aion-embed",
    "aion-predict",
    "aion-generate",
    "aion-search",
    "aion-finetune",
    "aion-fit-codecs",
];

#[test]
fn every_tool_reports_version_commit_backends_and_libraries() {
    let dir = Path::new(TOKENIZE).parent().unwrap();
    let commit = command("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(repo())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    for tool in TOOLS {
        for flag in ["--version", "-V"] {
            let out = command(dir.join(tool)).arg(flag).output().unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "{tool} {flag}: {out:?}");
            let first = format!("{tool} {}", env!("CARGO_PKG_VERSION"));
            assert_eq!(text.lines().next(), Some(first.as_str()), "{text}");
            let field = |key: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(key))
                    .map(str::trim)
                    .unwrap_or_else(|| panic!("{tool}: no {key} line in\n{text}"))
            };
            if let Some(c) = &commit {
                assert_eq!(field("commit"), c, "{tool}");
            }
            assert!(
                field("backends").starts_with("cpu (burn NdArray)"),
                "{text}"
            );
            // The build under test is the CPU one; the LibTorch one names its versions.
            assert!(
                field("backends").contains("no LibTorch") || field("backends").contains("CUDA"),
                "{text}"
            );
            assert!(
                field("MPI").contains("MPI"),
                "{tool}: no MPI library version:\n{text}"
            );
            let hdf5 = field("HDF5");
            assert!(
                hdf5.split(' ').next().unwrap().split('.').count() == 3
                    && hdf5.contains("parallel"),
                "{text}"
            );
        }
    }
}

#[test]
fn every_rank_logs_its_host_and_node_local_rank() {
    let dir = tempdir();
    let out = dir.path().join("t.h5");
    let (model, cat) = scalar_fixture();
    let o = run_tool(TOKENIZE, Launch::Mpirun(2), &io_args(&model, &cat, &out));
    let err = assert_ok(&o);
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    for rank in 0..2 {
        let line = err
            .lines()
            .find(|l| l.contains(&format!("aion-tokenize {rank}/2]")) && l.contains("on host"))
            .unwrap_or_else(|| panic!("no start-up line of rank {rank}:\n{err}"));
        assert!(
            line.contains(&format!(
                "on host {}: node-local rank {rank} of 2",
                host.trim()
            )),
            "{line}"
        );
        assert!(
            line.contains(&format!("aion-hpc {}", env!("CARGO_PKG_VERSION"))),
            "{line}"
        );
    }
}
