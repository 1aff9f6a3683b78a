//! The stock OpenSSH client (`ssh`) against the default config, as its
//! manual says to use it: the token at the prompt (through SSH_ASKPASS, as
//! `tollgate connect` feeds it), a person at a real terminal, `-L`, and a
//! collect session both with and without `BatchMode` (which offers keys
//! and never reaches keyboard-interactive).
mod common;
use common::clients::*;
use common::*;
use std::process::{Command, Stdio};

fn ssh(s: &Server, home: &ClientHome, token: &str, first: &[&str]) -> Command {
    let mut c = s.ssh_opts("ops", token, first);
    c.env("HOME", home.path());
    c
}

#[test]
fn exec_terminal_tunnel_and_refusals() {
    let (s, echo) = server_with_echo("openssh");
    let home = ClientHome::new(&s, "openssh-home");
    exec_scenario("ssh", &s, |tok| {
        ssh(&s, &home, tok, &[]).arg(EXEC).output().unwrap()
    });

    let (id, tok) = s.issue("ops", &[]);
    let t = Tmux::start(
        &s.dir.path().join("ssh-terminal.sh"),
        &reporting_exit(&ssh(&s, &home, &tok, &["-tt"])),
        80,
        24,
    );
    terminal_scenario("ssh", &s, &id, &t);

    let (id, tok) = issue_echo_tunnel(&s);
    let lp = free_port();
    let fwd = format!("127.0.0.1:{lp}:echo:{}", echo.port);
    let mut child = ssh(&s, &home, &tok, &["-N", "-L", &fwd]).spawn().unwrap();
    check_forward("ssh -L", &s, &id, lp, 200_000);
    child.kill().unwrap();
    child.wait().unwrap();

    refusal_scenario("ssh", &s, |tok| {
        ssh(&s, &home, tok, &[]).arg(GOT_IN).output().unwrap()
    });
}

#[test]
fn collect_records_the_proved_key_with_and_without_batch_mode() {
    let s = Server::start("openssh-collect");
    let d = TempDir::new("openssh-collect-keys");
    for (ident, batch) in [("plain-ssh", false), ("batch-ssh", true)] {
        let key = keygen(d.path(), ident, &["-t", "ed25519"]);
        create_collect(&s, ident);
        let mut c = collect_ssh(&s, ident, &[&key]);
        if batch {
            c.args(["-o", "BatchMode=yes"]);
        }
        let out = c.stdin(Stdio::null()).output().unwrap();
        if batch {
            // No keyboard-interactive in batch mode: the client gives up,
            // and the key it proved is recorded all the same.
            assert_eq!(out.status.code(), Some(255), "{}", text(&out.stderr));
        } else {
            assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
            assert!(text(&out.stdout).contains("1 public key recorded"));
        }
        check_collected(
            if batch { "ssh -o BatchMode=yes" } else { "ssh" },
            &s,
            ident,
            &key,
        );
    }
}
