//! Acceptance 2: a shell in a PTY driven the way a person drives it, in a
//! real terminal (tmux): prompt, echo, window changes, Ctrl-C.
mod common;
use common::*;
use std::process::Command;
use std::time::Duration;

struct Tmux {
    socket: String,
}

impl Tmux {
    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .unwrap();
        text(&out.stdout)
    }
    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "tg"])
    }
    fn keys(&self, keys: &[&str]) {
        let mut a = vec!["send-keys", "-t", "tg"];
        a.extend_from_slice(keys);
        self.run(&a);
    }
    fn wait_for(&self, needle: &str) -> String {
        let mut last = String::new();
        let ok = eventually(Duration::from_secs(10), || {
            last = self.screen();
            last.contains(needle)
        });
        assert!(ok.is_some(), "screen never showed {needle:?}:\n{last}");
        last
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        self.run(&["kill-server"]);
    }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

#[test]
fn a_person_at_a_terminal_gets_a_prompt_echo_resizes_and_ctrl_c() {
    let s = Server::start("pty-shell");
    let (id, tok) = s.issue("ops", &[]);
    // The same ssh command the harness uses, wrapped in a script for tmux.
    let c = s.ssh("ops", &tok);
    let mut script = String::from("#!/bin/sh\nexec env");
    for (k, v) in c.get_envs() {
        if let Some(v) = v {
            script.push_str(&format!(
                " {}={}",
                k.to_string_lossy(),
                shell_quote(&v.to_string_lossy())
            ));
        }
    }
    script.push_str(" ssh");
    for a in c.get_args() {
        script.push(' ');
        script.push_str(&shell_quote(&a.to_string_lossy()));
    }
    script.push('\n');
    let path = s.dir.path().join("connect.sh");
    std::fs::write(&path, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700)).unwrap();

    let t = Tmux {
        socket: format!("tg-test-{}", std::process::id()),
    };
    t.run(&[
        "new-session",
        "-d",
        "-s",
        "tg",
        "-x",
        "80",
        "-y",
        "24",
        path.to_str().unwrap(),
    ]);
    // capture-pane trims the space after the prompt.
    let prompt = eventually(Duration::from_secs(10), || {
        t.screen().lines().any(|l| l.trim_end() == "$")
    });
    assert!(prompt.is_some(), "no prompt:\n{}", t.screen());

    // Typed input is echoed by the terminal and the command runs.
    t.keys(&["echo typed-$((6*7))", "Enter"]);
    let screen = t.wait_for("typed-42");
    assert!(
        screen.contains("echo typed-$((6*7))"),
        "input not echoed:\n{screen}"
    );

    t.keys(&["stty size", "Enter"]);
    t.wait_for("24 80");
    t.run(&["resize-window", "-t", "tg", "-x", "100", "-y", "30"]);
    t.keys(&["clear; stty size", "Enter"]);
    t.wait_for("30 100");

    // Ctrl-C reaches the foreground job.
    t.keys(&[
        "sh -c 'trap \"echo INT-$((40+2)); exit 0\" INT; while :; do sleep 0.1; done'",
        "Enter",
    ]);
    std::thread::sleep(Duration::from_millis(500));
    t.keys(&["C-c"]);
    t.wait_for("INT-42");

    t.keys(&["exit 4", "Enter"]);
    let v = s.wait_state(&id, "terminated", Duration::from_secs(10));
    assert_eq!(v["end_reason"], "exited");
    assert_eq!(v["exit_status"], 4);
    let history = v["history"].as_array().unwrap();
    assert!(
        history.iter().any(|e| e["kind"] == "session.resized"
            && e["detail"]["cols"] == 100
            && e["detail"]["rows"] == 30),
        "no resize event: {history:?}"
    );
    assert!(v["bytes_in"].as_i64().unwrap() > 20);
}
