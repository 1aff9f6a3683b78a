//! Session recordings: what the person saw (and typed, only while the
//! terminal echoed) as an asciicast v2 file ([`cast`]), written as it
//! happens by a task of its own and flushed within 30 ms of a pause and
//! every second under steady output (a daemon killed mid-session leaves a
//! recording that plays up to then; `session watch` follows the file), cut cleanly at
//! `recordings.max_bytes`, and compressed with zstd when the session ends,
//! its size and SHA-256 returned for the journal.
//!
//! It never records input while the terminal does not echo (a password at
//! `read -s`, sudo, ssh): it writes a marker for each such stretch. It
//! never makes a session wait on the disk beyond the bounded queue
//! between them.

pub mod cast;
pub mod index;
pub mod screen;

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};

/// How often written events reach the file at least, under steady output.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// How soon events reach the file once output pauses (what `session
/// watch` waits for).
const FLUSH_IDLE: Duration = Duration::from_millis(30);

/// The last event of a recording cut at `recordings.max_bytes`.
pub const TRUNCATED_MARKER: &str = "recording truncated: recordings.max_bytes reached";

/// The marker written where input was not recorded.
pub const HIDDEN_MARKER: &str = "input not recorded: the terminal was not echoing";

/// What the header names.
#[derive(Debug, Clone)]
pub struct Meta {
    pub session: String,
    pub profile: String,
    pub login_user: String,
    pub term: String,
    pub cols: u32,
    pub rows: u32,
}

/// How a recording ended.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Summary {
    /// The compressed file (the plain one when compression failed).
    pub path: PathBuf,
    /// Bytes of asciicast written.
    pub bytes: u64,
    /// Bytes of the file kept.
    pub stored_bytes: u64,
    /// SHA-256 of the file kept.
    pub sha256: String,
    /// Cut at `max_bytes`.
    pub truncated: bool,
    /// Why it is incomplete, when writing failed.
    pub error: Option<String>,
}

enum Msg {
    Output(bytes::Bytes, f64),
    Input(Vec<u8>, f64),
    Hidden(f64),
    Resize(u32, u32, f64),
    Finish(oneshot::Sender<Summary>),
}

/// One session's recording.
pub struct Recorder {
    tx: mpsc::Sender<Msg>,
    epoch: Instant,
    /// Input is being typed while the terminal does not echo (one marker
    /// per stretch).
    hiding: AtomicBool,
    finished: Mutex<bool>,
    /// Set by the writer once nothing more is written (cut at
    /// `max_bytes`, or broken): output is no longer copied to it.
    cut: std::sync::Arc<AtomicBool>,
}

/// Makes the recordings directory: in a directory its group may write (the
/// unit's `StateDirectory`, group `tollgate`, mode 2770, as the journal's
/// rule goes) it is that group's, mode 2750, so the admin group can read
/// recordings; anywhere else 0700.
fn make_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let parent = dir.parent().unwrap_or(Path::new("/")).metadata()?;
    if parent.mode() & 0o020 != 0 {
        std::os::unix::fs::chown(dir, None, Some(parent.gid()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o2750))?;
    }
    Ok(())
}

/// A new recording file: readable by the directory's group when the
/// directory is (0640), else 0600, whatever the umask.
fn share(dir: &Path, file: &std::fs::File) -> std::io::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let d = dir.metadata()?;
    if d.mode() & 0o040 == 0 {
        return Ok(());
    }
    if file.metadata()?.gid() != d.gid() {
        std::os::unix::fs::fchown(file, None, Some(d.gid()))?;
    }
    file.set_permissions(std::fs::Permissions::from_mode(0o640))
}

/// Creates (or empties) a file beside the recordings, as [`share`] says.
pub fn create(path: &Path) -> std::io::Result<std::fs::File> {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    share(path.parent().unwrap_or(Path::new(".")), &f)?;
    Ok(f)
}

/// The plain file of a session's recording in `dir` (while it is live, or
/// after a crash).
pub fn live_path(dir: &Path, session: &str) -> PathBuf {
    dir.join(format!("{session}.cast"))
}

/// The compressed file of a finished recording.
pub fn stored_path(dir: &Path, session: &str) -> PathBuf {
    dir.join(format!("{session}.cast.zst"))
}

