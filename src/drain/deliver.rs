//! Delivery to one collector: a bounded queue that never makes the caller
//! wait, and a task that connects, frames, sends in order, reconnects with
//! capped exponential backoff, and counts whatever the bound turned away.
//!
//! TCP and TLS get RFC 6587 octet counting, UDP one datagram per message, a
//! unix socket one datagram per message (as /dev/log expects). On a stream,
//! a collector that closes its end is noticed before the next write (a
//! reader watches for end-of-file), so what it never read stays queued.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;

use super::syslog::octet_counted_into;
use super::tls::TlsTarget;

/// Where a drain delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Tcp(String),
    Tls(Box<TlsTarget>),
    Udp(String),
    Unix(PathBuf),
}

impl Target {
    /// The delivery a drain's `url` asks for, its TLS settings loaded from
    /// their files (an error says which file and why).
    pub fn from_url(url: &crate::config::DrainUrl) -> Result<Target, super::tls::TlsError> {
        use crate::config::DrainUrl;
        Ok(match url {
            DrainUrl::Tcp(a) => Target::Tcp(a.clone()),
            DrainUrl::Udp(a) => Target::Udp(a.clone()),
            DrainUrl::Unix(p) => Target::Unix(p.clone()),
            DrainUrl::Tls(f) => {
                let ca = f
                    .ca_file
                    .clone()
                    .unwrap_or_else(|| PathBuf::from(super::tls::SYSTEM_CA_FILE));
                let client = f.client.as_ref().map(|(c, k)| (c.as_path(), k.as_path()));
                Target::Tls(Box::new(super::tls::target(&f.addr, &ca, client)?))
            }
        })
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Tcp(a) => write!(f, "tcp://{a}"),
            Target::Tls(t) => write!(f, "tls://{}", t.addr),
            Target::Udp(a) => write!(f, "udp://{a}"),
            Target::Unix(p) => write!(f, "unix://{}", p.display()),
        }
    }
}

/// What `drain status` reports.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    pub connected: bool,
    pub delivered: u64,
    pub queued: u64,
    pub queued_bytes: u64,
    /// Dropped since the last [`Drain::take_dropped`].
    pub dropped: u64,
    pub dropped_bytes: u64,
    /// Dropped since the drain started.
    pub dropped_total: u64,
    pub dropped_bytes_total: u64,
    /// Failed connection attempts and broken connections so far.
    pub failures: u64,
    pub last_error: Option<String>,
    /// The highest journal event sequence number delivered.
    pub delivered_event_seq: i64,
}

impl Stats {
    fn count_dropped(&mut self, messages: u64, bytes: u64) {
        self.dropped += messages;
        self.dropped_bytes += bytes;
        self.dropped_total += messages;
        self.dropped_bytes_total += bytes;
    }
}

struct State {
    /// Messages with the journal sequence number they carry (0 for output).
    queue: VecDeque<(String, i64)>,
    stats: Stats,
    closing: bool,
}

/// The sending side of one drain. Cheap to clone.
#[derive(Clone)]
pub struct Drain {
    state: Arc<Mutex<State>>,
    wake: Arc<Notify>,
    limit: usize,
}

/// Backoff between connection attempts: doubles from the first to the cap.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_CAP: Duration = Duration::from_secs(30);
/// At most this much is framed into one write on a stream.
const BATCH_BYTES: usize = 64 << 10;

impl Drain {
    /// Starts delivery to `target` with at most `queue_bytes` waiting.
    pub fn start(target: Target, queue_bytes: usize) -> Drain {
        let d = Drain {
            state: Arc::new(Mutex::new(State {
                queue: VecDeque::new(),
                stats: Stats::default(),
                closing: false,
            })),
            wake: Arc::new(Notify::new()),
            limit: queue_bytes,
        };
        tokio::spawn(d.clone().run(target));
        d
    }

