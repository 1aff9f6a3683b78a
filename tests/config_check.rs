//! Acceptance 10: bad configurations exit 2 and name FILE:LINE:COL.
mod common;
use common::*;
use std::process::Command;

fn check(dir: &TempDir, name: &str, body: &str) -> (Option<i32>, String, String) {
    let path = dir.path().join(name);
    std::fs::write(&path, body).unwrap();
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .args(["config", "check"])
        .output()
        .unwrap();
    (
        out.status.code(),
        text(&out.stderr),
        path.display().to_string(),
    )
}

const GOOD_PROFILE: &str = "[profiles.console]\nuser = \"nobody\"\ncommand = \"/bin/sh\"\n";

#[test]
fn unknown_key_is_named_with_position_and_suggestion() {
    let d = TempDir::new("cfg-unknown");
    let (code, err, path) = check(
        &d,
        "a.toml",
        "[server]\nlisten = [\"127.0.0.1:2222\"]\nmax_auth_trys = 3\n",
    );
    assert_eq!(code, Some(2));
    assert_eq!(
        err.trim(),
        format!("{path}:3:1: unknown key \"max_auth_trys\" in [server] (did you mean \"max_auth_tries\"?)")
    );
}

#[test]
fn bad_duration_is_named_with_position() {
    let d = TempDir::new("cfg-duration");
    let (code, err, path) = check(
        &d,
        "b.toml",
        &format!("[sessions]\nkill_grace = \"5 fortnights\"\n{GOOD_PROFILE}"),
    );
    assert_eq!(code, Some(2));
    assert!(
        err.starts_with(&format!(
            "{path}:2:14: sessions.kill_grace: invalid duration"
        )),
        "{err}"
    );
}

#[test]
fn unknown_user_and_root_without_allow_root_are_refused() {
    let d = TempDir::new("cfg-users");
    let (code, err, path) = check(
        &d,
        "c.toml",
        "[profiles.a]\nuser = \"no-such-account-tg\"\ncommand = \"/bin/sh\"\n\n[profiles.b]\nuser = \"root\"\ncommand = \"/bin/sh\"\n",
    );
    assert_eq!(code, Some(2));
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{err}");
    assert_eq!(
        lines[0],
        format!("{path}:2:8: profiles.a.user: no such account \"no-such-account-tg\"")
    );
    assert!(
        lines[1].starts_with(&format!("{path}:6:8: profiles.b.user: \"root\" is root")),
        "{err}"
    );
}

#[test]
fn empty_listen_and_relative_paths_are_refused() {
    let d = TempDir::new("cfg-paths");
    let (code, err, path) = check(
        &d,
        "d.toml",
        "[server]\nlisten = []\nhost_keys = [\"keys/host\"]\n",
    );
    assert_eq!(code, Some(2));
    assert!(
        err.contains(&format!(
            "{path}:2:10: server.listen must name at least one address"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{path}:3:14: server.host_keys entry must be an absolute path"
        )),
        "{err}"
    );
}

#[test]
fn serve_refuses_a_bad_config_the_same_way() {
    let d = TempDir::new("cfg-serve");
    let path = d.path().join("e.toml");
    std::fs::write(&path, "[server]\nlistn = 1\n").unwrap();
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .arg("serve")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains(&format!("{}:2:1: unknown key \"listn\"", path.display())));
}

#[test]
fn the_shipped_example_passes_apart_from_accounts_missing_here() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/etc/tollgate.toml");
    let out = Command::new(BIN)
        .args(["--config", example, "config", "check"])
        .output()
        .unwrap();
    let err = text(&out.stderr);
    for line in err.lines() {
        assert!(
            line.contains("no such account"),
            "unexpected problem in the example: {line}"
        );
    }
}

#[test]
fn usage_errors_exit_2_and_a_missing_session_exits_4() {
    let s = Server::start("cli-codes");
    assert_eq!(
        s.cli(&["session", "issue", "--profile", "nope", "--login-user", "x"])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(
        s.cli(&[
            "session",
            "issue",
            "--profile",
            "console",
            "--login-user",
            "x",
            "--ttl",
            "soon"
        ])
        .status
        .code(),
        Some(2)
    );
    assert_eq!(s.cli(&["session", "bogus"]).status.code(), Some(2));
    assert_eq!(
        s.cli(&["session", "show", "ses_missing"]).status.code(),
        Some(4)
    );
    let v = s.cli_json(&[
        "session",
        "issue",
        "--profile",
        "console",
        "--login-user",
        "ops",
        "--reason",
        "INC-1",
    ]);
    for k in [
        "id",
        "token",
        "state",
        "profile",
        "login_user",
        "expires_at",
    ] {
        assert!(v.get(k).is_some(), "issue JSON lacks {k}: {v}");
    }
    assert_eq!(v["state"], "pending");
    let listed = s.cli_json(&["session", "list", "--state", "pending"]);
    assert!(listed
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["id"] == v["id"]));
    assert!(listed
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r.get("token").is_none()));
}

