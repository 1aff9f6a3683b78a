//! `tollgate recording export`: a session's recording as asciicast v2,
//! for `asciinema play`, asciinema-player or anything else that reads it,
//! or as the text its screen showed; `tollgate recording search`: the
//! sessions and moments where a text was on the screen.

use std::io::Write;
use std::path::Path;

use super::{CliError, CliResult, Output};
use crate::record::cast::{self, Invalid};
use crate::record::screen;

#[derive(clap::Subcommand, Debug)]
pub enum RecordingCmd {
    /// Write a session's recording to stdout (or a file).
    Export(ExportArgs),
    /// Find the sessions and moments where TEXT was on the screen.
    Search(SearchArgs),
    /// (Re)write a recording's index (search and replay --at read it): for one left by a crash, or an older version.
    Index {
        /// The session (ses_…).
        session: String,
    },
}

#[derive(clap::Args, Debug)]
pub struct SearchArgs {
    /// The text to find (plain text, not a pattern).
    pub text: String,
    /// Only sessions created since then: a duration back (2h, 7d) or an RFC 3339 time.
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,
    /// Only sessions of this profile.
    #[arg(long)]
    pub profile: Option<String>,
    /// Ignore case.
    #[arg(long, short = 'i')]
    pub ignore_case: bool,
}

#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    /// The session (ses_…).
    pub session: String,
    /// cast: asciicast v2, as asciinema reads it; text: what the screen
    /// showed, one line per screen line.
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
    Text,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum InvalidUtf8 {
    Escape,
    Replace,
}

pub fn run(cmd: RecordingCmd, config_path: &Path, output: Output) -> CliResult {
    let checked = crate::checked::load(config_path)?;
    let config = &checked.config;
    let dir = config.recordings.dir(&config.server.journal);
    let a = match cmd {
        RecordingCmd::Export(a) => a,
        RecordingCmd::Search(s) => return search(config_path, &dir, &s, output),
        RecordingCmd::Index { session } => {
            let text = read(&dir, &session)?;
            let path = crate::record::index::path(&dir, &session);
            let fail = |e: std::io::Error| CliError::failure(format!("{}: {e}", path.display()));
            let out = crate::record::create(&path).map_err(fail)?;
            let (lines, keys) =
                crate::record::index::write(text.as_slice(), std::io::BufWriter::new(out))
                    .map_err(fail)?;
            println!("{}: {lines} lines, {keys} keyframes", path.display());
            return Ok(());
        }
    };
    let text = read(&dir, &a.session)?;
    let out = match (a.format, a.invalid_utf8) {
        (Format::Text, _) => {
            let mut t = String::new();
            for l in transcript(&dir, &a.session).unwrap_or_default() {
                t.push_str(&l.text);
                t.push('\n');
            }
            t.into_bytes()
        }
        (Format::Cast, InvalidUtf8::Escape) => text,
        (Format::Cast, InvalidUtf8::Replace) => replaced(&text),
    };
    match &a.output_file {
        None => std::io::stdout()
            .write_all(&out)
            .map_err(|e| CliError::failure(format!("stdout: {e}"))),
        Some(p) => write_private(p, &out),
    }
}

/// Writes `bytes` to `path`, created 0600.
fn write_private(path: &Path, bytes: &[u8]) -> CliResult {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(bytes))
        .map_err(|e| CliError::failure(format!("{}: {e}", path.display())))
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

/// Whether `id` has the form of a session id (it names a file).
fn session_id(id: &str) -> Result<(), CliError> {
    let ok = id
        .strip_prefix("ses_")
        .is_some_and(|r| !r.is_empty() && r.bytes().all(|b| b.is_ascii_alphanumeric()));
    if ok {
        Ok(())
    } else {
        Err(CliError::usage(format!(
            "\"{}\" is not a session id",
            crate::text::printable(id, 80)
        )))
    }
}

/// The asciicast of session `id`'s recording in `dir`.
pub fn read(dir: &Path, id: &str) -> Result<Vec<u8>, CliError> {
    session_id(id)?;
    match crate::record::read(dir, id) {
        Ok(t) => Ok(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(CliError {
            code: super::EXIT_NOT_FOUND,
            message: format!("tollgate: no recording of {id} in {}", dir.display()),
        }),
        Err(e) => Err(CliError::failure(format!("{}: {e}", dir.display()))),
    }
}

/// One place a text was on the screen.
#[derive(serde::Serialize)]
struct Found {
    session: String,
    /// Seconds into the session.
    offset_s: f64,
    /// The same, as a player shows it.
    at: String,
    line: String,
}

fn search(config_path: &Path, dir: &Path, a: &SearchArgs, output: Output) -> CliResult {
    let since = match &a.since {
        None => None,
        Some(w) => Some(match humantime::parse_duration(w) {
            Ok(d) => std::time::SystemTime::now() - d,
            Err(_) => humantime::parse_rfc3339_weak(w).map_err(|_| {
                CliError::usage(format!(
                    "--since: \"{}\" is neither a duration (2h, 7d) nor a time (2026-11-30T08:00:00Z)",
                    crate::text::printable(w, 80)
                ))
            })?,
        }),
    };
    let (_, journal) = super::load(config_path)?;
    let sessions: Vec<String> = journal
        .list(None)?
        .into_iter()
        .filter(|s| a.profile.is_none() || s.profile == a.profile)
        .filter(|s| {
            since.is_none_or(|t| humantime::parse_rfc3339_weak(&s.created_at).is_ok_and(|c| c >= t))
        })
        .map(|s| s.id)
        .collect();
    let needle = if a.ignore_case {
        a.text.to_lowercase()
    } else {
        a.text.clone()
    };
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let chunk = sessions.len().div_ceil(workers).max(1);
    let mut found: Vec<Found> = std::thread::scope(|sc| {
        let handles: Vec<_> = sessions
            .chunks(chunk)
            .map(|ids| {
                let needle = &needle;
                sc.spawn(move || {
                    let mut out = Vec::new();
                    for id in ids {
                        let Some(lines) = transcript(dir, id) else {
                            continue;
                        };
                        for l in lines {
                            let hit = if a.ignore_case {
                                l.text.to_lowercase().contains(needle.as_str())
                            } else {
                                l.text.contains(needle.as_str())
                            };
                            if hit {
                                out.push(Found {
                                    session: id.clone(),
                                    offset_s: (l.time * 1000.0).round() / 1000.0,
                                    at: screen::clock(l.time),
                                    line: l.text,
                                });
                            }
                        }
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    });
    found.sort_by(|x, y| {
        x.session
            .cmp(&y.session)
            .then(x.offset_s.total_cmp(&y.offset_s))
    });
    match output {
        Output::Json => super::print_json(&found),
        Output::Text => {
            for f in &found {
                println!(
                    "{}  {:>7}  {}",
                    f.session,
                    f.at,
                    crate::text::escape_controls(&crate::text::clip(&f.line, 200))
                );
            }
        }
    }
    Ok(())
}

/// What session `id`'s screen showed: from the recording's index, or the
/// emulator run over the recording when there is none.
fn transcript(dir: &Path, id: &str) -> Option<Vec<screen::Line>> {
    if let Some(index) = crate::record::index::read(dir, id) {
        return Some(index.lines);
    }
    let text = crate::record::read(dir, id).ok()?;
    Some(screen::transcript(&String::from_utf8_lossy(&text)))
}
