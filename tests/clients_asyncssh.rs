//! asyncssh (from PyPI, in a virtualenv `scripts/test.sh` makes under
//! `target/`) against the default config, as its documentation says to use
//! it: `connect(password=…)` and `run`, a PTY process, `open_connection`
//! (direct-tcpip), and a collect session with its defaults, which offer the
//! keys in `~/.ssh` and never do keyboard-interactive without a password.
//! The driver is `tests/clients/asyncssh_client.py`.
mod common;
use common::clients::*;
use common::*;
use serde_json::Value;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// The virtualenv's interpreter (`TOLLGATE_TEST_ASYNCSSH_PYTHON` overrides).
fn python() -> String {
    std::env::var("TOLLGATE_TEST_ASYNCSSH_PYTHON").unwrap_or_else(|_| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/target/asyncssh-venv/bin/python"
        )
        .into()
    })
}

fn asyncssh(home: &ClientHome, args: &[&str]) -> Output {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/clients/asyncssh_client.py"
    );
    let py = python();
    let out = Command::new(&py)
        .arg(script)
        .args(args)
        .env("HOME", home.path())
        .env_remove("SSH_AUTH_SOCK")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{py}: {e} (scripts/test.sh installs asyncssh there)"));
    assert!(
        !text(&out.stderr).contains("Traceback"),
        "asyncssh driver {args:?} failed: {}",
        text(&out.stderr)
    );
    out
}

#[test]
fn exec_shell_forward_and_refusals() {
    let (s, echo) = server_with_echo("asyncssh");
    let home = ClientHome::new(&s, "asyncssh-home");
    let port = s.port.to_string();
    exec_scenario("asyncssh", &s, |tok| {
        asyncssh(&home, &["exec", &port, "ops", tok, EXEC])
    });

    let (id, tok) = s.issue("ops", &[]);
    let out = asyncssh(&home, &["shell", &port, "ops", &tok]);
    let o = text(&out.stdout);
    assert_eq!(out.status.code(), Some(7), "{o}\n{}", text(&out.stderr));
    for want in ["S24x80", "S30x100", "C130"] {
        assert!(o.contains(want), "{want} not in {o}");
    }
    assert!(!o.contains("A2"), "sleep not interrupted: {o}");
    let v = s.wait_state(&id, "terminated", Duration::from_secs(10));
    assert_eq!(v["exit_status"], 7);
    assert!(v["history"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["kind"] == "session.resized" && e["detail"]["cols"] == 100));

    let (id, tok) = issue_echo_tunnel(&s);
    let out = asyncssh(
        &home,
        &[
            "forward",
            &port,
            "ops",
            &tok,
            "echo",
            &echo.port.to_string(),
            "200000",
        ],
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["same"], true, "{r}");
    let closed = eventually(Duration::from_secs(10), || {
        s.events_of(Some(&id), "tunnel.closed")
            .iter()
            .any(|e| e["detail"]["bytes_from_client"] == 200_000)
    });
    assert!(
        closed.is_some(),
        "{:#?}",
        s.events_of(Some(&id), "tunnel.closed")
    );

    refusal_scenario("asyncssh", &s, |tok| {
        asyncssh(&home, &["exec", &port, "ops", tok, GOT_IN])
    });
}

#[test]
fn collect_records_the_key_asyncssh_proves_with_its_defaults() {
    let s = Server::start("asyncssh-collect");
    let home = ClientHome::new(&s, "asyncssh-collect-home");
    let key = keygen(&home.ssh_dir(), "id_ed25519", &["-t", "ed25519"]);
    create_collect(&s, "asyncssh-keys");
    let out = asyncssh(&home, &["collect", &s.port.to_string(), "asyncssh-keys"]);
    assert!(
        text(&out.stdout).starts_with("refused"),
        "{}",
        text(&out.stdout)
    );
    check_collected("asyncssh", &s, "asyncssh-keys", &key);
}
