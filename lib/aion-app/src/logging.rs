//! Logging: every line carries the tool and the rank (`[aion-embed 1/4] INFO …`).

use std::io::Write;

/// Installs the logger. `level` is a `log` filter (`info`, `debug`, …); `RUST_LOG` overrides it.
pub fn init(tool: &'static str, rank: usize, size: usize, level: &str) {
    let env = env_logger::Env::default().default_filter_or(level);
    let _ = env_logger::Builder::from_env(env)
        .format(move |buf, record| {
            let ts = buf.timestamp_seconds();
            writeln!(
                buf,
                "[{ts} {tool} {rank}/{size}] {:<5} {}",
                record.level(),
                record.args()
            )
        })
        .try_init();
}
