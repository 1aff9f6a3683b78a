//! A PTY session's recording: started with its process when
//! `[recordings]` (or the profile's `record`) says so, ended after its
//! last output, and recorded in the journal (`session.recorded`, with
//! `session.recording_truncated` or `session.recording_failed` when that
//! is what happened). A recording that cannot start never stops the
//! session; it is recorded as failed.

use super::*;
use crate::config::Profile;
use crate::record::{Meta, Recorder};

impl Task {
    /// The recorder for this session's PTY, when it is to be recorded.
    pub(super) async fn start_recording(&self, profile: &Profile) -> Option<Arc<Recorder>> {
        let pty = self.pty.as_ref()?;
        let config = &self.shared.config;
        if !profile.record.unwrap_or(config.recordings.enabled) {
            return None;
        }
        let dir = config.recordings.dir(&config.server.journal);
        let meta = Meta {
            session: self.auth.id().to_string(),
            profile: self.auth.profile().to_string(),
            login_user: self.auth.login_user.clone(),
            term: pty.term.clone(),
            cols: pty.cols,
            rows: pty.rows,
        };
        match Recorder::start(&dir, config.recordings.max_bytes, &meta) {
            Ok(r) => Some(Arc::new(r)),
            Err(e) => {
                tracing::error!(session = %self.auth.id(), dir = %dir.display(), error = %e, "could not start the session's recording");
                self.event(
                    EventKind::SessionRecordingFailed,
                    json!({"dir": dir.display().to_string(), "error": e.to_string()}),
                )
                .await;
                None
            }
        }
    }

    /// Ends the recording (after the last output went through it) in a
    /// task of its own: compressing a large one never holds up the end
    /// of the session or its exit status.
    pub(super) fn finish_recording(&mut self) {
        if let Some(r) = self.recorder.take() {
            tokio::spawn(finish(self.shared.clone(), self.auth.id().to_string(), r));
        }
    }
}

/// Finishes `r` and records what was stored.
async fn finish(shared: Arc<Shared>, id: String, r: Arc<Recorder>) {
    let Some(summary) = r.finish().await else {
        return;
    };
    let mut events = Vec::new();
    if summary.truncated {
        events.push((
            EventKind::SessionRecordingTruncated,
            json!({"max_bytes": shared.config.recordings.max_bytes}),
        ));
    }
    if let Some(e) = &summary.error {
        tracing::error!(session = %id, error = %e, "the session's recording is incomplete");
        events.push((
            EventKind::SessionRecordingFailed,
            json!({"path": summary.path.display().to_string(), "error": e}),
        ));
    }
    events.push((
        EventKind::SessionRecorded,
        json!({
            "path": summary.path.display().to_string(),
            "bytes": summary.bytes,
            "stored_bytes": summary.stored_bytes,
            "sha256": summary.sha256,
            "truncated": summary.truncated,
        }),
    ));
    for (kind, detail) in events {
        let (sid, at, kept) = (id.clone(), crate::journal::now_ms(), detail.clone());
        if let Err(e) = shared
            .db
            .call(move |j| j.event_at(at, Some(&sid), kind, detail))
            .await
        {
            tracing::warn!(session = %id, kind = kind.as_str(), error = %e, "could not record event in the journal; kept to write later");
            shared.db.event_later(at, Some(&id), kind, kept);
        }
    }
}
