//! `systemd/tollgate.service` as systemd itself reads it: `systemd-analyze
//! verify` passes (with the binary at the path this build produced and the
//! manual pages it names installed), and the exposure the README reports is
//! what `systemd-analyze security --offline=true` says.
mod common;
use common::*;
use std::process::Command;

/// The shipped unit with its binary path pointed at this build, beside a
/// MANPATH holding our pages.
fn staged(dir: &std::path::Path) -> std::path::PathBuf {
    let unit = std::fs::read_to_string("systemd/tollgate.service").unwrap();
    assert!(unit.contains("ExecStart=/usr/sbin/tollgate "), "{unit}");
    let path = dir.join("tollgate.service");
    std::fs::write(&path, unit.replace("/usr/sbin/tollgate", BIN)).unwrap();
    for (sec, page) in [("8", "tollgate.8"), ("5", "tollgate.toml.5")] {
        let d = dir.join(format!("man/man{sec}"));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::copy(format!("man/{page}"), d.join(page)).unwrap();
    }
    path
}

#[test]
fn the_unit_verifies_and_its_exposure_is_as_documented() {
    let dir = TempDir::new("unit");
    let unit = staged(dir.path());
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .env("MANPATH", dir.path().join("man"))
        .output()
        .expect("systemd-analyze (package systemd; scripts/test.sh installs it)");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );

    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&unit)
        .output()
        .unwrap();
    let report = text(&out.stdout);
    let measured = report
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for tollgate.service: ")
                .nth(1)
        })
        .unwrap_or_else(|| panic!("{report}{}", text(&out.stderr)))
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    let readme = std::fs::read_to_string("README.md").unwrap();
    assert!(
        readme.contains(&format!("exposure level {measured}")),
        "README does not report `exposure level {measured}`:\n{report}"
    );
}
