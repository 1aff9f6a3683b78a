//! `tollgate config check`.

use std::path::Path;

use clap::Subcommand;
use serde_json::json;

use super::Output;
use super::{print_json, CliError, CliResult};
use crate::checked::Checked;

#[derive(Subcommand, Debug)]
pub enum ConfigCmd {
    /// Validate the file the way `serve` would; print every problem as FILE:LINE:COL.
    Check,
}

pub fn run(cmd: ConfigCmd, path: &Path, output: Output) -> CliResult {
    match cmd {
        ConfigCmd::Check => match crate::checked::load(path) {
            Ok(Checked { config: c, .. }) => {
                match output {
                    Output::Json => print_json(&json!({
                        "ok": true, "file": path, "profiles": c.profiles.keys().collect::<Vec<_>>(),
                        "warnings": c.warnings.iter().map(|p| json!({"line": p.line, "column": p.col, "message": p.message})).collect::<Vec<_>>(),
                    })),
                    Output::Text => {
                        for w in c.warning_lines() {
                            eprintln!("{w}");
                        }
                        let n = c.warnings.len();
                        let warned = match n {
                            0 => String::new(),
                            1 => ", 1 warning".into(),
                            n => format!(", {n} warnings"),
                        };
                        println!(
                            "{}: ok ({} profiles{warned})",
                            path.display(),
                            c.profiles.len()
                        )
                    }
                }
                Ok(())
            }
            Err(e) => {
                if output == Output::Json {
                    print_json(&json!({
                        "ok": false, "file": path,
                        "problems": e.problems.iter().map(|p| json!({"line": p.line, "column": p.col, "message": p.message})).collect::<Vec<_>>(),
                    }));
                    return Err(CliError {
                        code: super::EXIT_USAGE,
                        message: String::new(),
                    });
                }
                Err(e.into())
            }
        },
    }
}
