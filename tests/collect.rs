//! Key collection with the real OpenSSH client and ssh-keygen: every key a
//! client proves it holds is recorded (only after its signature), once, in
//! every format; a finished collection's identifier is refused like any
//! unknown user name.
mod common;
use base64ct::Encoding;
use common::*;
use std::path::Path;
use std::process::Command;

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

    let out = collect_connect(&s, "k7q2m9x4", &refs);
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
        // RFC 4716: the same key body as `ssh-keygen -e`.
        let e = keygen_export(&pub_path, &[]);
        assert_eq!(
            rfc4716_body(k["public_key_ssh"].as_str().unwrap()),
            rfc4716_body(&e)
        );
        let pem = k["public_key_pem"].as_str().unwrap();
        if k["public_key_algorithm"] == "ssh-ed25519" {
            // Standard SPKI: openssl reads it, and its key is the same 32 bytes.
            let f = d.path().join("ed.pem");
            std::fs::write(&f, pem).unwrap();
            let der = Command::new("openssl")
                .args([
                    "pkey",
                    "-pubin",
                    "-outform",
                    "DER",
                    "-in",
                    f.to_str().unwrap(),
                ])
                .output()
                .unwrap();
            assert!(der.status.success(), "{}", text(&der.stderr));
            let blob = line.split_whitespace().nth(1).unwrap();
            let raw = base64ct::Base64::decode_vec(blob).unwrap();
            assert_eq!(der.stdout.len(), 44, "SPKI of an ed25519 key");
            assert_eq!(der.stdout[12..], raw[raw.len() - 32..]);
        } else {
            assert_eq!(pem, keygen_export(&pub_path, &["-m", "PKCS8"]));
        }
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
    let again = collect_connect(&s, "k7q2m9x4", &refs);
    let unknown = collect_connect(&s, "zz9nosuchid", &refs);
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
    let out = collect_connect(&s, &ident, &[&a, &b]);
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
    let out = collect_connect(&s, &ident, &[&b]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let shown = s.cli_json(&["collect", "show", &ident]);
    assert_eq!(shown["connections"].as_array().unwrap().len(), 2);
    // Deleted: refused.
    assert!(s.cli(&["collect", "delete", &ident]).status.success());
    assert_eq!(collect_connect(&s, &ident, &[&b]).status.code(), Some(255));
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

#[test]
fn must_confirm_keeps_keys_only_after_y_typed_at_a_real_terminal() {
    let s = Server::start("collect-confirm");
    let d = TempDir::new("collect-confirm-keys");
    let k = keygen(d.path(), "ed", &["-t", "ed25519"]);
    let fp = fingerprint(&k.with_extension("pub"), "sha256");
    let created = s.cli_json(&[
        "collect",
        "create",
        "--must-confirm",
        "--identifier",
        "confirm-me",
        "--banner",
        "Welcome to ACME onboarding",
        "--message",
        "Keys for INC-9 only",
    ]);
    let id = created["id"].as_str().unwrap().to_string();

    // Anything but y keeps nothing, and the collection stays open.
    let ssh = collect_ssh(&s, "confirm-me", &[&k]);
    let t = Tmux::start(&d.path().join("no.sh"), &ssh, 120, 40);
    let screen = t.wait_for("Type y and Enter");
    for shown in ["Welcome to ACME onboarding", "Keys for INC-9 only", &fp] {
        assert!(screen.contains(shown), "{shown:?} not shown:\n{screen}");
    }
    t.keys(&["n", "Enter"]);
    t.wait_for("not confirmed; no key was recorded");
    drop(t);
    let shown = s.cli_json(&["collect", "show", &id]);
    assert_eq!(shown["status"], "pending", "{shown:#}");
    let kept: usize = shown["connections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["keys"].as_array().unwrap().len())
        .sum();
    assert_eq!(kept, 0, "{shown:#}");

    // y keeps the key and completes the collection.
    let t = Tmux::start(&d.path().join("yes.sh"), &ssh, 120, 40);
    t.wait_for("Type y and Enter");
    t.keys(&["y", "Enter"]);
    t.wait_for("1 public key recorded for confirm-me");
    drop(t);
    let shown = s.cli_json(&["collect", "show", &id]);
    assert_eq!(shown["status"], "completed", "{shown:#}");
    let conns = shown["connections"].as_array().unwrap();
    assert_eq!(conns.len(), 2, "{shown:#}");
    assert_eq!(conns[1]["keys"][0]["public_key_sha256"], fp.as_str());
}

#[test]
fn an_expired_identifier_is_refused_like_an_unknown_one() {
    let s = Server::start("collect-expired");
    let d = TempDir::new("collect-expired-keys");
    let k = keygen(d.path(), "ed", &["-t", "ed25519"]);
    let created = s.cli_json(&[
        "collect",
        "create",
        "--identifier",
        "soon-gone",
        "--timeout",
        "1s",
    ]);
    assert!(created["expired_at"].is_string(), "{created:#}");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let expired = collect_connect(&s, "soon-gone", &[&k]);
    let unknown = collect_connect(&s, "zz9nosuchid", &[&k]);
    assert_eq!(expired.status.code(), Some(255));
    assert_eq!(
        text(&expired.stderr).replace("soon-gone", "X"),
        text(&unknown.stderr).replace("zz9nosuchid", "X")
    );
    let shown = s.cli_json(&["collect", "show", "soon-gone"]);
    assert_eq!(shown["connections"].as_array().unwrap().len(), 0);
    // Extended, it collects again.
    let out = s.cli(&["collect", "update", "soon-gone", "--no-expiry"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = collect_connect(&s, "soon-gone", &[&k]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

/// `ssh-keygen -e [ARGS] -f PUB`.
fn keygen_export(pub_path: &Path, args: &[&str]) -> String {
    let out = Command::new("ssh-keygen")
        .arg("-e")
        .args(args)
        .arg("-f")
        .arg(pub_path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
}

/// The base64 lines of an RFC 4716 key, without its header lines.
fn rfc4716_body(s: &str) -> String {
    s.lines()
        .filter(|l| !l.starts_with("----") && !l.contains(':') && !l.ends_with('\\'))
        .collect()
}

#[test]
fn a_key_offered_but_never_signed_for_is_not_recorded() {
    let s = Server::start("collect-unsigned");
    let d = TempDir::new("collect-unsigned-keys");
    // The client has only the public half of this one: it offers it (and
    // gets PK_OK) but cannot sign.
    let offered = keygen(d.path(), "offered", &["-t", "ed25519"]);
    std::fs::remove_file(&offered).unwrap();
    let held = keygen(d.path(), "held", &["-t", "ed25519"]);
    s.cli_json(&[
        "collect",
        "create",
        "--multi-key",
        "--identifier",
        "half-keys",
    ]);
    let out = collect_connect(&s, "half-keys", &[&offered.with_extension("pub"), &held]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("1 public key recorded"),
        "{}",
        text(&out.stdout)
    );
    let shown = s.cli_json(&["collect", "show", "half-keys"]);
    let keys = shown["connections"][0]["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1, "{shown:#}");
    assert_eq!(
        keys[0]["public_key_sha256"],
        fingerprint(&held.with_extension("pub"), "sha256")
    );
    let offered_fp = fingerprint(&offered.with_extension("pub"), "sha256");
    assert!(!shown.to_string().contains(&offered_fp), "{shown:#}");
}

#[test]
fn a_key_only_client_on_a_must_confirm_collection_keeps_nothing_and_the_journal_says_why() {
    let s = Server::start("collect-confirm-batch");
    let d = TempDir::new("collect-confirm-batch-keys");
    let k = keygen(d.path(), "ed", &["-t", "ed25519"]);
    let created = s.cli_json(&[
        "collect",
        "create",
        "--must-confirm",
        "--identifier",
        "confirm-batch",
    ]);
    let id = created["id"].as_str().unwrap().to_string();
    // BatchMode: keys only, never keyboard-interactive, so never the question.
    let out = collect_ssh(&s, "confirm-batch", &[&k])
        .args(["-o", "BatchMode=yes"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(255), "{}", text(&out.stderr));
    let mut why = Vec::new();
    let recorded = eventually(std::time::Duration::from_secs(10), || {
        why = s.events_of(None, "collect.keys_not_kept");
        !why.is_empty()
    });
    assert!(recorded.is_some(), "{}", s.log_text());
    assert_eq!(why[0]["detail"]["collect"], id.as_str());
    assert_eq!(why[0]["detail"]["keys_proved"], 1);
    assert!(
        why[0]["detail"]["reason"].as_str().unwrap().contains(
            "must be confirmed at the keyboard-interactive prompt, which the client never reached"
        ),
        "{why:#?}"
    );
    let shown = s.cli_json(&["collect", "show", &id]);
    assert_eq!(shown["status"], "pending", "{shown:#}");
    let conns = shown["connections"].as_array().unwrap();
    assert_eq!(conns.len(), 1, "the connection is recorded: {shown:#}");
    assert_eq!(conns[0]["keys"].as_array().unwrap().len(), 0);
    assert!(s.log_text().contains("collect: keys not kept"));
}
