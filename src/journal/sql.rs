//! The one place the journal's operations meet a database: statements with
//! `?N` placeholders, parameters and rows of the journal's own types, and
//! savepoints. Every operation in `journal/` is written once against
//! [`Conn`]; the backend behind it is SQLite (the embedded default), and a
//! second backend sits behind the same calls without touching them.

use rusqlite::types::ValueRef;

use super::JournalError;

/// A parameter, borrowed from the caller.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Param<'a> {
    Null,
    Int(i64),
    Real(f64),
    Text(&'a str),
}

/// A value read from a row.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
}

/// What can be bound to a `?N`.
pub trait ToParam {
    fn to_param(&self) -> Param<'_>;
}

macro_rules! int_param {
    ($($t:ty),*) => {$(
        impl ToParam for $t {
            fn to_param(&self) -> Param<'_> {
                Param::Int(*self as i64)
            }
        }
    )*};
}
int_param!(i64, i32, u32, u16, u8);

impl ToParam for u64 {
    fn to_param(&self) -> Param<'_> {
        Param::Int(i64::try_from(*self).unwrap_or(i64::MAX))
    }
}

impl ToParam for usize {
    fn to_param(&self) -> Param<'_> {
        Param::Int(i64::try_from(*self).unwrap_or(i64::MAX))
    }
}

impl ToParam for bool {
    fn to_param(&self) -> Param<'_> {
        Param::Int(i64::from(*self))
    }
}

impl ToParam for f64 {
    fn to_param(&self) -> Param<'_> {
        Param::Real(*self)
    }
}

impl ToParam for str {
    fn to_param(&self) -> Param<'_> {
        Param::Text(self)
    }
}

impl ToParam for String {
    fn to_param(&self) -> Param<'_> {
        Param::Text(self)
    }
}

impl<T: ToParam + ?Sized> ToParam for &T {
    fn to_param(&self) -> Param<'_> {
        (**self).to_param()
    }
}

impl<T: ToParam> ToParam for Option<T> {
    fn to_param(&self) -> Param<'_> {
        match self {
            Some(v) => v.to_param(),
            None => Param::Null,
        }
    }
}

/// `params![a, b, c]`: the parameters of a statement, `?1`, `?2`, `?3`.
macro_rules! params {
    () => {
        &[] as &[&dyn $crate::journal::sql::ToParam]
    };
    ($($p:expr),+ $(,)?) => {
        &[$(&$p as &dyn $crate::journal::sql::ToParam),+] as &[&dyn $crate::journal::sql::ToParam]
    };
}
pub(crate) use params;

/// What a column can be read as.
pub trait FromValue: Sized {
    fn from_value(v: &Value) -> Option<Self>;
    /// The type's name, for the error when a column holds something else.
    const NAME: &'static str;
}

impl FromValue for i64 {
    const NAME: &'static str = "an integer";
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }
}

macro_rules! int_value {
    ($($t:ty),*) => {$(
        impl FromValue for $t {
            const NAME: &'static str = "an integer in range";
            fn from_value(v: &Value) -> Option<Self> {
                match v {
                    Value::Int(i) => <$t>::try_from(*i).ok(),
                    _ => None,
                }
            }
        }
    )*};
}
int_value!(i32, u32, u16, u64, usize);

impl FromValue for bool {
    const NAME: &'static str = "0 or 1";
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Int(i) => Some(*i != 0),
            _ => None,
        }
    }
}

impl FromValue for f64 {
    const NAME: &'static str = "a number";
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Real(f) => Some(*f),
            Value::Int(i) => Some(*i as f64),
            _ => None,
        }
    }
}

impl FromValue for String {
    const NAME: &'static str = "text";
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Text(s) => Some(s.clone()),
            _ => None,
        }
    }
}

impl<T: FromValue> FromValue for Option<T> {
    const NAME: &'static str = T::NAME;
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::Null => Some(None),
            v => T::from_value(v).map(Some),
        }
    }
}

/// One row of a result.
pub struct Row {
    values: Vec<Value>,
}

impl Row {
    pub(super) fn new(values: Vec<Value>) -> Row {
        Row { values }
    }

    /// Every column, as read.
    pub fn values(&self) -> &[Value] {
        &self.values
    }

    /// Column `i` (from 0) as a `T`.
    pub fn get<T: FromValue>(&self, i: usize) -> Result<T, JournalError> {
        let v = self.values.get(i).ok_or_else(|| {
            JournalError::Column(format!("no column {i} (the row has {})", self.values.len()))
        })?;
        T::from_value(v)
            .ok_or_else(|| JournalError::Column(format!("column {i} is {v:?}, not {}", T::NAME)))
    }
}

