//! The configuration checked against this host, and the runtime pieces
//! that check builds: one step that `config check`, `serve`, a reload and
//! every admin command take, so each reports the same problems at the
//! same `FILE:LINE:COL`.
//!
//! `config` reads the text into plain data and keeps where each setting
//! is written; here the accounts profiles name are looked up (`exec`), the
//! drains' TLS files and the webhooks' CA file are loaded (`drain`), and
//! what cannot be used is placed back at its key.

use std::path::Path;
use std::sync::Arc;

use tokio_rustls::rustls::{ClientConfig, ServerConfig};

use crate::config::{Config, ConfigError, Draft, DrainUrl, JournalAt, Problem, Secret};
use crate::drain::tee::Planned;
use crate::drain::tls::{self, TlsError};
use crate::journal::{JournalTarget, PgTarget};

/// A configuration that passed every check, with what they built.
#[derive(Debug)]
pub struct Checked {
    pub config: Config,
    /// `config.drains`, in order, each with its delivery built.
    pub drains: Vec<Planned>,
    /// The client webhooks use for https:// when `webhooks.ca_file` is set
    /// (`None`: the system bundle, loaded at the first such delivery).
    pub webhook_tls: Option<Arc<ClientConfig>>,
    /// The journal, with its password read and TLS settings loaded.
    pub journal: JournalTarget,
    /// The HTTP API's certificate and key, when it serves HTTPS.
    pub api_tls: Option<Arc<ServerConfig>>,
}

/// Reads `path` and checks it.
pub fn load(path: &Path) -> Result<Checked, ConfigError> {
    check(Config::read(path)?)
}

/// Checks `text` as if read from `path` (for tests).
pub fn parse(path: &Path, text: &str) -> Result<Checked, ConfigError> {
    check(Config::draft(path, text)?)
}

/// Checks what `draft` says against this host, and reports every problem
/// of the text and of the host together, in file order.
pub fn check(draft: Draft) -> Result<Checked, ConfigError> {
    let config = &draft.config;
    let (mut problems, mut warnings) = (Vec::new(), Vec::new());
    for (name, p) in &config.profiles {
        let s = format!("profiles.{name}");
        // A missing `user` was reported by the walk.
        if !p.user.is_empty() {
            if let Some(why) = crate::exec::account::refusal(&p.user, p.allow_root) {
                problems.push(p.user_at.problem(format!("{s}.user: {why}")));
            }
        }
        if p.allow_exec {
            if let Some(why) = crate::exec::account::shell_refuses(p) {
                warnings.push(p.allow_exec_at.problem(format!(
                    "{s}.allow_exec: {why}; set {s}.shell (e.g. shell = \"/bin/sh\")"
                )));
            }
        }
    }
    let mut drains = Vec::new();
    for d in &config.drains {
        match Planned::new(d) {
            Ok(p) => drains.push(p),
            Err(e) => problems.push(drain_problem(&d.spec.name, &d.url, e)),
        }
    }
    let journal = match journal_target(config) {
        Ok(t) => t,
        Err(p) => {
            problems.push(p);
            JournalTarget::Sqlite(Default::default())
        }
    };
    let mut webhook_tls = None;
    if let Some(at) = config.webhooks.ca_file_at {
        match tls::client_config(&config.webhooks.ca_file, None) {
            Ok(c) => webhook_tls = Some(c),
            Err(e) => problems.push(at.problem(format!("webhooks.ca_file: {}", message(e)))),
        }
    }
    let mut api_tls = None;
    if let (Some(cert), Some(key)) = (&config.api.tls_cert, &config.api.tls_key) {
        match tls::server_config(cert, key) {
            Ok(c) => api_tls = Some(c),
            Err(e) => {
                let key = match e {
                    TlsError::ClientCert(_) => "tls_cert",
                    _ => "tls_key",
                };
                problems.push(
                    config
                        .api
                        .tls_at
                        .problem(format!("api.{key}: {}", message(e))),
                );
            }
        }
    }
    let config = draft.finish(problems, warnings)?;
    Ok(Checked {
        config,
        drains,
        webhook_tls,
        journal,
        api_tls,
    })
}

/// `server.journal` with what reaching it takes: a PostgreSQL password
/// read from its file or variable, and the CAs its certificate must chain
/// to. Neither the password nor the URL's text appears in a problem.
fn journal_target(config: &Config) -> Result<JournalTarget, Problem> {
    let s = &config.server;
    let u = match &s.journal {
        JournalAt::File(p) => return Ok(JournalTarget::Sqlite(p.clone())),
        JournalAt::Postgres(u) => u,
    };
    let at = s.journal_at;
    pg_target(u, s.journal_password.as_ref(), s.journal_ca_file.as_deref()).map_err(
        |(what, msg)| {
            let (place, key) = match what {
                Reach::Password => (
                    at.password,
                    match s.journal_password {
                        Some(Secret::Env(_)) => "journal_password_env",
                        _ => "journal_password_file",
                    },
                ),
                Reach::Ca if s.journal_ca_file.is_some() => (at.ca_file, "journal_ca_file"),
                Reach::Ca => (at.journal, "journal"),
            };
            place.problem(format!("server.{key}: {msg}"))
        },
    )
}

