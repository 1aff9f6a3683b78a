//! The version this binary reports everywhere (`--version`, the journal's
//! nodes and `daemon.started` events, `tollgate_build_info`): the package
//! version, and a build stamp after `+` when one was given.
//!
//! The stamp comes from `TOLLGATE_BUILD` at compile time (a packager's
//! build id), or is written into the binary afterwards: the bytes after
//! [`STAMP_MARK`] are read at run time, so a copy of the binary with
//! another stamp there reports another version (tests/handover.rs makes
//! its "new build" so, without a second compile).

/// What precedes the stamp in the binary; the stamp is the bytes after it
/// up to the first NUL.
pub const STAMP_MARK: &[u8] = b"TOLLGATE-BUILD-STAMP:";

/// The mark and room for a 32-byte stamp, NUL-padded.
static STAMP: [u8; 53] =
    *b"TOLLGATE-BUILD-STAMP:\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0";

/// `0.4.0`, or `0.4.0+STAMP`.
pub fn current() -> &'static str {
    static V: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    V.get_or_init(|| {
        // Read through an opaque reference: the compiler may not assume
        // the bytes it put there are still the ones in the file.
        let bytes: &[u8] = std::hint::black_box(&STAMP[..]);
        let rest = &bytes[STAMP_MARK.len()..];
        let stamp = &rest[..rest.iter().position(|&b| b == 0).unwrap_or(rest.len())];
        let stamp = std::str::from_utf8(stamp).unwrap_or("");
        match (option_env!("TOLLGATE_BUILD"), stamp) {
            (_, s) if !s.is_empty() => format!("{}+{s}", env!("CARGO_PKG_VERSION")),
            (Some(b), _) if !b.is_empty() => format!("{}+{b}", env!("CARGO_PKG_VERSION")),
            _ => env!("CARGO_PKG_VERSION").to_string(),
        }
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_unstamped_build_reports_the_package_version() {
        assert!(super::current().starts_with(env!("CARGO_PKG_VERSION")));
        assert_eq!(super::STAMP.len(), super::STAMP_MARK.len() + 32);
    }
}
