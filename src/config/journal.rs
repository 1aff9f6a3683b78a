//! `server.journal` and what comes with it: a SQLite file, or a PostgreSQL
//! URL taken apart, the password's source and where each setting is
//! written.

use std::fmt;
use std::path::{Path, PathBuf};

use super::At;

/// `server.journal`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JournalAt {
    /// A SQLite file (the default; one bastion).
    File(PathBuf),
    /// A PostgreSQL database several bastions share.
    Postgres(PgUrl),
}

impl JournalAt {
    /// The SQLite file, when the journal is one.
    pub fn file(&self) -> Option<&Path> {
        match self {
            JournalAt::File(p) => Some(p),
            JournalAt::Postgres(_) => None,
        }
    }
}

impl fmt::Display for JournalAt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JournalAt::File(p) => write!(f, "{}", p.display()),
            JournalAt::Postgres(u) => write!(f, "{}", u.url),
        }
    }
}

/// A `postgres://ROLE@HOST[:PORT]/DB[?sslmode=verify-full|disable]` URL,
/// taken apart. It never holds a password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgUrl {
    /// As written.
    pub url: String,
    pub host: String,
    pub port: u16,
    pub user: String,
    pub dbname: String,
    /// `sslmode=verify-full` (the default): TLS, the server's certificate
    /// chained to `journal_ca_file` and naming `host`; `false`: `disable`.
    pub tls: bool,
}

impl PgUrl {
    /// Takes `s` apart; the error says what is wrong with it.
    pub fn parse(s: &str) -> Result<PgUrl, String> {
        let rest = s
            .strip_prefix("postgres://")
            .or_else(|| s.strip_prefix("postgresql://"))
            .ok_or("is not a postgres:// URL")?;
        let (main, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (authority, dbname) = main.split_once('/').unwrap_or((main, ""));
        let (user, hostport) = authority
            .rsplit_once('@')
            .ok_or("names no role: postgres://ROLE@HOST/DATABASE")?;
        if user.contains(':') {
            return Err(
                "holds a password, which would then be in the configuration's text; set journal_password_file or journal_password_env instead".into(),
            );
        }
        if user.is_empty() {
            return Err("names no role: postgres://ROLE@HOST/DATABASE".into());
        }
        let (host, port) = match hostport.strip_prefix('[') {
            Some(v6) => {
                let (h, after) = v6.split_once(']').ok_or("has an unclosed [IPv6 address")?;
                (h, after.strip_prefix(':'))
            }
            None => match hostport.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            },
        };
        if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '/') {
            return Err("names no host".into());
        }
        let port = match port {
            None => 5432,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|&p| p > 0)
                .ok_or_else(|| format!("has a bad port \"{p}\""))?,
        };
        let mut tls = true;
        for kv in query.split('&').filter(|kv| !kv.is_empty()) {
            match kv.split_once('=') {
                Some(("sslmode", "verify-full")) => tls = true,
                Some(("sslmode", "disable")) => tls = false,
                Some(("sslmode", other)) => {
                    return Err(format!(
                        "has sslmode={other}: use verify-full (TLS, the server's certificate checked against journal_ca_file and its name) or disable (a trusted network); prefer and allow fall back to plain text, require and verify-ca do not check the name"
                    ))
                }
                _ => return Err(format!("has \"{kv}\"; the only parameter is sslmode")),
            }
        }
        let dbname = if dbname.is_empty() { user } else { dbname };
        Ok(PgUrl {
            url: s.to_string(),
            host: host.to_string(),
            port,
            user: user.to_string(),
            dbname: dbname.to_string(),
            tls,
        })
    }
}

/// Where a secret comes from: a file (its first line) or a variable in the
/// daemon's environment. The secret itself is never in the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Secret {
    File(PathBuf),
    Env(String),
}

/// Where the journal's settings are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JournalPlaces {
    pub journal: At,
    pub password: At,
    pub ca_file: At,
}