    /// Whether both are the same drain (one queue, one connection).
    pub fn same(&self, other: &Drain) -> bool {
        Arc::ptr_eq(&self.state, &other.state)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a message; never waits. `false` when the bound turned it
    /// away (it is counted as dropped).
    pub fn offer(&self, msg: String) -> bool {
        self.offer_event(msg, 0)
    }

    /// Queues the message for journal event `seq` (see
    /// [`Stats::delivered_event_seq`]); never waits.
    pub fn offer_event(&self, msg: String, seq: i64) -> bool {
        let mut st = self.lock();
        let len = msg.len() as u64;
        if st.closing || st.stats.queued_bytes + len > self.limit as u64 {
            st.stats.count_dropped(1, len);
            return false;
        }
        st.stats.queued += 1;
        st.stats.queued_bytes += len;
        st.queue.push_back((msg, seq));
        drop(st);
        self.wake.notify_one();
        true
    }

    /// Whether a message of about `bytes` would fit in the queue now.
    pub fn has_room(&self, bytes: usize) -> bool {
        let st = self.lock();
        !st.closing && st.stats.queued_bytes + bytes as u64 <= self.limit as u64
    }

    /// Counts messages lost before they reached this drain's queue (the
    /// session tee had no room): reported like the queue's own drops.
    pub fn count_dropped(&self, messages: u64, bytes: u64) {
        self.lock().stats.count_dropped(messages, bytes);
    }

    /// Copies of the messages waiting (for tests and diagnostics).
    pub fn queued_messages(&self) -> Vec<String> {
        self.lock().queue.iter().map(|(m, _)| m.clone()).collect()
    }

    /// Counters as of now.
    pub fn stats(&self) -> Stats {
        self.lock().stats.clone()
    }

    /// Takes the drop counters (for a `drain.dropped` report), leaving zero.
    pub fn take_dropped(&self) -> (u64, u64) {
        let mut st = self.lock();
        let d = (st.stats.dropped, st.stats.dropped_bytes);
        st.stats.dropped = 0;
        st.stats.dropped_bytes = 0;
        d
    }

    /// Stops accepting, and gives delivery up to `limit` to empty the
    /// queue. Returns what could not be sent (messages, bytes).
    pub async fn close(&self, limit: Duration) -> (u64, u64) {
        self.lock().closing = true;
        self.wake.notify_one();
        let _ = tokio::time::timeout(limit, async {
            while self.lock().stats.queued > 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        let mut st = self.lock();
        let left = (st.stats.queued, st.stats.queued_bytes);
        st.queue.clear();
        st.stats.queued = 0;
        st.stats.queued_bytes = 0;
        left
    }

    fn set_link(&self, connected: bool, error: Option<String>) {
        let mut st = self.lock();
        st.stats.connected = connected;
        if error.is_some() {
            st.stats.failures += 1;
            st.stats.last_error = error;
        }
    }

    /// Waits for something to send: for a stream, as many queued messages
    /// as fit in one write; for a datagram link, one. `None` once closing
    /// and empty.
    async fn next(&self, many: bool) -> Option<Vec<String>> {
        loop {
            let woken = self.wake.notified();
            {
                let st = self.lock();
                if !st.queue.is_empty() {
                    let mut out = Vec::new();
                    let mut size = 0;
                    for (m, _) in st.queue.iter() {
                        if !out.is_empty() && (!many || size + m.len() > BATCH_BYTES) {
                            break;
                        }
                        size += m.len();
                        out.push(m.clone());
                    }
                    return Some(out);
                }
                if st.closing {
                    return None;
                }
            }
            woken.await;
        }
    }

    fn sent(&self, n: usize) {
        let mut st = self.lock();
        for _ in 0..n {
            if let Some((m, seq)) = st.queue.pop_front() {
                st.stats.queued -= 1;
                st.stats.queued_bytes -= m.len() as u64;
                st.stats.delivered += 1;
                st.stats.delivered_event_seq = st.stats.delivered_event_seq.max(seq);
            }
        }
    }

    async fn run(self, target: Target) {
        let mut backoff = BACKOFF_FIRST;
        loop {
            let link = match Link::open(&target).await {
                Ok(l) => {
                    self.set_link(true, None);
                    backoff = BACKOFF_FIRST;
                    l
                }
                Err(e) => {
                    self.set_link(false, Some(format!("connect to {target}: {e}")));
                    if self.lock().closing {
                        return;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_CAP);
                    continue;
                }
            };
            match self.pump(link).await {
                Ok(()) => return, // closing and empty
                Err(e) => self.set_link(false, Some(format!("send to {target}: {e}"))),
            }
        }
    }

    /// Sends queued messages in order; a message leaves the queue only once
    /// written.
    async fn pump(&self, mut link: Link) -> std::io::Result<()> {
        let many = link.is_stream();
        loop {
            let batch = tokio::select! {
                b = self.next(many) => b,
                e = link.peer_closed() => return Err(e),
            };
            let Some(batch) = batch else { return Ok(()) };
            if let Some(e) = link.closed_error() {
                return Err(e);
            }
            link.send(&batch).await?;
            self.sent(batch.len());
        }
    }
}

type Writer = Box<dyn AsyncWrite + Unpin + Send + Sync>;

/// A stream's write half, and a reader that notices when the collector
/// closes its end (collectors never send anything).
struct Stream {
    w: Writer,
    closed: Arc<(AtomicBool, Notify, Mutex<Option<String>>)>,
    reader: tokio::task::JoinHandle<()>,
}

impl Stream {
    fn new<S: AsyncRead + AsyncWrite + Send + Sync + 'static>(s: S) -> Stream {
        let (mut r, w) = tokio::io::split(s);
        let closed = Arc::new((AtomicBool::new(false), Notify::new(), Mutex::new(None)));
        let c = closed.clone();
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 512];
            let why = loop {
                match r.read(&mut buf).await {
                    Ok(0) => break "the collector closed the connection".to_string(),
                    Ok(_) => continue, // nothing is expected; ignore it
                    Err(e) => break e.to_string(),
                }
            };
            *c.2.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
            c.0.store(true, Ordering::SeqCst);
            c.1.notify_one();
        });
        Stream {
            w: Box::new(w),
            closed,
            reader,
        }
    }

    fn error(&self) -> std::io::Error {
        let why = self
            .closed
            .2
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            why.unwrap_or_else(|| "connection closed".into()),
        )
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

