//! Syslog drains: what each person saw, line by line, and every journal
//! event, sent to collectors.
//!
//! [`lines`] cuts terminal output into safe message texts, [`syslog`]
//! encodes and frames them, [`deliver`] queues them (bounded, never waiting)
//! and sends them over TCP, TLS, UDP or a unix socket ([`tls`] verifies
//! collectors), [`tee`] turns a session's
//! output and journal events into messages for each drain. The daemon feeds
//! the tee from the session's output pumps and the events from the journal.

pub mod deliver;
pub mod lines;
pub mod syslog;
pub mod tee;
pub mod tls;
