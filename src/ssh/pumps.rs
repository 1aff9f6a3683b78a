//! The bytes of a session: client input through the [`InputGate`] into
//! the process's PTY or stdin, its output to the client (respecting the
//! client's window) and, without ever waiting, to the drains' tee.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use russh::server::Handle;
use russh::ChannelId;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc::{self, UnboundedReceiver};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::drain::tee::{OutputTee, Sink};
use crate::exec::PtyMaster;
use crate::metrics::{self, Counter};
use crate::record::Recorder;

/// Bounds what the client may have sent that the session's process has not
/// read yet. Past the limit the handler waits, which stops russh reading the
/// connection and so pushes back on the client through TCP.
pub struct InputGate {
    queued: AtomicUsize,
    closed: AtomicBool,
    room: Notify,
}

/// Undelivered input allowed per session before the client is held back.
const INPUT_LIMIT: usize = 1 << 20;

impl InputGate {
    pub(super) fn new() -> Self {
        InputGate {
            queued: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
            room: Notify::new(),
        }
    }

    /// Waits until `n` more bytes fit (or the session is over).
    pub async fn admit(&self, n: usize) {
        loop {
            let room = self.room.notified();
            if self.closed.load(Ordering::Acquire)
                || self.queued.load(Ordering::Acquire) < INPUT_LIMIT
            {
                self.queued.fetch_add(n, Ordering::AcqRel);
                return;
            }
            room.await;
        }
    }

    pub(super) fn release(&self, n: usize) {
        self.queued.fetch_sub(n, Ordering::AcqRel);
        self.room.notify_waiters();
    }

    pub(super) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.room.notify_waiters();
    }
}

/// Byte counters and the last moment anything moved, shared with the pumps.
pub(super) struct Activity {
    pub(super) bytes_in: AtomicU64,
    pub(super) bytes_out: AtomicU64,
    /// Milliseconds since `epoch`.
    pub(super) last_ms: AtomicU64,
    /// The process's byte counters for the session's kind, each way.
    metric_in: Counter,
    metric_out: Counter,
}

impl Activity {
    pub(super) fn new(kind: metrics::Kind) -> Activity {
        let m = metrics::get();
        Activity {
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            last_ms: AtomicU64::new(0),
            metric_in: m.bytes(kind, "in"),
            metric_out: m.bytes(kind, "out"),
        }
    }

    /// Counts `n` bytes from the client.
    pub(super) fn add_in(&self, n: u64) {
        self.bytes_in.fetch_add(n, Ordering::Relaxed);
        self.metric_in.inc_by(n);
    }

    /// Counts `n` bytes to the client.
    pub(super) fn add_out(&self, n: u64) {
        self.bytes_out.fetch_add(n, Ordering::Relaxed);
        self.metric_out.inc_by(n);
    }
}

pub(super) async fn wait_pumps(pumps: &mut Vec<JoinHandle<()>>, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    // A finished JoinHandle must not be polled again: pop each as it completes.
    while let Some(p) = pumps.last_mut() {
        if tokio::time::timeout_at(deadline, p).await.is_err() {
            return;
        }
        pumps.pop();
    }
}

/// SIGHUP and SIGTERM to everything the session started; SIGKILL after `grace`.
/// Returns the leader's exit status.
pub(super) fn mark(activity: &Activity, epoch: Instant, n: usize) {
    activity.add_out(n as u64);
    activity
        .last_ms
        .store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
}

/// Where a pump copies output for the drains (and the drains, to count
/// what could not be copied); `None` without drains.
pub(super) type TeeTx = Option<(mpsc::Sender<bytes::Bytes>, Arc<Vec<Sink>>)>;

/// Copies a chunk to the tee without ever waiting: the person's output
/// never slows down for a drain. A chunk the tee has no room for is
/// counted as dropped by every output drain, one message per line in it,
/// and reported with the drains' other drops (`drain.dropped`).
pub(super) fn tee(tx: &TeeTx, chunk: &bytes::Bytes) {
    if let Some((tx, sinks)) = tx {
        if tx.try_send(chunk.clone()).is_err() {
            let lines = memchr::memchr_iter(b'\n', chunk).count().max(1) as u64;
            for s in sinks.iter().filter(|s| s.spec.send_output) {
                s.drain.count_dropped(lines, chunk.len() as u64);
            }
        }
    }
}