/// The channel daemons listen on for what another process announces.
const CHANNEL: &str = "tollgate_journal";

/// A connection to the journal's database.
pub struct Conn {
    backend: Backend,
    /// A transaction of ours is open (PostgreSQL needs one around a
    /// savepoint; SQLite opens one itself).
    open: std::cell::Cell<bool>,
    /// A call of the writer's batch runs, in a savepoint of its own (see
    /// [`Conn::begin_call`]).
    in_call: std::cell::Cell<bool>,
}

enum Backend {
    Sqlite(rusqlite::Connection),
    /// Behind a `RefCell`: its client takes `&mut` for every statement,
    /// and the journal's reads take `&self`. A `Conn` is used by one
    /// thread at a time, and rows are read whole before any callback runs.
    Postgres(Box<std::cell::RefCell<super::pg::Pg>>),
}

impl Conn {
    pub(super) fn sqlite(db: rusqlite::Connection) -> Conn {
        Conn {
            backend: Backend::Sqlite(db),
            open: std::cell::Cell::new(false),
            in_call: std::cell::Cell::new(false),
        }
    }

    pub(super) fn postgres(pg: super::pg::Pg) -> Conn {
        Conn {
            backend: Backend::Postgres(Box::new(std::cell::RefCell::new(pg))),
            open: std::cell::Cell::new(false),
            in_call: std::cell::Cell::new(false),
        }
    }

