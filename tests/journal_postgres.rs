//! The journal's operations on a real PostgreSQL 15 (a throwaway cluster
//! started by the test): migrations under an advisory lock, single use of a
//! token across many connections, sessions, events, drains, collect
//! sessions and webhooks, group commit, and the error a person sees when
//! the database cannot be reached.
mod common;
use common::*;

use std::sync::{Arc, Barrier};
use std::time::Duration;

use tollgate::journal::collect::NewCollect;
use tollgate::journal::webhooks::{NewWebhook, WebhookSpec};
use tollgate::journal::{
    CancelOutcome, Db, DrainRow, EndReason, Ending, EventKind, Journal, JournalError, NewSession,
    PgTarget, SessionState,
};

fn target(pg: &Postgres) -> PgTarget {
    PgTarget {
        url: pg.url(),
        host: "127.0.0.1".into(),
        port: pg.port,
        user: PG_USER.into(),
        dbname: PG_USER.into(),
        tls: None,
        password: Some(pg.password.clone()),
    }
}

fn issue(j: &mut Journal, id: &str, hash: &str, ttl: Duration) {
    j.issue(&NewSession {
        id,
        token_sha256: hash,
        profile: "console",
        login_user: "ops",
        command: None,
        reason: Some("test"),
        ttl,
        max_duration: Duration::from_secs(60),
        target: None,
        connection_limit: None,
    })
    .unwrap();
}

#[test]
fn the_journal_works_on_postgresql() {
    let pg = Postgres::start();
    let t = target(&pg);

    // Two daemons starting at once: the migrations run once, under the
    // advisory lock, and both find the schema complete.
    let start = Arc::new(Barrier::new(4));
    let openers: Vec<_> = (0..4)
        .map(|_| {
            let (t, start) = (t.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                Journal::open_postgres(&t).map(|_| ())
            })
        })
        .collect();
    for o in openers {
        o.join().unwrap().unwrap();
    }
    assert_eq!(pg.psql("SELECT version FROM schema_version"), "15");

    // One token, 16 connections racing for it: exactly one wins.
    let mut j = Journal::open_postgres(&t).unwrap();
    issue(&mut j, "ses_race", "hash-race", Duration::from_secs(60));
    let start = Arc::new(Barrier::new(16));
    let racers: Vec<_> = (0..16)
        .map(|i| {
            let (t, start) = (t.clone(), start.clone());
            std::thread::spawn(move || {
                let mut j = Journal::open_postgres(&t).unwrap();
                start.wait();
                j.redeem("hash-race", "ops", &format!("127.0.0.1:{}", 1000 + i))
                    .unwrap()
                    .map(|r| r.id)
            })
        })
        .collect();
    let won: Vec<String> = racers
        .into_iter()
        .filter_map(|r| r.join().unwrap())
        .collect();
    assert_eq!(won, ["ses_race"]);
    let redeemed = j
        .events(Some("ses_race"), 0, None)
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == "session.redeemed")
        .count();
    assert_eq!(redeemed, 1);
    assert!(j
        .redeem("hash-race", "ops", "127.0.0.1:1")
        .unwrap()
        .is_none());

    // A session's life, read back as the CLI shows it.
    j.started(
        "ses_race",
        4242,
        Some("boot:123".into()),
        serde_json::json!({"pid": 4242}),
    )
    .unwrap();
    j.finish(
        "ses_race",
        &Ending {
            reason: EndReason::Exited,
            exit_status: Some(3),
            exit_signal: None,
            bytes_in: 5_000_000_000,
            bytes_out: 7,
            forwards: 0,
        },
    )
    .unwrap();
    let row = j.get("ses_race").unwrap().unwrap();
    assert_eq!(row.state, SessionState::Terminated);
    assert_eq!(row.end_reason, Some(EndReason::Exited));
    assert_eq!(
        (row.exit_status, row.bytes_in, row.bytes_out),
        (Some(3), 5_000_000_000, 7)
    );

    // Cancel while pending, expiry by the database's clock.
    issue(&mut j, "ses_cancel", "hash-cancel", Duration::from_secs(60));
    assert_eq!(j.cancel("ses_cancel").unwrap(), Some(CancelOutcome::Voided));
    assert_eq!(
        j.cancel("ses_cancel").unwrap(),
        Some(CancelOutcome::AlreadyOver)
    );
    assert_eq!(j.cancel("ses_none").unwrap(), None);
    issue(&mut j, "ses_old", "hash-old", Duration::ZERO);
    assert_eq!(j.expire_due().unwrap(), ["ses_old"]);
    let terminated = j.list(Some(SessionState::Terminated)).unwrap();
    assert_eq!(terminated.len(), 2, "{terminated:?}");

    // Events are append-only here too.
    let err = pg.psql_err("DELETE FROM events");
    assert!(err.contains("append-only"), "{err}");

    // Drains' state is replaced by name.
    let mut row = DrainRow {
        name: "siem".into(),
        url: "tcp://127.0.0.1:514".into(),
        connected: true,
        delivered: 1,
        queued: 0,
        queued_bytes: 0,
        dropped: 0,
        dropped_bytes: 0,
        failures: 0,
        last_error: None,
        event_seq: 3,
        daemon_pid: 42,
        updated_at: String::new(),
        node: None,
    };
    j.save_drains(std::slice::from_ref(&row)).unwrap();
    row.connected = false;
    row.last_error = Some("connection refused".into());
    j.save_drains(std::slice::from_ref(&row)).unwrap();
    let drains = j.drains().unwrap();
    assert_eq!(drains.len(), 1);
    assert!(!drains[0].connected);
    assert_eq!(drains[0].last_error.as_deref(), Some("connection refused"));

    // A collect session with a webhook, found by its identifier.
    let c = j
        .collect_create(&NewCollect {
            connection_identifier: Some("alice-laptop".into()),
            external_id: None,
            multi_connection: false,
            multi_key: true,
            must_confirm: false,
            ssh_banner: None,
            ssh_message: None,
            expires_at: None,
            webhooks: vec![NewWebhook {
                spec: WebhookSpec {
                    url: "http://127.0.0.1:9/hook".into(),
                    method: "post".into(),
                    headers: Default::default(),
                    events: Vec::new(),
                    retries: 3,
                    initial_backoff: 1,
                    backoff_multiplier: 1.5,
                },
                secret: Some("s3cret".into()),
            }],
        })
        .unwrap();
    let live = j.collect_live("alice-laptop").unwrap().unwrap();
    assert_eq!(live.id, c.id);
    assert!(!live.multi_connection && live.multi_key);
    let got = j.collect_get(&c.id).unwrap().unwrap();
    assert_eq!(got.webhooks.len(), 1);
    assert_eq!(got.webhooks[0].spec.backoff_multiplier, 1.5);
    assert!(got.webhooks[0].has_secret);
    assert_eq!(j.collect_list().unwrap().len(), 1);
    assert!(j.collect_delete("alice-laptop").unwrap());
    assert!(j.collect_live("alice-laptop").unwrap().is_none());
}

