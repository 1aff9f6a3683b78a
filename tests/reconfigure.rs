//! Reload (SIGHUP) with a live PTY session at a real terminal: the session
//! keeps working throughout; a new profile, banner and listen address are in
//! force for the next connection at once, a removed address stops accepting;
//! a broken config is logged with its position and the old one stays; the
//! worker threads the config set are the runtime's, and a changed count is
//! said to wait for the next start.
mod common;
use common::*;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::net::TcpStream;
use std::time::Duration;

fn reload_and_wait(s: &Server, kind: &str) -> serde_json::Value {
    let before = s.events_of(None, kind).len();
    kill(Pid::from_raw(s.pid()), Signal::SIGHUP).unwrap();
    let mut got = None;
    let ok = eventually(Duration::from_secs(10), || {
        let all = s.events_of(None, kind);
        got = all.get(before).cloned();
        got.is_some()
    });
    assert!(ok.is_some(), "no {kind}:\n{}", s.log_text());
    got.unwrap()
}

#[test]
fn reload_keeps_live_sessions_and_applies_new_config_to_new_connections() {
    let mut s = Server::start_with(
        "reconfigure",
        Opts {
            server_extra: "workers = 2\n".into(),
            ..Opts::default()
        },
    );
    // The runtime's own count, logged at start.
    assert!(
        s.log_text()
            .contains("threads serving connections workers=2"),
        "{}",
        s.log_text()
    );
    let old_port = s.port;
    let (id, tok) = s.issue("ops", &[]);
    let t = Tmux::start(&s.dir.path().join("live.sh"), &s.ssh("ops", &tok), 80, 24);
    let prompt = eventually(Duration::from_secs(10), || {
        t.screen().lines().any(|l| l.trim_end() == "$")
    });
    assert!(prompt.is_some(), "no prompt:\n{}", t.screen());

    // A new profile, a banner, and the listener moved to another port.
    let new_port = free_port();
    let original = std::fs::read_to_string(&s.config).unwrap();
    let moved = original
        .replace(
            &format!("listen = [\"127.0.0.1:{old_port}\"]"),
            &format!("listen = [\"127.0.0.1:{new_port}\"]\nbanner = \"reloaded banner\""),
        )
        .replace("workers = 2", "workers = 3")
        + &format!(
            "\n[profiles.second]\nuser = \"{}\"\ncommand = \"/bin/echo second-profile\"\n",
            session_user()
        );
    std::fs::write(&s.config, &moved).unwrap();
    let ev = reload_and_wait(&s, "daemon.reloaded");
    assert!(
        ev["detail"]["profiles"]
            .as_array()
            .unwrap()
            .contains(&"second".into()),
        "{ev:#}"
    );
    s.port = new_port;
    assert!(
        s.log_text()
            .contains("a changed server.workers applies at the next start, not on reload"),
        "{}",
        s.log_text()
    );
    assert!(
        TcpStream::connect(("127.0.0.1", old_port)).is_err(),
        "old address still accepts"
    );

    // The new profile and banner, at once, on the new address.
    let (_, second) = s.issue_profile("second", "ops", &[]);
    let out = s
        .ssh_opts("ops", &second, &["-o", "LogLevel=INFO"])
        .output()
        .unwrap();
    assert_eq!(
        text(&out.stdout).trim_end(),
        "second-profile",
        "{}",
        text(&out.stderr)
    );
    assert!(
        text(&out.stderr).contains("reloaded banner"),
        "{}",
        text(&out.stderr)
    );

    // The live session, accepted on the removed address, is untouched.
    t.keys(&["echo still-$((1+1))", "Enter"]);
    t.wait_for("still-2");

    // A broken config: logged with FILE:LINE:COL, recorded, the old one stays.
    let (_, later) = s.issue_profile("second", "ops", &[]);
    // The admin CLI reads the config too: from here on it uses a good copy.
    let file = s.config.display().to_string();
    let good = s.dir.path().join("cli.toml");
    std::fs::write(&good, &moved).unwrap();
    let broken = moved.replace("kill_grace = \"2s\"", "kill_grace = \"soon\"");
    assert_ne!(broken, moved);
    std::fs::write(&s.config, broken).unwrap();
    s.config = good;
    let ev = reload_and_wait(&s, "daemon.reload_failed");
    let err = ev["detail"]["error"].as_str().unwrap();
    assert!(
        err.starts_with(&format!("{file}:")) && err.contains("kill_grace"),
        "{err}"
    );
    assert!(
        s.log_text().contains(&format!("reload failed: {file}:")),
        "{}",
        s.log_text()
    );
    let out = s.ssh_run("ops", &later, &[], "");
    assert_eq!(
        text(&out.stdout).trim_end(),
        "second-profile",
        "{}",
        text(&out.stderr)
    );
    assert!(TcpStream::connect(("127.0.0.1", old_port)).is_err());

    t.keys(&["echo alive-$((2+2))", "Enter"]);
    t.wait_for("alive-4");
    t.keys(&["exit 3", "Enter"]);
    let v = s.wait_state(&id, "terminated", Duration::from_secs(10));
    assert_eq!(v["end_reason"], "exited");
    assert_eq!(v["exit_status"], 3);
}