/// What reaching a PostgreSQL journal took that failed.
pub enum Reach {
    Password,
    Ca,
}

/// A PostgreSQL journal with what reaching it takes: the password read from
/// its file (first line) or variable, the CAs loaded (`ca`, else the system
/// bundle) when the URL asks for TLS. The error never holds the password.
pub fn pg_target(
    u: &crate::config::PgUrl,
    password: Option<&Secret>,
    ca: Option<&Path>,
) -> Result<JournalTarget, (Reach, String)> {
    let password = match password {
        None => None,
        Some(Secret::File(p)) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| (Reach::Password, format!("{}: {e}", p.display())))?;
            Some(text.lines().next().unwrap_or_default().to_string())
        }
        Some(Secret::Env(v)) => Some(std::env::var(v).map_err(|_| {
            (
                Reach::Password,
                format!("{v} is not set in this environment"),
            )
        })?),
    };
    let tls = if u.tls {
        let ca = ca.map_or_else(
            || std::path::PathBuf::from(crate::config::SYSTEM_CA_FILE),
            Path::to_path_buf,
        );
        Some(tls::client_config(&ca, None).map_err(|e| (Reach::Ca, message(e)))?)
    } else {
        None
    };
    Ok(JournalTarget::Postgres(PgTarget {
        url: u.url.clone(),
        host: u.host.clone(),
        port: u.port,
        user: u.user.clone(),
        dbname: u.dbname.clone(),
        tls,
        password,
    }))
}

/// A TLS drain's settings that cannot be used, placed at the key at fault.
fn drain_problem(name: &str, url: &DrainUrl, e: TlsError) -> Problem {
    let d = format!("drains.{name}");
    let DrainUrl::Tls(f) = url else {
        // Only TLS settings load anything.
        return Problem {
            line: 0,
            col: 0,
            message: format!("{d}: {}", message(e)),
        };
    };
    let at = &f.at;
    let (key, place, msg) = match e {
        TlsError::Url(m) => ("url", at.url, m),
        TlsError::CaFile(m) if f.ca_file.is_none() => (
            "url",
            at.url,
            format!("{m} (the system CA bundle; set ca_file to the collector's CA)"),
        ),
        TlsError::CaFile(m) => ("ca_file", at.ca_file, m),
        TlsError::ClientCert(m) => ("client_cert", at.client_cert, m),
        TlsError::ClientKey(m) => ("client_key", at.client_key, m),
        TlsError::Client(m) => ("url", at.url, m),
    };
    place.problem(format!("{d}.{key}: {msg}"))
}