    /// The SQLite connection, for what only SQLite has (pragmas); `None`
    /// on PostgreSQL.
    pub(super) fn sqlite_db(&self) -> Option<&rusqlite::Connection> {
        match &self.backend {
            Backend::Sqlite(db) => Some(db),
            Backend::Postgres(_) => None,
        }
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self.backend, Backend::Postgres(_))
    }

    /// Runs one statement; the number of rows it changed.
    pub fn execute(&self, sql: &str, params: &[&dyn ToParam]) -> Result<usize, JournalError> {
        match &self.backend {
            Backend::Sqlite(db) => {
                let mut st = db.prepare_cached(sql)?;
                bind(&mut st, params)?;
                Ok(st.raw_execute()?)
            }
            Backend::Postgres(pg) => pg.borrow_mut().execute(sql, params),
        }
    }

    /// Runs a statement whose result nobody reads. On PostgreSQL it is sent
    /// without waiting and travels with the next statement that waits (or
    /// the end of the call), which returns its error if it failed.
    pub fn write(&self, sql: &str, params: &[&dyn ToParam]) -> Result<(), JournalError> {
        match &self.backend {
            Backend::Sqlite(_) => self.execute(sql, params).map(drop),
            Backend::Postgres(pg) => pg.borrow_mut().send(sql, params),
        }
    }

    /// Wakes the daemons sharing a PostgreSQL journal (NOTIFY, delivered
    /// when the transaction commits) that [`Conn::listen`]; nothing on
    /// SQLite, whose daemon polls a counter that costs nothing.
    pub fn notify_nodes(&self) -> Result<(), JournalError> {
        match &self.backend {
            Backend::Sqlite(_) => Ok(()),
            Backend::Postgres(_) => self.write("SELECT pg_notify(?1, '')", params![CHANNEL]),
        }
    }

    /// Listens for [`Conn::notify_nodes`] (PostgreSQL; nothing on SQLite).
    pub fn listen(&self) -> Result<(), JournalError> {
        match &self.backend {
            Backend::Sqlite(_) => Ok(()),
            Backend::Postgres(pg) => pg.borrow_mut().listen(CHANNEL),
        }
    }

    /// Waits up to `timeout` for a notification (`true`); an error when the
    /// connection is lost. SQLite: waits `timeout`.
    pub fn wait_notified(&self, timeout: std::time::Duration) -> Result<bool, JournalError> {
        match &self.backend {
            Backend::Sqlite(_) => {
                std::thread::sleep(timeout);
                Ok(false)
            }
            Backend::Postgres(pg) => pg.borrow_mut().wait_notified(timeout),
        }
    }

    /// Runs statements without parameters or results (schema changes).
    pub fn batch(&self, sql: &str) -> Result<(), JournalError> {
        match &self.backend {
            Backend::Sqlite(db) => Ok(db.execute_batch(sql)?),
            Backend::Postgres(pg) => pg.borrow_mut().batch(sql),
        }
    }

    /// Every row of a query.
    fn rows(
        &self,
        sql: &str,
        params: &[&dyn ToParam],
        limit: usize,
    ) -> Result<Vec<Row>, JournalError> {
        match &self.backend {
            Backend::Sqlite(db) => {
                let mut st = db.prepare_cached(sql)?;
                bind(&mut st, params)?;
                let width = st.column_count();
                let mut rows = st.raw_query();
                let mut out = Vec::new();
                while out.len() < limit {
                    match rows.next()? {
                        Some(r) => out.push(read(r, width)?),
                        None => break,
                    }
                }
                Ok(out)
            }
            Backend::Postgres(pg) => {
                let mut rows = pg.borrow_mut().query(sql, params)?;
                rows.truncate(limit);
                Ok(rows)
            }
        }
    }

    /// Every row of a query, each through `f`.
    pub fn query<T>(
        &self,
        sql: &str,
        params: &[&dyn ToParam],
        f: impl FnMut(&Row) -> Result<T, JournalError>,
    ) -> Result<Vec<T>, JournalError> {
        self.rows(sql, params, usize::MAX)?.iter().map(f).collect()
    }

    /// The first row of a query through `f`, if there is one.
    pub fn query_opt<T>(
        &self,
        sql: &str,
        params: &[&dyn ToParam],
        f: impl FnOnce(&Row) -> Result<T, JournalError>,
    ) -> Result<Option<T>, JournalError> {
        match self.rows(sql, params, 1)?.first() {
            Some(r) => Ok(Some(f(r)?)),
            None => Ok(None),
        }
    }

    /// The first row of a query through `f`; no row is an error.
    pub fn query_one<T>(
        &self,
        sql: &str,
        params: &[&dyn ToParam],
        f: impl FnOnce(&Row) -> Result<T, JournalError>,
    ) -> Result<T, JournalError> {
        self.query_opt(sql, params, f)?
            .ok_or_else(|| JournalError::Column("the query returned no row".into()))
    }

    /// Milliseconds since the Unix epoch by the database's clock, which
    /// every node sharing it agrees on (SQLite: this host's).
    pub fn now_ms(&self) -> Result<i64, JournalError> {
        match &self.backend {
            Backend::Sqlite(_) => Ok(super::now_ms()),
            Backend::Postgres(_) => self.query_one(
                "SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint",
                params![],
                |r| r.get(0),
            ),
        }
    }

    /// A savepoint: what runs through it is kept by [`Tx::commit`], and
    /// undone if the `Tx` is dropped first. Outside a transaction it is one
    /// of its own that takes the write lock at once ([`Conn::immediate`]):
    /// a deferred one that read first (an identifier is free, say) could
    /// not write after another connection committed meanwhile (SQLite's
    /// `SQLITE_BUSY_SNAPSHOT`, "database is locked" at once, whatever the
    /// busy timeout), and the CLI writes while the daemon does.
    pub fn savepoint(&mut self) -> Result<Tx<'_>, JournalError> {
        if self.in_call.get() {
            // Inside a call of the writer's batch, the call's savepoint is
            // the operation's: an operation that fails returns its error,
            // and the call is undone whole. (A statement fewer each way:
            // round trips on PostgreSQL.)
            return Ok(Tx {
                conn: self,
                savepoint: false,
                done: false,
                within: true,
            });
        }
        if !self.open.get() {
            // Outside a transaction (PostgreSQL has no savepoints there):
            // the same all-or-nothing as a transaction of its own.
            return self.immediate();
        }
        self.run("SAVEPOINT tx")?;
        Ok(Tx {
            conn: self,
            savepoint: true,
            done: false,
            within: false,
        })
    }

    /// A transaction that takes the write lock at once (outside a batch:
    /// a read that decides a write sees what it writes over). Inside a
    /// call of the writer's batch, which holds the lock already, the
    /// call's savepoint is the transaction.
    pub fn immediate(&mut self) -> Result<Tx<'_>, JournalError> {
        if self.in_call.get() {
            return self.savepoint();
        }
        self.begin()?;
        Ok(Tx {
            conn: self,
            savepoint: false,
            done: false,
            within: false,
        })
    }

    /// One call of the writer's batch begins, in a savepoint of its own.
    pub(super) fn begin_call(&self) -> Result<(), JournalError> {
        match &self.backend {
            Backend::Sqlite(_) => self.run("SAVEPOINT call")?,
            Backend::Postgres(pg) => pg.borrow_mut().begin_call(),
        }
        self.in_call.set(true);
        Ok(())
    }

    /// The call ends: its writes kept, or undone alone. On PostgreSQL a
    /// write it sent without waiting can still fail after this: see
    /// [`Conn::late_failures`].
    pub(super) fn end_call(&self, keep: bool) -> Result<(), JournalError> {
        self.in_call.set(false);
        match &self.backend {
            Backend::Sqlite(_) => {
                if !keep {
                    self.run("ROLLBACK TO call")?;
                }
                self.run("RELEASE call")
            }
            Backend::Postgres(pg) => pg.borrow_mut().end_call(keep),
        }
    }

    /// Calls of the transaction (numbered from 0 in the order they began)
    /// whose writes failed after they returned, and were undone alone
    /// (PostgreSQL; SQLite fails a write before its call returns).
    pub(super) fn late_failures(&self) -> Vec<(usize, JournalError)> {
        match &self.backend {
            Backend::Sqlite(_) => Vec::new(),
            Backend::Postgres(pg) => pg.borrow_mut().late_failures(),
        }
    }

    /// The time as the journal's clock gives it, as SQL: on PostgreSQL the
    /// database's (`statement_timestamp()`, one value for the statement), on
    /// SQLite the parameter `?N` (this host's, bound by the caller).
    pub fn clock_sql(&self, n: usize) -> String {
        if self.is_postgres() {
            "(extract(epoch FROM statement_timestamp()) * 1000)::bigint".into()
        } else {
            format!("?{n}")
        }
    }

    /// Opens a write transaction (SQLite: taking the write lock at once).
    pub(super) fn begin(&self) -> Result<(), JournalError> {
        match &self.backend {
            Backend::Sqlite(_) => self.run("BEGIN IMMEDIATE")?,
            Backend::Postgres(_) => self.run("BEGIN")?,
        }
        self.open.set(true);
        Ok(())
    }

    /// Commits (or rolls back) the transaction [`Conn::begin`] opened.
    pub(super) fn end(&self, commit: bool) -> Result<(), JournalError> {
        let r = self.run(if commit { "COMMIT" } else { "ROLLBACK" });
        if r.is_ok() || !commit {
            self.open.set(false);
        }
        r
    }

    /// A parameterless statement, prepared once per connection.
    pub(super) fn run(&self, sql: &str) -> Result<(), JournalError> {
        match &self.backend {
            Backend::Sqlite(db) => {
                db.prepare_cached(sql)?.execute([])?;
                Ok(())
            }
            Backend::Postgres(pg) => pg.borrow_mut().batch(sql),
        }
    }
}

