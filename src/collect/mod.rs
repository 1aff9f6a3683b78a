//! Public-key collection sessions: [`keys`] builds every form of a
//! collected key that operators paste (OpenSSH line, SHA-256 and MD5
//! fingerprints, RFC 4716, SPKI PEM), byte-identical to `ssh-keygen`;
//! [`store`] keeps sessions, connections and keys in the journal. The SSH
//! flow is in `ssh::handler`. Webhooks are not built yet.

pub mod keys;
pub mod store;
