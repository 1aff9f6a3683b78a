//! paramiko (Debian's python3-paramiko, run by Debian's python3) against the
//! default config, as its documentation says to use it: `SSHClient.connect`
//! with a password while a key sits in `~/.ssh` (paramiko tries it first,
//! and asks for the userauth service again before the password: the
//! vendored russh patch), a PTY shell, a direct-tcpip channel, a collect
//! session (paramiko skips the `none` probe), and channel requests sent
//! back to back at the packet level. The driver is
//! `tests/clients/paramiko_client.py`.
mod common;
use common::clients::*;
use common::*;
use serde_json::Value;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// Debian's own interpreter, which has python3-paramiko.
const PYTHON: &str = "/usr/bin/python3";

fn paramiko(home: &ClientHome, args: &[&str]) -> Output {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/clients/paramiko_client.py"
    );
    let out = Command::new(PYTHON)
        .arg(script)
        .args(args)
        .env("HOME", home.path())
        .env("TG_AUTH_TRACE", home.path().join("auth-trace"))
        .env_remove("SSH_AUTH_SOCK")
        .stdin(Stdio::null())
        .output()
        .expect("python3 with paramiko (scripts/test.sh installs python3-paramiko)");
    assert!(
        !text(&out.stderr).contains("Traceback"),
        "paramiko driver {args:?} failed: {}",
        text(&out.stderr)
    );
    out
}

/// A HOME whose `~/.ssh/id_ed25519` the server will refuse.
fn home_with_a_key(s: &Server, tag: &str) -> ClientHome {
    let home = ClientHome::new(s, tag);
    keygen(&home.ssh_dir(), "id_ed25519", &["-t", "ed25519"]);
    home
}

#[test]
fn exec_shell_forward_and_refusals() {
    let (s, echo) = server_with_echo("paramiko");
    let home = home_with_a_key(&s, "paramiko-home");
    let port = s.port.to_string();
    exec_scenario("paramiko", &s, |tok| {
        paramiko(&home, &["exec", &port, "ops", tok, EXEC])
    });
    // The key was offered first and refused; the password then went
    // through on the same connection, without waiting for any timeout.
    let trace = std::fs::read_to_string(home.path().join("auth-trace")).unwrap();
    assert_eq!(
        trace,
        "Authentication type (publickey) not permitted.\nAuthentication (password) successful!\n"
    );

    let (id, tok) = s.issue("ops", &[]);
    let out = paramiko(&home, &["shell", &port, "ops", &tok]);
    check_scripted_shell("paramiko", &s, &id, &out);

    let (id, tok) = issue_echo_tunnel(&s);
    let echo_port = echo.port.to_string();
    let args = ["forward", &port, "ops", &tok, "echo", &echo_port, "200000"];
    check_scripted_forward("paramiko", &s, &id, &paramiko(&home, &args), 200_000);

    refusal_scenario("paramiko", &s, |tok| {
        paramiko(&home, &["exec", &port, "ops", tok, GOT_IN])
    });
}

#[test]
fn collect_records_the_key_paramiko_proves_without_a_none_probe() {
    let s = Server::start("paramiko-collect");
    let home = ClientHome::new(&s, "paramiko-collect-home");
    let key = keygen(home.path(), "id", &["-t", "ed25519"]);
    create_collect(&s, "paramiko-keys");
    let out = paramiko(
        &home,
        &[
            "collect",
            &s.port.to_string(),
            "paramiko-keys",
            key.to_str().unwrap(),
        ],
    );
    // paramiko has no keyboard-interactive handler here: it is refused
    // once its key is proved, and the key is recorded all the same.
    assert!(
        text(&out.stdout).starts_with("refused"),
        "{}",
        text(&out.stdout)
    );
    check_collected("paramiko", &s, "paramiko-keys", &key);
}

#[test]
fn pipelined_channel_requests_each_get_their_reply_in_order() {
    let s = Server::start("paramiko-pipelined");
    let home = ClientHome::new(&s, "paramiko-pipelined-home");
    let (id, tok) = s.issue("ops", &[]);
    let out = paramiko(&home, &["pipelined", &s.port.to_string(), "ops", &tok]);
    let r: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {} {}", text(&out.stdout), text(&out.stderr)));
    // pty-req, env LANG, env LD_PRELOAD (refused), simple@putty (no reply
    // wanted), winadj@putty, shell, exec after the shell (refused), pty-req
    // after the shell (refused).
    assert_eq!(
        r["replies"],
        serde_json::json!([
            "success", "success", "failure", "failure", "success", "failure", "failure"
        ]),
        "{r}"
    );
    assert_eq!(r["shell_status"], 5, "{r}");
    let v = s.wait_state(&id, "terminated", Duration::from_secs(10));
    let started = &s.events_of(Some(&id), "session.started")[0];
    assert_eq!(started["detail"]["pty"], true, "{started}");
    assert_eq!(started["detail"]["request"], "shell", "{started}");
    assert_eq!(v["exit_status"], 5);
}
