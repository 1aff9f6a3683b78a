//! `[recordings]`: where and whether PTY sessions are recorded (asciicast
//! v2), how large one may grow and how long they are kept. A profile's
//! `record` overrides `enabled` for its sessions.

use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::de::{DeTable, DeValue};

use super::walk::{abs_path, boolean, check_keys, duration, get, integer, string, Ctx};
use super::{parse_size, JournalAt};

/// `[recordings]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recordings {
    /// PTY sessions are recorded unless a profile says otherwise.
    pub enabled: bool,
    /// `None`: beside a SQLite journal, else [`DEFAULT_DIR`].
    pub dir: Option<PathBuf>,
    /// A recording is cut (with a marker and an event) past this size.
    pub max_bytes: u64,
    /// Recordings older than this are removed.
    pub retention: Duration,
}

/// Where recordings go when the journal is not a file.
pub const DEFAULT_DIR: &str = "/var/lib/tollgate/recordings";

impl Default for Recordings {
    fn default() -> Self {
        Recordings {
            enabled: true,
            dir: None,
            max_bytes: 256 << 20,
            retention: Duration::from_secs(90 * 86_400),
        }
    }
}

impl Recordings {
    /// The directory recordings are written to: `dir`, or `recordings`
    /// beside a SQLite journal, or [`DEFAULT_DIR`].
    pub fn dir(&self, journal: &JournalAt) -> PathBuf {
        match (&self.dir, journal.file()) {
            (Some(d), _) => d.clone(),
            (None, Some(f)) => f.parent().unwrap_or(Path::new("/")).join("recordings"),
            (None, None) => PathBuf::from(DEFAULT_DIR),
        }
    }
}

pub(super) const RECORDINGS_KEYS: &[&str] = &["enabled", "dir", "max_bytes", "retention"];

pub(super) fn walk_recordings(ctx: &mut Ctx, t: &DeTable) -> Recordings {
    const S: &str = "recordings";
    check_keys(ctx, t, S, RECORDINGS_KEYS);
    let mut r = Recordings::default();
    if let Some(b) = boolean(ctx, S, t, "enabled") {
        r.enabled = b;
    }
    if let Some(v) = get(t, "dir") {
        let span = v.span();
        r.dir = string(ctx, S, t, "dir").and_then(|s| abs_path(ctx, span, "recordings.dir", &s));
    }
    if let Some(v) = get(t, "max_bytes") {
        let span = v.span();
        let n = match v.get_ref() {
            DeValue::String(text) => parse_size(text).map(|n| n as u64),
            DeValue::Integer(_) => integer(ctx, S, t, "max_bytes")
                .and_then(|n| u64::try_from(n).ok())
                .ok_or_else(|| "must not be negative".to_string()),
            _ => Err("must be a size such as \"256MiB\"".to_string()),
        };
        match n {
            Ok(n) if n >= 4096 => r.max_bytes = n,
            Ok(_) => ctx.at(span, "recordings.max_bytes must be at least 4096"),
            Err(e) => ctx.at(span, format!("recordings.max_bytes {e}")),
        }
    }
    if let Some(d) = duration(ctx, S, t, "retention") {
        if d.is_zero() {
            let span = get(t, "retention").map(|v| v.span()).unwrap_or(0..0);
            ctx.at(span, "recordings.retention must be more than 0s");
        }
        r.retention = d;
    }
    r
}