#[test]
fn group_commit_on_postgresql_undoes_only_the_failing_call() {
    let pg = Postgres::start();
    let db = Db::new(Journal::open_postgres(&target(&pg)).unwrap());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let results: Vec<Result<i32, JournalError>> = rt.block_on(async {
        let calls: Vec<_> = (0..40)
            .map(|i| {
                let db = db.clone();
                tokio::spawn(async move {
                    db.call(move |j| {
                        j.event(None, EventKind::TestWrite, serde_json::json!({"i": i}))?;
                        if i % 2 == 0 {
                            j.event(None, EventKind::TestWrite, serde_json::json!({"again": i}))?;
                            return Err(JournalError::TooNew { found: 0, known: 0 });
                        }
                        Ok(i)
                    })
                    .await
                })
            })
            .collect();
        let mut out = Vec::new();
        for c in calls {
            out.push(c.await.unwrap());
        }
        out
    });
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 20);
    // Only the odd calls' single events were kept.
    assert_eq!(
        pg.psql("SELECT count(*) FROM events WHERE kind = 'test.write'"),
        "20"
    );
}

/// Writes travel without waiting (a pipeline), so one can fail after its
/// call has returned: the database refuses it (here a trigger the test
/// installs), and only that call fails. The calls sent after it in the same
/// transaction are undone with it and sent again: each is kept exactly
/// once, and a call that reads after writing sees its own write.
#[test]
fn a_write_refused_after_its_call_returned_fails_that_call_alone() {
    let pg = Postgres::start();
    let db = Db::new(Journal::open_postgres(&target(&pg)).unwrap());
    pg.psql(
        "CREATE FUNCTION refuse_marked() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN IF NEW.detail LIKE '%\"refuse\":true%' THEN RAISE EXCEPTION 'refused by the test'; END IF; \
         RETURN NEW; END $$; \
         CREATE TRIGGER refuse_marked BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION refuse_marked()",
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let n = 200;
    let results: Vec<(usize, Result<Option<usize>, JournalError>)> = rt.block_on(async {
        let calls: Vec<_> = (0..n)
            .map(|i| {
                let db = db.clone();
                tokio::spawn(async move {
                    let r = db
                        .call(move |j| {
                            let detail = serde_json::json!({"i": i, "refuse": i % 4 == 0});
                            j.event(None, EventKind::TestWrite, detail)?;
                            match i % 4 {
                                // Reads after writing: its own write is there.
                                1 => {
                                    let mine = j
                                        .events(None, 0, None)?
                                        .iter()
                                        .filter(|e| e.detail["i"] == i)
                                        .count();
                                    Ok(Some(mine))
                                }
                                // Fails by itself after writing.
                                3 => Err(JournalError::TooNew { found: 0, known: 0 }),
                                _ => Ok(None),
                            }
                        })
                        .await;
                    (i, r)
                })
            })
            .collect();
        let mut out = Vec::new();
        for c in calls {
            out.push(c.await.unwrap());
        }
        out
    });
    for (i, r) in &results {
        match i % 4 {
            0 => {
                let e = r.as_ref().expect_err("a refused write fails its call");
                assert!(e.to_string().contains("refused by the test"), "{e}");
            }
            1 => assert_eq!(
                r.as_ref().unwrap(),
                &Some(1),
                "call {i} sees its own write once"
            ),
            2 => assert!(r.is_ok(), "call {i}: {r:?}"),
            _ => assert!(r.is_err()),
        }
    }
    // Kept: exactly the events of calls 1 and 2 mod 4, each once.
    let kept = pg.psql(
        "SELECT string_agg(detail::json->>'i', ',' ORDER BY (detail::json->>'i')::int) \
         FROM events WHERE kind = 'test.write'",
    );
    let want: Vec<String> = (0..n)
        .filter(|i| i % 4 == 1 || i % 4 == 2)
        .map(|i| i.to_string())
        .collect();
    assert_eq!(kept, want.join(","));
}

#[test]
fn an_unreachable_database_is_named_with_its_reason() {
    let port = free_port();
    let t = PgTarget {
        url: format!("postgres://tollgate@127.0.0.1:{port}/tollgate"),
        host: "127.0.0.1".into(),
        port,
        user: "tollgate".into(),
        dbname: "tollgate".into(),
        tls: None,
        password: Some("not-this".into()),
    };
    let e = Journal::open_postgres(&t).err().unwrap().to_string();
    assert_eq!(
        e,
        format!("journal postgres://127.0.0.1:{port}/tollgate: connection refused")
    );
    // A wrong password: the server's reason, and never the password.
    let pg = Postgres::start();
    let mut t = target(&pg);
    t.password = Some("wrong-password-xyz".into());
    let e = Journal::open_postgres(&t).err().unwrap().to_string();
    assert!(e.contains("password authentication failed"), "{e}");
    assert!(!e.contains("wrong-password-xyz"), "{e}");
}

/// `sslmode=verify-full`: TLS with the server's certificate chained to the
/// configured CA and naming the host; another CA is refused, and so is a
/// server without TLS (no fallback to plain text).
#[test]
fn tls_to_the_database_verifies_the_server_and_never_falls_back() {
    let dir = TempDir::new("pg-pki");
    let pki = Pki::make(dir.path());
    let pg = Postgres::start_tls(&pki.server_cert, &pki.server_key);
    let with_ca = |ca: &std::path::Path| {
        let mut t = target(&pg);
        t.tls = Some(tollgate::drain::tls::client_config(ca, None).unwrap());
        t
    };
    let j = Journal::open_postgres(&with_ca(&pki.ca)).unwrap();
    drop(j);
    // The server saw TLS on that connection's backend while it was open:
    // check on a new one that the server reports it.
    let mut j = Journal::open_postgres(&with_ca(&pki.ca)).unwrap();
    issue(&mut j, "ses_tls", "hash-tls", Duration::from_secs(60));
    assert!(j
        .redeem("hash-tls", "ops", "127.0.0.1:9")
        .unwrap()
        .is_some());
    let ssl = pg.psql("SELECT count(*) FROM pg_stat_ssl WHERE ssl");
    assert_ne!(ssl, "0", "no TLS connection in pg_stat_ssl");
    drop(j);

    let e = Journal::open_postgres(&with_ca(&pki.other_ca))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("certificate"), "{e}");

    let plain = Postgres::start();
    let mut t = target(&plain);
    t.tls = Some(tollgate::drain::tls::client_config(&pki.ca, None).unwrap());
    let e = Journal::open_postgres(&t).err().unwrap().to_string();
    assert!(e.contains("TLS") || e.contains("SSL"), "{e}");
}
