//! `amps check`: validate a configuration and report every problem.

use argh::FromArgs;
use std::path::PathBuf;

/// validate the configuration and report every error (exit status 1 on any)
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "check")]
pub struct Args {
    /// configuration file (default: $AMPS_CONFIG, ./config.yaml, or the bundled default)
    #[argh(option, short = 'c')]
    pub config: Option<PathBuf>,
}

/// Returns the process exit code.
pub fn run(args: Args) -> i32 {
    match super::common::load_config(args.config.as_deref()) {
        Ok(l) => {
            for w in &l.warnings {
                eprintln!("warning: {w}");
            }
            let c = &l.config;
            let missing = super::common::missing_programs(c);
            for m in &missing {
                eprintln!("{}: {m}", l.origin);
            }
            if !missing.is_empty() {
                return 1;
            }
            let count = |n: usize, one: &str, many: &str| {
                format!("{n} {}", if n == 1 { one } else { many })
            };
            println!(
                "{}: OK ({}, {}, {})",
                l.origin,
                count(c.streams.len(), "stream", "streams"),
                count(
                    c.scheduled_streams.len(),
                    "scheduled stream",
                    "scheduled streams"
                ),
                count(c.ffmpeg_profiles.len(), "profile", "profiles")
            );
            0
        }
        Err(e) => {
            eprintln!("{e}");
            1
        }
    }
}