enum Link {
    Stream(Stream),
    Udp(tokio::net::UdpSocket),
    Unix(tokio::net::UnixDatagram),
}

impl Link {
    async fn open(t: &Target) -> std::io::Result<Link> {
        Ok(match t {
            Target::Tcp(addr) => {
                let s = tokio::net::TcpStream::connect(addr).await?;
                let _ = s.set_nodelay(true);
                Link::Stream(Stream::new(s))
            }
            Target::Tls(t) => Link::Stream(Stream::new(super::tls::connect(t).await?)),
            Target::Udp(addr) => {
                let s = tokio::net::UdpSocket::bind(("0.0.0.0", 0)).await?;
                s.connect(addr).await?;
                Link::Udp(s)
            }
            Target::Unix(path) => {
                let s = tokio::net::UnixDatagram::unbound()?;
                s.connect(path)?;
                Link::Unix(s)
            }
        })
    }

    fn is_stream(&self) -> bool {
        matches!(self, Link::Stream(_))
    }

    /// Resolves once the collector closed a stream; never for datagrams.
    async fn peer_closed(&self) -> std::io::Error {
        match self {
            Link::Stream(s) => loop {
                let n = s.closed.1.notified();
                if s.closed.0.load(Ordering::SeqCst) {
                    return s.error();
                }
                n.await;
            },
            _ => std::future::pending().await,
        }
    }

    fn closed_error(&self) -> Option<std::io::Error> {
        match self {
            Link::Stream(s) if s.closed.0.load(Ordering::SeqCst) => Some(s.error()),
            _ => None,
        }
    }

