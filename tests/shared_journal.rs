//! Several bastions on one PostgreSQL journal: two real `tollgate serve`
//! processes on their own loopback ports share a throwaway PostgreSQL 15
//! cluster; tokens issued by the CLI of either are redeemed once across
//! both; an unreachable database is named with its reason.
mod common;
use common::*;

use std::process::Stdio;

fn node(tag: &str, pg: &Postgres) -> Server {
    Server::start_with(
        tag,
        Opts {
            journal: Some(pg.journal_lines()),
            // Sixty connections at once from one address: none refused at
            // accept, so the race is decided by the journal alone.
            server_extra: "max_startups = \"1000\"\nper_source_max_startups = \"none\"\n".into(),
            ..Opts::default()
        },
    )
}

/// Acceptance 1 of issue 17: 60 OpenSSH clients spread over two nodes
/// race one token, ten rounds: exactly one login each round, and one
/// `session.redeemed`.
#[test]
fn sixty_clients_on_two_nodes_race_one_token_and_one_wins_each_round() {
    let pg = Postgres::start();
    let a = node("pg-node-a", &pg);
    let b = node("pg-node-b", &pg);
    for round in 0..10 {
        // Issued on either node's CLI: it is the same journal.
        let issuer = if round % 2 == 0 { &a } else { &b };
        let (id, token) = issuer.issue("ops", &[]);
        let clients: Vec<_> = (0..60)
            .map(|i| {
                let n = if i % 2 == 0 { &a } else { &b };
                n.ssh("ops", &token)
                    .arg("echo won")
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let won = clients
            .into_iter()
            .map(|c| c.wait_with_output().unwrap())
            .filter(|o| o.status.success() && text(&o.stdout).contains("won"))
            .count();
        assert_eq!(won, 1, "round {round}: {won} logins with one token");
        let redeemed = a.events_of(Some(&id), "session.redeemed");
        assert_eq!(redeemed.len(), 1, "round {round}: {redeemed:#?}");
        let v = b.wait_state(&id, "terminated", std::time::Duration::from_secs(10));
        assert_eq!(v["end_reason"], "exited", "{v:#}");
    }
    // Failed attempts are in the shared journal too, from both nodes.
    assert!(a.events_of(None, "auth.failed").len() >= 10 * 59);
}

/// `serve` and every admin command name the database and the reason when
/// it cannot be reached, and exit 1; the config itself is fine.
#[test]
fn an_unreachable_journal_is_named_by_serve_and_the_commands() {
    let port = free_port();
    let s = Server::configure(
        "pg-down",
        Opts {
            journal: Some(format!(
                "journal = \"postgres://tollgate@127.0.0.1:{port}/tollgate?sslmode=disable\""
            )),
            ..Opts::default()
        },
    );
    let want = format!("journal postgres://127.0.0.1:{port}/tollgate: connection refused");
    let check = s.cli(&["config", "check"]);
    assert!(check.status.success(), "{}", text(&check.stderr));
    for args in [&["session", "list"][..], &["serve"][..]] {
        let out = s.cli(args);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).contains(&want),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
}
