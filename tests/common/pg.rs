//! A throwaway PostgreSQL 15 cluster for a test: `initdb` in a temporary
//! directory (as the `postgres` account when the tests run as root, since
//! PostgreSQL refuses to run as root), started on a free loopback port with
//! its socket in that directory, password authentication over TCP, and
//! stopped and removed on drop.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::{free_port, TempDir};

/// Where Debian's PostgreSQL 15 puts its programs.
pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// The role and database the tests use.
pub const PG_USER: &str = "tollgate";

pub struct Postgres {
    dir: TempDir,
    pub port: u16,
    /// The role's password (also in [`Postgres::password_file`]).
    pub password: String,
    /// `-c` settings the server runs with.
    settings: String,
}

impl Postgres {
    pub fn start() -> Postgres {
        Self::start_with(None)
    }

    /// With TLS: the server presents `cert` (with `key`), and clients may
    /// use TLS or not (`hostssl` is not forced: what a client does with
    /// TLS offered, or not, is what is tested).
    pub fn start_tls(cert: &Path, key: &Path) -> Postgres {
        Self::start_with(Some((cert, key)))
    }

    fn start_with(tls: Option<(&Path, &Path)>) -> Postgres {
        let dir = TempDir::new("pg");
        let root = nix::unistd::Uid::effective().is_root();
        if root {
            // The cluster's files belong to the account that runs it.
            chown_postgres(dir.path());
        }
        let password = format!("pw-{}-{}", std::process::id(), free_port());
        let pwfile = dir.path().join("pwfile");
        std::fs::write(&pwfile, format!("{password}\n")).unwrap();
        if root {
            chown_postgres(&pwfile);
        }
        let data = dir.path().join("data");
        check(
            as_postgres(root, &format!("{PG_BIN}/initdb"))
                .args(["-D", &data.display().to_string()])
                .args(["-U", PG_USER, "--pwfile", &pwfile.display().to_string()])
                .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
                .args(["-E", "UTF8", "--locale=C.UTF-8", "--no-sync"])
                .output(),
            "initdb",
        );
        let port = free_port();
        let log = dir.path().join("log");
        let mut settings =
            "-c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200".to_string();
        if let Some((cert, key)) = tls {
            // The server reads them as its own account, the key 0600.
            let (c, k) = (dir.path().join("server.pem"), dir.path().join("server.key"));
            std::fs::copy(cert, &c).unwrap();
            std::fs::copy(key, &k).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&k, std::fs::Permissions::from_mode(0o600)).unwrap();
            if root {
                chown_postgres(&c);
                chown_postgres(&k);
            }
            settings.push_str(&format!(
                " -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
                c.display(),
                k.display()
            ));
        }
        let opts = format!("-p {port} -k {} {settings}", dir.path().display());
        check(
            as_postgres(root, &format!("{PG_BIN}/pg_ctl"))
                .args(["-D", &data.display().to_string(), "-l"])
                .arg(&log)
                .args(["-o", &opts, "-w", "-t", "60", "start"])
                .output(),
            "pg_ctl start",
        );
        let pg = Postgres {
            dir,
            port,
            password,
            settings,
        };
        check(
            as_postgres(root, &format!("{PG_BIN}/createdb"))
                .args(["-h", &pg.dir.path().display().to_string()])
                .args(["-p", &port.to_string(), "-U", PG_USER, PG_USER])
                .output(),
            "createdb",
        );
        pg
    }

    /// `postgres://tollgate@127.0.0.1:PORT/tollgate`: no password in it.
    pub fn url(&self) -> String {
        format!("postgres://{PG_USER}@127.0.0.1:{}/{PG_USER}", self.port)
    }

    /// A file holding the role's password, readable by the tests' account.
    pub fn password_file(&self) -> PathBuf {
        let p = self.dir.path().join("password");
        std::fs::write(&p, format!("{}\n", self.password)).unwrap();
        p
    }

    /// `[server]` lines for a tollgate journal in this database (plain TCP
    /// on loopback, the password from a file).
    pub fn journal_lines(&self) -> String {
        format!(
            "journal = \"{}?sslmode=disable\"\njournal_password_file = \"{}\"",
            self.url(),
            self.password_file().display()
        )
    }

    /// psql running `sql` as the superuser, over the cluster's socket.
    fn run_psql(&self, sql: &str) -> Output {
        let root = nix::unistd::Uid::effective().is_root();
        as_postgres(root, "/usr/bin/psql")
            .args(["-h", &self.dir.path().display().to_string()])
            .args(["-p", &self.port.to_string(), "-U", PG_USER, "-d", PG_USER])
            .args(["-v", "ON_ERROR_STOP=1", "-At", "-c", sql])
            .output()
            .unwrap()
    }

    /// Runs `sql`; what it printed.
    pub fn psql(&self, sql: &str) -> String {
        let out = self.run_psql(sql);
        check(Ok(out.clone()), "psql");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Runs `sql` that must fail; what psql said.
    pub fn psql_err(&self, sql: &str) -> String {
        let out = self.run_psql(sql);
        assert!(!out.status.success(), "{sql} succeeded");
        String::from_utf8_lossy(&out.stderr).to_string()
    }

    /// Stops the server at once (what a crash or an outage looks like to
    /// clients).
    pub fn stop(&self) {
        let root = nix::unistd::Uid::effective().is_root();
        let _ = as_postgres(root, &format!("{PG_BIN}/pg_ctl"))
            .args(["-D", &self.data().display().to_string()])
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }

    /// Starts it again after [`Postgres::stop`].
    pub fn restart(&self) {
        let root = nix::unistd::Uid::effective().is_root();
        let opts = format!(
            "-p {} -k {} {}",
            self.port,
            self.dir.path().display(),
            self.settings
        );
        check(
            as_postgres(root, &format!("{PG_BIN}/pg_ctl"))
                .args(["-D", &self.data().display().to_string(), "-l"])
                .arg(self.dir.path().join("log"))
                .args(["-o", &opts, "-w", "-t", "60", "start"])
                .output(),
            "pg_ctl start",
        );
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

fn as_postgres(root: bool, program: &str) -> Command {
    if root {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--", program]);
        c
    } else {
        Command::new(program)
    }
}

fn chown_postgres(p: &Path) {
    let pg = nix::unistd::User::from_name("postgres")
        .unwrap()
        .expect("the postgres account (Debian's postgresql package makes it)");
    nix::unistd::chown(p, Some(pg.uid), Some(pg.gid)).unwrap();
}

fn check(out: std::io::Result<Output>, what: &str) {
    let out = out.unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
