//! A session that ends while the journal cannot be written (its disk is
//! full) is not left `active`: the daemon retries until the journal takes
//! the end, with the real reason and exit status. The journal lives on a
//! small tmpfs of the test's own, filled up and then freed.
mod common;
use common::*;
use std::process::{Command, Stdio};
use std::time::Duration;

struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn an_end_the_full_journal_refused_is_recorded_once_there_is_room() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("NOT TESTED: mounting a tmpfs needs root");
        return;
    }
    let mut s = Server::configure("lost-endings", Opts::default());
    let disk = s.dir.path().join("disk");
    std::fs::create_dir(&disk).unwrap();
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=16m", "tmpfs"])
        .arg(&disk)
        .status()
        .unwrap();
    assert!(ok.success(), "mount tmpfs");
    let _mount = Mount(disk.clone());
    let journal = disk.join("journal.db");
    let cfg = std::fs::read_to_string(&s.config).unwrap().replace(
        &format!("journal = \"{}/journal.db\"", s.dir.path().display()),
        &format!("journal = \"{}\"", journal.display()),
    );
    assert!(cfg.contains(&journal.display().to_string()));
    std::fs::write(&s.config, cfg).unwrap();
    s.spawn();

    let (id, tok) = s.issue("ops", &[]);
    let mut ssh = s.ssh("ops", &tok);
    ssh.arg("sleep 3; exit 5")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = ssh.spawn().unwrap();
    s.wait_state(&id, "active", Duration::from_secs(10));
    // Fill the journal's disk while the command still runs.
    let filler = disk.join("filler");
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=64k"])
        .arg(format!("of={}", filler.display()))
        .stderr(Stdio::null())
        .status();
    let st = child.wait().unwrap();
    assert_eq!(st.code(), Some(5));
    // It ended, but the journal cannot say so yet.
    let told = eventually(Duration::from_secs(10), || {
        s.log_text()
            .contains("could not record the end of the session in the journal; retrying")
    });
    assert!(told.is_some(), "{}", s.log_text());
    // An admin can still read the journal on the full disk: the session is
    // still active there, and what it is waiting for is in the log.
    let out = s.cli(&["session", "show", &id, "--output", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["state"], "active", "{v:#}");
    std::thread::sleep(Duration::from_secs(2));
    // Room again: the end goes in, as it was.
    std::fs::remove_file(&filler).unwrap();
    let v = s.wait_state(&id, "terminated", Duration::from_secs(40));
    assert_eq!(v["end_reason"], "exited", "{v:#}");
    assert_eq!(v["exit_status"], 5, "{v:#}");
    assert!(s
        .log_text()
        .contains("recorded the end of the session in the journal after retrying"));
    s.stop();
}