    async fn send(&mut self, batch: &[String]) -> std::io::Result<()> {
        match self {
            Link::Stream(s) => {
                let mut buf = Vec::with_capacity(batch.iter().map(|m| m.len() + 8).sum());
                for m in batch {
                    octet_counted_into(&mut buf, m);
                }
                s.w.write_all(&buf).await?;
                s.w.flush().await
            }
            Link::Udp(s) => {
                for m in batch {
                    s.send(m.as_bytes()).await?;
                }
                Ok(())
            }
            Link::Unix(s) => {
                for m in batch {
                    s.send(m.as_bytes()).await?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    /// Reads octet-counted frames until `n` messages arrived.
    async fn read_frames(s: &mut tokio::net::TcpStream, n: usize) -> Vec<String> {
        let mut buf = Vec::new();
        let mut out = Vec::new();
        let mut chunk = [0u8; 4096];
        while out.len() < n {
            let k = s.read(&mut chunk).await.unwrap();
            assert!(k > 0, "collector connection closed early");
            buf.extend_from_slice(&chunk[..k]);
            while let Some(sp) = buf.iter().position(|&b| b == b' ') {
                let len: usize = std::str::from_utf8(&buf[..sp]).unwrap().parse().unwrap();
                if buf.len() < sp + 1 + len {
                    break;
                }
                out.push(String::from_utf8(buf[sp + 1..sp + 1 + len].to_vec()).unwrap());
                buf.drain(..sp + 1 + len);
            }
        }
        out
    }

    /// A port reserved and released again: a collector that is down.
    async fn closed_port() -> u16 {
        TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    async fn wait_for(d: &Drain, f: impl Fn(&Stats) -> bool) {
        for _ in 0..500 {
            if f(&d.stats()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("condition never held: {:?}", d.stats());
    }

    #[tokio::test]
    async fn tcp_messages_arrive_octet_counted_and_in_order() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let d = Drain::start(Target::Tcp(l.local_addr().unwrap().to_string()), 1 << 20);
        let (mut s, _) = l.accept().await.unwrap();
        for i in 0..100 {
            assert!(d.offer(format!("msg {i} with space")));
        }
        let got = read_frames(&mut s, 100).await;
        assert_eq!(
            got,
            (0..100)
                .map(|i| format!("msg {i} with space"))
                .collect::<Vec<_>>()
        );
        wait_for(&d, |s| s.delivered == 100 && s.queued == 0 && s.connected).await;
    }

    #[tokio::test]
    async fn a_collector_that_is_away_gets_the_backlog_in_order_when_back() {
        let port = closed_port().await;
        let d = Drain::start(Target::Tcp(format!("127.0.0.1:{port}")), 1 << 20);
        for i in 0..50 {
            assert!(d.offer(format!("while away {i}")));
        }
        wait_for(&d, |s| !s.connected && s.last_error.is_some()).await;
        assert_eq!(d.stats().queued, 50);
        let l = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let (mut s, _) = tokio::time::timeout(Duration::from_secs(5), l.accept())
            .await
            .unwrap()
            .unwrap();
        let got = read_frames(&mut s, 50).await;
        assert_eq!(
            got,
            (0..50)
                .map(|i| format!("while away {i}"))
                .collect::<Vec<_>>()
        );
        wait_for(&d, |s| s.delivered == 50 && s.connected).await;
    }

    #[tokio::test]
    async fn what_overflows_the_bound_is_counted_never_waited_for() {
        let port = closed_port().await;
        let d = Drain::start(Target::Tcp(format!("127.0.0.1:{port}")), 100);
        let accepted = (0..20).filter(|i| d.offer(format!("{i:09}"))).count();
        assert_eq!(accepted, 11, "100 bytes hold 11 messages of 9 bytes");
        let st = d.stats();
        assert_eq!((st.dropped, st.dropped_bytes), (9, 81));
        assert_eq!(d.take_dropped(), (9, 81));
        assert_eq!(d.stats().dropped, 0);
        // Closing with the collector still away reports what is left.
        assert_eq!(d.close(Duration::from_millis(200)).await, (11, 99));
        assert!(!d.offer("after close".into()));
    }

    #[tokio::test]
    async fn udp_and_unix_send_one_datagram_per_message() {
        let u = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let d = Drain::start(Target::Udp(u.local_addr().unwrap().to_string()), 1 << 16);
        d.offer("one".into());
        d.offer("two".into());
        let mut buf = [0u8; 64];
        let n = u.recv(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"one");
        let n = u.recv(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"two");

        let dir = std::env::temp_dir().join(crate::token::random_id("tg-unixdrain-").unwrap());
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("log.sock");
        let sock = tokio::net::UnixDatagram::bind(&path).unwrap();
        let d = Drain::start(Target::Unix(path.clone()), 1 << 16);
        d.offer("<13>1 - - - - - - local".into());
        let n = sock.recv(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"<13>1 - - - - - - local");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
