//! `[profiles.NAME]`: who a session runs as, what it runs, its limits.
//! Whether the account exists, and what its login shell allows, is
//! checked against this host after the walk (`checked`, with `exec`).

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;

use toml::de::{DeTable, DeValue};

use super::walk::{abs_path, boolean, check_keys, get, integer, string, Ctx, PROFILE_KEYS};
use super::{parse_size, Profile};

/// A profile's resource limits for each of its sessions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    /// `memory.max`, bytes.
    pub memory_max: Option<u64>,
    /// `pids.max`: processes and threads at once.
    pub pids_max: Option<u64>,
    /// `cpu.weight`, 1 to 10000 (100 is everyone's default).
    pub cpu_weight: Option<u64>,
    /// `cpu.max` as a percentage of one CPU (200 = two CPUs' worth).
    pub cpu_max_percent: Option<u64>,
}

pub(super) fn walk_profile(
    ctx: &mut Ctx,
    name: &str,
    name_span: Range<usize>,
    t: &DeTable,
) -> Option<Profile> {
    let section = format!("profiles.{name}");
    let s = section.as_str();
    check_keys(ctx, t, s, PROFILE_KEYS);
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        ctx.at(
            name_span.clone(),
            format!("profile name \"{name}\" may only use letters, digits, '-', '_' and '.'"),
        );
    }
    let allow_root = boolean(ctx, s, t, "allow_root").unwrap_or(false);
    let user_at = ctx.place(get(t, "user").map(|v| v.span()).unwrap_or(0..0));
    let user = match string(ctx, s, t, "user") {
        Some(u) => u,
        None => {
            if get(t, "user").is_none() {
                ctx.at(
                    name_span.clone(),
                    format!("{s}: missing required key \"user\""),
                );
            }
            String::new()
        }
    };
    let command = match string(ctx, s, t, "command") {
        Some(c) => {
            let span = get(t, "command").map(|v| v.span()).unwrap_or(0..0);
            match split_command(&c) {
                Ok(argv) if argv.is_empty() => {
                    ctx.at(span, format!("{s}.command is empty"));
                    argv
                }
                Ok(argv) => {
                    if !Path::new(&argv[0]).is_absolute() {
                        ctx.at(
                            span,
                            format!(
                                "{s}.command: program \"{}\" must be an absolute path",
                                argv[0]
                            ),
                        );
                    }
                    argv
                }
                Err(e) => {
                    ctx.at(span, format!("{s}.command: {e}"));
                    Vec::new()
                }
            }
        }
        None => {
            if get(t, "command").is_none() {
                ctx.at(
                    name_span.clone(),
                    format!("{s}: missing required key \"command\""),
                );
            }
            Vec::new()
        }
    };
    let shell = string(ctx, s, t, "shell").and_then(|sh| {
        let span = get(t, "shell").map(|v| v.span()).unwrap_or(0..0);
        abs_path(ctx, span, &format!("{s}.shell"), &sh).map(|_| sh)
    });
    let cwd = string(ctx, s, t, "cwd").and_then(|c| {
        let span = get(t, "cwd").map(|v| v.span()).unwrap_or(0..0);
        abs_path(ctx, span, &format!("{s}.cwd"), &c)
    });
    let mut env = BTreeMap::new();
    if let Some(v) = get(t, "env") {
        match v.get_ref() {
            DeValue::Table(et) => {
                for (k, val) in et.iter() {
                    let key: &str = k.get_ref();
                    if key.is_empty() || key.contains('=') || key.contains('\0') {
                        ctx.at(
                            k.span(),
                            format!("{s}.env: \"{key}\" is not a valid variable name"),
                        );
                        continue;
                    }
                    match val.get_ref() {
                        DeValue::String(sv) if !sv.contains('\0') => {
                            env.insert(key.to_string(), sv.to_string());
                        }
                        _ => ctx.at(val.span(), format!("{s}.env.{key} must be a string")),
                    }
                }
            }
            _ => ctx.at(v.span(), format!("{s}.env must be a table of strings")),
        }
    }
    Some(Profile {
        user,
        allow_root,
        command,
        shell,
        allow_exec: boolean(ctx, s, t, "allow_exec").unwrap_or(false),
        record: boolean(ctx, s, t, "record"),
        cwd,
        env,
        limits: walk_limits(ctx, s, t),
        user_at,
        allow_exec_at: ctx.place(get(t, "allow_exec").map(|v| v.span()).unwrap_or(0..0)),
    })
}

/// `memory_max`, `pids_max`, `cpu_weight` and `cpu_max` of a profile.
pub(super) fn walk_limits(ctx: &mut Ctx, s: &str, t: &DeTable) -> Limits {
    let memory_max = get(t, "memory_max").and_then(|v| {
        let bytes = match v.get_ref() {
            DeValue::String(text) => parse_size(text).map(|n| n as u64),
            DeValue::Integer(_) => integer(ctx, s, t, "memory_max")
                .and_then(|n| u64::try_from(n).ok())
                .ok_or_else(|| "must not be negative".to_string()),
            _ => Err("must be a size such as \"512MiB\"".to_string()),
        };
        match bytes {
            // Below this, a shell cannot start: a typo, not a limit.
            Ok(n) if n < 1 << 20 => {
                ctx.at(v.span(), format!("{s}.memory_max must be at least 1MiB"));
                None
            }
            Ok(n) => Some(n),
            Err(e) => {
                ctx.at(v.span(), format!("{s}.memory_max: {e}"));
                None
            }
        }
    });
    let mut ranged = |key: &str, lo: i64, hi: i64, what: &str| {
        let n = integer(ctx, s, t, key)?;
        if (lo..=hi).contains(&n) {
            Some(n as u64)
        } else {
            let span = get(t, key).map(|v| v.span()).unwrap_or(0..0);
            ctx.at(span, format!("{s}.{key} must be {what}"));
            None
        }
    };
    let pids_max = ranged("pids_max", 1, 4_194_304, "between 1 and 4194304");
    let cpu_weight = ranged(
        "cpu_weight",
        1,
        10_000,
        "between 1 and 10000 (100 is the default share)",
    );
    let cpu_max_percent = string(ctx, s, t, "cpu_max").and_then(|text| {
        let n = text
            .strip_suffix('%')
            .and_then(|n| n.trim().parse::<u64>().ok())
            .filter(|n| (1..=100_000).contains(n));
        if n.is_none() {
            let span = get(t, "cpu_max").map(|v| v.span()).unwrap_or(0..0);
            ctx.at(
                span,
                format!("{s}.cpu_max must be a percentage of one CPU such as \"50%\" or \"200%\""),
            );
        }
        n
    });
    Limits {
        memory_max,
        pids_max,
        cpu_weight,
        cpu_max_percent,
    }
}

/// Splits a command line into words the way a POSIX shell does (`shlex`):
/// whitespace separates, single and double quotes group, backslash
/// escapes, and a word starting with `#` begins a comment. No variables,
/// globs or other expansion.
pub fn split_command(s: &str) -> Result<Vec<String>, String> {
    shlex::split(s).ok_or_else(|| "an unterminated quote or a trailing backslash".to_string())
}
