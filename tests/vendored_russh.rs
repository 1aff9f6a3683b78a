//! The vendored russh (vendor/README.md) differs from the published 0.65.1
//! by exactly `vendor/russh.patch`: the patch must reverse-apply cleanly,
//! so a change to the vendored code that is not in the patch (or a patch
//! that no longer matches the code) fails here.

use std::process::Command;

#[test]
fn the_vendored_russh_is_the_published_one_plus_the_documented_patch() {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new("git")
        .current_dir(root)
        .args([
            "apply",
            "-R",
            "--check",
            "--directory=vendor/russh",
            "vendor/russh.patch",
        ])
        .output()
        .expect("git");
    assert!(
        out.status.success(),
        "vendor/russh.patch does not match vendor/russh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let patch = std::fs::read_to_string(format!("{root}/vendor/russh.patch")).unwrap();
    // Every hunk says it is ours and where the reason is written down.
    let hunks = patch.matches("\n@@ ").count();
    let marked = patch.matches("tollgate patch (vendor/README.md)").count();
    assert_eq!(hunks, marked, "every hunk of the patch is marked");
    let toml = std::fs::read_to_string(format!("{root}/Cargo.toml")).unwrap();
    assert!(toml.contains("[patch.crates-io]\nrussh = { path = \"vendor/russh\" }"));
}
