//! Delivery to one collector: a bounded queue that never makes the caller
//! wait, and a task that connects, frames, sends in order, reconnects with
//! capped exponential backoff, and counts whatever the bound turned away.
//!
//! TCP gets RFC 6587 octet counting, UDP one datagram per message, a unix
//! socket one datagram per message (as /dev/log expects).

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::sync::Notify;

use super::syslog::octet_counted;

/// Where a drain delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Tcp(String),
    Udp(String),
    Unix(PathBuf),
}

/// What `drain status` reports.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    pub connected: bool,
    pub delivered: u64,
    pub queued: u64,
    pub queued_bytes: u64,
    pub dropped: u64,
    pub dropped_bytes: u64,
    pub last_error: Option<String>,
}

struct State {
    queue: VecDeque<String>,
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

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a message; never waits. `false` when the bound turned it
    /// away (it is counted as dropped).
    pub fn offer(&self, msg: String) -> bool {
        let mut st = self.lock();
        let len = msg.len() as u64;
        if st.closing || st.stats.queued_bytes + len > self.limit as u64 {
            st.stats.dropped += 1;
            st.stats.dropped_bytes += len;
            return false;
        }
        st.stats.queued += 1;
        st.stats.queued_bytes += len;
        st.queue.push_back(msg);
        drop(st);
        self.wake.notify_one();
        true
    }

    /// Copies of the messages waiting (for tests and diagnostics).
    pub fn queued_messages(&self) -> Vec<String> {
        self.lock().queue.iter().cloned().collect()
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
            st.stats.last_error = error;
        }
    }

    async fn next(&self) -> Option<String> {
        loop {
            let woken = self.wake.notified();
            {
                let st = self.lock();
                if let Some(m) = st.queue.front() {
                    return Some(m.clone());
                }
                if st.closing {
                    return None;
                }
            }
            woken.await;
        }
    }

    fn sent(&self) {
        let mut st = self.lock();
        if let Some(m) = st.queue.pop_front() {
            st.stats.queued -= 1;
            st.stats.queued_bytes -= m.len() as u64;
            st.stats.delivered += 1;
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
                    self.set_link(false, Some(format!("connect: {e}")));
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
                Err(e) => self.set_link(false, Some(format!("send: {e}"))),
            }
        }
    }

    /// Sends queued messages in order; a message leaves the queue only once
    /// written.
    async fn pump(&self, mut link: Link) -> std::io::Result<()> {
        while let Some(msg) = self.next().await {
            link.send(&msg).await?;
            self.sent();
        }
        Ok(())
    }
}

enum Link {
    Tcp(tokio::net::TcpStream),
    Udp(tokio::net::UdpSocket),
    Unix(tokio::net::UnixDatagram),
}

impl Link {
    async fn open(t: &Target) -> std::io::Result<Link> {
        Ok(match t {
            Target::Tcp(addr) => {
                let s = tokio::net::TcpStream::connect(addr).await?;
                let _ = s.set_nodelay(true);
                Link::Tcp(s)
            }
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

    async fn send(&mut self, msg: &str) -> std::io::Result<()> {
        match self {
            Link::Tcp(s) => s.write_all(&octet_counted(msg)).await,
            Link::Udp(s) => s.send(msg.as_bytes()).await.map(|_| ()),
            Link::Unix(s) => s.send(msg.as_bytes()).await.map(|_| ()),
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
        // Reserve a port, then close it: the collector is "down".
        let port = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
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
        let port = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
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
