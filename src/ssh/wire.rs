//! The connection's socket as russh reads and writes it. Two things are
//! ours here:
//!
//! - the client's identification line (`SSH-2.0-OpenSSH_9.2p1 …`), noted
//!   as it passes, so that a failed key exchange can be logged with the
//!   client's name and a collect connection recorded with it (russh shows
//!   it to the handler only after authentication). It looks at the first
//!   [`SCAN_LIMIT`] bytes only, for one line of at most 255 characters
//!   (RFC 4253 §4.2);
//! - a switch that cuts the connection whatever russh is doing (a key
//!   exchange it will not interrupt, a client trickling `SSH_MSG_IGNORE`):
//!   every read and write fails from then on, and a pending one is woken
//!   to fail. It works only until the connection authenticates
//!   ([`Wire::disarm`]); after that the switch costs one atomic load per
//!   read or write and nothing else.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::text::printable;

/// How far into the connection the identification line is looked for.
pub const SCAN_LIMIT: usize = 8 * 1024;

const ARMED: u8 = 0;
const DISARMED: u8 = 1;
const CUT: u8 = 2;

/// What the connection task shares with the stream: the client's
/// identification line and the switch.
#[derive(Debug, Default)]
pub struct Wire {
    id: OnceLock<String>,
    state: AtomicU8,
    /// The tasks waiting to read and to write while armed.
    wakers: Mutex<[Option<Waker>; 2]>,
}

impl Wire {
    /// The identification line without its line end, printable ASCII only
    /// (anything else replaced by `?`); `None` before it was read.
    pub fn client_id(&self) -> Option<&str> {
        self.id.get().map(String::as_str)
    }

    /// Cuts the connection unless it authenticated (was disarmed); returns
    /// whether it did.
    pub fn cut(&self) -> bool {
        let cut = self
            .state
            .compare_exchange(ARMED, CUT, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if cut {
            let wakers =
                std::mem::take(&mut *self.wakers.lock().unwrap_or_else(|e| e.into_inner()));
            for w in wakers.into_iter().flatten() {
                w.wake();
            }
        }
        cut
    }

    /// The connection authenticated: [`Wire::cut`] does nothing from now on.
    pub fn disarm(&self) {
        let _ = self
            .state
            .compare_exchange(ARMED, DISARMED, Ordering::AcqRel, Ordering::Acquire);
    }

    fn is_cut(&self) -> bool {
        self.state.load(Ordering::Acquire) == CUT
    }

    /// After a pending read or write while armed: remember who waits, then
    /// look again, so a cut between the two is not missed.
    fn park(&self, slot: usize, cx: &Context<'_>) -> bool {
        if self.state.load(Ordering::Acquire) != ARMED {
            return self.is_cut();
        }
        self.wakers.lock().unwrap_or_else(|e| e.into_inner())[slot] = Some(cx.waker().clone());
        self.is_cut()
    }
}

fn cut_error() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "connection cut")
}

/// The stream russh gets: notes the identification line as it passes, and
/// fails once cut.
pub struct Watched<S> {
    inner: S,
    wire: Arc<Wire>,
    /// The start of the current line; `None` once done looking.
    line: Option<Vec<u8>>,
    seen: usize,
}

impl<S> Watched<S> {
    pub fn new(inner: S) -> (Self, Arc<Wire>) {
        let wire = Arc::new(Wire::default());
        (
            Watched {
                inner,
                wire: wire.clone(),
                line: Some(Vec::new()),
                seen: 0,
            },
            wire,
        )
    }

