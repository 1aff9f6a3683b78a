//! What a session runs: the argv, environment and directory a command
//! grant gives under its profile. A [`Spec`] is made only here, and only
//! from a [`Redeemed`] token (which only the journal's redemption makes)
//! whose grant is a command, so nothing starts a process without a token.

use std::collections::HashSet;

use super::{Account, PtyRequest, Spec};
use crate::config::Profile;
use crate::journal::{Grant, Redeemed};

/// What the client asked for on its session channel.
pub struct Request<'a> {
    /// An exec request's command; `None` for a shell request.
    pub command: Option<&'a str>,
    pub pty: Option<&'a PtyRequest>,
    /// What the client's `env` requests set (already filtered and capped).
    pub client_env: &'a [(String, String)],
}

/// Why a request gets no process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// The token grants a tunnel, not a process.
    NotACommand,
    /// An exec request under a profile without `allow_exec`, on a token
    /// issued without a command.
    ExecNotAllowed,
}

/// The process `redeemed` grants for `request`, as `account` under
/// `profile` (the one the grant names). A token issued with a command runs
/// it through the shell whatever the client asked; otherwise a shell
/// request runs the profile's command, and an exec request runs through the
/// shell only when the profile allows it.
pub fn plan(
    redeemed: &Redeemed,
    profile: &Profile,
    account: Account,
    request: &Request,
) -> Result<Spec, Refused> {
    let Grant::Command {
        command: issued, ..
    } = &redeemed.grant
    else {
        return Err(Refused::NotACommand);
    };
    let shell = profile
        .shell
        .clone()
        .unwrap_or_else(|| account.shell.to_string_lossy().into_owned());
    let argv = match (issued, request.command) {
        (Some(issued), _) => vec![shell.clone(), "-c".into(), issued.clone()],
        (None, None) => profile.command.clone(),
        (None, Some(cmd)) if profile.allow_exec => vec![shell.clone(), "-c".into(), cmd.into()],
        (None, Some(_)) => return Err(Refused::ExecNotAllowed),
    };
    let mut env = vec![
        (
            "HOME".to_string(),
            account.home.to_string_lossy().into_owned(),
        ),
        ("USER".into(), account.name.clone()),
        ("LOGNAME".into(), account.name.clone()),
        ("SHELL".into(), shell),
        (
            "PATH".into(),
            if account.uid.is_root() {
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()
            } else {
                "/usr/local/bin:/usr/bin:/bin".into()
            },
        ),
        ("TOLLGATE_SESSION_ID".into(), redeemed.id.clone()),
    ];
    if let Some(p) = request.pty {
        env.push(("TERM".into(), p.term.clone()));
    }
    env.extend(request.client_env.iter().cloned());
    env.extend(profile.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    // Later entries win, so the profile overrides the client.
    env.reverse();
    let mut seen = HashSet::new();
    env.retain(|(k, _)| seen.insert(k.clone()));
    env.reverse();
    Ok(Spec {
        cgroup: None,
        argv,
        env,
        cwd: profile.cwd.clone().unwrap_or_else(|| account.home.clone()),
        cwd_required: profile.cwd.is_some(),
        account,
        allow_root: profile.allow_root,
        pty: request.pty.cloned(),
        _planned: super::Planned,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{Journal, NewSession};
    use std::time::Duration;

    /// A token issued and redeemed in a real journal: the only way to get
    /// a [`Redeemed`].
    fn redeemed(command: Option<&str>, target: Option<&str>) -> Redeemed {
        let dir = std::env::temp_dir().join(crate::token::random_id("tg-plan-").unwrap());
        std::fs::create_dir_all(&dir).unwrap();
        let mut j = Journal::open(&dir.join("j.db")).unwrap();
        j.issue(&NewSession {
            id: "ses_plan",
            token_sha256: "h",
            profile: if target.is_some() { "" } else { "p" },
            login_user: "u",
            command,
            reason: None,
            ttl: Duration::from_secs(60),
            max_duration: Duration::from_secs(60),
            target,
            connection_limit: None,
        })
        .unwrap();
        let r = j.redeem("h", "u", "127.0.0.1:1").unwrap().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        r
    }

    fn profile(allow_exec: bool) -> Profile {
        let text = format!(
            "[profiles.p]\nuser = \"nobody\"\ncommand = \"/bin/console --x\"\nshell = \"/bin/sh\"\nallow_exec = {allow_exec}\nenv = {{ LANG = \"C.UTF-8\", FROM = \"profile\" }}\n"
        );
        let c = crate::config::Config::parse(std::path::Path::new("t.toml"), &text).unwrap();
        c.profiles["p"].clone()
    }

    fn account() -> Account {
        Account::lookup(
            &nix::unistd::User::from_uid(nix::unistd::getuid())
                .unwrap()
                .unwrap()
                .name,
        )
        .unwrap()
    }

    fn request<'a>(command: Option<&'a str>, env: &'a [(String, String)]) -> Request<'a> {
        Request {
            command,
            pty: None,
            client_env: env,
        }
    }

    #[test]
    fn a_shell_runs_the_profile_command_and_an_exec_only_when_allowed() {
        let r = redeemed(None, None);
        let none: Vec<(String, String)> = Vec::new();
        let shell = plan(&r, &profile(false), account(), &request(None, &none)).unwrap();
        assert_eq!(shell.argv, ["/bin/console", "--x"]);
        assert_eq!(
            plan(&r, &profile(false), account(), &request(Some("id"), &none)).unwrap_err(),
            Refused::ExecNotAllowed
        );
        let exec = plan(&r, &profile(true), account(), &request(Some("id"), &none)).unwrap();
        assert_eq!(exec.argv, ["/bin/sh", "-c", "id"]);
    }

    #[test]
    fn an_issued_command_wins_and_a_tunnel_grants_no_process() {
        let none: Vec<(String, String)> = Vec::new();
        let r = redeemed(Some("uptime"), None);
        for asked in [None, Some("rm -rf /")] {
            let spec = plan(&r, &profile(true), account(), &request(asked, &none)).unwrap();
            assert_eq!(spec.argv, ["/bin/sh", "-c", "uptime"]);
        }
        let t = redeemed(None, Some("db"));
        assert_eq!(
            plan(&t, &profile(true), account(), &request(None, &none)).unwrap_err(),
            Refused::NotACommand
        );
    }

    #[test]
    fn the_profile_environment_overrides_the_client_and_names_the_session() {
        let r = redeemed(None, None);
        let client = vec![
            ("FROM".to_string(), "client".to_string()),
            ("LC_ALL".to_string(), "C".to_string()),
        ];
        let spec = plan(&r, &profile(false), account(), &request(None, &client)).unwrap();
        let get = |k: &str| {
            let v: Vec<&String> = spec
                .env
                .iter()
                .filter(|(n, _)| n == k)
                .map(|(_, v)| v)
                .collect();
            assert!(v.len() <= 1, "{k} twice: {:?}", spec.env);
            v.first().map(|s| s.as_str())
        };
        assert_eq!(get("FROM"), Some("profile"));
        assert_eq!(get("LC_ALL"), Some("C"));
        assert_eq!(get("LANG"), Some("C.UTF-8"));
        assert_eq!(get("TOLLGATE_SESSION_ID"), Some("ses_plan"));
        assert_eq!(get("SHELL"), Some("/bin/sh"));
        assert_eq!(get("TERM"), None);
    }
}
