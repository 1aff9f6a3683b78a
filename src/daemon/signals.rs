//! The signals `tollgate serve` acts on.

/// What a signal asks of the daemon.
pub(super) enum Sig {
    Stop,
    Reload,
    /// SIGUSR2: hand over to the binary on disk.
    Upgrade,
}

pub(super) struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
    usr2: tokio::signal::unix::Signal,
    hangup: OnHangup,
}

/// What SIGHUP means: a reload for the service, the end for `tollgate dev`
/// (its terminal went away).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnHangup {
    Reload,
    Stop,
}

impl Signals {
    /// Installed before anything else, so a signal that arrives during
    /// start-up is acted on, not fatal.
    pub(super) fn install(hangup: OnHangup) -> std::io::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
            usr2: signal(SignalKind::user_defined2())?,
            hangup,
        })
    }

    pub(super) async fn next(&mut self) -> Sig {
        tokio::select! {
            _ = self.term.recv() => Sig::Stop,
            _ = self.int.recv() => Sig::Stop,
            _ = self.hup.recv() => match self.hangup {
                OnHangup::Reload => Sig::Reload,
                OnHangup::Stop => Sig::Stop,
            },
            _ = self.usr2.recv() => Sig::Upgrade,
        }
    }
}
