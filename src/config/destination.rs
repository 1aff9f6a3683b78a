//! This server as the ssh lines printed for people name it: the login
//! line, and for tunnels the `-L` and `-J` forms.

use std::path::PathBuf;

use super::{shell_word, Target};

/// This server as the ssh lines printed for people name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub host: String,
    pub port: u16,
    /// Passed as `-o UserKnownHostsFile=…` (see `server.public_known_hosts`).
    pub known_hosts: Option<PathBuf>,
}

impl Destination {
    /// `ssh`, with the known_hosts option when there is one.
    pub fn ssh(&self) -> String {
        match &self.known_hosts {
            Some(k) => format!(
                "ssh -o UserKnownHostsFile={}",
                shell_word(&k.display().to_string())
            ),
            None => "ssh".into(),
        }
    }

    /// ` -p PORT` unless it is 22.
    pub fn port_option(&self) -> String {
        if self.port == 22 {
            String::new()
        } else {
            format!(" -p {}", self.port)
        }
    }

    /// The line a person pastes: `ssh -p 2222 user@host`.
    pub fn login_line(&self, login_user: &str) -> String {
        format!(
            "{}{} {login_user}@{}",
            self.ssh(),
            self.port_option(),
            self.host
        )
    }

    /// The local port suggested for a tunnel: the target's own when that
    /// needs no privilege, otherwise 10000 more (22 → 10022).
    pub fn local_port(t: &Target) -> u16 {
        if t.port >= 1024 {
            t.port
        } else {
            t.port + 10000
        }
    }

    /// The `-N -L` line for a tunnel, and for an SSH target the `-J` line.
    pub fn tunnel_lines(&self, user: &str, name: &str, t: &Target) -> (String, Option<String>) {
        let dest = self;
        let local = Destination::local_port(t);
        let l = format!(
            "{} -N -L {local}:{name}:{}{} {user}@{}",
            dest.ssh(),
            t.port,
            dest.port_option(),
            dest.host
        );
        let jump = t.ssh.then(|| {
            let tp = if t.port == 22 {
                String::new()
            } else {
                format!(" -p {}", t.port)
            };
            match &dest.known_hosts {
                // -J passes no options to the hop: spell the hop out so it
                // checks the bastion's key against that file.
                Some(_) => format!(
                    "ssh -o ProxyCommand=\"{}{} -W %h:%p {user}@{}\"{tp} USER@{name}",
                    dest.ssh(),
                    dest.port_option(),
                    dest.host
                ),
                None => {
                    let jp = if dest.port == 22 {
                        String::new()
                    } else {
                        format!(":{}", dest.port)
                    };
                    format!("ssh -J {user}@{}{jp}{tp} USER@{name}", dest.host)
                }
            }
        });
        (l, jump)
    }
}
