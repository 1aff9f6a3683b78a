//! The systemd notification protocol (`sd_notify(3)`), spoken directly: one
//! datagram per state change to the socket named by `NOTIFY_SOCKET` (a path,
//! or `@name` in the abstract namespace). Without that variable every call
//! does nothing, so `tollgate serve` runs the same under a shell.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// Where readiness, status and watchdog pings go.
pub struct Notifier {
    link: Option<(UnixDatagram, std::os::unix::net::SocketAddr)>,
}

impl Notifier {
    /// From `NOTIFY_SOCKET`; a socket that cannot be used is logged once
    /// and then ignored (the service manager will say what it missed).
    pub fn from_env() -> Notifier {
        let Some(name) = std::env::var_os("NOTIFY_SOCKET") else {
            return Notifier { link: None };
        };
        let link = (|| -> std::io::Result<_> {
            let bytes = std::os::unix::ffi::OsStrExt::as_bytes(name.as_os_str());
            let addr = match bytes.strip_prefix(b"@") {
                Some(abs) => {
                    use std::os::linux::net::SocketAddrExt;
                    std::os::unix::net::SocketAddr::from_abstract_name(abs)?
                }
                None => std::os::unix::net::SocketAddr::from_pathname(&name)?,
            };
            Ok((UnixDatagram::unbound()?, addr))
        })();
        match link {
            Ok(l) => Notifier { link: Some(l) },
            Err(e) => {
                tracing::error!(socket = ?name, error = %e, "NOTIFY_SOCKET unusable; not notifying systemd");
                Notifier { link: None }
            }
        }
    }

    /// Stops notifying: after a hand-over the new process is the service's
    /// main one, and this one's messages would be refused.
    pub fn disown(&mut self) {
        self.link = None;
    }

    /// Whether a service manager is listening.
    pub fn enabled(&self) -> bool {
        self.link.is_some()
    }

    /// Sends `KEY=VALUE` lines as one datagram.
    pub fn send(&self, lines: &[String]) {
        let Some((sock, addr)) = &self.link else {
            return;
        };
        let msg = lines.join("\n");
        if let Err(e) = sock.send_to_addr(msg.as_bytes(), addr) {
            tracing::warn!(error = %e, "cannot notify systemd");
        }
    }

    /// `READY=1` with the current status.
    pub fn ready(&self, status: &str) {
        self.send(&["READY=1".into(), format!("STATUS={status}")]);
    }

    /// `RELOADING=1` with the monotonic time systemd expects beside it.
    pub fn reloading(&self) {
        let usec = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
            .map(|t| t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1_000)
            .unwrap_or(0);
        self.send(&[
            "RELOADING=1".into(),
            format!("MONOTONIC_USEC={usec}"),
            "STATUS=reloading the configuration".into(),
        ]);
    }

    pub fn status(&self, status: &str) {
        self.send(&[format!("STATUS={status}")]);
    }

    pub fn watchdog(&self) {
        self.send(&["WATCHDOG=1".into()]);
    }

    pub fn stopping(&self) {
        self.send(&[
            "STOPPING=1".into(),
            "STATUS=stopping: ending live sessions".into(),
        ]);
    }
}

/// How often to ping the watchdog: half of `WATCHDOG_USEC`, when it is set
/// for this process (`WATCHDOG_PID` absent or ours).
pub fn watchdog_interval() -> Option<Duration> {
    if let Some(pid) = std::env::var_os("WATCHDOG_PID") {
        if pid.to_str() != Some(&std::process::id().to_string()) {
            return None;
        }
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}
