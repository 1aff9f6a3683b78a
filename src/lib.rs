//! tollgate: an SSH bastion that grants one-time, token-bound sessions.
//!
//! The binary (`src/main.rs`) only parses the command line; everything else is
//! here, so benchmarks and tests can drive the same code. Only `exec` may use
//! `unsafe` (the code between fork and exec, and PTY ioctls).
#![deny(unsafe_code)]

pub mod cli;
pub mod config;
pub mod daemon;
pub mod exec;
pub mod journal;
pub mod ssh;
pub mod token;
