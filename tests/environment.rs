//! Acceptance 9: the session runs as the profile's user, with a clean
//! environment and no descriptors beyond 0-2.
mod common;
use common::*;

#[test]
fn session_runs_as_the_profile_user_with_a_clean_environment_and_only_fds_0_to_2() {
    let s = Server::start("environment");
    let (id, tok) = s.issue("ops", &[]);
    // The shell's own initial environment and descriptors, not those of a
    // child it forks. `ls` runs alone (no pipeline), so while it looks the
    // shell holds no pipe ends of its own.
    let script =
        "id -un; echo ---; tr '\\0' '\\n' < /proc/$$/environ | sort; echo ---; ls -1 /proc/$$/fd";
    let mut c = s.ssh("ops", &tok);
    c.args([
        "-o",
        "SendEnv=LC_TG_TEST",
        "-o",
        "SendEnv=TG_EVIL",
        "-o",
        "SendEnv=LANG",
    ])
    .env("LC_TG_TEST", "passed")
    .env("TG_EVIL", "leaked")
    .env("LANG", "C.UTF-8")
    .env("TG_NOT_SENT", "x")
    .arg(script);
    let out = c.output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let o = text(&out.stdout);
    let parts: Vec<&str> = o.split("---\n").collect();
    assert_eq!(parts[0].trim(), session_user());
    let env: Vec<&str> = parts[1].lines().collect();
    let keys: Vec<&str> = env.iter().map(|l| l.split('=').next().unwrap()).collect();
    assert_eq!(
        keys,
        vec![
            "HOME",
            "LANG",
            "LC_TG_TEST",
            "LOGNAME",
            "PATH",
            "SHELL",
            "TG_PROFILE_VAR",
            "TOLLGATE_SESSION_ID",
            "USER"
        ],
        "{env:?}"
    );
    assert!(env.contains(&"LC_TG_TEST=passed"));
    assert!(env.contains(&"TG_PROFILE_VAR=from-profile"));
    assert!(env.contains(&format!("TOLLGATE_SESSION_ID={id}").as_str()));
    assert!(env.contains(&format!("USER={}", session_user()).as_str()));
    assert_eq!(parts[2], "0\n1\n2\n", "descriptors: {:?}", parts[2]);
    if nix::unistd::Uid::effective().is_root() {
        assert!(!parts[0].contains("root"));
    }
}

#[test]
fn a_pty_session_gets_term_from_the_request_and_a_controlling_terminal() {
    let s = Server::start("pty-env");
    let (_, tok) = s.issue("ops", &[]);
    let mut c = s.ssh("ops", &tok);
    c.args(["-tt"])
        .env("TERM", "vt220-test-term")
        .arg("echo TERM=$TERM; ps -o tty= -p $$; ls -1 /proc/$$/fd");
    let out = c.output().unwrap();
    let o = text(&out.stdout);
    assert!(o.contains("TERM=vt220-test-term"), "{o:?}");
    assert!(o.contains("pts/"), "no controlling terminal: {o:?}");
    assert!(o.ends_with("\r\n0\r\n1\r\n2\r\n"), "descriptors: {o:?}");
}

#[test]
fn the_terminal_belongs_to_the_session_user_and_sigpipe_is_default() {
    let s = Server::start("pty-owner");
    let (_, tok) = s.issue("ops", &[]);
    let out = s.ssh_run("ops", &tok, &["-tt"], "stat -c %U $(tty); id -G");
    let o = text(&out.stdout);
    let first = o.lines().next().unwrap_or_default().trim();
    assert_eq!(first, session_user(), "{o:?}");
    let expected_groups = std::process::Command::new("id")
        .args(["-G", &session_user()])
        .output()
        .unwrap();
    assert_eq!(
        o.lines().nth(1).unwrap_or_default().trim(),
        text(&expected_groups.stdout).trim()
    );

    // With SIGPIPE ignored (as in the daemon), `yes` would complain of EPIPE.
    let (_, tok) = s.issue("ops", &[]);
    let out = s.ssh_run("ops", &tok, &[], "yes | head -c 1 >/dev/null; echo done");
    assert_eq!(text(&out.stdout), "done\n");
    assert_eq!(text(&out.stderr), "", "SIGPIPE is not at its default");
}

#[test]
fn a_session_starts_with_the_open_file_limit_the_daemon_started_with() {
    let mut s = Server::configure("nofile", Opts::default());
    s.spawn_with_nofile(1000);
    let daemon = std::fs::read_to_string(format!("/proc/{}/limits", s.pid())).unwrap();
    let (soft, hard) = nofile_of(&daemon);
    // The daemon raised its own soft limit to the hard one...
    assert_eq!(soft, hard, "{daemon}");
    // ...and neither a command nor a shell on a PTY inherits that.
    let (_, tok) = s.issue("ops", &[]);
    let out = s.ssh_run("ops", &tok, &[], "cat /proc/self/limits");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        nofile_of(&text(&out.stdout)),
        ("1000".to_string(), hard.clone())
    );
    let (_, tok) = s.issue("ops", &[]);
    let out = s.ssh_run("ops", &tok, &["-tt"], "ulimit -Sn; ulimit -Hn");
    let o = text(&out.stdout);
    let nums: Vec<&str> = o.split_whitespace().collect();
    assert_eq!(nums, vec!["1000", hard.as_str()], "{o:?}");
}

/// The scheduling policy in a `/proc/…/stat` line (field 41).
fn policy_of(stat: &str) -> i32 {
    let after_comm = &stat[stat.rfind(')').expect("a stat line") + 2..];
    after_comm
        .split(' ')
        .nth(38)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn the_daemon_runs_under_sched_batch_and_a_session_under_sched_other() {
    const OTHER: i32 = 0;
    const BATCH: i32 = 3;
    let mine = policy_of(&std::fs::read_to_string("/proc/thread-self/stat").unwrap());
    if mine != OTHER {
        // The daemon keeps any other policy it is given, and so do sessions.
        eprintln!("skipped: this test runs under policy {mine}, not SCHED_OTHER");
        return;
    }
    let s = Server::start("sched");
    let (_, tok) = s.issue("ops", &[]);
    // A session's process, started after every thread of the daemon's.
    let out = s.ssh_run("ops", &tok, &[], "cat /proc/self/stat");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        policy_of(&text(&out.stdout)),
        OTHER,
        "{}",
        text(&out.stdout)
    );
    let tasks: Vec<_> = std::fs::read_dir(format!("/proc/{}/task", s.pid()))
        .unwrap()
        .map(|t| std::fs::read_to_string(t.unwrap().path().join("stat")).unwrap())
        .collect();
    assert!(tasks.len() >= 3, "{tasks:?}");
    for t in &tasks {
        assert_eq!(policy_of(t), BATCH, "{t}");
    }
}