impl Recorder {
    /// Creates the recording of `meta.session` in `dir` (made 0700 if
    /// missing; the file 0600) and starts its writer.
    pub fn start(dir: &Path, max_bytes: u64, meta: &Meta) -> std::io::Result<Recorder> {
        make_dir(dir)?;
        let path = live_path(dir, &meta.session);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        share(dir, &file)?;
        let mut w = Writer {
            file: std::io::BufWriter::with_capacity(64 * 1024, file),
            path,
            written: 0,
            max_bytes,
            truncated: false,
            error: None,
            output: cast::Utf8Stream::default(),
            line: String::new(),
            last_flush: Instant::now(),
            cut: std::sync::Arc::new(AtomicBool::new(false)),
            last_t: 0.0,
        };
        w.header(meta);
        let cut = w.cut.clone();
        let (tx, rx) = mpsc::channel(256);
        tokio::spawn(w.run(rx));
        Ok(Recorder {
            tx,
            epoch: Instant::now(),
            hiding: AtomicBool::new(false),
            cut,
            finished: Mutex::new(false),
        })
    }

    fn now(&self) -> f64 {
        self.epoch.elapsed().as_secs_f64()
    }

    /// What the person was shown (the chunk the client and the drains
    /// get, shared, not copied). Waits only when the writer is a full
    /// queue behind.
    pub async fn output(&self, data: bytes::Bytes) {
        if self.cut.load(Ordering::Relaxed) {
            return;
        }
        let _ = self.tx.send(Msg::Output(data, self.now())).await;
    }

    /// What the person typed; `echoed`: the terminal echoed it (else only
    /// a marker, once per stretch).
    pub async fn input(&self, data: &[u8], echoed: bool) {
        let t = self.now();
        if echoed {
            self.hiding.store(false, Ordering::Relaxed);
            let _ = self.tx.send(Msg::Input(data.to_vec(), t)).await;
        } else if !self.hiding.swap(true, Ordering::Relaxed) {
            let _ = self.tx.send(Msg::Hidden(t)).await;
        }
    }

    /// The terminal's new size (at most [`screen::MAX_COLS`] by
    /// [`screen::MAX_ROWS`], as the header's).
    pub async fn resize(&self, cols: u32, rows: u32) {
        let (c, r) = (cols.min(screen::MAX_COLS), rows.min(screen::MAX_ROWS));
        let _ = self.tx.send(Msg::Resize(c, r, self.now())).await;
    }

    /// Ends the recording: flushed, compressed, hashed. `None` when it was
    /// finished already.
    pub async fn finish(&self) -> Option<Summary> {
        {
            let mut f = self.finished.lock().unwrap_or_else(|e| e.into_inner());
            if std::mem::replace(&mut *f, true) {
                return None;
            }
        }
        let (tx, rx) = oneshot::channel();
        self.tx.send(Msg::Finish(tx)).await.ok()?;
        rx.await.ok()
    }
}

struct Writer {
    file: std::io::BufWriter<std::fs::File>,
    path: PathBuf,
    written: u64,
    max_bytes: u64,
    truncated: bool,
    error: Option<String>,
    output: cast::Utf8Stream,
    line: String,
    last_flush: Instant,
    cut: std::sync::Arc<AtomicBool>,
    /// The time of the last event (for what is written at the end).
    last_t: f64,
}

impl Writer {
    fn header(&mut self, m: &Meta) {
        let timestamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let header = serde_json::json!({
            "version": 2,
            // A client that gave no size (not a terminal): what a
            // terminal starts with.
            "width": if m.cols == 0 { 80 } else { m.cols.min(screen::MAX_COLS) },
            "height": if m.rows == 0 { 24 } else { m.rows.min(screen::MAX_ROWS) },
            "timestamp": timestamp,
            "title": format!("tollgate {} ({} as {})", m.session, m.profile, m.login_user),
            "env": {
                "TERM": m.term,
                "TOLLGATE_SESSION": m.session,
                "TOLLGATE_PROFILE": m.profile,
                "TOLLGATE_LOGIN_USER": m.login_user,
            },
        });
        self.line = format!("{header}\n");
        self.put();
    }

    /// Writes `self.line` unless the recording is cut or broken.
    fn put(&mut self) {
        if self.truncated || self.error.is_some() {
            return;
        }
        match self.file.write_all(self.line.as_bytes()) {
            Ok(()) => self.written += self.line.len() as u64,
            Err(e) => {
                self.error = Some(e.to_string());
                self.cut.store(true, Ordering::Relaxed);
            }
        }
    }

