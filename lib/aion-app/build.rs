//! Build-time facts the tools report (`--version`, provenance attribute `git_commit`): the git
//! commit, and for the LibTorch build (feature `tch`) the LibTorch and CUDA versions it is
//! compiled against, read from the same place torch-sys takes LibTorch from (`LIBTORCH`, or the
//! Python `torch` when `LIBTORCH_USE_PYTORCH` is set).

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let commit = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=AION_GIT_COMMIT={commit}");
    // HEAD and the branch refs (in a worktree they live in different folders; a path that does
    // not exist would make cargo rebuild this crate every time).
    if let Ok(o) = Command::new("git")
        .args([
            "rev-parse",
            "--git-path",
            "HEAD",
            "--git-path",
            "refs/heads",
        ])
        .output()
    {
        for path in String::from_utf8_lossy(&o.stdout).lines() {
            if Path::new(path).exists() {
                println!("cargo:rerun-if-changed={path}");
            }
        }
    }
    if std::env::var_os("CARGO_FEATURE_TCH").is_some() {
        let t = libtorch();
        println!("cargo:rustc-env=AION_LIBTORCH_VERSION={}", t.version);
        println!("cargo:rustc-env=AION_LIBTORCH_CUDA={}", t.cuda);
        println!("cargo:rustc-env=AION_LIBTORCH_DIR={}", t.dir);
    }
}

/// What the tch build links to.
struct LibTorch {
    version: String,
    cuda: String,
    dir: String,
}

fn libtorch() -> LibTorch {
    for var in ["LIBTORCH", "LIBTORCH_USE_PYTORCH"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let unknown = |dir: &str| LibTorch {
        version: "unknown".into(),
        cuda: "unknown".into(),
        dir: dir.into(),
    };
    let dir = match std::env::var_os("LIBTORCH") {
        Some(d) => PathBuf::from(d),
        None if std::env::var_os("LIBTORCH_USE_PYTORCH").is_some() => {
            // torch-sys runs `python` in a virtualenv, else `python3`.
            let py = if std::env::var_os("VIRTUAL_ENV").is_some() {
                "python"
            } else {
                "python3"
            };
            let out = Command::new(py)
                .args([
                    "-c",
                    "import torch, os; print(os.path.dirname(torch.__file__))",
                ])
                .output();
            match out {
                Ok(o) if o.status.success() => {
                    PathBuf::from(String::from_utf8_lossy(&o.stdout).trim())
                }
                _ => return unknown("python torch"),
            }
        }
        None => return unknown("downloaded by torch-sys"),
    };
    let shown = dir.display().to_string();
    // A pip-installed torch has version.py (`__version__ = '2.9.0+cu128'`, `cuda = '12.8'` or
    // None); a LibTorch archive has build-version (`2.9.0+cu128`).
    let version_py = dir.join("version.py");
    let build_version = dir.join("build-version");
    println!("cargo:rerun-if-changed={}", version_py.display());
    println!("cargo:rerun-if-changed={}", build_version.display());
    if let Ok(text) = std::fs::read_to_string(&version_py) {
        let field = |name: &str| {
            text.lines()
                .filter_map(|l| l.split_once('='))
                .find(|(k, _)| k.split(':').next().unwrap_or("").trim() == name)
                .map(|(_, v)| v.trim().trim_matches(['\'', '"']).to_string())
        };
        let version = field("__version__").unwrap_or_else(|| "unknown".into());
        let cuda = match field("cuda").as_deref() {
            None | Some("None") => "none (CPU-only LibTorch)".to_string(),
            Some(v) => v.to_string(),
        };
        return LibTorch {
            version,
            cuda,
            dir: shown,
        };
    }
    match read_trimmed(&build_version) {
        Some(version) => LibTorch {
            cuda: cuda_of_tag(&version),
            version,
            dir: shown,
        },
        None => unknown(&shown),
    }
}

fn read_trimmed(p: &Path) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
}

/// CUDA version from a LibTorch version's local tag: `2.9.0+cu128` -> `12.8`.
fn cuda_of_tag(version: &str) -> String {
    match version.split_once("+cu") {
        Some((_, d)) if d.len() >= 2 && d.bytes().all(|b| b.is_ascii_digit()) => {
            format!("{}.{}", &d[..d.len() - 1], &d[d.len() - 1..])
        }
        _ => "none (CPU-only LibTorch)".into(),
    }
}
