//! Public-key collection sessions: [`keys`] builds every form of a
//! collected key that operators paste (OpenSSH line, SHA-256 and MD5
//! fingerprints, RFC 4716, SPKI PEM), byte-identical to `ssh-keygen`;
//! [`store`] keeps sessions, connections, keys and webhooks in the journal
//! and creates webhook deliveries with each step; [`deliveries`] tracks
//! them. The SSH flow is in `ssh::handler`, sending in `webhook`.

pub mod deliveries;
pub mod keys;
pub mod store;
