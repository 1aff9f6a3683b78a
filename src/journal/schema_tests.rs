//! Tests of the schema: migrations in place, and what the hot statements
//! compile to.
use super::*;

fn temp_path() -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(crate::token::random_id("tg-schema-").unwrap());
    std::fs::create_dir_all(&dir).unwrap();
    (dir.join("j.db"), dir)
}

/// The opcodes SQLite compiles `sql` to.
fn opcodes(db: &rusqlite::Connection, sql: &str, n: usize) -> Vec<(String, i64)> {
    let mut st = db.prepare(&format!("EXPLAIN {sql}")).unwrap();
    let nulls = vec![rusqlite::types::Null; n];
    st.query_map(rusqlite::params_from_iter(nulls), |r| {
        Ok((r.get::<_, String>(1)?, r.get::<_, i64>(3)?))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

#[test]
fn an_older_journal_is_migrated_in_place_and_keeps_its_rows_and_numbers() {
    let (path, dir) = temp_path();
    let before = MIGRATIONS.len() - 1;
    {
        let db = rusqlite::Connection::open(&path).unwrap();
        for sql in &MIGRATIONS[..before] {
            db.execute_batch(sql).unwrap();
        }
        db.pragma_update(None, "user_version", before as i64)
            .unwrap();
        db.execute_batch(
            "INSERT INTO sessions (id, kind, state, token_sha256, login_user, created_at, expires_at, max_duration_ms)
                 VALUES ('s1', 'command', 'pending', 'h1', 'u', 0, 9999999999999, 1000);
             INSERT INTO events (at, session_id, kind) VALUES (1, 's1', 'session.issued');
             INSERT INTO events (at, session_id, kind) VALUES (2, 's1', 'test.write');",
        )
        .unwrap();
    }
    let mut j = Journal::open(&path).unwrap();
    let db = j.conn.sqlite_db().unwrap();
    let table = |name: &str| -> String {
        db.query_row(
            "SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = ?1",
            [name],
            |r| r.get(0),
        )
        .unwrap()
    };
    // Both declarations were found and rewritten, nothing else.
    assert!(table("sessions").contains("CHECK (state = 'pending' OR state = 'active'"));
    assert!(!table("sessions").contains("state IN"));
    assert!(!table("events").contains("AUTOINCREMENT"));
    let ok: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
    // The CHECK still holds.
    let bogus = db.execute("UPDATE sessions SET state = 'bogus' WHERE id = 's1'", []);
    assert!(bogus.is_err(), "{bogus:?}");
    // Numbers go on from the largest.
    j.event(
        Some("s1"),
        crate::journal::EventKind::TestWrite,
        serde_json::json!({}),
    )
    .unwrap();
    let seqs: Vec<i64> = j
        .events(Some("s1"), 0, None)
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(seqs, vec![1, 2, 3]);
    assert!(j.redeem("h1", "u", "a").unwrap().is_some());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_sessions_state_changes_and_events_build_no_temporary_table() {
    let (path, dir) = temp_path();
    let j = Journal::open(&path).unwrap();
    let db = j.conn.sqlite_db().unwrap();
    let sequence_root: i64 = db
        .query_row(
            "SELECT rootpage FROM sqlite_schema WHERE name = 'sqlite_sequence'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    for (sql, n) in [
        ("UPDATE sessions SET state = 'active' WHERE token_sha256 = ?1 AND state = 'pending'", 1),
        (
            "UPDATE sessions SET state = 'terminated' WHERE id = ?1 AND (state = 'active' OR state = 'canceling')",
            1,
        ),
        ("INSERT INTO events (at, session_id, kind, detail) VALUES (?1, ?2, ?3, ?4)", 4),
    ] {
        let ops = opcodes(db, sql, n);
        assert!(!ops.iter().any(|(op, _)| op == "OpenEphemeral"), "{sql}: {ops:?}");
        assert!(
            !ops.iter().any(|(op, p2)| op == "OpenWrite" && *p2 == sequence_root),
            "{sql} writes sqlite_sequence"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_live_sessions_queries_find_them_through_the_partial_indexes() {
    let (path, dir) = temp_path();
    let j = Journal::open(&path).unwrap();
    let db = j.conn.sqlite_db().unwrap();
    // As `canceling`, `live_owners`, `recover_stale`, `nodes` and
    // `node_lost` ask (each implies the indexes' condition).
    for (sql, n, index) in [
        ("SELECT id FROM sessions WHERE state = 'canceling'", 0, "sessions_state"),
        (
            "SELECT id, owner FROM sessions WHERE (state = 'active' OR state = 'canceling') AND (node IS NULL OR node = ?1)",
            1,
            "sessions_",
        ),
        (
            "SELECT count(*) FROM sessions s WHERE s.node = ?1 AND (s.state = 'active' OR s.state = 'canceling')",
            1,
            "sessions_node",
        ),
    ] {
        let mut st = db.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let plan: Vec<String> = st
            .query_map(rusqlite::params_from_iter(vec![rusqlite::types::Null; n]), |r| {
                r.get::<_, String>(3)
            })
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert!(
            plan.iter().all(|p| p.contains(index) && !p.starts_with("SCAN sessions ")),
            "{sql}: {plan:?}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
