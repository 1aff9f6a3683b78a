//! Syslog drains: what each person saw, line by line, and every journal
//! event, sent to collectors.
//!
//! Built so far: [`lines`] cuts terminal output into safe message texts,
//! [`syslog`] encodes and frames them, [`deliver`] queues (bounded, never
//! waiting) and sends them over TCP, UDP or a unix socket, [`tee`] turns a
//! session's output and journal events into messages for each drain. The configuration,
//! TLS, and the daemon's tee of session output and events come next
//! (issue 4); nothing in the daemon sends to a drain yet.
#![allow(unsafe_code)] // localtime_r for RFC 3164 timestamps, in `syslog`

pub mod deliver;
pub mod lines;
pub mod syslog;
pub mod tee;
