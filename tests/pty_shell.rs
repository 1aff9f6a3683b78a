//! Acceptance 2: a shell in a PTY driven the way a person drives it, in a
//! real terminal (tmux): prompt, echo, window changes, Ctrl-C.
mod common;
use common::*;
use std::time::Duration;

#[test]
fn a_person_at_a_terminal_gets_a_prompt_echo_resizes_and_ctrl_c() {
    let s = Server::start("pty-shell");
    let (id, tok) = s.issue("ops", &[]);
    // The same ssh command the harness uses, in a real terminal.
    let t = Tmux::start(
        &s.dir.path().join("connect.sh"),
        &s.ssh("ops", &tok),
        80,
        24,
    );
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
