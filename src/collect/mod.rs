//! Public-key collection sessions (issue 5). So far: [`keys`], every form
//! of a collected key that operators paste (OpenSSH line, SHA-256 and MD5
//! fingerprints, RFC 4716, SPKI PEM), byte-identical to `ssh-keygen`. The
//! collect sessions themselves, their SSH flow and webhooks are not built
//! yet.

pub mod keys;
