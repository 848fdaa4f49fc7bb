//! What the tools' `--help` says, checked against the code: every tool's command line, the
//! defaults its help states, and the table of them in `docs/cli.md`. (Apart from `cli`, which
//! runs the tools, so that the tools' modules and `cli` do not import each other.)

/// Every tool's command line, in the order of `docs/cli.md`.
pub fn commands() -> Vec<clap::Command> {
    use clap::CommandFactory;
    vec![
        crate::tokenize::TokenizeArgs::command(),
        crate::embed::EmbedArgs::command(),
        crate::predict::PredictArgs::command(),
        crate::generate::GenerateArgs::command(),
        crate::search::SearchArgs::command(),
        crate::finetune::FinetuneArgs::command(),
        crate::fit_codecs::FitCodecsArgs::command(),
        crate::export::ExportArgs::command(),
    ]
}

/// The default an argument's `--help` states: clap's own default value(s), or the
/// `[default: …]` that our help texts end with when the default is computed at run time.
pub fn stated_default(arg: &clap::Arg) -> Option<String> {
    if !arg.get_action().takes_values() {
        return None; // switches: off unless given
    }
    let clap_default: Vec<String> = arg
        .get_default_values()
        .iter()
        .map(|v| v.to_string_lossy().into_owned())
        .collect();
    if !clap_default.is_empty() {
        return Some(clap_default.join(","));
    }
    let help = arg.get_help()?.to_string();
    let start = help.rfind("[default: ")? + "[default: ".len();
    help[start..].strip_suffix(']').map(str::to_string)
}

/// Marker lines around the generated table of defaults in `docs/cli.md`.
pub const DEFAULTS_BEGIN: &str = "<!-- defaults: generated from the code (aion_app::help::defaults_markdown), checked by a test -->";
/// End marker.
pub const DEFAULTS_END: &str = "<!-- end of defaults -->";

/// The table of every tool's defaults in `docs/cli.md` (`| tool | flag | default |`).
pub fn defaults_markdown() -> String {
    let mut out = String::from("| tool | flag | default |\n|---|---|---|\n");
    for cmd in commands() {
        for arg in cmd.get_arguments() {
            let (Some(long), Some(d)) = (arg.get_long(), stated_default(arg)) else {
                continue;
            };
            out.push_str(&format!("| `{}` | `--{long}` | {d} |\n", cmd.get_name()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::{
        DEFAULT_BATCH_SIZE, batch_size_default, chunk_rows_default, threads_default,
    };

    /// The defaults the code uses, and where `--help` must state them.
    fn code_defaults(tool: &str, id: &str) -> Option<String> {
        Some(match (tool, id) {
            (_, "batch_size") => batch_size_default(),
            ("aion-search", "chunk_rows") => crate::search::DEFAULT_CHUNK_ROWS.to_string(),
            ("aion-export", "chunk_rows") => crate::export::CHUNK_ROWS_DEFAULT.into(),
            (_, "chunk_rows") => chunk_rows_default(),
            ("aion-search", "threads") => crate::search::THREADS_DEFAULT.into(),
            (_, "threads") => threads_default(),
            _ => return None,
        })
    }

    #[test]
    fn help_states_the_defaults_the_code_uses() {
        assert!(batch_size_default().ends_with(&DEFAULT_BATCH_SIZE.to_string()));
        for mut cmd in commands() {
            let tool = cmd.get_name().to_string();
            let help = cmd.render_help().to_string();
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if let Some(want) = code_defaults(&tool, id) {
                    assert_eq!(
                        stated_default(arg).as_deref(),
                        Some(want.as_str()),
                        "{tool} --{id}"
                    );
                }
                if let Some(d) = stated_default(arg) {
                    // Every stated default appears in the rendered help once per flag.
                    assert!(
                        help.contains(&format!("[default: {d}]")),
                        "{tool} --{id}: {help}"
                    );
                }
                // No default stated in prose (where it could drift from the code).
                let text = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
                let prose = text.split("[default:").next().unwrap_or("");
                assert!(
                    !prose.contains("default ") && !prose.contains("(default"),
                    "{tool} --{id}: a default in the prose of {text:?}"
                );
            }
        }
    }

    #[test]
    fn docs_cli_lists_these_defaults() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/cli.md");
        let doc = std::fs::read_to_string(path).unwrap();
        let want = defaults_markdown();
        let start = doc
            .find(DEFAULTS_BEGIN)
            .map(|i| i + DEFAULTS_BEGIN.len() + 1);
        let end = doc.find(DEFAULTS_END);
        let got = start.zip(end).map(|(a, b)| &doc[a..b]);
        assert_eq!(
            got,
            Some(want.as_str()),
            "docs/cli.md: between\n{DEFAULTS_BEGIN}\nand\n{DEFAULTS_END}\nput:\n{want}"
        );
    }
}
