//! Acceptance 1: exec with and without a PTY — output, stderr kept apart,
//! exit status zero and non-zero, exit signal.
mod common;
use common::*;

#[test]
fn exec_without_pty_keeps_stderr_apart_and_returns_the_status() {
    let s = Server::start("exec-pipes");
    let (id, tok) = s.issue("ops", &[]);
    let out = s.ssh_run("ops", &tok, &[], "echo to-out; echo to-err >&2; exit 3");
    assert_eq!(text(&out.stdout), "to-out\n");
    assert_eq!(text(&out.stderr), "to-err\n");
    assert_eq!(out.status.code(), Some(3));
    let v = s.wait_state(&id, "terminated", std::time::Duration::from_secs(5));
    assert_eq!(v["end_reason"], "exited");
    assert_eq!(v["exit_status"], 3);
    assert_eq!(v["bytes_out"], 14);

    let (_, tok) = s.issue("ops", &[]);
    let out = s.ssh_run("ops", &tok, &[], "true");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn exec_without_pty_passes_stdin_and_eof() {
    let s = Server::start("exec-stdin");
    let (_, tok) = s.issue("ops", &[]);
    let mut c = s.ssh("ops", &tok);
    c.arg("tr a-z A-Z; echo done");
    c.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"hello\nworld\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(text(&out.stdout), "HELLO\nWORLD\ndone\n");
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn exec_with_pty_merges_output_on_the_terminal_and_returns_the_status() {
    let s = Server::start("exec-pty");
    let (id, tok) = s.issue("ops", &[]);
    let out = s.ssh_run("ops", &tok, &["-tt"], "tty; echo to-err >&2; exit 7");
    let o = text(&out.stdout);
    assert!(o.starts_with("/dev/pts/"), "{o:?}");
    assert!(
        o.contains("to-err\r\n"),
        "stderr goes to the terminal: {o:?}"
    );
    assert_eq!(out.status.code(), Some(7));
    let v = s.wait_state(&id, "terminated", std::time::Duration::from_secs(5));
    assert_eq!(v["exit_status"], 7);
}

#[test]
fn exit_signal_reaches_the_client_and_the_journal() {
    let s = Server::start("exec-signal");
    for pty in [false, true] {
        let (id, tok) = s.issue("ops", &[]);
        let extra: &[&str] = if pty { &["-tt", "-v"] } else { &["-v"] };
        let out = s.ssh_run("ops", &tok, extra, "kill -TERM $$");
        // OpenSSH reports a remote signal as status 255 and logs the request.
        assert_eq!(out.status.code(), Some(255));
        assert!(
            text(&out.stderr).contains("rtype exit-signal"),
            "{}",
            text(&out.stderr)
        );
        let v = s.wait_state(&id, "terminated", std::time::Duration::from_secs(5));
        assert_eq!(v["exit_signal"], "TERM", "{v:#}");
        assert_eq!(v["exit_status"], serde_json::Value::Null);
    }
}

#[test]
fn exec_is_refused_with_a_message_when_the_profile_does_not_allow_it() {
    let s = Server::start_with(
        "exec-refused",
        Opts {
            profile_extra: String::new(),
            ..Opts::default()
        },
    );
    let (id, tok) = s.issue("ops", &[]);
    let out = s.ssh_run("ops", &tok, &[], "id");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout), "");
    assert_eq!(
        text(&out.stderr),
        "tollgate: this token does not allow running a command; connect without one to get the console\n"
    );
    let v = s.wait_state(&id, "terminated", std::time::Duration::from_secs(5));
    assert_eq!(v["end_reason"], "error");
    // An issued --command runs for exec requests whatever the client asked.
    let (_, tok) = s.issue("ops", &["--command", "echo issued-command"]);
    let out = s.ssh_run("ops", &tok, &[], "echo client-command");
    assert_eq!(text(&out.stdout), "issued-command\n");
    let events = s.cli_json(&["events", "--session", &id]);
    assert!(events
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["kind"] == "session.request_refused"));
}

#[test]
fn input_to_a_process_that_reads_late_arrives_whole() {
    // 16 MiB is far past the 1 MiB the daemon queues per session: the client
    // is held back until the process reads, and nothing is lost.
    let s = Server::start("exec-backpressure");
    let (id, tok) = s.issue("ops", &[]);
    let mut c = s.ssh("ops", &tok);
    c.arg("sleep 3; wc -c");
    c.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..256 {
            stdin.write_all(&chunk).unwrap();
        }
    });
    writer.join().unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(text(&out.stdout).trim(), (16 * 1024 * 1024).to_string());
    let v = s.wait_state(&id, "terminated", std::time::Duration::from_secs(5));
    assert_eq!(v["bytes_in"], 16 * 1024 * 1024);
}
