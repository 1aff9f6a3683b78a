//! The shipped fail2ban filter (etc/fail2ban/filter.d/tollgate.conf),
//! checked with Debian's `fail2ban-regex` against the log of a scripted
//! run: every failed token, refused connection and grace timeout is
//! matched, with the right address, and nothing a successful login logs.
mod common;
use common::*;
use std::process::Command;
use std::time::Duration;

fn fail2ban_regex(log: &std::path::Path, extra: &[&str]) -> String {
    let filter = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/etc/fail2ban/filter.d/tollgate.conf"
    );
    let out = Command::new("fail2ban-regex")
        .args(extra)
        .arg(log)
        .arg(filter)
        .output()
        .expect("fail2ban-regex (scripts/test.sh installs fail2ban)");
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
}

#[test]
fn the_shipped_filter_matches_every_failure_and_refusal_and_no_login() {
    let mut s = Server::start_with(
        "fail2ban",
        Opts {
            server_extra: "login_grace_time = \"2s\"\n".into(),
            ..Opts::default()
        },
    );
    let port = s.port.to_string();
    let hostile = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/hostile.py");
    // Logins that work, and wrong tokens, from 127.0.0.1.
    for _ in 0..2 {
        let (_, tok) = s.issue("ops", &[]);
        let out = s.ssh_run("ops", &tok, &[], "true");
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    }
    for _ in 0..3 {
        let out = s.ssh_run("ops", "tg_wrong", &[], "true");
        assert_eq!(out.status.code(), Some(255));
    }
    // Connections cut at the grace time, from 127.0.0.2; a token-guessing
    // source, 127.0.0.3, penalized and then refused at accept.
    for args in [
        vec!["idle", "127.0.0.2", &port, "3", "5"],
        vec!["tokens", "127.0.0.3", &port, "ops", "80", "8"],
    ] {
        let out = Command::new("/usr/bin/python3")
            .arg(hostile)
            .args(&args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    std::thread::sleep(Duration::from_millis(300));
    s.stop();
    let log_path = s.dir.path().join("serve.log");
    let log = s.log_text();
    let is_bad = |l: &str| {
        l.contains("Failed token for ")
            || (l.contains("Connection from ") && l.contains(" refused: "))
            || l.contains("Timeout before authentication for ")
    };
    let bad: Vec<&str> = log.lines().filter(|l| is_bad(l)).collect();
    for (what, n) in [
        ("Failed token for ops from 127.0.0.1", 3),
        ("Timeout before authentication for 127.0.0.2", 3),
        ("Connection from 127.0.0.3 port", 1),
        ("Failed token for ops from 127.0.0.3", 1),
    ] {
        let seen = bad.iter().filter(|l| l.contains(what)).count();
        assert!(seen >= n, "{seen} lines with {what:?}:\n{log}");
    }
    assert!(log.contains("session started"), "{log}");

    let summary = fail2ban_regex(&log_path, &[]);
    let counts = summary
        .lines()
        .find(|l| l.starts_with("Lines: "))
        .unwrap_or_else(|| panic!("{summary}"));
    let matched: usize = counts
        .split(", ")
        .find_map(|p| p.strip_suffix(" matched"))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(matched, bad.len(), "{counts}\n{summary}");
    // Matched lines are exactly the bad ones, with their own address.
    let detail = fail2ban_regex(&log_path, &["--print-all-matched"]);
    let listed: Vec<&str> = detail
        .lines()
        .skip_while(|l| !l.starts_with("|- Matched line(s):"))
        .skip(1)
        .take_while(|l| !l.starts_with('`'))
        .collect();
    assert_eq!(listed.len(), bad.len(), "{detail}");
    for l in listed {
        assert!(is_bad(l), "a good line matched: {l}");
    }
    let hosts = fail2ban_regex(&log_path, &["--out", "ip"]);
    let mut ips: Vec<&str> = hosts.lines().map(str::trim).collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips, ["127.0.0.1", "127.0.0.2", "127.0.0.3"], "{hosts}");
}
