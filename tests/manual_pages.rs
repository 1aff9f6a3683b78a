//! The manual pages are lint-clean: groff with every warning on says
//! nothing. (That they name every subcommand, option and config key is
//! checked beside the code: `main.rs` and `config/tests.rs`.)
mod common;
use common::*;

#[test]
fn the_manual_pages_are_lint_clean() {
    for page in ["man/tollgate.8", "man/tollgate.toml.5"] {
        let out = std::process::Command::new("groff")
            .args(["-man", "-ww", "-z", page])
            .output()
            .expect("groff (package groff-base; scripts/test.sh installs it)");
        assert!(
            out.status.success() && out.stderr.is_empty() && out.stdout.is_empty(),
            "{page}: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
    }
}