/// A savepoint or transaction in progress (see [`Conn::savepoint`]).
pub struct Tx<'c> {
    conn: &'c mut Conn,
    /// A savepoint (else a transaction of its own).
    savepoint: bool,
    done: bool,
    /// Within a call of the writer's batch: its savepoint does the work.
    within: bool,
}

impl Tx<'_> {
    /// Keeps what ran in it.
    pub fn commit(mut self) -> Result<(), JournalError> {
        self.done = true;
        if self.within {
            return Ok(());
        }
        if self.savepoint {
            self.conn.run("RELEASE tx")
        } else {
            self.conn.end(true)
        }
    }
}

impl Drop for Tx<'_> {
    fn drop(&mut self) {
        if self.done || self.within {
            return;
        }
        if self.savepoint {
            let _ = self.conn.run("ROLLBACK TO tx");
            let _ = self.conn.run("RELEASE tx");
        } else {
            let _ = self.conn.end(false);
        }
    }
}

impl std::ops::Deref for Tx<'_> {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        self.conn
    }
}

fn bind(st: &mut rusqlite::CachedStatement<'_>, params: &[&dyn ToParam]) -> rusqlite::Result<()> {
    for (i, p) in params.iter().enumerate() {
        match p.to_param() {
            Param::Null => st.raw_bind_parameter(i + 1, rusqlite::types::Null)?,
            Param::Int(n) => st.raw_bind_parameter(i + 1, n)?,
            Param::Real(f) => st.raw_bind_parameter(i + 1, f)?,
            Param::Text(s) => st.raw_bind_parameter(i + 1, s)?,
        }
    }
    Ok(())
}

fn read(r: &rusqlite::Row<'_>, width: usize) -> Result<Row, JournalError> {
    let mut values = Vec::with_capacity(width);
    for i in 0..width {
        values.push(match r.get_ref(i)? {
            ValueRef::Null => Value::Null,
            ValueRef::Integer(n) => Value::Int(n),
            ValueRef::Real(f) => Value::Real(f),
            ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
            ValueRef::Blob(_) => {
                return Err(JournalError::Column(format!("column {i} is a blob")));
            }
        });
    }
    Ok(Row { values })
}

#[cfg(test)]
#[path = "sql_tests.rs"]
mod tests;
