//! tollgate: an SSH bastion that grants one-time, token-bound sessions.
//!
//! The binary (`src/main.rs`) only parses the command line; everything else is
//! here, so benchmarks and tests can drive the same code. Only `exec` may use
//! `unsafe` (process spawning and reaping, PTY ioctls, thread priority).
#![deny(unsafe_code)]

pub mod admin;
pub mod admission;
pub mod api;
pub mod checked;
pub mod cli;
pub mod collect;
pub mod config;
pub mod daemon;
pub mod drain;
pub mod exec;
pub mod fuzzing;
pub mod journal;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod record;
pub mod ssh;
pub mod state;
pub mod text;
pub mod token;
pub mod version;
pub mod webhook;
