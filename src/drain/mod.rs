//! Syslog drains: what each person saw, line by line, and every journal
//! event, sent to collectors.
//!
//! This is the message layer so far: [`lines`] cuts terminal output into
//! safe message texts, [`syslog`] encodes and frames them. Transports, the
//! per-drain queues and the configuration come next (issue 4); nothing in
//! the daemon sends to a drain yet.
#![allow(unsafe_code)] // localtime_r for RFC 3164 timestamps, in `syslog`

pub mod lines;
pub mod syslog;
