//! Tests of the SQL layer: parameters, rows, savepoints and transactions.
use super::*;

fn memory() -> Conn {
    let c = Conn::sqlite(rusqlite::Connection::open_in_memory().unwrap());
    c.batch("CREATE TABLE t (i INTEGER, r REAL, s TEXT, b INTEGER)")
        .unwrap();
    c
}

#[test]
fn every_parameter_type_goes_in_and_comes_back() {
    let c = memory();
    let none: Option<&str> = None;
    c.execute(
        "INSERT INTO t (i, r, s, b) VALUES (?1, ?2, ?3, ?4)",
        params![u64::MAX, 1.5f64, "x", true],
    )
    .unwrap();
    c.execute(
        "INSERT INTO t (i, r, s, b) VALUES (?1, ?2, ?3, ?4)",
        params![-7i64, 2u32, none, false],
    )
    .unwrap();
    let rows: Vec<(i64, f64, Option<String>, bool)> = c
        .query("SELECT i, r, s, b FROM t ORDER BY rowid", params![], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })
        .unwrap();
    // u64 past i64::MAX is stored at i64::MAX rather than wrapping.
    assert_eq!(
        rows,
        [
            (i64::MAX, 1.5, Some("x".into()), true),
            (-7, 2.0, None, false)
        ]
    );
    let bad = c.query_one("SELECT s FROM t WHERE i = -7", params![], |r| {
        r.get::<String>(0)
    });
    assert!(
        matches!(&bad, Err(JournalError::Column(m)) if m.contains("not text")),
        "{bad:?}"
    );
    assert!(c
        .query_opt("SELECT i FROM t WHERE i = 0", params![], |r| r
            .get::<i64>(0))
        .unwrap()
        .is_none());
}

#[test]
fn a_savepoint_keeps_what_it_commits_and_undoes_what_it_drops() {
    let mut c = memory();
    {
        let tx = c.savepoint().unwrap();
        tx.execute("INSERT INTO t (i) VALUES (1)", params![])
            .unwrap();
        tx.commit().unwrap();
    }
    {
        let tx = c.savepoint().unwrap();
        tx.execute("INSERT INTO t (i) VALUES (2)", params![])
            .unwrap();
        // Dropped without commit.
    }
    {
        let tx = c.immediate().unwrap();
        tx.execute("INSERT INTO t (i) VALUES (3)", params![])
            .unwrap();
        tx.commit().unwrap();
    }
    {
        let tx = c.immediate().unwrap();
        tx.execute("INSERT INTO t (i) VALUES (4)", params![])
            .unwrap();
    }
    let kept: Vec<i64> = c
        .query("SELECT i FROM t ORDER BY i", params![], |r| r.get(0))
        .unwrap();
    assert_eq!(kept, [1, 3]);
    // Nothing is left open.
    assert!(c.sqlite_db().unwrap().is_autocommit());
}

#[test]
fn a_savepoint_that_reads_then_writes_is_not_overtaken_by_another_connection() {
    // The CLI's collect create beside the daemon's writer: a check,
    // then an insert. Deferred, a commit of the other connection
    // between the two failed the insert at once ("database is locked").
    let dir = std::env::temp_dir().join(crate::token::random_id("tg-sp-").unwrap());
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("j.db");
    let open = |busy_ms| {
        let c = rusqlite::Connection::open(&path).unwrap();
        c.pragma_update(None, "journal_mode", "WAL").unwrap();
        c.busy_timeout(std::time::Duration::from_millis(busy_ms))
            .unwrap();
        Conn::sqlite(c)
    };
    let mut cli = open(10_000);
    let daemon = open(50);
    cli.run("CREATE TABLE t (i INTEGER)").unwrap();
    {
        let tx = cli.savepoint().unwrap();
        let n: i64 = tx
            .query_one("SELECT count(*) FROM t", params![], |r| r.get(0))
            .unwrap();
        // The other connection cannot commit in between: it waits,
        // here until its short busy timeout.
        let other = daemon.execute("INSERT INTO t (i) VALUES (100)", params![]);
        assert!(
            matches!(&other, Err(JournalError::Sql(e)) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy)),
            "{other:?}"
        );
        tx.execute("INSERT INTO t (i) VALUES (?1)", params![n + 1])
            .unwrap();
        tx.commit().unwrap();
    }
    daemon
        .execute("INSERT INTO t (i) VALUES (100)", params![])
        .unwrap();
    let rows: Vec<i64> = cli
        .query("SELECT i FROM t ORDER BY i", params![], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, [1, 100]);
    std::fs::remove_dir_all(&dir).unwrap();
}