#[test]
fn a_profile_whose_account_shell_refuses_commands_is_warned_about_and_serve_logs_it() {
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    let shell = nobody.shell.display().to_string();
    assert!(
        shell.ends_with("/nologin") || shell.ends_with("/false"),
        "this test needs nobody's usual shell, found {shell}"
    );
    let d = TempDir::new("cfg-nologin");
    let body = format!("{GOOD_PROFILE}allow_exec = true\n");
    let (code, err, path) = check(&d, "n.toml", &body);
    // Usable, so ok; the warning names the position and the `shell` key.
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        err.trim(),
        format!(
            "{path}:4:14: warning: profiles.console.allow_exec: commands run through the account's login shell, and \"nobody\"'s is {shell}, which refuses them; set profiles.console.shell (e.g. shell = \"/bin/sh\")"
        )
    );
    let json = Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .args(["config", "check", "--output", "json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["warnings"][0]["line"], 4, "{v}");
    // With its own shell, nothing to say.
    let (code, err, _) = check(&d, "ok.toml", &format!("{body}shell = \"/bin/sh\"\n"));
    assert_eq!((code, err.as_str()), (Some(0), ""));

    // session issue --command on such a profile warns too (and issues).
    let s = Server::start_with(
        "cfg-nologin-serve",
        Opts {
            profile_extra: "allow_exec = true\n".into(),
            ..Opts::default()
        },
    );
    let cfg = std::fs::read_to_string(&s.config)
        .unwrap()
        .replace("shell = \"/bin/sh\"\n", "");
    std::fs::write(&s.config, cfg).unwrap();
    let out = s.cli(&[
        "session",
        "issue",
        "--profile",
        "console",
        "--login-user",
        "ops",
        "--command",
        "id",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains(
            "tollgate: warning: --command: commands run through the account's login shell"
        ),
        "{}",
        text(&out.stderr)
    );
    // serve logs it once the config is reloaded.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(s.pid()),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    let logged = eventually(std::time::Duration::from_secs(10), || {
        s.log_text().lines().any(|l| {
            l.contains(" WARN ") && l.contains(":14: warning: profiles.console.allow_exec")
        })
    });
    assert!(logged.is_some(), "{}", s.log_text());
}

#[test]
fn absurd_values_empty_and_binary_files_are_refused_with_positions_not_panics() {
    let d = TempDir::new("cfg-absurd");
    let (code, err, path) = check(
        &d,
        "k.toml",
        &format!("[sessions]\nkill_grace = \"300000000y\"\n{GOOD_PROFILE}"),
    );
    assert_eq!(code, Some(2));
    assert!(
        err.starts_with(&format!(
            "{path}:2:14: sessions.kill_grace: duration \"300000000y\" is too long (at most 10y)"
        )),
        "{err}"
    );
    let banner = "b".repeat(300_000);
    let (code, err, path) = check(
        &d,
        "b.toml",
        &format!("[server]\nbanner = \"{banner}\"\n{GOOD_PROFILE}"),
    );
    assert_eq!(code, Some(2));
    assert!(
        err.starts_with(&format!(
            "{path}:2:10: server.banner is 300000 bytes; at most 16384"
        )),
        "{err}"
    );
    let (code, err, path) = check(&d, "e.toml", "\n# nothing but a comment\n\n");
    assert_eq!(code, Some(2));
    assert!(
        err.starts_with(&format!("{path}:1:1: the file is empty")),
        "{err}"
    );
    let junk = d.path().join("j.toml");
    std::fs::write(&junk, b"[server]\nban\xff\xfe\x00ner = 1\n").unwrap();
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&junk)
        .args(["config", "check"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).starts_with(&format!("{}:2:4: not UTF-8 text", junk.display())),
        "{}",
        text(&out.stderr)
    );

    // The admin CLI: a token that would outlive every clock is refused, no
    // panic, no wrap-around into an already expired token.
    let s = Server::start("cfg-absurd-cli");
    for ttl in ["8000y", "300000000y"] {
        let out = s.cli(&[
            "session",
            "issue",
            "--profile",
            "console",
            "--login-user",
            "ops",
            "--ttl",
            ttl,
        ]);
        assert_eq!(out.status.code(), Some(2), "{ttl}: {}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains("at most 10y"),
            "{}",
            text(&out.stderr)
        );
    }
    // tollgate connect: a server that could be read as an option is refused.
    for server in [
        "-oProxyCommand=id",
        "[-oProxyCommand=id]",
        "[-oProxyCommand=id]:22",
    ] {
        let out = Command::new(BIN)
            .args([
                "connect",
                &format!("--server={server}"),
                "--login-user",
                "ops",
            ])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{server}");
        assert!(
            text(&out.stderr).contains("--server"),
            "{}",
            text(&out.stderr)
        );
    }
}
