//! How a session ends: the last output drained, everything it started
//! stopped (SIGHUP/SIGTERM, SIGKILL after the grace), the person told why,
//! and the end recorded in the journal until it takes it.

use super::*;

impl Task {
    pub(super) async fn teardown(mut self, outcome: Outcome) {
        // Nothing more will be read: never hold the client back again.
        self.gate.close();
        let grace = self.shared.config.sessions.kill_grace;
        let (reason, status) = match outcome {
            Outcome::Exited(status) => {
                if let Some(r) = &mut self.running {
                    // Let the last output drain, then clear out anything the
                    // command left running in the background. When every
                    // output stream has reached EOF (nothing holds the
                    // session's terminal or pipes) and its process group is
                    // empty, there is nothing to look for in /proc.
                    wait_pumps(&mut r.pumps, Duration::from_millis(300)).await;
                    if !r.pumps.is_empty() || r.tree.maybe_alive() {
                        stop_tree(&r.tree, grace).await;
                    }
                }
                (EndReason::Exited, Some(status))
            }
            Outcome::Ended(reason) => {
                if reason != EndReason::Disconnected {
                    if let Some(m) = reason.message() {
                        self.say(m).await;
                    }
                }
                let status = match &mut self.running {
                    Some(r) => {
                        let st = kill_and_wait(r, grace).await;
                        stop_tree(&r.tree, grace).await;
                        st
                    }
                    None => None,
                };
                (reason, status)
            }
        };
        if let Some(mut r) = self.running.take() {
            wait_pumps(&mut r.pumps, Duration::from_millis(500)).await;
            for p in &r.pumps {
                p.abort();
            }
            r.tree.release().await;
        }
        // After the last output went through it.
        self.finish_recording();
        if let (Some(ch), true) = (self.channel, reason != EndReason::Disconnected) {
            let handle = &self.handle;
            use std::os::unix::process::ExitStatusExt;
            let exit = match status.map(|st| (st.code(), st.signal(), st.core_dumped())) {
                Some((Some(code), _, _)) => ChannelMsg::ExitStatus {
                    exit_status: code as u32,
                },
                // Named as russh would name it: the same bytes on the wire.
                Some((None, Some(sig), core)) => ChannelMsg::ExitSignal {
                    signal_name: Sig::Custom(exec::signal_name(sig)),
                    core_dumped: core,
                    error_message: String::new(),
                    lang_tag: String::new(),
                },
                // No process ran (refused, or ended before it started).
                _ => ChannelMsg::ExitStatus { exit_status: 1 },
            };
            // A client that stopped reading must not hold up the teardown.
            let _ = bounded(end_channel(handle, ch, exit)).await;
        }
        let forwards = match self.tunnel.as_mut() {
            Some(t) => {
                t.close_all().await;
                t.count()
            }
            None => 0,
        };
        self.record_suppressed().await;
        let ending = {
            use std::os::unix::process::ExitStatusExt;
            Ending {
                forwards,
                reason,
                exit_status: status.and_then(|s| s.code()).map(i64::from),
                exit_signal: status.and_then(|s| s.signal()).map(exec::signal_name),
                bytes_in: self.activity.bytes_in.load(Ordering::Relaxed),
                bytes_out: self.activity.bytes_out.load(Ordering::Relaxed),
            }
        };
        if let Some(active) = self.active.take() {
            active.ended(reason.as_str());
        }
        self.record_end(&ending).await;
        tracing::info!(
            session = %self.auth.id(),
            reason = reason.as_str(),
            exit_status = ending.exit_status,
            exit_signal = ending.exit_signal.as_deref(),
            "session ended"
        );
        if !matches!(reason, EndReason::Exited | EndReason::Disconnected) {
            // The channel is closed; make sure the connection goes too.
            let handle = self.handle.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                let _ = handle
                    .disconnect(
                        Disconnect::ByApplication,
                        "session ended".into(),
                        String::new(),
                    )
                    .await;
            });
        }
    }
}

/// Sends the channel's `exit` (status or signal), EOF and close as one
/// message: they go out in one write.
pub(super) async fn end_channel(handle: &Handle, ch: ChannelId, exit: ChannelMsg) {
    let _ = handle
        .channel_msgs(ch, vec![exit, ChannelMsg::Eof, ChannelMsg::Close])
        .await;
}

/// Runs a write to the client for at most two seconds.
pub(super) async fn bounded<F: std::future::Future>(f: F) -> Option<F::Output> {
    tokio::time::timeout(Duration::from_secs(2), f).await.ok()
}

pub(super) async fn wait_child(running: &mut Option<Running>) -> std::process::ExitStatus {
    match running {
        Some(r) => match r.exit.wait().await {
            Ok(s) => s,
            Err(_) => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

async fn kill_and_wait(r: &mut Running, grace: Duration) -> Option<std::process::ExitStatus> {
    r.tree
        .signal(&[Signal::SIGHUP, Signal::SIGCONT, Signal::SIGTERM]);
    match tokio::time::timeout(grace, r.exit.wait()).await {
        Ok(Ok(s)) => Some(s),
        _ => {
            r.tree.signal(&[Signal::SIGKILL]);
            r.exit.wait().await.ok()
        }
    }
}

/// After the leader is gone: anything still in its session gets the same
/// treatment, so nothing outlives the session.
async fn stop_tree(tree: &exec::Tree, grace: Duration) {
    if !tree.alive() {
        return;
    }
    tree.signal(&[Signal::SIGHUP, Signal::SIGCONT, Signal::SIGTERM]);
    let until = Instant::now() + grace;
    while Instant::now() < until {
        if !tree.alive() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tree.signal(&[Signal::SIGKILL]);
}
