//! Token authentication details: the prompt, both methods, the banner, the
//! attempt limit; refused forwarding; `events --follow`.
mod common;
use common::*;
use std::process::Stdio;
use std::time::Duration;

#[test]
fn keyboard_interactive_prompts_token_without_echo_and_password_works_too() {
    let s = Server::start_with(
        "auth-methods",
        Opts {
            server_extra: "banner = \"Authorized use only.\"\n".into(),
            ..Opts::default()
        },
    );
    // ssh hands the prompt to the askpass helper as its argument.
    let (_, tok) = s.issue("ops", &[]);
    let prompt_file = s.dir.path().join("prompt");
    let askpass = s.dir.path().join("askpass-prompt");
    std::fs::write(
        &askpass,
        format!(
            "#!/bin/sh\nprintf '%s' \"$1\" > '{}'\necho '{tok}'\n",
            prompt_file.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&askpass, std::fs::Permissions::from_mode(0o700)).unwrap();
    let mut c = s.ssh_opts("ops", &tok, &["-o", "LogLevel=INFO"]);
    c.env("SSH_ASKPASS", &askpass).arg("echo in");
    let out = c.output().unwrap();
    assert_eq!(text(&out.stdout), "in\n", "{}", text(&out.stderr));
    // OpenSSH shows keyboard-interactive prompts as "(user@host) PROMPT".
    let prompt = std::fs::read_to_string(&prompt_file).unwrap();
    assert!(prompt.ends_with(") Token: "), "{prompt:?}");
    assert!(
        text(&out.stderr).contains("Authorized use only."),
        "banner: {}",
        text(&out.stderr)
    );

    let (_, tok) = s.issue("ops", &[]);
    let out = s.ssh_run(
        "ops",
        &tok,
        &["-o", "PreferredAuthentications=password"],
        "echo via-password",
    );
    assert_eq!(text(&out.stdout), "via-password\n", "{}", text(&out.stderr));
}

#[test]
fn a_connection_is_closed_after_max_auth_tries() {
    let s = Server::start_with(
        "auth-tries",
        Opts {
            server_extra: "max_auth_tries = 2\n".into(),
            ..Opts::default()
        },
    );
    let out = s
        .ssh_opts(
            "ops",
            "tg_wrongwrongwrongwrongwrongwrongwrongwrongwro",
            &[
                "-o",
                "NumberOfPasswordPrompts=5",
                "-o",
                "PreferredAuthentications=password",
            ],
        )
        .arg("true")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(255));
    assert!(
        text(&out.stderr).contains("Too many authentication attempts"),
        "{}",
        text(&out.stderr)
    );
    let failed = s
        .cli_json(&["events"])
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "auth.failed")
        .count();
    assert_eq!(failed, 2);
}

#[test]
fn forwarding_is_refused_and_recorded() {
    let s = Server::start("forwarding");
    let (id, tok) = s.issue("ops", &[]);
    let out = s.ssh_run("ops", &tok, &["-W", "127.0.0.1:9"], "");
    assert!(
        text(&out.stderr).contains("stdio forwarding failed"),
        "{}",
        text(&out.stderr)
    );
    let v = s.wait_state(&id, "terminated", Duration::from_secs(5));
    let refused: Vec<_> = v["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "session.request_refused")
        .collect();
    assert_eq!(refused.len(), 1, "{v:#}");
    assert_eq!(
        refused[0]["detail"]["request"],
        "direct-tcpip to 127.0.0.1:9"
    );
}

#[test]
fn events_follow_prints_new_events_as_they_happen() {
    let s = Server::start("follow");
    let mut follow = std::process::Command::new(BIN)
        .arg("--config")
        .arg(&s.config)
        .args(["events", "--follow", "--output", "json"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = buffered(follow.stdout.take().unwrap());
    std::thread::sleep(Duration::from_millis(300));
    let (id, _) = s.issue("ops", &["--reason", "follow-test"]);
    let line = read_until(&mut out, "session.issued");
    let v: serde_json::Value = serde_json::from_str(line.lines().last().unwrap()).unwrap();
    assert_eq!(v["session_id"], id.as_str());
    assert_eq!(v["detail"]["reason"], "follow-test");
    s.cli_json(&["session", "cancel", &id]);
    read_until(&mut out, "session.canceled");
    follow.kill().unwrap();
    let _ = follow.wait();
}

#[test]
fn the_stock_client_negotiates_the_configured_ciphers() {
    let cipher_of = |s: &Server| {
        let (_, tok) = s.issue("ops", &[]);
        let out = s
            .ssh_opts("ops", &tok, &["-o", "LogLevel=DEBUG1"])
            .arg("true")
            .output()
            .unwrap();
        let err = text(&out.stderr);
        err.lines()
            .find_map(|l| l.split("server->client cipher: ").nth(1))
            .map(|rest| {
                rest.split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_string()
            })
            .unwrap_or_else(|| panic!("no cipher line in:\n{err}"))
    };
    // The default offers everything; OpenSSH's own order picks.
    let s = Server::start("ciphers-default");
    assert_eq!(cipher_of(&s), "chacha20-poly1305@openssh.com");
    let s = Server::start_with(
        "ciphers-gcm",
        Opts {
            server_extra: "ciphers = [\"aes128-gcm@openssh.com\"]\n".into(),
            ..Opts::default()
        },
    );
    assert_eq!(cipher_of(&s), "aes128-gcm@openssh.com");
}
