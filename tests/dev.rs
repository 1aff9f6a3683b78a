//! Acceptance 11: `tollgate dev` prints a token and an ssh line that work when pasted.
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
