//! What an adversarial pass found to hold, kept as tests (issue 15): every
//! kind of malformed pre-authentication input (random bytes, absurd packet
//! lengths, a 10,000-byte version line, huge or lying KEXINIT name lists,
//! bad ECDH points) closes its connection at once, long before the grace
//! time, and never takes the daemon down; after login, a pty-req of
//! 0xFFFFFFFF columns and rows, 2,000 extra channel opens and a flood of
//! input at a command that never reads leave the daemon's memory bounded.
//! The client is `tests/clients/hostile.py`; a person logs in with the real
//! OpenSSH client after each.
mod common;
use common::*;

fn person_logs_in(s: &Server) {
    let (_, tok) = s.issue("ops", &[]);
    let out = s.ssh_run("ops", &tok, &[], "echo IN-$((6*7))");
    assert_eq!(text(&out.stdout), "IN-42\n", "{}", text(&out.stderr));
}

#[test]
fn malformed_pre_authentication_input_is_closed_at_once() {
    // The grace time is long, so a case closed within a second was refused
    // for what it sent, not timed out.
    let s = Server::start_with(
        "garbage",
        Opts {
            server_extra: "login_grace_time = \"60s\"\n".into(),
            ..Opts::default()
        },
    );
    let r = hostile(&["garbage", "127.0.0.1", &s.port.to_string()]);
    let cases = r.as_object().unwrap();
    assert!(cases.len() >= 12, "{r}");
    for (name, fate) in cases {
        let closed = fate["closed_after"].as_f64();
        println!(
            "{name}: closed after {} s, {} bytes from the server",
            closed.map_or("—".into(), |c| format!("{c:.3}")),
            fate["bytes_from_server"]
        );
        assert!(
            closed.is_some_and(|c| c < 1.0),
            "{name} was not closed within 1 s: {fate}"
        );
    }
    assert!(s.log_text().lines().all(|l| !l.contains("panicked")));
    person_logs_in(&s);
}

#[test]
fn absurd_terminal_sizes_channel_floods_and_unread_input_stay_bounded() {
    let s = Server::start("channels");
    let rss_before = rss_kib(s.pid());
    let (_, tok) = s.issue("ops", &[]);
    let (id, tok2) = s.issue("ops", &[]);
    let r = hostile(&["channels", &s.port.to_string(), "ops", &tok, &tok2]);
    println!("{r}");
    // The absurd size is refused or clamped, never a crash: the command ran.
    assert_eq!(r["pty_status"], 0, "{r}");
    assert!(r["pty_output"].as_str().unwrap().contains("done"), "{r}");
    // One token, one session: the extra opens are refused, one by one.
    assert_eq!(r["extra_opened"], 0, "{r}");
    assert_eq!(r["extra_refused"], 2000, "{r}");
    // Input to a command that never reads is held back by the window, not
    // buffered without end.
    let accepted = r["flood_accepted"].as_u64().unwrap();
    assert!(accepted < 16 << 20, "{accepted} bytes taken: {r}");
    let rss_after = rss_kib(s.pid());
    println!(
        "flood: {accepted} bytes taken; daemon RSS {rss_before} -> {rss_after} KiB; {} events",
        s.cli_json(&["events", "--session", &id])
            .as_array()
            .unwrap()
            .len()
    );
    assert!(
        rss_after < rss_before + 64 * 1024,
        "{rss_before} -> {rss_after} KiB"
    );
    person_logs_in(&s);
}
