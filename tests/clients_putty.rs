//! PuTTY's command-line client `plink` (Debian's putty-tools) against the
//! default config, as its manual says to use it: `-batch -pwfile` for a
//! command, a person typing the token at a real terminal for a shell
//! (PuTTY sends `pty-req` and `shell` back to back), `-L`, and `-i KEY.ppk`
//! for a collect session. The host key is pinned with `-hostkey`, as a
//! script would. No russh warning may appear in the daemon's log (PuTTY's
//! `simple@putty.projects.tartarus.org` request is taken quietly).
mod common;
use common::clients::*;
use common::*;
use std::path::Path;
use std::process::{Command, Stdio};

/// `plink -ssh -P PORT -hostkey FP [-batch] ARGS… USER@127.0.0.1 [CMD]`,
/// with HOME of its own (PuTTY keeps state in ~/.putty).
fn plink(s: &Server, home: &ClientHome, batch: bool, args: &[&str], user: &str) -> Command {
    let mut c = Command::new("plink");
    c.args(["-ssh", "-P", &s.port.to_string()])
        .args(["-hostkey", &host_key_sha256(s)]);
    if batch {
        c.arg("-batch");
    }
    c.args(args)
        .arg(format!("{user}@127.0.0.1"))
        .env("HOME", home.path())
        .env_remove("SSH_AUTH_SOCK")
        .stdin(Stdio::null());
    c
}

/// The token in a file for `-pwfile` (never argv).
fn token_file(home: &ClientHome, tok: &str) -> String {
    let p = home.path().join("token");
    std::fs::write(&p, format!("{tok}\n")).unwrap();
    p.to_str().unwrap().to_string()
}

fn no_russh_warnings(s: &Server) {
    let log = s.log_text();
    let warned: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .collect();
    assert!(warned.is_empty(), "{warned:#?}");
}

#[test]
fn exec_terminal_tunnel_and_refusals() {
    let (s, echo) = server_with_echo("putty");
    let home = ClientHome::new(&s, "putty-home");
    exec_scenario("plink", &s, |tok| {
        let f = token_file(&home, tok);
        plink(&s, &home, true, &["-pwfile", &f], "ops")
            .arg(EXEC)
            .output()
            .unwrap()
    });

    // A person: the token typed at the Token: prompt, then plink's own
    // anti-spoofing line (it prints it after any interactive login, sshd's
    // too), answered with Return.
    let (id, tok) = s.issue("ops", &[]);
    let t = Tmux::start(
        &s.dir.path().join("plink-terminal.sh"),
        &reporting_exit(&plink(&s, &home, false, &["-t"], "ops")),
        80,
        24,
    );
    type_token(&t, &tok);
    t.wait_for("Access granted. Press Return to begin session.");
    t.keys(&["Enter"]);
    terminal_scenario("plink", &s, &id, &t);

    let (id, tok) = issue_echo_tunnel(&s);
    let lp = free_port();
    let fwd = format!("127.0.0.1:{lp}:echo:{}", echo.port);
    let f = token_file(&home, &tok);
    let mut child = plink(&s, &home, true, &["-pwfile", &f, "-N", "-L", &fwd], "ops")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    check_forward("plink -L", &s, &id, lp, 200_000);
    child.kill().unwrap();
    child.wait().unwrap();

    refusal_scenario("plink", &s, |tok| {
        let f = token_file(&home, tok);
        plink(&s, &home, true, &["-pwfile", &f], "ops")
            .arg(GOT_IN)
            .output()
            .unwrap()
    });
    no_russh_warnings(&s);
}

#[test]
fn collect_records_the_key_plink_proves() {
    let s = Server::start("putty-collect");
    let home = ClientHome::new(&s, "putty-collect-home");
    let key = keygen(home.path(), "id", &["-t", "ed25519"]);
    let ppk = ppk(&key);
    create_collect(&s, "plink-keys");
    let out = plink(
        &s,
        &home,
        true,
        &["-i", ppk.to_str().unwrap()],
        "plink-keys",
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("1 public key recorded for plink-keys"),
        "{}",
        text(&out.stdout)
    );
    check_collected("plink -i", &s, "plink-keys", &key);
    no_russh_warnings(&s);
}

/// The key in PuTTY's own format, as puttygen writes it.
fn ppk(key: &Path) -> std::path::PathBuf {
    let out = key.with_extension("ppk");
    let r = Command::new("puttygen")
        .arg(key)
        .args(["-O", "private", "-o"])
        .arg(&out)
        .output()
        .expect("puttygen (putty-tools; scripts/test.sh installs it)");
    assert!(r.status.success(), "{}", text(&r.stderr));
    out
}
