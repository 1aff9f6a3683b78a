//! `tollgate session watch`: what the person of a live session sees, as
//! they see it, read-only. It follows the session's recording as the
//! daemon writes it (flushed within 30 ms of a pause), so it never touches
//! the session: nothing typed at the watcher can reach it. Keys at the
//! watcher's terminal are not echoed; `q` or Ctrl-C stops watching.

use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use super::terminal::{Quiet, CTRL_C};
use super::{CliError, CliResult};
use crate::config::Config;
use crate::journal::{Journal, SessionState};
use crate::record::{self, cast};

/// How often the file is looked at for more.
const POLL: Duration = Duration::from_millis(20);

fn over(journal: &Journal, id: &str) -> Result<bool, CliError> {
    let row = journal.get(id)?.ok_or_else(|| CliError::not_found(id))?;
    Ok(matches!(
        row.state,
        SessionState::Terminated | SessionState::Expired
    ))
}

/// Follows session `id`'s live recording until the session ends (or the
/// watcher stops); from its start when `from_start`, else from now.
pub fn watch(config: &Config, journal: &Journal, id: &str, from_start: bool) -> CliResult {
    if over(journal, id)? {
        return Err(CliError::failure(format!(
            "{id} has ended: `tollgate recording export {id}` has what it showed"
        )));
    }
    let dir = config.recordings.dir(&config.server.journal);
    let path = record::live_path(&dir, id);
    let mut told = false;
    let mut file = loop {
        match std::fs::File::open(&path) {
            Ok(f) => break f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if over(journal, id)? {
                    return Err(CliError::failure(format!(
                        "{id} ended without a recording here ({} has none)",
                        dir.display()
                    )));
                }
                if !told {
                    eprintln!(
                        "tollgate: waiting for {id} to start a terminal (recorded in {})",
                        dir.display()
                    );
                    told = true;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(CliError::failure(format!("{}: {e}", path.display()))),
        }
    };
    let (quiet, keys) = Quiet::enter();
    eprint!("tollgate: watching {id}, read-only; q or Ctrl-C stops\r\n");
    let mut pending: Vec<u8> = Vec::new();
    let mut header_seen = false;
    if !from_start {
        // From now: what is there already is skipped, up to its last
        // complete line.
        let mut all = Vec::new();
        file.read_to_end(&mut all)
            .map_err(|e| CliError::failure(format!("{}: {e}", path.display())))?;
        let cut = all.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        pending.extend_from_slice(&all[cut..]);
        header_seen = cut > 0;
        file.seek(SeekFrom::Start(all.len() as u64))
            .map_err(|e| CliError::failure(e.to_string()))?;
    }
    let mut out = std::io::stdout().lock();
    let mut buf = vec![0u8; 64 * 1024];
    let mut idle_since = Instant::now();
    let mut checked = Instant::now();
    let ended = loop {
        if keys.try_iter().any(|k| k == b'q' || k == CTRL_C) {
            break false;
        }
        let n = file
            .read(&mut buf)
            .map_err(|e| CliError::failure(format!("{}: {e}", path.display())))?;
        if n > 0 {
            idle_since = Instant::now();
            pending.extend_from_slice(&buf[..n]);
            while let Some(i) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=i).collect();
                if !header_seen {
                    header_seen = true;
                    continue;
                }
                if let Some(e) = std::str::from_utf8(&line).ok().and_then(cast::parse_event) {
                    if e.code == "o" {
                        let _ = out.write_all(&e.data);
                    }
                }
            }
            let _ = out.flush();
            continue;
        }
        // The daemon removes the plain file once it has compressed it.
        if file.metadata().map(|m| m.nlink() == 0).unwrap_or(true) {
            break true;
        }
        if checked.elapsed() >= Duration::from_secs(1) {
            checked = Instant::now();
            if idle_since.elapsed() >= Duration::from_secs(2) && over(journal, id)? {
                break true;
            }
        }
        std::thread::sleep(POLL);
    };
    drop(out);
    drop(quiet);
    if ended {
        eprintln!("\r\ntollgate: {id} has ended");
    } else {
        eprintln!("\r\ntollgate: stopped watching {id}");
    }
    Ok(())
}
