//! Session recordings, from a real terminal (tmux) through the real
//! OpenSSH client: the exported asciicast prints, with `asciinema cat`,
//! exactly the bytes the client received (colours, invalid UTF-8, less),
//! has the resize, plays with `asciinema play`, and holds no trace of a
//! password typed at `read -s`; the journal names the stored file with
//! its size and SHA-256. The text export, search and replay (from the
//! start and from the middle) show what the screen showed; `session
//! watch` follows a live session read-only; a daemon killed mid-session
//! leaves a recording that plays to the kill, which the next run finishes.
mod common;
use common::*;
use serde_json::Value;
use sha2::Digest;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const PASSWORD: &str = "hunter2-not-in-any-recording";

/// Runs `asciinema ARGS` at a terminal of its own (it insists on one):
/// its output (the terminal's) and exit status.
fn asciinema(dir: &Path, args: &str) -> (Vec<u8>, bool) {
    let out = dir.join("asciinema.out");
    let st = Command::new("script")
        .args(["-qec"])
        .arg(format!("PYTHONUTF8=1 asciinema {args} > {}", out.display()))
        .arg("/dev/null")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    (std::fs::read(&out).unwrap_or_default(), st.status.success())
}

#[test]
fn a_terminal_session_is_recorded_exactly_without_the_password_typed_at_read_s() {
    let s = Server::start("recordings");
    let (id, token) = s.issue("ops", &[]);
    let d = s.dir.path();
    let received = d.join("client.bin");
    let ssh = s.ssh("ops", &token);
    let line = format!(
        "{} | tee {}; echo EXIT=$?; sleep 60",
        command_line(&ssh),
        received.display()
    );
    let mut sh = Command::new("sh");
    sh.args(["-c", &line]);
    let t = Tmux::start(&d.join("client.sh"), &sh, 80, 24);
    t.wait_for("$");
    // Colours, bytes that are not UTF-8, a character split by printf's
    // two writes.
    t.keys(&[
        "-l",
        r"printf '\033[1;32mGREEN\033[0m bad:\377\376 end\n'; printf '\342\202'; printf '\254 euro\n'",
    ]);
    t.keys(&["Enter"]);
    t.wait_for("euro");
    // A full-screen program (its own screen, left with q).
    t.keys(&["-l", "seq -f PAGE-%g 1 50 | less"]);
    t.keys(&["Enter"]);
    t.wait_for("PAGE-23");
    t.keys(&["q"]);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !t.screen().contains("PAGE-23"),
        "less did not leave its screen"
    );
    t.run(&["resize-window", "-t", "tg", "-x", "100", "-y", "30"]);
    t.keys(&["clear; echo S$(stty size | tr ' ' x)", "Enter"]);
    t.wait_for("S30x100");
    // A password at a prompt that does not echo.
    // (`read -s` as dash, the profile's /bin/sh, spells it.)
    t.keys(&[
        "-l",
        "stty -echo; read PW; stty echo; echo got-${#PW}-chars",
    ]);
    t.keys(&["Enter"]);
    std::thread::sleep(Duration::from_millis(300));
    t.keys(&["-l", PASSWORD]);
    t.keys(&["Enter"]);
    t.wait_for(&format!("got-{}-chars", PASSWORD.len()));
    t.keys(&["-l", "echo typed-after"]);
    t.keys(&["Enter"]);
    t.wait_for("typed-after");
    t.keys(&["exit", "Enter"]);
    t.wait_for("EXIT=0");
    s.wait_state(&id, "terminated", Duration::from_secs(10));

    // The journal names the stored recording, its size and hash.
    let mut recorded = Vec::new();
    let found = eventually(Duration::from_secs(10), || {
        recorded = s.events_of(Some(&id), "session.recorded");
        !recorded.is_empty()
    });
    assert!(found.is_some(), "no session.recorded event");
    let detail = &recorded[0]["detail"];
    let stored = std::path::PathBuf::from(detail["path"].as_str().unwrap());
    assert_eq!(
        stored,
        d.join("recordings").join(format!("{id}.cast.zst")),
        "{detail}"
    );
    let file = std::fs::read(&stored).unwrap();
    assert_eq!(detail["stored_bytes"], file.len() as u64);
    let hash: String = sha2::Sha256::digest(&file)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(detail["sha256"], hash.as_str());
    assert_eq!(detail["truncated"], false);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&stored).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(
        !d.join("recordings").join(format!("{id}.cast")).exists(),
        "the plain file stays after compression"
    );

    // Exported, it is asciicast v2 that asciinema prints byte for byte.
    let cast = d.join("export.cast");
    let out = s.cli(&[
        "recording",
        "export",
        &id,
        "--output-file",
        cast.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let exported = std::fs::read_to_string(&cast).unwrap();
    assert_eq!(detail["bytes"], exported.len() as u64);
    let mut lines = exported.lines();
    let header: Value = serde_json::from_str(lines.next().unwrap()).unwrap();
    assert_eq!(header["version"], 2);
    assert_eq!(
        (header["width"].as_u64(), header["height"].as_u64()),
        (Some(80), Some(24))
    );
    assert_eq!(header["env"]["TOLLGATE_SESSION"], id.as_str());
    assert_eq!(header["env"]["TOLLGATE_LOGIN_USER"], "ops");
    let (printed, ok) = asciinema(d, &format!("cat {}", cast.display()));
    assert!(ok);
    let client = std::fs::read(&received).unwrap();
    assert!(client.windows(5).any(|w| w == b"GREEN"));
    assert!(
        printed == client,
        "asciinema cat differs from what the client received:\n{:?}\n{:?}",
        String::from_utf8_lossy(&printed),
        String::from_utf8_lossy(&client)
    );
    assert!(
        exported.contains("\\udcff\\udcfe"),
        "invalid bytes not kept"
    );
    assert!(exported.contains("\"r\", \"100x30\""), "no resize event");
    assert!(
        exported
            .lines()
            .any(|l| l.contains("\"i\", \"") && l.contains("typed-after")),
        "no echoed input"
    );
    assert!(exported.contains("input not recorded: the terminal was not echoing"));
    // It plays, at any speed, from start to end.
    let (played, ok) = asciinema(d, &format!("play -s 50 -i 0.1 {}", cast.display()));
    assert!(ok && played.windows(5).any(|w| w == b"GREEN"));
    assert!(!String::from_utf8_lossy(&played).contains("Traceback"));
    // As text: what the screen showed, one line per screen line.
    let out = s.cli(&["recording", "export", &id, "--format", "text"]);
    let shown = text(&out.stdout);
    for want in [
        // (the emulator drops bytes that are not UTF-8)
        "GREEN bad: end",
        "\u{20ac} euro",
        "S30x100",
        // What less showed on its own screen.
        "PAGE-23",
        "got-28-chars",
        "$ echo typed-after",
    ] {
        assert!(shown.contains(want), "{want:?} not in:\n{shown}");
    }
    assert!(!shown.contains("\x1b"), "escape sequences left:\n{shown}");
    // Read from the index written beside the recording; without it (a
    // crash, an older version) the same, the slow way; `recording index`
    // writes it again.
    let index = d.join("recordings").join(format!("{id}.idx.zst"));
    assert!(index.exists());
    std::fs::remove_file(&index).unwrap();
    let again = s.cli(&["recording", "export", &id, "--format", "text"]);
    assert_eq!(text(&again.stdout), shown);
    let out = s.cli(&["recording", "index", &id]);
    assert!(
        out.status.success() && index.exists(),
        "{}",
        text(&out.stderr)
    );
    // Search: the session and the moment.
    let hits = s.cli_json(&["recording", "search", "got-28-chars"]);
    let hits = hits.as_array().unwrap();
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert_eq!(hits[0]["session"], id.as_str());
    let offset = hits[0]["offset_s"].as_f64().unwrap();
    assert!(offset > 0.0, "{hits:?}");
    let out = s.cli(&["recording", "search", "-i", "TYPED-AFTER", "--since", "1h"]);
    let line = text(&out.stdout);
    assert!(
        line.starts_with(&format!("{id}     0:0")) && line.contains("echo typed-after"),
        "{line}"
    );
    let none = s.cli_json(&["recording", "search", "typed-after", "--profile", "other"]);
    assert_eq!(none, serde_json::json!([]));
    let none = s.cli_json(&["recording", "search", PASSWORD]);
    assert_eq!(
        none,
        serde_json::json!([]),
        "the password is in a search result"
    );
    // Replayed, from the start and from the middle, it ends on the screen
    // the person ended on (both 100x30).
    let person = t.screen();
    let person: Vec<&str> = person
        .lines()
        .take_while(|l| !l.contains("EXIT="))
        .collect();
    for (n, extra) in [
        (0, vec![]),
        (1, vec!["--at".to_string(), format!("{offset}")]),
    ] {
        let done = d.join(format!("replayed-{n}"));
        let mut r = Command::new("sh");
        r.arg("-c").arg(format!(
            "{} --config {} replay {id} --speed 20 {} && touch {}; sleep 60",
            BIN,
            s.config.display(),
            extra.join(" "),
            done.display()
        ));
        let rt = Tmux::start(&d.join(format!("replay-{n}.sh")), &r, 100, 30);
        let finished = eventually(Duration::from_secs(20), || done.exists());
        assert!(finished.is_some(), "replay did not end:\n{}", rt.screen());
        let replayed = rt.screen();
        let replayed: Vec<&str> = replayed.lines().collect();
        let trim = |v: &[&str]| -> Vec<String> {
            let mut v: Vec<String> = v.iter().map(|l| l.trim_end().to_string()).collect();
            while v.last().is_some_and(|l| l.is_empty()) {
                v.pop();
            }
            v
        };
        assert_eq!(trim(&replayed), trim(&person), "replay {extra:?}");
    }
    // The password is nowhere: not in the stored file, the export, the
    // client's view or the journal.
    let plain = zstd_decode(&file);
    for (what, bytes) in [
        ("stored", plain.as_slice()),
        ("exported", exported.as_bytes()),
        ("played", played.as_slice()),
        ("journal", &std::fs::read(d.join("journal.db")).unwrap()),
    ] {
        assert!(
            !bytes
                .windows(PASSWORD.len())
                .any(|w| w == PASSWORD.as_bytes()),
            "the password is in the {what} recording"
        );
    }
}

fn zstd_decode(b: &[u8]) -> Vec<u8> {
    zstd::stream::decode_all(b).unwrap()
}

#[test]
fn a_watcher_sees_a_live_session_as_it_happens_and_nothing_typed_there_reaches_it() {
    let s = Server::start("recordings-watch");
    let (id, token) = s.issue("ops", &[]);
    let d = s.dir.path();
    let person = Tmux::start(&d.join("person.sh"), &s.ssh("ops", &token), 80, 24);
    person.wait_for("$");
    let mut w = Command::new(BIN);
    w.arg("--config")
        .arg(&s.config)
        .args(["session", "watch", &id, "--from-start"]);
    let watcher = Tmux::start(&d.join("watcher.sh"), &w, 80, 24);
    watcher.wait_for("read-only");
    // From the start: the prompt the person got before the watcher came.
    watcher.wait_for("$");
    let sent = std::time::Instant::now();
    person.keys(&["-l", "echo MARK-$((6*7))"]);
    person.keys(&["Enter"]);
    watcher.wait_for("MARK-42");
    eprintln!(
        "the watcher showed the output {:?} after the keys were sent (tmux polling included)",
        sent.elapsed()
    );
    // Keys at the watcher go nowhere: not to the session, not echoed.
    watcher.keys(&["-l", "echo INJECTED-$((1+1))"]);
    watcher.keys(&["Enter"]);
    std::thread::sleep(Duration::from_millis(700));
    person.keys(&["-l", "echo AFTER-$((2+3))"]);
    person.keys(&["Enter"]);
    watcher.wait_for("AFTER-5");
    let (p, w) = (person.screen(), watcher.screen());
    assert!(!p.contains("INJECTED"), "reached the session:\n{p}");
    assert!(!w.contains("INJECTED"), "echoed at the watcher:\n{w}");
    // The watcher ends with the session.
    person.keys(&["exit", "Enter"]);
    watcher.wait_for("has ended");
    s.wait_state(&id, "terminated", Duration::from_secs(10));
    let out = s.cli(&["recording", "export", &id]);
    let cast = text(&out.stdout);
    assert!(
        cast.contains("AFTER-5") && !cast.contains("INJECTED"),
        "{cast}"
    );
}

#[test]
fn a_daemon_killed_mid_session_leaves_a_recording_that_plays_to_the_kill_and_the_next_run_finishes_it(
) {
    let mut s = Server::start("recordings-kill");
    let (id, token) = s.issue("ops", &[]);
    let mut ssh = s
        .ssh_opts("ops", &token, &["-tt"])
        .arg("i=0; while true; do i=$((i+1)); echo TICK-$i; sleep 0.1; done")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = buffered(ssh.stdout.take().unwrap());
    read_until(&mut out, "TICK-20");
    s.child.as_mut().unwrap().kill().unwrap(); // SIGKILL
    s.child.take().unwrap().wait().unwrap();
    // What the client got, to the end of the connection.
    let mut rest = String::new();
    use std::io::Read;
    let _ = out.read_to_string(&mut rest);
    let _ = ssh.wait();
    let last = |t: &str| {
        t.rsplit("TICK-")
            .next()
            .and_then(|n| n.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse::<u32>().ok())
            .unwrap_or(0)
    };
    let client_last = last(&format!("TICK-20\n{rest}"));
    // The plain recording plays up to within a second (ten ticks) of it.
    let dir = s.dir.path().join("recordings");
    assert!(dir.join(format!("{id}.cast")).exists());
    let exported = text(&s.cli(&["recording", "export", &id]).stdout);
    let recorded: String = exported
        .lines()
        .skip(1)
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e[1] == "o")
        .map(|e| e[2].as_str().unwrap_or_default().to_string())
        .collect();
    let recorded_last = last(&recorded);
    eprintln!("the client saw TICK-{client_last}, the recording has TICK-{recorded_last}");
    assert!(
        recorded_last >= 10 && recorded_last + 10 >= client_last,
        "client TICK-{client_last}, recording TICK-{recorded_last}"
    );
    // The next run finishes it: compressed, indexed, recorded.
    s.spawn();
    let mut ev = Vec::new();
    let done = eventually(Duration::from_secs(10), || {
        ev = s.events_of(Some(&id), "session.recorded");
        !ev.is_empty()
    });
    assert!(done.is_some(), "no session.recorded after the restart");
    assert_eq!(ev[0]["detail"]["recovered"], true, "{ev:?}");
    assert!(dir.join(format!("{id}.cast.zst")).exists());
    assert!(dir.join(format!("{id}.idx.zst")).exists());
    assert!(!dir.join(format!("{id}.cast")).exists());
    let again = text(&s.cli(&["recording", "export", &id]).stdout);
    assert_eq!(again, exported);
}

