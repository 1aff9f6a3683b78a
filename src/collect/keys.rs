//! Every form of a public key an operator pastes somewhere, built the way
//! `ssh-keygen` prints them: the OpenSSH line (`-y`), the SHA-256 and MD5
//! fingerprints (`-l`, `-l -E md5`), RFC 4716 (`-e`) and the SPKI PEM
//! (`-e -m PKCS8`).

use base64ct::{Base64, Encoding};
use russh::keys::ssh_key::public::{EcdsaPublicKey, KeyData};
use russh::keys::ssh_key::{HashAlg, PublicKey};
use serde::Serialize;

/// A collected key in every format (the `keys[]` fields of a collect
/// session, less id and time).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyForms {
    /// `ssh-ed25519`, `ssh-rsa`, `ecdsa-sha2-nistp256`, …
    pub public_key_algorithm: String,
    /// `MD5:aa:bb:…`, as `ssh-keygen -l -E md5` prints it.
    pub public_key_md5: String,
    /// `SHA256:…`, as `ssh-keygen -l` prints it.
    pub public_key_sha256: String,
    /// `-----BEGIN PUBLIC KEY-----` SubjectPublicKeyInfo (RFC 5280 / 8410).
    pub public_key_pem: String,
    /// RFC 4716 (`---- BEGIN SSH2 PUBLIC KEY ----`).
    pub public_key_ssh: String,
    /// `ALGORITHM BASE64`, one line for `authorized_keys`.
    pub public_key_openssh: String,
    /// Size in bits, as `ssh-keygen -l` counts it.
    pub bits: u32,
}

/// Why a key cannot be offered in every format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyFormError {
    #[error("{0} keys are not collected (ed25519, RSA and ECDSA are)")]
    Unsupported(String),
    #[error("cannot encode the key: {0}")]
    Encoding(String),
}

impl KeyForms {
    pub fn of(key: &PublicKey) -> Result<KeyForms, KeyFormError> {
        let data = key.key_data();
        let (spki, bits, label) = match data {
            KeyData::Ed25519(k) => (spki_ed25519(&k.0), 256, "ED25519"),
            KeyData::Rsa(k) => {
                let bits = k.key_size();
                (spki_rsa(k.n().as_bytes(), k.e().as_bytes()), bits, "RSA")
            }
            KeyData::Ecdsa(k) => {
                let (curve_oid, bits) = match k {
                    EcdsaPublicKey::NistP256(_) => (OID_P256, 256),
                    EcdsaPublicKey::NistP384(_) => (OID_P384, 384),
                    EcdsaPublicKey::NistP521(_) => (OID_P521, 521),
                };
                (spki_ecdsa(curve_oid, k.as_sec1_bytes()), bits, "ECDSA")
            }
            other => {
                return Err(KeyFormError::Unsupported(other.algorithm().to_string()));
            }
        };
        // The SSH wire blob, as in authorized_keys and fingerprints.
        let blob = key
            .to_bytes()
            .map_err(|e| KeyFormError::Encoding(e.to_string()))?;
        let b64 = Base64::encode_string(&blob);
        let algorithm = data.algorithm().to_string();
        let md5 = <md5::Md5 as md5::Digest>::digest(&blob);
        let md5 = md5
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":");
        Ok(KeyForms {
            public_key_openssh: format!("{algorithm} {b64}"),
            public_key_sha256: data.fingerprint(HashAlg::Sha256).to_string(),
            public_key_md5: format!("MD5:{md5}"),
            public_key_pem: pem("PUBLIC KEY", &spki),
            public_key_ssh: rfc4716(&b64, &format!("{bits}-bit {label}, collected by tollgate")),
            public_key_algorithm: algorithm,
            bits,
        })
    }
}

/// RFC 4716: the base64 blob wrapped at 70 columns between the markers,
/// with a quoted comment header.
fn rfc4716(b64: &str, comment: &str) -> String {
    let mut out = String::from("---- BEGIN SSH2 PUBLIC KEY ----\n");
    out.push_str(&format!("Comment: \"{comment}\"\n"));
    for chunk in b64.as_bytes().chunks(70) {
        out.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str("---- END SSH2 PUBLIC KEY ----\n");
    out
}

/// PEM: base64 of the DER wrapped at 64 columns.
fn pem(label: &str, der: &[u8]) -> String {
    let b64 = Base64::encode_string(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

// DER, only as much as SubjectPublicKeyInfo needs.
const OID_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01]; // 1.2.840.113549.1.1.1
const OID_EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01]; // 1.2.840.10045.2.1
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07]; // 1.2.840.10045.3.1.7
const OID_P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22]; // 1.3.132.0.34
const OID_P521: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x23]; // 1.3.132.0.35
const OID_ED25519: &[u8] = &[0x2b, 0x65, 0x70]; // 1.3.101.112

fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let n = content.len();
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let bytes: Vec<u8> = n
            .to_be_bytes()
            .into_iter()
            .skip_while(|&b| b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

fn seq(parts: &[Vec<u8>]) -> Vec<u8> {
    tlv(0x30, &parts.concat())
}

fn bit_string(bytes: &[u8]) -> Vec<u8> {
    let mut c = vec![0u8]; // no unused bits
    c.extend_from_slice(bytes);
    tlv(0x03, &c)
}

/// An SSH mpint body is already DER's minimal two's complement (a leading
/// zero byte when the high bit is set); zero is one zero byte in DER.
fn integer(mpint: &[u8]) -> Vec<u8> {
    if mpint.is_empty() {
        tlv(0x02, &[0])
    } else {
        tlv(0x02, mpint)
    }
}

fn spki_rsa(n: &[u8], e: &[u8]) -> Vec<u8> {
    let alg = seq(&[tlv(0x06, OID_RSA), vec![0x05, 0x00]]);
    let key = seq(&[integer(n), integer(e)]);
    seq(&[alg, bit_string(&key)])
}

fn spki_ecdsa(curve: &[u8], point: &[u8]) -> Vec<u8> {
    let alg = seq(&[tlv(0x06, OID_EC_PUBLIC_KEY), tlv(0x06, curve)]);
    seq(&[alg, bit_string(point)])
}

fn spki_ed25519(key: &[u8; 32]) -> Vec<u8> {
    seq(&[seq(&[tlv(0x06, OID_ED25519)]), bit_string(key)])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn keygen(args: &[&str]) -> String {
        let out = Command::new("ssh-keygen")
            .args(args)
            .output()
            .expect("ssh-keygen");
        assert!(
            out.status.success(),
            "ssh-keygen {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Every format, byte for byte against ssh-keygen, for each key type
    /// a client is likely to hold.
    #[test]
    fn every_form_matches_ssh_keygen() {
        let dir = std::env::temp_dir().join(crate::token::random_id("tg-keys-").unwrap());
        std::fs::create_dir_all(&dir).unwrap();
        for (name, args) in [
            ("ed25519", vec!["-t", "ed25519"]),
            ("rsa", vec!["-t", "rsa", "-b", "3072"]),
            ("p256", vec!["-t", "ecdsa", "-b", "256"]),
            ("p384", vec!["-t", "ecdsa", "-b", "384"]),
            ("p521", vec!["-t", "ecdsa", "-b", "521"]),
        ] {
            let path = dir.join(name);
            let p = path.to_str().unwrap();
            let mut a = vec!["-q", "-N", "", "-C", "test@example", "-f", p];
            a.extend(args);
            keygen(&a);
            let pub_path = format!("{p}.pub");
            let line = std::fs::read_to_string(&pub_path).unwrap();
            let key = PublicKey::from_openssh(line.trim()).unwrap();
            let f = KeyForms::of(&key).unwrap();

            // `BITS FINGERPRINT COMMENT (TYPE)`
            let l = keygen(&["-l", "-f", &pub_path]);
            let w: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(
                (w[0], w[1]),
                (f.bits.to_string().as_str(), f.public_key_sha256.as_str()),
                "{name}"
            );
            let l = keygen(&["-l", "-E", "md5", "-f", &pub_path]);
            assert_eq!(
                l.split_whitespace().nth(1),
                Some(f.public_key_md5.as_str()),
                "{name}"
            );
            // The OpenSSH line, comment aside.
            let mut parts = line.split_whitespace();
            let stock = format!("{} {}", parts.next().unwrap(), parts.next().unwrap());
            assert_eq!(f.public_key_openssh, stock, "{name}");
            // RFC 4716: the same body lines (the comment names the converter).
            let body = |s: &str| -> Vec<String> {
                s.lines()
                    .filter(|l| !l.starts_with("----") && !l.starts_with("Comment:"))
                    .map(String::from)
                    .collect()
            };
            let e = keygen(&["-e", "-f", &pub_path]);
            assert_eq!(body(&f.public_key_ssh), body(&e), "{name}");
            assert!(f
                .public_key_ssh
                .starts_with("---- BEGIN SSH2 PUBLIC KEY ----\nComment: \""));
            // PKCS8 / SPKI PEM. ssh-keygen cannot export ed25519 this way,
            // so that one is checked against openssl's reading of it.
            if name != "ed25519" {
                let pem = keygen(&["-e", "-m", "PKCS8", "-f", &pub_path]);
                assert_eq!(f.public_key_pem, pem, "{name}");
            } else {
                let pem_path = dir.join("ed25519.pem");
                std::fs::write(&pem_path, &f.public_key_pem).unwrap();
                let out = Command::new("openssl")
                    .args([
                        "pkey",
                        "-pubin",
                        "-in",
                        pem_path.to_str().unwrap(),
                        "-text",
                        "-noout",
                    ])
                    .output()
                    .expect("openssl (scripts/test.sh installs it)");
                let text = String::from_utf8_lossy(&out.stdout).replace([' ', '\n', ':'], "");
                assert!(out.status.success(), "openssl rejects {}", f.public_key_pem);
                assert!(text.starts_with("ED25519Public-Key"), "{text}");
                let hex: String = key
                    .key_data()
                    .ed25519()
                    .unwrap()
                    .0
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                assert!(text.contains(&hex), "{text}");
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
