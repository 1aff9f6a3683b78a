//! Acceptance 11: `tollgate dev` prints a token and an ssh line that work when pasted,
//! and a metrics line whose scrape shows the session it ran.
mod common;
use common::*;
use std::process::{Command, Stdio};

#[test]
fn dev_prints_a_token_and_an_ssh_line_that_work() {
    let d = TempDir::new("dev");
    let port = free_port();
    let mut dev = Command::new(BIN)
        .args(["dev", "--listen", &format!("127.0.0.1:{port}"), "--dir"])
        .arg(d.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = buffered(dev.stdout.take().unwrap());
    let printed = read_until(&mut out, "connect");
    let rest = read_until(&mut out, "metrics ");
    let metrics = field(&rest, "metrics");
    assert!(
        metrics.starts_with("curl http://127.0.0.1:") && metrics.ends_with("/metrics"),
        "{rest}"
    );
    let token = printed
        .lines()
        .find_map(|l| l.strip_prefix("token"))
        .unwrap()
        .trim()
        .to_string();
    let line = printed
        .lines()
        .find_map(|l| l.strip_prefix("connect"))
        .unwrap()
        .trim()
        .to_string();
    assert!(token.starts_with("tg_"), "{printed}");
    assert!(
        line.starts_with("ssh ") && line.contains(&format!("-p {port}")),
        "{line}"
    );

    // Paste the line as printed (strict host key checking stays on: the
    // known_hosts file it names holds the server's key).
    let askpass = d.path().join("askpass");
    std::fs::write(&askpass, format!("#!/bin/sh\necho '{token}'\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&askpass, std::fs::Permissions::from_mode(0o700)).unwrap();
    let ran = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{line} -o StrictHostKeyChecking=yes -F /dev/null 'echo pasted-$((1+1))'"
        ))
        .env("SSH_ASKPASS", &askpass)
        .env("SSH_ASKPASS_REQUIRE", "force")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(text(&ran.stdout), "pasted-2\n", "{}", text(&ran.stderr));
    // The metrics line, as printed, shows that session's end.
    let ended =
        "tollgate_sessions_ended_total{kind=\"command\",profile=\"dev\",reason=\"exited\"} 1\n";
    let mut scraped = String::new();
    let seen = eventually(std::time::Duration::from_secs(5), || {
        let out = Command::new("sh").arg("-c").arg(&metrics).output().unwrap();
        scraped = text(&out.stdout);
        scraped.contains(ended)
    });
    assert!(seen.is_some(), "{scraped}");

    // Its terminal going away (SIGHUP) stops it cleanly, as Ctrl-C does;
    // only `serve` reloads on SIGHUP.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(dev.id() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    let mut ended = None;
    eventually(std::time::Duration::from_secs(10), || {
        ended = dev.try_wait().unwrap().map(|st| st.code());
        ended.is_some()
    });
    if ended.is_none() {
        let _ = dev.kill();
    }
    assert_eq!(ended, Some(Some(0)), "dev did not stop on SIGHUP");
    // The printed config works with the admin CLI.
    let list = Command::new(BIN)
        .arg("--config")
        .arg(d.path().join("tollgate.toml"))
        .args(["session", "list", "--output", "json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(v[0]["state"], "terminated");
}

/// Temporary state directories `dev` made under `tmp`.
fn dev_dirs(tmp: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(tmp)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("tollgate-dev-"))
        .collect()
}

/// A line of `dev`'s output starting with `label`, without it.
fn field(printed: &str, label: &str) -> String {
    printed
        .lines()
        .find_map(|l| l.strip_prefix(label))
        .unwrap_or_else(|| panic!("no {label} line in:\n{printed}"))
        .trim()
        .to_string()
}

#[test]
fn the_more_line_works_as_printed_and_every_line_checks_the_dev_host_key() {
    let tmp = TempDir::new("dev-tmp");
    let port = free_port();
    let mut dev = Command::new(BIN)
        .args(["dev", "--listen", &format!("127.0.0.1:{port}")])
        .env("TMPDIR", tmp.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = buffered(dev.stdout.take().unwrap());
    let printed = read_until(&mut out, "Ctrl-C");
    let state = field(&printed, "state");
    assert!(
        state.contains("removed when dev stops; --dir DIR keeps state"),
        "{printed}"
    );
    assert_eq!(dev_dirs(tmp.path()).len(), 1);
    let more = field(&printed, "more");
    assert!(!more.starts_with("tollgate "), "names this binary: {more}");

    // Pasted as printed, with no tollgate on the PATH (as after `cargo run`).
    let issued = Command::new("sh")
        .arg("-c")
        .arg(&more)
        .env("PATH", "/usr/bin:/bin")
        .output()
        .unwrap();
    assert!(issued.status.success(), "{more}: {}", text(&issued.stderr));
    let again = text(&issued.stdout);
    let token = field(&again, "token");
    let line = field(&again, "connect");
    assert!(
        line.starts_with("ssh -o UserKnownHostsFile=") && line.contains("/known_hosts "),
        "{line}"
    );
    let d = TempDir::new("dev-askpass");
    let askpass = askpass_script(&d.path().join("askpass"), &token);
    let ran = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{line} -o StrictHostKeyChecking=yes -F /dev/null 'echo pasted-$((2+2))'"
        ))
        .env("SSH_ASKPASS", &askpass)
        .env("SSH_ASKPASS_REQUIRE", "force")
        .env("HOME", d.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(text(&ran.stdout), "pasted-4\n", "{}", text(&ran.stderr));

    // Ctrl-C: it stops and takes its temporary state with it.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(dev.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let st = dev.wait().unwrap();
    assert_eq!(st.code(), Some(0));
    assert_eq!(dev_dirs(tmp.path()), Vec::<String>::new());
}

#[test]
fn a_busy_port_says_how_to_choose_another_and_leaves_nothing_behind() {
    let tmp = TempDir::new("dev-busy");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let out = Command::new(BIN)
        .args(["dev", "--listen", &addr.to_string()])
        .env("TMPDIR", tmp.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("cannot listen on {addr}: address already in use")),
        "{err}"
    );
    assert!(
        err.contains("choose another with --listen, e.g. tollgate dev --listen 127.0.0.1:"),
        "{err}"
    );
    assert_eq!(dev_dirs(tmp.path()), Vec::<String>::new());

    // Stopped by SIGTERM after starting: nothing left either.
    let port = free_port();
    let mut dev = Command::new(BIN)
        .args(["dev", "--listen", &format!("127.0.0.1:{port}")])
        .env("TMPDIR", tmp.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut o = buffered(dev.stdout.take().unwrap());
    read_until(&mut o, "Ctrl-C");
    assert_eq!(dev_dirs(tmp.path()).len(), 1);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(dev.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    dev.wait().unwrap();
    assert_eq!(dev_dirs(tmp.path()), Vec::<String>::new());
}