    fn scan(&mut self, new: &[u8]) {
        let Some(line) = self.line.as_mut() else {
            return;
        };
        for &b in new {
            self.seen += 1;
            if b == b'\n' {
                if line.starts_with(b"SSH-") {
                    let end = line.iter().position(|&c| c == b'\r').unwrap_or(line.len());
                    let text = printable(&String::from_utf8_lossy(&line[..end]), 255);
                    let _ = self.wire.id.set(text);
                    self.line = None;
                    return;
                }
                // Lines before the identification are allowed (RFC 4253 §4.2).
                line.clear();
            } else if line.len() < 255 {
                line.push(b);
            }
            if self.seen >= SCAN_LIMIT {
                self.line = None;
                return;
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        if me.wire.is_cut() {
            return Poll::Ready(Err(cut_error()));
        }
        let before = buf.filled().len();
        let r = Pin::new(&mut me.inner).poll_read(cx, buf);
        match r {
            Poll::Pending if me.wire.park(0, cx) => Poll::Ready(Err(cut_error())),
            Poll::Ready(Ok(())) if me.line.is_some() => {
                me.scan(&buf.filled()[before..]);
                r
            }
            r => r,
        }
    }
}

impl<S: AsyncWrite + Unpin> Watched<S> {
    fn guard<T>(&mut self, cx: &Context<'_>, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match r {
            Poll::Pending if self.wire.park(1, cx) => Poll::Ready(Err(cut_error())),
            r => r,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let me = self.get_mut();
        if me.wire.is_cut() {
            return Poll::Ready(Err(cut_error()));
        }
        let r = Pin::new(&mut me.inner).poll_write(cx, buf);
        me.guard(cx, r)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        if me.wire.is_cut() {
            return Poll::Ready(Err(cut_error()));
        }
        let r = Pin::new(&mut me.inner).poll_flush(cx);
        me.guard(cx, r)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let me = self.get_mut();
        if me.wire.is_cut() {
            return Poll::Ready(Err(cut_error()));
        }
        let r = Pin::new(&mut me.inner).poll_write_vectored(cx, bufs);
        me.guard(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// A reader that hands out `input` `chunk` bytes per read.
    struct Chunked(Vec<u8>, usize);

    impl AsyncRead for Chunked {
        fn poll_read(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let me = self.get_mut();
            let n = me.1.min(me.0.len()).min(buf.remaining());
            buf.put_slice(&me.0[..n]);
            me.0.drain(..n);
            Poll::Ready(Ok(()))
        }
    }

    async fn read_all(input: &[u8], chunk: usize) -> Option<String> {
        let (mut w, wire) = Watched::new(Chunked(input.to_vec(), chunk));
        let mut out = Vec::new();
        w.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, input, "bytes pass through unchanged");
        wire.client_id().map(str::to_string)
    }

    #[tokio::test]
    async fn the_identification_line_is_noted_whole_and_clean() {
        let mut input = b"SSH-2.0-PuTTY_Release_0.78\r\n".to_vec();
        input.extend([0, 0, 1, 0, 4, 20]);
        input.extend(vec![0xaa; 300]);
        for chunk in [1, 3, 64, 4096] {
            assert_eq!(
                read_all(&input, chunk).await.as_deref(),
                Some("SSH-2.0-PuTTY_Release_0.78")
            );
        }
        // Lines before it are skipped; control bytes never get through.
        let odd = b"hello\r\nSSH-2.0-x\x1b[31m\r\n";
        assert_eq!(read_all(odd, 5).await.as_deref(), Some("SSH-2.0-x?[31m"));
    }

    #[tokio::test]
    async fn a_client_that_never_says_who_it_is_costs_a_bounded_scan() {
        let junk = vec![b'x'; SCAN_LIMIT * 3];
        assert_eq!(read_all(&junk, 1000).await, None);
        let late = [vec![b'\n'; SCAN_LIMIT], b"SSH-2.0-late\r\n".to_vec()].concat();
        assert_eq!(read_all(&late, 100).await, None);
    }

    #[tokio::test]
    async fn a_cut_ends_a_waiting_read_and_write_but_not_once_disarmed() {
        use tokio::io::AsyncWriteExt;
        // A peer that never sends: the read waits until the cut.
        let (a, _b) = tokio::io::duplex(64);
        let (mut w, wire) = Watched::new(a);
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 16];
            let r = w.read(&mut buf).await;
            (r.map_err(|e| e.kind()), w)
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(wire.cut());
        let (r, mut w) = tokio::time::timeout(std::time::Duration::from_secs(2), reader)
            .await
            .expect("the waiting read was woken")
            .unwrap();
        assert_eq!(r, Err(io::ErrorKind::TimedOut));
        assert!(w.write_all(b"x").await.is_err(), "writes fail too");
        // Disarmed (authenticated): the switch does nothing.
        let (a, mut b) = tokio::io::duplex(64);
        let (mut w, wire) = Watched::new(a);
        wire.disarm();
        assert!(!wire.cut());
        b.write_all(b"hi").await.unwrap();
        let mut buf = [0u8; 2];
        w.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"hi");
    }
}
