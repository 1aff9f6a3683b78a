//! The parent's side of a pseudo-terminal, as an async reader and writer.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// Non-blocking PTY master registered with the tokio reactor. Reads and
/// writes may happen from different tasks at once.
pub struct PtyMaster {
    fd: AsyncFd<OwnedFd>,
}

impl PtyMaster {
    pub(super) fn new(fd: OwnedFd) -> io::Result<PtyMaster> {
        let raw = fd.as_raw_fd();
        // SAFETY: fcntl on a descriptor we own.
        unsafe {
            let flags = libc::fcntl(raw, libc::F_GETFL);
            if flags < 0 || libc::fcntl(raw, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        // SAFETY: `fd` is an OwnedFd moved into the AsyncFd; it stays open
        // and the same descriptor for as long as the registration lives.
        let fd =
            unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE | Interest::WRITABLE) }
                .map_err(|e| io::Error::other(e.to_string()))?;
        Ok(PtyMaster { fd })
    }

    /// Reads what the session wrote. `Ok(0)` once every holder of the
    /// terminal has closed it (Linux reports that as EIO).
    pub async fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let mut guard = self.fd.readable().await?;
            match guard.try_io(|fd| {
                // SAFETY: read into a buffer we own, of its length.
                let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            }) {
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return Ok(0),
                Ok(r) => return r,
                Err(_would_block) => continue,
            }
        }
    }

    /// Reads whatever more is available right now into `buf`, without
    /// waiting; returns how much. A PTY hands out at most a few KiB per read,
    /// so this lets one SSH packet carry several reads.
    pub fn read_ready(&self, buf: &mut [u8]) -> usize {
        let mut total = 0;
        while total < buf.len() {
            let rest = &mut buf[total..];
            // SAFETY: read into the unfilled rest of a buffer we own.
            let n = unsafe {
                libc::read(
                    self.fd.get_ref().as_raw_fd(),
                    rest.as_mut_ptr().cast(),
                    rest.len(),
                )
            };
            if n <= 0 {
                break;
            }
            total += n as usize;
        }
        total
    }

    /// Writes all of `data` (what the person typed).
    pub async fn write_all(&self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let mut guard = self.fd.writable().await?;
            match guard.try_io(|fd| {
                // SAFETY: write from a slice we borrow, of its length.
                let n = unsafe { libc::write(fd.as_raw_fd(), data.as_ptr().cast(), data.len()) };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            }) {
                Ok(Ok(n)) => data = &data[n..],
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }

    /// Applies a window size (clamped to what a terminal can express).
    pub fn resize(&self, cols: u32, rows: u32, px_w: u32, px_h: u32) -> io::Result<()> {
        set_size(self.fd.get_ref().as_raw_fd(), cols, rows, px_w, px_h)
    }

    /// Whether the terminal echoes what is typed now: the program in it
    /// turns echo off for a password (`read -s`, sudo, ssh), and what is
    /// typed then must not be kept anywhere. The terminal's own settings
    /// decide (the master reports the slave's); unknown counts as off.
    pub fn echoes(&self) -> bool {
        nix::sys::termios::tcgetattr(self.fd.get_ref())
            .is_ok_and(|t| t.local_flags.contains(nix::sys::termios::LocalFlags::ECHO))
    }
}

/// TIOCSWINSZ with every field clamped to u16.
pub(super) fn set_size(fd: RawFd, cols: u32, rows: u32, px_w: u32, px_h: u32) -> io::Result<()> {
    let clamp = |v: u32| v.min(u32::from(u16::MAX)) as u16;
    let ws = libc::winsize {
        ws_row: clamp(rows),
        ws_col: clamp(cols),
        ws_xpixel: clamp(px_w),
        ws_ypixel: clamp(px_h),
    };
    // SAFETY: TIOCSWINSZ reads a winsize we own.
    if unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