#[test]
fn a_recording_past_max_bytes_is_cut_with_a_marker_and_an_event() {
    let s = Server::start_with(
        "recordings-cut",
        Opts {
            tail: "[recordings]\nmax_bytes = 4096\n".into(),
            ..Opts::default()
        },
    );
    let (id, token) = s.issue("ops", &[]);
    let out = s.ssh_run("ops", &token, &["-tt"], "seq 1 5000; echo DONE");
    assert!(text(&out.stdout).contains("DONE"));
    let mut ev = Vec::new();
    let done = eventually(Duration::from_secs(10), || {
        ev = s.events_of(Some(&id), "session.recorded");
        !ev.is_empty()
    });
    assert!(done.is_some());
    assert_eq!(ev[0]["detail"]["truncated"], true);
    assert_eq!(
        s.events_of(Some(&id), "session.recording_truncated").len(),
        1
    );
    let cast = text(&s.cli(&["recording", "export", &id]).stdout);
    assert!(cast.len() <= 4096 + 200, "{} bytes", cast.len());
    assert!(
        cast.trim_end()
            .ends_with("\"m\", \"recording truncated: recordings.max_bytes reached\"]"),
        "{cast}"
    );
    assert!(!cast.contains("DONE"));
}

#[test]
fn recordings_past_their_retention_are_removed_and_the_removal_is_recorded() {
    let mut s = Server::start_with(
        "recordings-retention",
        Opts {
            tail: "[recordings]\nretention = \"2s\"\n".into(),
            ..Opts::default()
        },
    );
    let (id, token) = s.issue("ops", &[]);
    let out = s.ssh_run("ops", &token, &["-tt"], "echo RECORDED");
    assert!(text(&out.stdout).contains("RECORDED"));
    let dir = s.dir.path().join("recordings");
    let stored = dir.join(format!("{id}.cast.zst"));
    let ok = eventually(Duration::from_secs(10), || stored.exists());
    assert!(ok.is_some());
    // Removed at the first check after a start once older than 2 s.
    std::thread::sleep(Duration::from_secs(3));
    s.stop();
    s.spawn();
    let mut ev = Vec::new();
    let removed = eventually(Duration::from_secs(10), || {
        ev = s.events_of(None, "recordings.removed");
        !ev.is_empty()
    });
    assert!(removed.is_some(), "no recordings.removed event");
    assert_eq!(ev[0]["detail"]["sessions"][0], id.as_str(), "{ev:?}");
    assert!(!stored.exists());
    assert!(!dir.join(format!("{id}.idx.zst")).exists());
    let out = s.cli(&["recording", "export", &id]);
    assert_eq!(out.status.code(), Some(4));
}
