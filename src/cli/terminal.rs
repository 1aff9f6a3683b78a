//! The admin's terminal while a command shows a session's screen (`session
//! watch`, `replay`): no echo, no line editing, no signals, so keys come
//! here as they are typed; restored when dropped.

use std::io::Read;
use std::sync::mpsc;

pub struct Quiet {
    saved: Option<nix::sys::termios::Termios>,
}

impl Quiet {
    /// Quiets the terminal on stdin (when it is one); the keys typed
    /// there arrive on the receiver.
    pub fn enter() -> (Quiet, mpsc::Receiver<u8>) {
        use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
        let (tx, rx) = mpsc::channel();
        let stdin = std::io::stdin();
        let saved = tcgetattr(&stdin).ok();
        if let Some(t) = &saved {
            let mut quiet = t.clone();
            quiet
                .local_flags
                .remove(LocalFlags::ECHO | LocalFlags::ICANON | LocalFlags::ISIG);
            let _ = tcsetattr(&stdin, SetArg::TCSANOW, &quiet);
            std::thread::spawn(move || {
                let mut b = [0u8; 64];
                while let Ok(n @ 1..) = std::io::stdin().read(&mut b) {
                    for k in &b[..n] {
                        if tx.send(*k).is_err() {
                            return;
                        }
                    }
                }
            });
        }
        (Quiet { saved }, rx)
    }
}

impl Drop for Quiet {
    fn drop(&mut self) {
        if let Some(t) = &self.saved {
            let _ = nix::sys::termios::tcsetattr(
                std::io::stdin(),
                nix::sys::termios::SetArg::TCSANOW,
                t,
            );
        }
    }
}

/// Ctrl-C, as a key once signals are off.
pub const CTRL_C: u8 = 3;
