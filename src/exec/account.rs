//! The account a profile names, looked up on this host: whether sessions
//! may run as it, and whether its login shell runs commands at all.

use nix::unistd::User;

use crate::config::Profile;

/// Why sessions cannot run as `user`, when they cannot: no such account,
/// a lookup that failed, or root without `allow_root`.
pub fn refusal(user: &str, allow_root: bool) -> Option<String> {
    match User::from_name(user) {
        Ok(Some(acct)) if acct.uid.is_root() && !allow_root => Some(format!(
            "\"{user}\" is root; sessions never run as root unless the profile sets allow_root = true"
        )),
        Ok(Some(_)) => None,
        Ok(None) => Some(format!("no such account \"{user}\"")),
        Err(e) => Some(format!("cannot look up \"{user}\": {e}")),
    }
}

/// Why commands (`allow_exec`, or `session issue --command`) cannot run
/// under `profile`, when they cannot: they run as `SHELL -c COMMAND`, and
/// without `shell` that is the account's login shell, which may be one
/// that refuses every command (`/usr/sbin/nologin`, `/bin/false`).
pub fn shell_refuses(profile: &Profile) -> Option<String> {
    if profile.shell.is_some() {
        return None;
    }
    let acct = User::from_name(&profile.user).ok().flatten()?;
    let sh = acct.shell;
    let name = sh.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let refuses = matches!(name, "nologin" | "false") || !sh.is_file();
    refuses.then(|| {
        format!(
            "commands run through the account's login shell, and {:?}'s is {}, which refuses them",
            profile.user,
            sh.display()
        )
    })
}
