//! Public-key collection sessions: [`keys`] builds every form of a
//! collected key that operators paste (OpenSSH line, SHA-256 and MD5
//! fingerprints, RFC 4716, SPKI PEM), byte-identical to `ssh-keygen`;
//! this module checks and makes connection identifiers. The journal
//! (`journal::collect`) keeps sessions, connections, keys and webhooks and
//! creates webhook deliveries with each step (`journal::webhooks` tracks
//! them). The SSH flow is in `ssh::collecting`, sending in `webhook`.

pub mod keys;

/// A user name that can be typed as `ssh NAME@host` and never collides
/// with a token's login user by accident: 3 to 64 of `a-z 0-9 . _ -`.
pub fn valid_identifier(s: &str) -> bool {
    (3..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

/// 12 random characters from `a-z0-9` (about 62 bits): unguessable.
pub fn random_identifier() -> std::io::Result<String> {
    const ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut raw = [0u8; 12];
    getrandom::fill(&mut raw).map_err(std::io::Error::other)?;
    // 252 = 7 × 36: reject above it so every character is equally likely.
    let mut out = String::with_capacity(12);
    let mut extra = [0u8; 1];
    for mut b in raw {
        while b >= 252 {
            getrandom::fill(&mut extra).map_err(std::io::Error::other)?;
            b = extra[0];
        }
        out.push(ALPHABET[(b % 36) as usize] as char);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_random_and_valid() {
        let a = random_identifier().unwrap();
        let b = random_identifier().unwrap();
        assert_ne!(a, b);
        assert!(valid_identifier(&a) && a.len() == 12, "{a}");
        assert!(
            !valid_identifier("Ab") && !valid_identifier("a b c") && valid_identifier("k7q2m9x4")
        );
    }
}
