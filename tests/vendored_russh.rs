//! The vendored russh and russh-cryptovec (vendor/README.md) differ from
//! the published 0.65.1 and 0.62.0 by exactly `vendor/russh.patch` and
//! `vendor/russh-cryptovec.patch`: each patch must reverse-apply cleanly,
//! so a change to the vendored code that is not in its patch (or a patch
//! that no longer matches the code) fails here.

use std::process::Command;

#[test]
fn the_vendored_russh_is_the_published_one_plus_the_documented_patch() {
    check("russh");
}

#[test]
fn the_vendored_cryptovec_is_the_published_one_plus_the_documented_patch() {
    check("russh-cryptovec");
}

fn check(name: &str) {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new("git")
        .current_dir(root)
        .args([
            "apply",
            "-R",
            "--check",
            &format!("--directory=vendor/{name}"),
            &format!("vendor/{name}.patch"),
        ])
        .output()
        .expect("git");
    assert!(
        out.status.success(),
        "vendor/{name}.patch does not match vendor/{name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let patch = std::fs::read_to_string(format!("{root}/vendor/{name}.patch")).unwrap();
    // Every hunk says it is ours and where the reason is written down.
    let hunks = patch.matches("\n@@ ").count();
    let marked = patch.matches("tollgate patch (vendor/README.md)").count();
    assert!(hunks > 0);
    assert_eq!(hunks, marked, "every hunk of the patch is marked");
    let toml = std::fs::read_to_string(format!("{root}/Cargo.toml")).unwrap();
    assert!(toml.contains(&format!("\n{name} = {{ path = \"vendor/{name}\" }}")));
}
