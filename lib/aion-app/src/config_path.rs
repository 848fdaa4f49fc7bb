//! Paths written in configuration files are relative to the file, not to the working directory
//! (a job script submitted from anywhere reads the same files).

use std::path::Path;

/// `pattern` (a file name or a glob, as `--catalog` takes) from a config file in `dir`, made
/// usable from any working directory: absolute patterns are kept; relative ones are prefixed
/// with `dir` (glob-escaped when the pattern is a glob, so a `[` in the directory name is taken
/// literally).
pub fn resolve_pattern(dir: &Path, pattern: &str) -> String {
    if dir.as_os_str().is_empty() || Path::new(pattern).is_absolute() {
        return pattern.to_string();
    }
    if pattern.contains(['*', '?', '[']) {
        let dir = glob::Pattern::escape(&dir.to_string_lossy());
        format!("{}/{pattern}", dir.trim_end_matches('/'))
    } else {
        dir.join(pattern).to_string_lossy().into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_patterns_move_to_the_config_directory() {
        let dir = Path::new("/jobs/run[1]");
        assert_eq!(resolve_pattern(dir, "cat.h5"), "/jobs/run[1]/cat.h5");
        assert_eq!(resolve_pattern(dir, "d/*.h5"), "/jobs/run[[]1[]]/d/*.h5");
        assert_eq!(resolve_pattern(dir, "/abs/*.h5"), "/abs/*.h5");
        assert_eq!(resolve_pattern(Path::new(""), "cat.h5"), "cat.h5");
        let matched = glob::glob(&resolve_pattern(
            Path::new(env!("CARGO_MANIFEST_DIR")),
            "src/config_pat?.rs",
        ))
        .unwrap()
        .count();
        assert_eq!(matched, 1);
    }
}