/// The text of a TLS settings error.
fn message(e: TlsError) -> String {
    match e {
        TlsError::Url(m)
        | TlsError::CaFile(m)
        | TlsError::ClientCert(m)
        | TlsError::ClientKey(m)
        | TlsError::Client(m) => m,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<String> {
        match parse(Path::new("t.toml"), text) {
            Ok(_) => vec![],
            Err(e) => e.to_string().lines().map(String::from).collect(),
        }
    }

    #[test]
    fn the_api_certificate_is_loaded_by_the_check_and_named_when_unusable() {
        let d = std::env::temp_dir().join(format!("tg-api-tls-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let junk = d.join("junk.pem");
        std::fs::write(&junk, "not a certificate\n").unwrap();
        let p = problems(&format!(
            "[server]\nlisten = [\"127.0.0.1:2222\"]\n[api]\nlisten = [\"0.0.0.0:8443\"]\ntls_cert = \"{0}\"\ntls_key = \"{0}\"\n",
            junk.display()
        ));
        std::fs::remove_dir_all(&d).unwrap();
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].starts_with("t.toml:5:12: api.tls_cert: "), "{p:?}");
        assert!(p[0].contains("junk.pem"), "{p:?}");
    }

    #[test]
    fn root_needs_allow_root_and_unknown_users_are_named() {
        let p = problems("[profiles.a]\nuser = \"root\"\ncommand = \"/bin/sh\"\n");
        assert_eq!(p.len(), 1);
        assert!(p[0].starts_with("t.toml:2:8: profiles.a.user: \"root\" is root"));
        assert!(problems(
            "[profiles.a]\nuser = \"root\"\nallow_root = true\ncommand = \"/bin/sh\"\n"
        )
        .is_empty());
        let p = problems("[profiles.a]\nuser = \"no-such-user-x\"\ncommand = \"/bin/sh\"\n");
        assert_eq!(
            p,
            vec!["t.toml:2:8: profiles.a.user: no such account \"no-such-user-x\""]
        );
    }

    #[test]
    fn tls_drains_load_their_files_and_say_which_one_is_wrong() {
        let p = problems(
            "[[drains]]\nname = \"t\"\nurl = \"tls://127.0.0.1:6514\"\nca_file = \"/nonexistent/ca.pem\"\n\n[[drains]]\nname = \"u\"\nurl = \"udp://127.0.0.1:514\"\nca_file = \"/etc/ssl/x.pem\"\n",
        );
        let joined = p.join("\n");
        assert!(
            joined.contains("t.toml:4:11: drains.t.ca_file: /nonexistent/ca.pem: No such file"),
            "{joined}"
        );
        assert!(
            joined.contains("t.toml:9:11: drains.u.ca_file applies only to tls:// drains"),
            "{joined}"
        );
        // A file that is not a certificate.
        let dir = std::env::temp_dir().join(crate::token::random_id("tg-tls-").unwrap());
        std::fs::create_dir_all(&dir).unwrap();
        let junk = dir.join("junk.pem");
        std::fs::write(&junk, "not a certificate\n").unwrap();
        let p = problems(&format!(
            "[[drains]]\nname = \"t\"\nurl = \"tls://logs.example.com:6514\"\nca_file = \"{}\"\n",
            junk.display()
        ));
        assert!(
            p.join("\n").contains("drains.t.ca_file: ")
                && p.join("\n").contains("no usable CA certificate"),
            "{p:?}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_profile_whose_login_shell_refuses_commands_is_warned_about_with_its_position() {
        // Debian's nobody has /usr/sbin/nologin.
        let Ok(Some(nobody)) = nix::unistd::User::from_name("nobody") else {
            return;
        };
        let refuses = nobody.shell.ends_with("nologin") || nobody.shell.ends_with("false");
        let text = "[profiles.p]\nuser = \"nobody\"\ncommand = \"/bin/sh\"\nallow_exec = true\n";
        let c = parse(Path::new("t.toml"), text).unwrap().config;
        if refuses {
            assert_eq!(c.warning_lines().len(), 1, "{:?}", c.warnings);
            let w = &c.warning_lines()[0];
            assert!(
                w.starts_with("t.toml:4:14: warning: profiles.p.allow_exec: commands run through the account's login shell, and \"nobody\"'s is "),
                "{w}"
            );
            assert!(
                w.ends_with("set profiles.p.shell (e.g. shell = \"/bin/sh\")"),
                "{w}"
            );
        }
        // A shell of its own, or no exec: nothing to say.
        for quiet in [
            format!("{text}shell = \"/bin/sh\"\n"),
            text.replace("allow_exec = true", "allow_exec = false"),
        ] {
            let c = parse(Path::new("t.toml"), &quiet).unwrap().config;
            assert!(c.warnings.is_empty(), "{quiet}: {:?}", c.warnings);
        }
    }

    #[test]
    fn a_postgres_journal_password_must_be_readable_and_is_never_shown() {
        let p = problems(
            "[server]\njournal = \"postgres://tg@127.0.0.1/tg?sslmode=disable\"\njournal_password_env = \"TOLLGATE_TEST_NO_SUCH_VAR\"\n",
        );
        assert_eq!(
            p,
            ["t.toml:3:24: server.journal_password_env: TOLLGATE_TEST_NO_SUCH_VAR is not set in this environment"]
        );
        let p = problems(
            "[server]\njournal = \"postgres://tg@127.0.0.1/tg?sslmode=disable\"\njournal_password_file = \"/nonexistent/pw\"\n",
        );
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].starts_with(
                "t.toml:3:25: server.journal_password_file: /nonexistent/pw: No such file"
            ),
            "{p:?}"
        );
        let dir = std::env::temp_dir().join(crate::token::random_id("tg-pw-").unwrap());
        std::fs::create_dir_all(&dir).unwrap();
        let pw = dir.join("pw");
        std::fs::write(&pw, "s3cret-pw\nignored\n").unwrap();
        let c = parse(
            Path::new("t.toml"),
            &format!(
                "[server]\njournal = \"postgres://tg@127.0.0.1/tg?sslmode=disable\"\njournal_password_file = \"{}\"\n",
                pw.display()
            ),
        )
        .unwrap();
        let crate::journal::JournalTarget::Postgres(t) = &c.journal else {
            panic!("{:?}", c.journal)
        };
        assert_eq!(t.password.as_deref(), Some("s3cret-pw"));
        assert!(!format!("{:?}", c.journal).contains("s3cret-pw"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
