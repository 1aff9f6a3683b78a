//! What a client can make the daemon record or hold is bounded: a 200 kB
//! user name, 10,000 env requests, window changes and refused requests on
//! one session, 200 kB forwarding host names and a 200 kB command are each
//! stored cut to their documented caps (tollgate(8), LIMITS; a 1 MiB
//! command does not fit a packet), the journal grows by a bounded amount
//! per connection, the daemon's memory stays bounded, and a person logs in
//! right after. The client is `tests/clients/hostile.py` (paramiko, raw
//! requests).
mod common;
use common::*;
use std::time::Duration;

#[test]
fn what_a_client_sends_is_recorded_within_its_caps_and_memory_stays_bounded() {
    let s = Server::start_with(
        "bounded",
        Opts {
            profile_extra: String::new(), // no exec: a command is refused and recorded
            ..Opts::default()
        },
    );
    let port = s.port.to_string();
    let rss0 = rss_kib(s.pid());
    let events_before = s.cli_json(&["events"]).as_array().unwrap().len();

    // A 200 kB user name with a wrong token.
    let r = hostile(&["bigname", "127.0.0.1", &port, "200000"]);
    assert_eq!(r["refused"], true);
    let failed = s.events_of(None, "auth.failed");
    let user = failed.last().unwrap()["detail"]["login_user"]
        .as_str()
        .unwrap();
    assert!(
        user.len() <= 256 + 20 && user.ends_with("bytes]"),
        "{}",
        user.len()
    );

    // Floods on one PTY shell.
    let (id, tok) = s.issue("ops", &[]);
    let r = hostile(&["floods", &port, "ops", &tok, "10000"]);
    assert_eq!(r["status"], 3, "{r}");
    assert_eq!(r["refused_opens"], 50, "{r}");
    // The env requests past 64 were refused: the shell has 64.
    assert!(r["output"].as_str().unwrap().contains("LC=64"), "{r}");
    let v = s.wait_state(&id, "terminated", Duration::from_secs(10));
    let history = v["history"].as_array().unwrap();
    let count = |kind: &str| history.iter().filter(|e| e["kind"] == kind).count();
    // Window changes the session's task has not taken yet are one, the
    // latest (how many it sees depends on how the threads interleave):
    // at most the cap, and the last size always applies.
    let resized: Vec<_> = history
        .iter()
        .filter(|e| e["kind"] == "session.resized")
        .collect();
    assert!(
        (1..=32).contains(&resized.len()),
        "{} resizes recorded",
        resized.len()
    );
    if resized.len() < 32 {
        let last = &resized[resized.len() - 1]["detail"];
        assert_eq!(
            (&last["cols"], &last["rows"]),
            (&129.into(), &43.into()),
            "{last}"
        );
    }
    assert_eq!(count("session.request_refused"), 32, "refusals recorded");
    let summary = history
        .iter()
        .find(|e| e["kind"] == "session.events_suppressed")
        .unwrap_or_else(|| panic!("no summary: {history:#?}"));
    let over = &summary["detail"]["suppressed"];
    assert!(over["session.request_refused"].as_u64().unwrap() >= 10000 + 50 - 32 - 1000);
    if resized.len() == 32 {
        assert!(
            over["session.resized"].as_u64().unwrap_or(0) > 0,
            "{summary}"
        );
    }
    for e in history
        .iter()
        .filter(|e| e["kind"] == "session.request_refused")
    {
        assert!(e.to_string().len() < 1024, "{e}");
    }
    let session_bytes: usize = history.iter().map(|e| e.to_string().len()).sum();
    eprintln!(
        "one flooding connection: {} events, {session_bytes} bytes as JSON",
        history.len()
    );
    assert!(session_bytes < 64 * 1024, "{session_bytes} bytes");

    // A 1 MiB command does not fit an SSH packet (256 KiB, as sshd): the
    // connection is dropped. A 200 kB one is refused (the profile allows
    // no command) and recorded cut.
    let (_, tok) = s.issue("ops", &[]);
    let r = hostile(&["bigexec", &port, "ops", &tok, "1048576"]);
    assert_eq!(r["closed"], true, "{r}");
    let (id, tok) = s.issue("ops", &[]);
    let r = hostile(&["bigexec", &port, "ops", &tok, "200000"]);
    assert_eq!(r["status"], 1, "{r}");
    let v = s.wait_state(&id, "terminated", Duration::from_secs(10));
    let refused = v["history"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "session.request_refused")
        .unwrap()
        .clone();
    let cmd = refused["detail"]["command"].as_str().unwrap();
    assert!(
        cmd.len() <= 4096 + 20 && cmd.ends_with("bytes]"),
        "{}",
        cmd.len()
    );

    // Everything a client sent after the start, all told.
    let all = s.cli_json(&["events"]);
    let added = &all.as_array().unwrap()[events_before..];
    let bytes: usize = added.iter().map(|e| e.to_string().len()).sum();
    let rss1 = rss_kib(s.pid());
    eprintln!(
        "journal: {} events, {bytes} bytes as JSON; daemon RSS {rss0} kB before, {rss1} kB after",
        added.len()
    );
    assert!(bytes < 128 * 1024, "{bytes} bytes of events");
    assert!(rss1 < rss0 + 64 * 1024, "RSS {rss0} -> {rss1} kB");
    // And a person gets in.
    let (_, tok) = s.issue("ops", &[]);
    let out = s.ssh_run("ops", &tok, &[], "");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}
