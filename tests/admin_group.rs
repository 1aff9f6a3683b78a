//! The admin group (the systemd issue's install section): a journal made in
//! a state directory its group may write (the unit's `Group=tollgate`,
//! `StateDirectoryMode=2770`) belongs to that group, so its members run the
//! admin commands without root; anyone else gets a clear refusal.
mod common;
use common::*;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Command;
use std::time::Duration;

/// The group the test uses in place of `tollgate` (every Debian has it).
const GROUP: u32 = 65534; // nogroup

fn cli_as(s: &Server, uid: u32, gid: u32, args: &[&str]) -> std::process::Output {
    Command::new("setpriv")
        .arg(format!("--reuid={uid}"))
        .arg(format!("--regid={gid}"))
        .arg("--clear-groups")
        .arg(BIN)
        .arg("--config")
        .arg(&s.config)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn members_of_the_state_directorys_group_run_admin_commands() {
    if !nix::unistd::Uid::effective().is_root() {
        println!("NOT TESTED: needs root to hand out a group");
        return;
    }
    let mut s = Server::configure("group", Opts::default());
    let state = s.dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::os::unix::fs::chown(&state, Some(0), Some(GROUP)).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o2770)).unwrap();
    let config = std::fs::read_to_string(&s.config).unwrap();
    let journal = state.join("journal.db");
    std::fs::write(
        &s.config,
        config
            .replace(
                &format!("journal = \"{}/journal.db\"", s.dir.path().display()),
                &format!("journal = \"{}\"", journal.display()),
            )
            .replace(
                &format!("dir = \"{}/recordings\"", s.dir.path().display()),
                &format!("dir = \"{}/recordings\"", state.display()),
            ),
    )
    .unwrap();
    // The daemon runs with the unit's UMask=0077.
    let c = s.serve_command();
    let child = Command::new("sh")
        .args(["-c", "umask 077; exec \"$@\"", "sh"])
        .arg(c.get_program())
        .args(c.get_args())
        .envs(c.get_envs().filter_map(|(k, v)| v.map(|v| (k, v))))
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(s.dir.path().join("serve.log")).unwrap())
        .spawn()
        .unwrap();
    s.child = Some(child);
    s.wait_listening();

    for f in ["journal.db", "journal.db-wal", "journal.db-shm"] {
        let m = std::fs::metadata(state.join(f)).unwrap();
        assert_eq!(
            (m.mode() & 0o777, m.gid()),
            (0o660, GROUP),
            "{f}: mode {:o}, group {}",
            m.mode() & 0o777,
            m.gid()
        );
    }

    // A member issues a token (nobody, whose group is nogroup) ...
    let out = cli_as(
        &s,
        65534,
        GROUP,
        &[
            "session",
            "issue",
            "--profile",
            "console",
            "--login-user",
            "ops",
            "--output",
            "json",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let (id, token) = (v["id"].as_str().unwrap(), v["token"].as_str().unwrap());
    // ... which the daemon honours.
    let out = s.ssh_run("ops", token, &[], "echo member-issued");
    assert!(
        text(&out.stdout).contains("member-issued"),
        "{}",
        text(&out.stderr)
    );
    s.wait_state(id, "terminated", Duration::from_secs(5));
    let out = cli_as(&s, 65534, GROUP, &["session", "list"]);
    assert!(out.status.success() && text(&out.stdout).contains(id));

    // Recordings are the group's too: a member replays what a session showed.
    let (rid, rtoken) = s.issue("ops", &[]);
    let out = s.ssh_run("ops", &rtoken, &["-tt"], "echo recorded-for-members");
    assert!(text(&out.stdout).contains("recorded-for-members"));
    let done = eventually(Duration::from_secs(10), || {
        !s.events_of(Some(&rid), "session.recorded").is_empty()
    });
    assert!(done.is_some());
    let recordings = state.join("recordings");
    let m = std::fs::metadata(&recordings).unwrap();
    assert_eq!((m.mode() & 0o7777, m.gid()), (0o2750, GROUP));
    for f in [format!("{rid}.cast.zst"), format!("{rid}.idx.zst")] {
        let m = std::fs::metadata(recordings.join(&f)).unwrap();
        assert_eq!((m.mode() & 0o777, m.gid()), (0o640, GROUP), "{f}");
    }
    let out = cli_as(
        &s,
        65534,
        GROUP,
        &["recording", "export", &rid, "--format", "text"],
    );
    assert!(
        text(&out.stdout).contains("recorded-for-members"),
        "{}",
        text(&out.stderr)
    );
    let out = cli_as(&s, 65534, 4242, &["recording", "export", &rid]);
    assert!(!out.status.success());

    // Someone outside the group is refused, saying what would let them in.
    let out = cli_as(&s, 65534, 4242, &["session", "list"]);
    let err = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(&journal.display().to_string()) && err.contains("ermission denied"),
        "{err}"
    );
    let name = nix::unistd::Group::from_gid(GROUP.into())
        .unwrap()
        .unwrap()
        .name;
    assert!(
        err.contains(&format!(
            "run this as root or as a member of group \"{name}\""
        )),
        "{err}"
    );
}
