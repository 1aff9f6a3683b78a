//! Key collection with the real OpenSSH client and ssh-keygen: every key a
//! client proves it holds is recorded (only after its signature), once, in
//! every format; a finished collection's identifier is refused like any
//! unknown user name.
mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn keygen(dir: &Path, name: &str, args: &[&str]) -> PathBuf {
    let path = dir.join(name);
    let mut a = vec!["-q", "-N", "", "-C", name, "-f", path.to_str().unwrap()];
    a.extend_from_slice(args);
    let out = Command::new("ssh-keygen").args(&a).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    path
}

fn fingerprint(pub_path: &Path, hash: &str) -> String {
    let out = Command::new("ssh-keygen")
        .args(["-l", "-E", hash, "-f", pub_path.to_str().unwrap()])
        .output()
        .unwrap();
    text(&out.stdout)
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string()
}

/// `ssh IDENT@server` offering exactly `keys`, no agent, no terminal.
fn connect(s: &Server, ident: &str, keys: &[&Path]) -> Output {
    let mut c = Command::new("ssh");
    c.args(["-F", "/dev/null", "-o", "StrictHostKeyChecking=no"])
        .args(["-o", "UserKnownHostsFile=/dev/null"]) // LogLevel INFO: OpenSSH logs keyboard-interactive instructions at INFO
        .args([
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "PasswordAuthentication=no",
        ])
        .args(["-o", "NumberOfPasswordPrompts=1", "-o", "ConnectTimeout=20"])
        .args(["-p", &s.port.to_string()]);
    for k in keys {
        c.arg("-i").arg(k);
    }
    c.arg(format!("{ident}@127.0.0.1"))
        .env_remove("SSH_AUTH_SOCK")
        .env_remove("DISPLAY")
        .env_remove("SSH_ASKPASS")
        .stdin(Stdio::null());
    c.output().unwrap()
}

#[test]
fn every_key_a_client_proves_is_recorded_in_every_format() {
    let s = Server::start("collect");
    let d = TempDir::new("collect-keys");
    let keys = [
        keygen(d.path(), "ed", &["-t", "ed25519"]),
        keygen(d.path(), "rsa", &["-t", "rsa", "-b", "3072"]),
        keygen(d.path(), "p256", &["-t", "ecdsa", "-b", "256"]),
        keygen(d.path(), "p384", &["-t", "ecdsa", "-b", "384"]),
    ];
    let refs: Vec<&Path> = keys.iter().map(|k| k.as_path()).collect();
    let created = s.cli_json(&[
        "collect",
        "create",
        "--multi-key",
        "--identifier",
        "k7q2m9x4",
        "--message",
        "Collecting keys for INC-7",
    ]);
    assert_eq!(created["connection_identifier"], "k7q2m9x4");
    assert!(
        created["ssh"]
            .as_str()
            .unwrap()
            .ends_with("k7q2m9x4@127.0.0.1"),
        "{created:#}"
    );
    let id = created["id"].as_str().unwrap().to_string();

    let out = connect(&s, "k7q2m9x4", &refs);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout} {}", text(&out.stderr));
    assert!(
        stdout.contains("tollgate: 4 public keys recorded for k7q2m9x4."),
        "{stdout}"
    );
    assert!(
        text(&out.stderr).contains("Collecting keys for INC-7"),
        "{}",
        text(&out.stderr)
    );

    let shown = s.cli_json(&["collect", "show", &id]);
    assert_eq!(shown["status"], "completed", "{shown:#}");
    let conns = shown["connections"].as_array().unwrap();
    assert_eq!(conns.len(), 1);
    assert!(conns[0]["client_version"]
        .as_str()
        .unwrap()
        .starts_with("SSH-2.0-OpenSSH_"));
    assert_eq!(conns[0]["ip_address"], "127.0.0.1");
    let got = conns[0]["keys"].as_array().unwrap();
    assert_eq!(got.len(), 4, "{shown:#}");
    for (k, path) in got.iter().zip(&keys) {
        let pub_path = path.with_extension("pub");
        assert_eq!(k["public_key_sha256"], fingerprint(&pub_path, "sha256"));
        assert_eq!(k["public_key_md5"], fingerprint(&pub_path, "md5"));
        let line = std::fs::read_to_string(&pub_path).unwrap();
        assert!(line.starts_with(k["public_key_openssh"].as_str().unwrap()));
    }

    // authorized_keys lines that ssh-keygen reads back.
    let out = s.cli(&["collect", "keys", &id, "--format", "openssh"]);
    let ak = d.path().join("authorized_keys");
    std::fs::write(&ak, &out.stdout).unwrap();
    let l = Command::new("ssh-keygen")
        .args(["-l", "-f", ak.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(l.status.success(), "{}", text(&l.stderr));
    assert_eq!(text(&l.stdout).lines().count(), 4, "{}", text(&l.stdout));

    // Completed: the identifier is now refused like an unknown user name.
    let again = connect(&s, "k7q2m9x4", &refs);
    let unknown = connect(&s, "zz9nosuchid", &refs);
    assert_eq!(again.status.code(), Some(255));
    assert_eq!(
        text(&again.stderr).replace("k7q2m9x4", "X"),
        text(&unknown.stderr).replace("zz9nosuchid", "X")
    );
    assert_eq!(
        s.cli_json(&["collect", "show", &id])["connections"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn without_multi_key_exactly_one_key_is_kept() {
    let s = Server::start("collect-one");
    let d = TempDir::new("collect-one-keys");
    let a = keygen(d.path(), "a", &["-t", "ed25519"]);
    let b = keygen(d.path(), "b", &["-t", "ed25519"]);
    let created = s.cli_json(&["collect", "create", "--multi-connection"]);
    let ident = created["connection_identifier"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(ident.len(), 12, "random identifier");
    let out = connect(&s, &ident, &[&a, &b]);
    assert!(
        text(&out.stdout).contains("1 public key recorded"),
        "{}",
        text(&out.stdout)
    );
    let shown = s.cli_json(&["collect", "show", &ident]);
    let keys = shown["connections"][0]["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(
        keys[0]["public_key_sha256"],
        fingerprint(&a.with_extension("pub"), "sha256")
    );
    assert_eq!(shown["status"], "pending", "multi_connection keeps it open");
    // A second connection is collected as such.
    let out = connect(&s, &ident, &[&b]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let shown = s.cli_json(&["collect", "show", &ident]);
    assert_eq!(shown["connections"].as_array().unwrap().len(), 2);
    // Deleted: refused.
    assert!(s.cli(&["collect", "delete", &ident]).status.success());
    assert_eq!(connect(&s, &ident, &[&b]).status.code(), Some(255));
    assert_eq!(s.cli(&["collect", "show", &ident]).status.code(), Some(4));
}

#[test]
fn create_refuses_timeout_and_expires_at_together() {
    let s = Server::start("collect-usage");
    let out = s.cli(&[
        "collect",
        "create",
        "--timeout",
        "1h",
        "--expires-at",
        "2030-01-01T00:00:00Z",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let out = s.cli(&["collect", "create", "--identifier", "Bad Name"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--identifier: \"Bad Name\""),
        "{}",
        text(&out.stderr)
    );
    let out = s.cli(&["collect", "create", "--expires-at", "2001-01-01T00:00:00Z"]);
    assert!(
        text(&out.stderr).contains("in the past"),
        "{}",
        text(&out.stderr)
    );
}
