//! What the daemon writes to its log when stderr is a file, as under a
//! service manager that is not journald or with `2>file`: plain text (no
//! colour escapes), exit statuses as numbers, and a client that could not
//! agree on an algorithm explained at info with what it is and offered.
mod common;
use common::*;
use std::time::Duration;

#[test]
fn log_lines_are_plain_and_say_why_a_client_could_not_connect() {
    let mut s = Server::start("logs");
    let (id, tok) = s.issue("ops", &[]);
    let out = s.ssh_run("ops", &tok, &[], "exit 3");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    s.wait_state(&id, "terminated", Duration::from_secs(10));

    // A client offering only a cipher tollgate does not have.
    let (_, tok) = s.issue("ops", &[]);
    let out = s.ssh_run("ops", &tok, &["-c", "aes256-cbc"], "true");
    assert_eq!(out.status.code(), Some(255));
    let explained = eventually(Duration::from_secs(5), || {
        s.log_text().contains("key exchange failed")
    });
    assert!(explained.is_some(), "{}", s.log_text());
    s.stop();

    let log = s.log_text();
    assert!(!log.contains('\x1b'), "colour escapes in a file:\n{log}");
    let ended = log
        .lines()
        .find(|l| l.contains("session ended") && l.contains(&id))
        .unwrap_or_else(|| panic!("no end line for {id}:\n{log}"));
    assert!(
        ended.contains("exit_status=3") && !ended.contains("Some("),
        "{ended}"
    );
    let kex = log
        .lines()
        .find(|l| l.contains("key exchange failed"))
        .unwrap();
    for want in [
        " INFO ",
        "no cipher in common with the client",
        "client=\"SSH-2.0-OpenSSH_",
        "theirs=aes256-cbc",
        "ours=chacha20-poly1305@openssh.com,aes128-ctr",
    ] {
        assert!(kex.contains(want), "{want:?} not in {kex}");
    }
}