    /// Writes one event; past `max_bytes`, a last marker instead, and
    /// nothing after it.
    fn event(&mut self, t: f64, code: &str, body: &str) {
        self.last_t = t;
        if self.truncated {
            return;
        }
        self.line.clear();
        cast::event_line(&mut self.line, t, code, body);
        if self.written + self.line.len() as u64 > self.max_bytes {
            self.line.clear();
            cast::event_line(&mut self.line, t, "m", TRUNCATED_MARKER);
            self.put();
            self.truncated = true;
            self.cut.store(true, Ordering::Relaxed);
            return;
        }
        self.put();
    }

    fn flush(&mut self) {
        if self.error.is_none() {
            if let Err(e) = self.file.flush() {
                self.error = Some(e.to_string());
                self.cut.store(true, Ordering::Relaxed);
            }
        }
        self.last_flush = Instant::now();
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Msg>) {
        let mut body = String::new();
        let mut dirty = false;
        let finish = loop {
            let wait = if dirty {
                FLUSH_IDLE
            } else {
                Duration::from_secs(3600)
            };
            let msg = match tokio::time::timeout(wait, rx.recv()).await {
                Ok(Some(m)) => m,
                Ok(None) => break None,
                Err(_) => {
                    self.flush();
                    dirty = false;
                    continue;
                }
            };
            dirty = true;
            body.clear();
            match msg {
                Msg::Output(d, t) => {
                    self.output.push(&d, &mut body);
                    if !body.is_empty() {
                        self.event(t, "o", &body);
                    }
                }
                Msg::Input(d, t) => {
                    cast::escape_bytes(&mut body, &d, cast::Invalid::Escape);
                    self.event(t, "i", &body);
                }
                Msg::Hidden(t) => self.event(t, "m", HIDDEN_MARKER),
                Msg::Resize(c, r, t) => self.event(t, "r", &format!("{c}x{r}")),
                Msg::Finish(done) => break Some(done),
            }
            if self.last_flush.elapsed() >= FLUSH_EVERY {
                self.flush();
                dirty = false;
            }
        };
        body.clear();
        self.output.finish(&mut body);
        if !body.is_empty() {
            self.event(self.last_t, "o", &body);
        }
        self.flush();
        let Writer {
            file,
            path,
            written,
            truncated,
            error,
            ..
        } = self;
        drop(file);
        let failed = |path: PathBuf, e: String| Summary {
            path,
            bytes: written,
            stored_bytes: 0,
            sha256: String::new(),
            truncated,
            error: Some(e),
        };
        // A thread of its own below the sessions' priority: compressing
        // and indexing a large recording takes seconds of CPU that live
        // sessions come first for.
        let (tx, rx) = oneshot::channel();
        let plain = path.clone();
        let spawned = std::thread::Builder::new()
            .name("tg-recording".into())
            .spawn(move || {
                let _ = crate::exec::set_thread_nice(10);
                let _ = tx.send(store(plain, written, truncated, error));
            });
        let summary = match spawned {
            Ok(_) => rx
                .await
                .unwrap_or_else(|_| failed(path, "the recording's thread ended early".into())),
            Err(e) => failed(path, format!("cannot start the recording's thread: {e}")),
        };
        if let Some(done) = finish {
            let _ = done.send(summary);
        }
    }
}

/// Compresses the plain file beside itself (`.cast.zst`, 0600), hashing
/// what is written, and removes the plain one; keeps the plain one when
/// compression fails.
fn store(plain: PathBuf, bytes: u64, truncated: bool, error: Option<String>) -> Summary {
    let zst = plain.with_extension("cast.zst");
    let compressed = (|| -> std::io::Result<(u64, String)> {
        let mut input = std::fs::File::open(&plain)?;
        let out = create(&zst)?;
        let mut hashing = HashingWriter {
            inner: out,
            hash: Sha256::new(),
            n: 0,
        };
        let mut enc = zstd::stream::write::Encoder::new(&mut hashing, 3)?;
        std::io::copy(&mut input, &mut enc)?;
        enc.finish()?;
        hashing.inner.sync_all()?;
        Ok((hashing.n, hex(&hashing.hash.finalize())))
    })();
    match compressed {
        Ok((stored_bytes, sha256)) => {
            write_index(&plain);
            let _ = std::fs::remove_file(&plain);
            Summary {
                path: zst,
                bytes,
                stored_bytes,
                sha256,
                truncated,
                error,
            }
        }
        Err(e) => {
            let _ = std::fs::remove_file(&zst);
            let sha256 = std::fs::read(&plain)
                .map(|b| hex(&Sha256::digest(&b)))
                .unwrap_or_default();
            Summary {
                path: plain,
                bytes,
                stored_bytes: bytes,
                sha256,
                truncated,
                error: Some(error.unwrap_or_else(|| format!("not compressed: {e}"))),
            }
        }
    }
}

