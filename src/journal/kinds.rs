//! The journal's vocabulary as types: session states, kinds, end reasons
//! and event kinds, each written to the journal (and shown by the CLI and
//! the drains) as the same strings as always.

/// An enum whose variants are written as fixed strings.
macro_rules! named {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident = $s:literal,)* }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($(#[$vm])* $v,)* }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$v,)*];

            /// As written in the journal.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$v => $s,)* }
            }

            /// The variant written as `s`, if any.
            pub fn parse(s: &str) -> Option<$name> {
                match s { $($s => Some($name::$v),)* _ => None }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl schemars::JsonSchema for $name {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }
            fn inline_schema() -> bool {
                true
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({"type": "string", "enum": [$($s,)*]})
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
    };
}

named! {
    /// Where a session is in its life.
    SessionState {
        Pending = "pending",
        Active = "active",
        Canceling = "canceling",
        Terminated = "terminated",
        Expired = "expired",
    }
}

named! {
    /// What a session's token grants.
    SessionKind {
        Ephemeral = "ephemeral",
        Tunnel = "tunnel",
    }
}

named! {
    /// Why a session ended.
    EndReason {
        Exited = "exited",
        Disconnected = "disconnected",
        Canceled = "canceled",
        MaxDuration = "max_duration",
        IdleTimeout = "idle_timeout",
        DaemonStopped = "daemon_stopped",
        /// Still running when the process serving it, handed over to a new
        /// binary, reached `server.handover_deadline`.
        DaemonUpgraded = "daemon_upgraded",
        Error = "error",
        /// A token nobody redeemed before its time ran out.
        Expired = "expired",
        /// The node holding it stopped beating its heart (a shared
        /// journal): another node ended it.
        NodeLost = "node_lost",
    }
}

impl EndReason {
    /// What the person is told before the connection closes.
    pub fn message(self) -> Option<&'static str> {
        match self {
            EndReason::Canceled => Some("session canceled by an administrator"),
            EndReason::MaxDuration => Some("session reached its maximum duration"),
            EndReason::IdleTimeout => Some("session ended after being idle too long"),
            EndReason::DaemonStopped => Some("the bastion is shutting down"),
            EndReason::DaemonUpgraded => Some(
                "the bastion was upgraded and this session outlasted the time the old version keeps serving; log in again with a new token",
            ),
            _ => None,
        }
    }
}

named! {
    /// What an event records.
    EventKind {
        AuthFailed = "auth.failed",
        SessionIssued = "session.issued",
        SessionRedeemed = "session.redeemed",
        SessionStarted = "session.started",
        SessionResized = "session.resized",
        SessionSignal = "session.signal",
        SessionRequestRefused = "session.request_refused",
        SessionEventsSuppressed = "session.events_suppressed",
        SessionExited = "session.exited",
        SessionError = "session.error",
        SessionCancelRequested = "session.cancel_requested",
        SessionCanceled = "session.canceled",
        SessionExpired = "session.expired",
        SessionTerminated = "session.terminated",
        /// A session's recording was stored: its file, size and SHA-256.
        SessionRecorded = "session.recorded",
        /// A recording reached `recordings.max_bytes` and was cut there.
        SessionRecordingTruncated = "session.recording_truncated",
        /// A recording could not be started or written.
        SessionRecordingFailed = "session.recording_failed",
        /// Recordings past `recordings.retention` were removed.
        RecordingsRemoved = "recordings.removed",
        TunnelOpened = "tunnel.opened",
        TunnelRefused = "tunnel.refused",
        TunnelConnectFailed = "tunnel.connect_failed",
        TunnelClosed = "tunnel.closed",
        CollectCreated = "collect.created",
        CollectUpdated = "collect.updated",
        CollectDeleted = "collect.deleted",
        CollectStatusChanged = "collect.status_changed",
        CollectNewConnection = "collect.new_connection",
        CollectKeyCollected = "collect.key_collected",
        CollectKeysNotKept = "collect.keys_not_kept",
        CollectWebhookDelivered = "collect.webhook_delivered",
        CollectWebhookFailed = "collect.webhook_failed",
        DrainConnected = "drain.connected",
        DrainError = "drain.error",
        DrainDropped = "drain.dropped",
        DaemonReloaded = "daemon.reloaded",
        DaemonReloadFailed = "daemon.reload_failed",
        /// A daemon process started (its pid and version; after a
        /// hand-over, the process it took over from).
        DaemonStarted = "daemon.started",
        /// A daemon process handed its listeners to a new binary and
        /// serves only its live sessions from now on.
        DaemonHandedOver = "daemon.handed_over",
        /// A hand-over to a new binary did not happen: the old process
        /// goes on serving.
        DaemonHandoverFailed = "daemon.handover_failed",
        SourcePenalized = "source.penalized",
        /// A node sharing the journal stopped beating its heart.
        NodeLost = "node.lost",
        /// An API token was created or revoked (`tollgate api-token`).
        ApiTokenCreated = "api_token.created",
        ApiTokenRevoked = "api_token.revoked",
        /// An HTTP API call that changed something, naming its token.
        ApiRequest = "api.request",
        /// Events the journal refused while out of reach, past what the
        /// daemon keeps for later: only their number.
        JournalEventsDropped = "journal.events_dropped",
        /// Only written by the daemon's self-test of group commit.
        TestWrite = "test.write",
    }
}

impl EventKind {
    /// Whether the event reports something going wrong: drains send it at
    /// severity warning, the rest at notice.
    pub fn is_trouble(self) -> bool {
        use EventKind::*;
        matches!(
            self,
            AuthFailed
                | SessionRequestRefused
                | SessionError
                | SessionRecordingFailed
                | TunnelRefused
                | TunnelConnectFailed
                | CollectWebhookFailed
                | DrainError
                | DrainDropped
                | DaemonReloadFailed
                | DaemonHandoverFailed
                | NodeLost
                | JournalEventsDropped
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_round_trips_and_is_unique() {
        let mut seen = std::collections::HashSet::new();
        for k in EventKind::ALL {
            assert_eq!(EventKind::parse(k.as_str()), Some(*k));
            assert!(seen.insert(k.as_str()), "{k} twice");
        }
        for s in SessionState::ALL {
            assert_eq!(SessionState::parse(s.as_str()), Some(*s));
        }
        for r in EndReason::ALL {
            assert_eq!(EndReason::parse(r.as_str()), Some(*r));
        }
        assert_eq!(EventKind::parse("session.nonsense"), None);
    }

    #[test]
    fn trouble_is_what_the_names_used_to_say() {
        // The rule drains applied to names before kinds were typed.
        for k in EventKind::ALL {
            let s = k.as_str();
            let by_name = ["failed", "error", "dropped", "refused", "lost"]
                .iter()
                .any(|w| s.contains(w));
            assert_eq!(k.is_trouble(), by_name, "{s}");
        }
    }
}
