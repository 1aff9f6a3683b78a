//! One-time tokens: generation, hashing, and the shape check done before any
//! journal lookup. A token is printed once; only its SHA-256 is ever stored.

use sha2::{Digest, Sha256};

/// Every token starts with this, so a pasted token is recognisable (and
/// secret scanners can find leaked ones).
pub const PREFIX: &str = "tg_";

/// A freshly generated token. Deliberately not `Debug`/`Display`: the only way
/// to see it is [`Token::reveal`], called once where it is printed.
pub struct Token(String);

impl Token {
    /// 32 random bytes from the OS, URL-safe base64 without padding.
    pub fn generate() -> std::io::Result<Token> {
        let mut raw = [0u8; 32];
        getrandom::fill(&mut raw).map_err(std::io::Error::other)?;
        Ok(Token(format!("{PREFIX}{}", base64url(&raw))))
    }

    /// The plaintext, for the single place that shows it to the operator.
    pub fn reveal(&self) -> &str {
        &self.0
    }

    /// The hash that goes into the journal.
    pub fn hash(&self) -> String {
        hash(&self.0)
    }
}

/// Hex SHA-256 of what the client presented. Surrounding whitespace (a pasted
/// newline) is ignored; anything else is hashed as given.
pub fn hash(presented: &str) -> String {
    let digest = Sha256::digest(presented.trim().as_bytes());
    hex(&digest)
}

/// Cheap shape check; a malformed answer is still hashed and looked up, so
/// it costs the same time as a well-formed wrong token (no oracle).
pub fn looks_like_token(presented: &str) -> bool {
    let t = presented.trim();
    t.len() == PREFIX.len() + 43
        && t.starts_with(PREFIX)
        && t[PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Random identifier with a prefix, e.g. `ses_3f9a…`: not secret, only unique.
pub fn random_id(prefix: &str) -> std::io::Result<String> {
    let mut raw = [0u8; 8];
    getrandom::fill(&mut raw).map_err(std::io::Error::other)?;
    Ok(format!("{prefix}{}", hex(&raw)))
}

/// A new session id, `ses_` then 12 hex digits of milliseconds since the
/// Unix epoch and 12 random ones: unique like [`random_id`], and in the
/// order sessions were issued, so the journal's index of each session's
/// events grows at its end (random ids put each session's events on a
/// page of their own, one more page per commit).
pub fn session_id() -> std::io::Result<String> {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let mut raw = [0u8; 6];
    getrandom::fill(&mut raw).map_err(std::io::Error::other)?;
    Ok(format!("ses_{:012x}{}", ms & 0xffff_ffff_ffff, hex(&raw)))
}

/// Lower-case hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    base16ct::lower::encode_string(bytes)
}

/// URL-safe base64 without padding (RFC 4648 §5).
fn base64url(bytes: &[u8]) -> String {
    use base64ct::Encoding;
    base64ct::Base64UrlUnpadded::encode_string(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_are_unique_and_sort_in_the_order_they_were_made() {
        let first = session_id().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let mut ids: Vec<String> = (0..1000).map(|_| session_id().unwrap()).collect();
        for id in &ids {
            let hex = id.strip_prefix("ses_").unwrap();
            assert_eq!(hex.len(), 24, "{id}");
            assert!(
                hex.bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
                "{id}"
            );
            assert!(*id > first, "{id} sorts before {first}, made earlier");
        }
        // The time part is now's, to the millisecond.
        let ms = u64::from_str_radix(&ids[0][4..16], 16).unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        assert!(now >= ms && now - ms < 60_000, "{ms} vs {now}");
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 1000);
    }

    #[test]
    fn base64url_matches_rfc4648_vectors() {
        assert_eq!(base64url(b""), "");
        assert_eq!(base64url(b"f"), "Zg");
        assert_eq!(base64url(b"fo"), "Zm8");
        assert_eq!(base64url(b"foo"), "Zm9v");
        assert_eq!(base64url(b"foob"), "Zm9vYg");
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
    }

    #[test]
    fn generated_tokens_have_the_documented_shape_and_differ() {
        let a = Token::generate().unwrap();
        let b = Token::generate().unwrap();
        assert!(looks_like_token(a.reveal()), "{}", a.reveal());
        assert_ne!(a.reveal(), b.reveal());
        assert_eq!(a.hash(), hash(&format!("{}\n", a.reveal())));
        assert_eq!(a.hash().len(), 64);
    }

    #[test]
    fn hash_is_sha256_hex() {
        assert_eq!(
            hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