/// Writes the index beside the recording (what search and `replay --at`
/// read); without one they run the emulator over the recording instead.
fn write_index(plain: &Path) {
    let Some(session) = plain.file_name().and_then(|n| n.to_str()) else {
        return;
    };
    let session = session.trim_end_matches(".cast");
    let path = index::path(plain.parent().unwrap_or(Path::new(".")), session);
    let written = std::fs::File::open(plain).and_then(|input| {
        let out = create(&path)?;
        index::write(
            std::io::BufReader::with_capacity(256 * 1024, input),
            std::io::BufWriter::new(out),
        )
    });
    if let Err(e) = written {
        tracing::warn!(path = %path.display(), error = %e, "could not write the recording's index");
        let _ = std::fs::remove_file(&path);
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

struct HashingWriter<W> {
    inner: W,
    hash: Sha256,
    n: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.n += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// The asciicast of a session's recording in `dir`, decompressed (or the
/// plain file of one that never finished).
pub fn read(dir: &Path, session: &str) -> std::io::Result<Vec<u8>> {
    match std::fs::File::open(stored_path(dir, session)) {
        Ok(f) => zstd::stream::decode_all(f),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::read(live_path(dir, session))
        }
        Err(e) => Err(e),
    }
}

/// Finishes the recordings a daemon that stopped without ending them left
/// plain in `dir` (a crash, kill -9): those last written `before` (this
/// daemon's start) and not of `live` sessions, each compressed and indexed
/// as a session's end does it; returns each session id with its summary.
/// A plain file that ends in the middle of a line (the crash cut a write)
/// keeps its complete lines.
pub fn recover(
    dir: &Path,
    before: std::time::SystemTime,
    live: &dyn Fn(&str) -> bool,
) -> Vec<(String, Summary)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(id) = name
            .strip_suffix(".cast")
            .filter(|id| id.starts_with("ses_"))
        else {
            continue;
        };
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|m| m < before);
        if !old || live(id) {
            continue;
        }
        let path = entry.path();
        let Ok(mut text) = std::fs::read(&path) else {
            continue;
        };
        let whole = text.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        if whole < text.len() {
            text.truncate(whole);
            if std::fs::write(&path, &text).is_err() {
                continue;
            }
        }
        let summary = store(path, text.len() as u64, false, None);
        out.push((id.to_string(), summary));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Removes the recordings in `dir` (finished, or left plain by a crash)
/// last written more than `older_than` ago; returns their session ids.
/// Nothing else in `dir` is touched.
pub fn prune(dir: &Path, older_than: std::time::Duration) -> std::io::Result<Vec<String>> {
    let now = std::time::SystemTime::now();
    let mut removed = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(removed),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(id) = name
            .strip_suffix(".cast.zst")
            .or_else(|| name.strip_suffix(".idx.zst"))
            .or_else(|| name.strip_suffix(".cast"))
            .filter(|id| id.starts_with("ses_"))
        else {
            continue;
        };
        let meta = entry.metadata()?;
        let age = meta
            .modified()
            .ok()
            .and_then(|m| now.duration_since(m).ok())
            .unwrap_or_default();
        if meta.is_file() && age > older_than {
            std::fs::remove_file(entry.path())?;
            removed.push(id.to_string());
        }
    }
    removed.sort();
    removed.dedup();
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prune_removes_only_recordings_past_retention() {
        let dir = std::env::temp_dir().join(format!("tg-prune-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let day = std::time::Duration::from_secs(86_400);
        let old = std::time::SystemTime::now() - 10 * day;
        for (name, aged) in [
            ("ses_old1.cast.zst", true),
            ("ses_old1.idx.zst", true),
            ("ses_old2.cast", true),
            ("ses_new.cast.zst", false),
            ("notes.txt", true),
            ("other.cast.zst", true),
        ] {
            let f = std::fs::File::create(dir.join(name)).unwrap();
            if aged {
                f.set_modified(old).unwrap();
            }
        }
        assert_eq!(prune(&dir, 7 * day).unwrap(), ["ses_old1", "ses_old2"]);
        let mut left: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["notes.txt", "other.cast.zst", "ses_new.cast.zst"]);
        assert!(prune(&dir.join("missing"), day).unwrap().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
