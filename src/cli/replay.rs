//! `tollgate replay`: plays a session's recording in the terminal at its
//! own pace (`--speed`, `--idle-limit`), from its start or from `--at`
//! (the screen as it was then, rebuilt by a terminal emulator, not
//! replayed); space pauses and resumes, `.` steps while paused, `q` or
//! Ctrl-C stops. It ends on the screen the person ended on.

use std::io::Write;
use std::path::Path;
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use super::terminal::{Quiet, CTRL_C};
use super::{CliError, CliResult};
use crate::record::cast::{self, Event};
use crate::record::screen;

#[derive(clap::Args, Debug)]
pub struct ReplayArgs {
    /// The session (ses_…).
    pub session: String,
    /// Play this many times faster (0.5: half as fast).
    #[arg(long, value_name = "X", default_value_t = 1.0)]
    pub speed: f64,
    /// Longest pause kept, in seconds (longer ones are cut to it).
    #[arg(long, value_name = "SECS")]
    pub idle_limit: Option<f64>,
    /// Start here (12:30, 1:02:05, or seconds): the screen as it was then.
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
}

/// `12:30`, `1:02:05`, `90` or `90s` as seconds.
fn parse_at(s: &str) -> Option<f64> {
    if s.contains(':') {
        let mut total = 0.0;
        for part in s.split(':') {
            total = total * 60.0 + part.parse::<f64>().ok()?;
        }
        return Some(total);
    }
    s.parse::<f64>()
        .ok()
        .or_else(|| humantime::parse_duration(s).ok().map(|d| d.as_secs_f64()))
}

pub fn run(a: ReplayArgs, config_path: &Path) -> CliResult {
    if !(a.speed.is_finite() && a.speed > 0.0) {
        return Err(CliError::usage("--speed must be more than 0"));
    }
    let at = match &a.at {
        None => 0.0,
        Some(s) => parse_at(s).filter(|v| *v >= 0.0).ok_or_else(|| {
            CliError::usage(format!(
                "--at: \"{}\" is not a time such as 12:30 or 90s",
                crate::text::printable(s, 40)
            ))
        })?,
    };
    let checked = crate::checked::load(config_path)?;
    let config = &checked.config;
    let dir = config.recordings.dir(&config.server.journal);
    let text = super::recording::read(&dir, &a.session)?;
    let text = String::from_utf8_lossy(&text);
    let header = text.lines().next().unwrap_or_default();
    let (cols, rows) = screen::header_size(header);
    // Where to start: the last keyframe of the recording's index before
    // `at` (the screen then), or its start.
    let key = (at > 0.0)
        .then(|| crate::record::index::read(&dir, &a.session))
        .flatten()
        .and_then(|i| i.keyframes.into_iter().rev().find(|k| k.time <= at))
        .filter(|k| k.offset <= text.len() && text.is_char_boundary(k.offset));
    let (mut t, from) = match &key {
        Some(k) => {
            let mut t = screen::Transcript::new(u32::from(k.cols), u32::from(k.rows));
            t.output(0.0, k.state.as_bytes());
            (t, k.offset)
        }
        None => (screen::Transcript::new(cols, rows), header.len()),
    };
    let mut events = text[from..].lines().filter_map(cast::parse_event);
    let mut out = std::io::stdout().lock();
    let fail = |e: std::io::Error| CliError::failure(format!("stdout: {e}"));
    // Up to `at`: into the emulator, then its screen at once.
    let mut first: Option<Event> = None;
    if at > 0.0 {
        for e in events.by_ref() {
            if e.time >= at {
                first = Some(e);
                break;
            }
            t.event(&e);
        }
        out.write_all(b"\x1b[H\x1b[2J").map_err(fail)?;
        out.write_all(t.screen().state_formatted().as_bytes())
            .map_err(fail)?;
        out.flush().map_err(fail)?;
    }
    let (quiet, keys) = Quiet::enter();
    let mut clock = at;
    let mut started = Instant::now();
    let mut paused = false;
    let mut step = false;
    let mut stopped = false;
    for e in first.into_iter().chain(events) {
        if e.code != "o" {
            continue;
        }
        let mut gap = (e.time - clock).max(0.0);
        if let Some(limit) = a.idle_limit {
            gap = gap.min(limit);
        }
        clock = e.time;
        let due = started + Duration::from_secs_f64(gap / a.speed);
        // Wait for the event's moment, answering keys meanwhile.
        loop {
            let wait = if paused && !step {
                Duration::from_secs(3600)
            } else if paused {
                Duration::ZERO
            } else {
                due.saturating_duration_since(Instant::now())
            };
            if wait.is_zero() {
                break;
            }
            match keys.recv_timeout(wait) {
                Ok(b'q') | Ok(CTRL_C) => {
                    stopped = true;
                    break;
                }
                Ok(b' ') => paused = !paused,
                Ok(b'.') if paused => step = true,
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    std::thread::sleep(wait);
                    break;
                }
            }
        }
        if stopped {
            break;
        }
        step = false;
        started = Instant::now();
        out.write_all(&e.data).map_err(fail)?;
        out.flush().map_err(fail)?;
    }
    drop(quiet);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_at;

    #[test]
    fn at_reads_clock_times_and_durations() {
        assert_eq!(parse_at("12:30"), Some(750.0));
        assert_eq!(parse_at("1:02:05"), Some(3725.0));
        assert_eq!(parse_at("90"), Some(90.0));
        assert_eq!(parse_at("2m"), Some(120.0));
        assert_eq!(parse_at("soon"), None);
    }
}
