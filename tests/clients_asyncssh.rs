//! asyncssh (from PyPI, in a virtualenv `scripts/test.sh` makes under
//! `target/`) against the default config, as its documentation says to use
//! it: `connect(password=…)` and `run`, a PTY process, `open_connection`
//! (direct-tcpip), and a collect session with its defaults, which offer the
//! keys in `~/.ssh` and never do keyboard-interactive without a password.
//! The driver is `tests/clients/asyncssh_client.py`.
mod common;
use common::clients::*;
use common::*;
use std::process::{Command, Output, Stdio};

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
    check_scripted_shell("asyncssh", &s, &id, &out);

    let (id, tok) = issue_echo_tunnel(&s);
    let echo_port = echo.port.to_string();
    let args = ["forward", &port, "ops", &tok, "echo", &echo_port, "200000"];
    check_scripted_forward("asyncssh", &s, &id, &asyncssh(&home, &args), 200_000);

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
