//! `tollgate recording export`: a session's recording as asciicast v2,
//! for `asciinema play`, asciinema-player or anything else that reads it.

use std::io::Write;
use std::path::Path;

use super::{CliError, CliResult, Output};
use crate::record::cast::{self, Invalid};

#[derive(clap::Subcommand, Debug)]
pub enum RecordingCmd {
    /// Write a session's recording to stdout (or a file).
    Export(ExportArgs),
}

#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    /// The session (ses_…).
    pub session: String,
    /// cast: asciicast v2, as asciinema reads it.
    #[arg(long, value_enum, default_value_t = Format::Cast)]
    pub format: Format,
    /// Output bytes that are not UTF-8: escape keeps them exactly (\udcXX,
    /// Python's surrogateescape: play with PYTHONUTF8=1); replace shows
    /// U+FFFD, as a UTF-8 terminal does.
    #[arg(long, value_enum, default_value_t = InvalidUtf8::Escape)]
    pub invalid_utf8: InvalidUtf8,
    /// Write here instead of stdout (created 0600).
    #[arg(long, short = 'o', value_name = "FILE")]
    pub output_file: Option<std::path::PathBuf>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Cast,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum InvalidUtf8 {
    Escape,
    Replace,
}

pub fn run(cmd: RecordingCmd, config_path: &Path, _output: Output) -> CliResult {
    let RecordingCmd::Export(a) = cmd;
    let checked = crate::checked::load(config_path)?;
    let config = &checked.config;
    let dir = config.recordings.dir(&config.server.journal);
    let id_ok = a
        .session
        .strip_prefix("ses_")
        .is_some_and(|r| !r.is_empty() && r.bytes().all(|b| b.is_ascii_alphanumeric()));
    if !id_ok {
        return Err(CliError::usage(format!(
            "\"{}\" is not a session id",
            crate::text::printable(&a.session, 80)
        )));
    }
    let text = match crate::record::read(&dir, &a.session) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(CliError::not_found(&a.session));
        }
        Err(e) => return Err(CliError::failure(format!("{}: {e}", dir.display()))),
    };
    let out = match a.invalid_utf8 {
        InvalidUtf8::Escape => text,
        InvalidUtf8::Replace => replaced(&text),
    };
    match &a.output_file {
        None => std::io::stdout()
            .write_all(&out)
            .map_err(|e| CliError::failure(format!("stdout: {e}"))),
        Some(p) => {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(p)
                .and_then(|mut f| f.write_all(&out))
                .map_err(|e| CliError::failure(format!("{}: {e}", p.display())))
        }
    }
}

/// The asciicast with every byte kept by surrogateescape shown as U+FFFD.
fn replaced(text: &[u8]) -> Vec<u8> {
    let mut out = String::with_capacity(text.len());
    for (i, line) in String::from_utf8_lossy(text).lines().enumerate() {
        match (i, cast::parse_event(line)) {
            (0, _) | (_, None) => {
                out.push_str(line);
                out.push('\n');
            }
            (_, Some(e)) => {
                let mut body = String::new();
                cast::escape_bytes(&mut body, &e.data, Invalid::Replace);
                cast::event_line(&mut out, e.time, &e.code, &body);
            }
        }
    }
    out.into_bytes()
}
