//! The client's identification line (`SSH-2.0-OpenSSH_9.2p1 …`), read off
//! the connection as russh reads it, so that a failed key exchange can be
//! logged with the client's name and a collect connection recorded with it
//! (russh shows it to the handler only after authentication).
//!
//! It looks at the first bytes only: at most [`SCAN_LIMIT`] of them, for
//! one line of at most 255 characters (RFC 4253 §4.2); after that every
//! read passes straight through.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How far into the connection the identification line is looked for.
pub const SCAN_LIMIT: usize = 8 * 1024;

/// What the client said it is, once it has said it.
#[derive(Debug, Default)]
pub struct ClientId(OnceLock<String>);

impl ClientId {
    /// The identification line without its line end, printable ASCII only
    /// (anything else replaced by `?`); `None` before it was read.
    pub fn get(&self) -> Option<&str> {
        self.0.get().map(String::as_str)
    }
}

/// `s` with anything but printable ASCII replaced by `?`, cut to `max`
/// characters (with `…` when cut): safe to put in a log line.
pub fn printable(s: &str, max: usize) -> String {
    let mut out: String = s
        .chars()
        .take(max)
        .map(|c| if (' '..='~').contains(&c) { c } else { '?' })
        .collect();
    if s.chars().count() > max {
        out.push('…');
    }
    out
}

/// A stream that notes the client's identification line as it passes.
pub struct Watched<S> {
    inner: S,
    id: Arc<ClientId>,
    /// The start of the current line; `None` once done looking.
    line: Option<Vec<u8>>,
    seen: usize,
}

impl<S> Watched<S> {
    pub fn new(inner: S) -> (Self, Arc<ClientId>) {
        let id = Arc::new(ClientId::default());
        (
            Watched {
                inner,
                id: id.clone(),
                line: Some(Vec::new()),
                seen: 0,
            },
            id,
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
                    let _ = self.id.0.set(text);
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
        let before = buf.filled().len();
        let r = Pin::new(&mut me.inner).poll_read(cx, buf);
        if me.line.is_some() {
            if let Poll::Ready(Ok(())) = r {
                me.scan(&buf.filled()[before..]);
            }
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
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
        let (mut w, id) = Watched::new(Chunked(input.to_vec(), chunk));
        let mut out = Vec::new();
        w.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, input, "bytes pass through unchanged");
        id.get().map(str::to_string)
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
}
