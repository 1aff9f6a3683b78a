//! Dropbear's client `dbclient` (Debian's dropbear-bin) against the default
//! config, as its manual says to use it: the token from `DROPBEAR_PASSWORD`
//! for a command (it answers keyboard-interactive prompts with it too), a
//! person typing it at a real terminal for a shell, `-L`, and `-i KEY` (in
//! Dropbear's key format) for a collect session. Dropbear has no AES-GCM:
//! before the default offered chacha20-poly1305 and AES-CTR it could not
//! connect at all.
mod common;
use common::clients::*;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A HOME whose known_hosts has the server's key the way Dropbear looks it
/// up (the bare host name, whatever the port).
fn dropbear_home(s: &Server, tag: &str) -> ClientHome {
    let h = ClientHome::new(s, tag);
    std::fs::write(
        h.ssh_dir().join("known_hosts"),
        format!("127.0.0.1 {}\n", host_public_key(s)),
    )
    .unwrap();
    h
}

/// `dbclient -p PORT ARGS… USER@127.0.0.1`, token (if any) in the
/// environment, never argv.
fn dbclient(
    s: &Server,
    home: &ClientHome,
    token: Option<&str>,
    args: &[&str],
    user: &str,
) -> Command {
    let mut c = Command::new("dbclient");
    c.args(["-p", &s.port.to_string()])
        .args(args)
        .arg(format!("{user}@127.0.0.1"))
        .env("HOME", home.path())
        .env_remove("SSH_AUTH_SOCK")
        .env_remove("DROPBEAR_PASSWORD")
        .stdin(Stdio::null());
    if let Some(t) = token {
        c.env("DROPBEAR_PASSWORD", t);
    }
    c
}

#[test]
fn exec_terminal_tunnel_and_refusals() {
    let (s, echo) = server_with_echo("dropbear");
    let home = dropbear_home(&s, "dropbear-home");
    exec_scenario("dbclient", &s, |tok| {
        dbclient(&s, &home, Some(tok), &[], "ops")
            .arg(EXEC)
            .output()
            .unwrap()
    });

    let (id, tok) = s.issue("ops", &[]);
    let t = Tmux::start(
        &s.dir.path().join("dbclient-terminal.sh"),
        &reporting_exit(&dbclient(&s, &home, None, &["-t"], "ops")),
        80,
        24,
    );
    type_token(&t, &tok);
    terminal_scenario("dbclient", &s, &id, &t);

    let (id, tok) = issue_echo_tunnel(&s);
    let lp = free_port();
    let fwd = format!("127.0.0.1:{lp}:echo:{}", echo.port);
    let mut child = dbclient(&s, &home, Some(&tok), &["-N", "-L", &fwd], "ops")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    check_forward("dbclient -L", &s, &id, lp, 200_000);
    child.kill().unwrap();
    child.wait().unwrap();

    refusal_scenario("dbclient", &s, |tok| {
        dbclient(&s, &home, Some(tok), &[], "ops")
            .arg(GOT_IN)
            .output()
            .unwrap()
    });
}

#[test]
fn collect_records_the_key_dbclient_proves() {
    let s = Server::start("dropbear-collect");
    let home = dropbear_home(&s, "dropbear-collect-home");
    let key = keygen(home.path(), "id", &["-t", "ed25519"]);
    let db_key = dropbear_key(&key);
    create_collect(&s, "dbclient-keys");
    let out = dbclient(
        &s,
        &home,
        None,
        &["-T", "-i", db_key.to_str().unwrap()],
        "dbclient-keys",
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("1 public key recorded for dbclient-keys"),
        "{}",
        text(&out.stdout)
    );
    check_collected("dbclient -i", &s, "dbclient-keys", &key);
}

/// The key in Dropbear's own format, as dropbearconvert writes it.
fn dropbear_key(key: &Path) -> PathBuf {
    let out = key.with_extension("dropbear");
    let r = Command::new("dropbearconvert")
        .args(["openssh", "dropbear"])
        .arg(key)
        .arg(&out)
        .output()
        .expect("dropbearconvert (dropbear-bin; scripts/test.sh installs it)");
    assert!(r.status.success(), "{}", text(&r.stderr));
    out
}