/// Cuts and queues a session's output for the drains; flushes a partial
/// line after 200 ms of quiet, and everything when the output ends.
pub(super) async fn run_tee(mut tee: OutputTee, mut rx: mpsc::Receiver<bytes::Bytes>) {
    loop {
        match tokio::time::timeout(Duration::from_millis(200), rx.recv()).await {
            Ok(Some(chunk)) => tee.push(&chunk),
            Ok(None) => break,
            Err(_) => tee.flush(),
        }
    }
    tee.flush();
}

/// Where a stream of the process's output goes: to the client on one
/// channel (as data, or as extended data `ext`), counted, and copied to
/// the tee.
#[derive(Clone)]
pub(super) struct Output {
    /// The session's recording (PTY output only).
    pub(super) recorder: Option<Arc<Recorder>>,
    pub(super) handle: Handle,
    pub(super) ch: ChannelId,
    /// `Some(1)`: stderr, as extended data.
    pub(super) ext: Option<u32>,
    pub(super) activity: Arc<Activity>,
    pub(super) epoch: Instant,
    pub(super) tee_tx: TeeTx,
}

impl Output {
    /// Sends one chunk, waiting for the client's window (backpressure);
    /// false once the channel is gone.
    async fn send(&self, data: &[u8]) -> bool {
        mark(&self.activity, self.epoch, data.len());
        let chunk = bytes::Bytes::copy_from_slice(data);
        tee(&self.tee_tx, &chunk);
        if let Some(r) = &self.recorder {
            r.output(chunk.clone()).await;
        }
        let sent = match self.ext {
            None => self.handle.data(self.ch, chunk).await,
            Some(code) => self.handle.extended_data(self.ch, code, chunk).await,
        };
        sent.is_ok()
    }
}

/// PTY output to the client: what one read returns plus whatever else is
/// ready at once, one chunk.
pub(super) async fn pump_pty(master: Arc<PtyMaster>, out: Output) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match master.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let n = n + master.read_ready(&mut buf[n..]);
                if !out.send(&buf[..n]).await {
                    break;
                }
            }
        }
    }
}

/// A pipe (stdout, or stderr) to the client.
pub(super) async fn pump_pipe<R: tokio::io::AsyncRead + Unpin>(mut pipe: R, out: Output) {
    // Read into spare capacity: nothing zeroed first, and only the pages a
    // read fills are touched (most commands write little or nothing).
    let mut buf = Vec::with_capacity(32 * 1024);
    loop {
        buf.clear();
        match pipe.read_buf(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                if !out.send(&buf).await {
                    break;
                }
            }
        }
    }
}

/// What the person types, into the PTY. EOF is not forwarded to a terminal
/// (the person types ^D for that).
pub(super) async fn feed_pty(
    master: Arc<PtyMaster>,
    mut rx: UnboundedReceiver<Option<Vec<u8>>>,
    gate: Arc<InputGate>,
    recorder: Option<Arc<Recorder>>,
) {
    while let Some(msg) = rx.recv().await {
        if let Some(d) = msg {
            if let Some(r) = &recorder {
                // Whether it is kept is decided by the terminal's echo as
                // it is when the keys arrive, before they reach it.
                r.input(&d, master.echoes()).await;
            }
            let ok = master.write_all(&d).await.is_ok();
            gate.release(d.len());
            if !ok {
                break;
            }
        }
    }
}

/// Client data into the child's stdin; EOF closes it.
pub(super) async fn feed_pipe(
    stdin: crate::exec::Stdin,
    mut rx: UnboundedReceiver<Option<Vec<u8>>>,
    gate: Arc<InputGate>,
) {
    let mut stdin = Some(stdin);
    let mut pipe = None;
    while let Some(Some(d)) = rx.recv().await {
        if pipe.is_none() {
            pipe = stdin.take().and_then(|s| s.sender().ok());
        }
        let ok = match pipe.as_mut() {
            Some(p) => p.write_all(&d).await.is_ok(),
            None => false,
        };
        gate.release(d.len());
        if !ok {
            return;
        }
    }
    // EOF: the pipe closes as it drops.
}
