//! Load generator for `bench/run`: one russh client process drives many SSH
//! sessions, because an OpenSSH client per connection costs more CPU than the
//! servers do on a small machine. The same generator drives every server.
//!
//! ```text
//! loadgen issue  --config C --profile P --login-user U --count N --out FILE
//! loadgen rate   --addr A --user U (--password PW | --tokens FILE) [--concurrency 16] [--seconds 10]
//!                [--kex curve25519-sha256|default] [--command true] [--pty]
//! loadgen hold   --addr A --user U (--password PW | --tokens FILE) --sessions N [--concurrency 32]
//!                [--pty] [--command CMD]
//!                (rate and hold: --sources N spreads connections over 127.0.0.2 … 127.0.0.N+1)
//! loadgen redeem --count N          (journal redemptions/s, in a temporary journal)
//! loadgen journal --count N [--concurrency 16]
//!                                   (the daemon's three journal calls per session, redeem,
//!                                    started and finish, through its journal thread, in a
//!                                    temporary journal: process CPU ms per session, commits)
//! loadgen sink   --port P           (a syslog collector that reads and discards:
//!                                    prints {"port"} once listening, then runs until killed)
//! ```
//! Each mode prints one JSON object on stdout.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use russh::client::{self, Handle};
use russh::keys::PublicKeyOrCertificate;
use russh::{ChannelMsg, Disconnect};

struct Client;

impl client::Handler for Client {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        _key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(true)
    }
}

/// Where each connection's secret comes from.
enum Secrets {
    Password(String),
    Tokens(Mutex<VecDeque<String>>),
}

impl Secrets {
    fn next(&self) -> Option<String> {
        match self {
            Secrets::Password(p) => Some(p.clone()),
            Secrets::Tokens(q) => q.lock().unwrap().pop_front(),
        }
    }
}

struct Args(Vec<String>);

impl Args {
    fn get(&self, name: &str) -> Option<String> {
        self.0
            .iter()
            .position(|a| a == name)
            .and_then(|i| self.0.get(i + 1).cloned())
    }
    fn req(&self, name: &str) -> String {
        self.get(name).unwrap_or_else(|| panic!("missing {name}"))
    }
    fn num(&self, name: &str, default: u64) -> u64 {
        self.get(name).map_or(default, |v| v.parse().expect(name))
    }
    fn flag(&self, name: &str) -> bool {
        self.0.iter().any(|a| a == name)
    }
}

fn client_config(kex: Option<&str>) -> Arc<client::Config> {
    let mut c = client::Config {
        nodelay: true,
        inactivity_timeout: None,
        ..Default::default()
    };
    if let Some(k) = kex.filter(|k| *k != "default") {
        let name = match k {
            "curve25519-sha256" => russh::kex::CURVE25519,
            "mlkem768x25519-sha256" => russh::kex::MLKEM768X25519_SHA256,
            other => panic!("unsupported kex {other}"),
        };
        let mut kexes = vec![name];
        // The extension markers must stay advertised.
        kexes.extend(
            c.preferred
                .kex
                .iter()
                .filter(|n| {
                    n.as_ref().starts_with("ext-info") || n.as_ref().starts_with("kex-strict")
                })
                .cloned(),
        );
        c.preferred.kex = Cow::Owned(kexes);
    }
    Arc::new(c)
}

/// Source addresses 127.0.0.2, .3, … in turn, so per-source limits (Dropbear
/// allows 5 unauthenticated connections per address) apply alike to every
/// server. Loopback only.
static NEXT_SOURCE: AtomicU64 = AtomicU64::new(0);
static SOURCES: AtomicU64 = AtomicU64::new(1);

async fn connect(
    cfg: Arc<client::Config>,
    addr: &str,
    user: &str,
    secret: &str,
) -> Result<Handle<Client>, String> {
    let target: std::net::SocketAddr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    let n = NEXT_SOURCE.fetch_add(1, Ordering::Relaxed) % SOURCES.load(Ordering::Relaxed);
    let sock = tokio::net::TcpSocket::new_v4().map_err(|e| e.to_string())?;
    if SOURCES.load(Ordering::Relaxed) > 1 {
        let src = std::net::Ipv4Addr::new(127, 0, 0, 2 + n as u8);
        sock.bind((src, 0).into())
            .map_err(|e| format!("bind {src}: {e}"))?;
    }
    let stream = sock
        .connect(target)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    let mut h = client::connect_stream(cfg, stream, Client)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let r = h
        .authenticate_password(user, secret)
        .await
        .map_err(|e| format!("auth: {e}"))?;
    if !r.success() {
        return Err("auth rejected".into());
    }
    Ok(h)
}

/// One complete session: connect, authenticate, run `command`, wait for its
/// exit status, disconnect.
async fn one_session(
    cfg: Arc<client::Config>,
    addr: &str,
    user: &str,
    secret: &str,
    command: &str,
    pty: bool,
) -> Result<(), String> {
    let h = connect(cfg, addr, user, secret).await?;
    let mut ch = h
        .channel_open_session()
        .await
        .map_err(|e| format!("channel: {e}"))?;
    if pty {
        ch.request_pty(false, "xterm", 80, 24, 0, 0, &[])
            .await
            .map_err(|e| e.to_string())?;
    }
    ch.exec(true, command).await.map_err(|e| e.to_string())?;
    let mut status = None;
    while let Some(msg) = ch.wait().await {
        match msg {
            ChannelMsg::ExitStatus { exit_status } => status = Some(exit_status),
            ChannelMsg::Close => break,
            _ => {}
        }
    }
    let _ = h.disconnect(Disconnect::ByApplication, "", "en").await;
    match status {
        Some(0) => Ok(()),
        other => Err(format!("exit status {other:?}")),
    }
}

fn secrets(a: &Args) -> Arc<Secrets> {
    Arc::new(match (a.get("--password"), a.get("--tokens")) {
        (Some(p), _) => Secrets::Password(p),
        (None, Some(f)) => Secrets::Tokens(Mutex::new(
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .map(String::from)
                .collect(),
        )),
        _ => panic!("--password or --tokens"),
    })
}

async fn rate(a: Args) {
    let addr = a.req("--addr");
    let user = a.req("--user");
    let secrets = secrets(&a);
    let conc = a.num("--concurrency", 16);
    let dur = Duration::from_secs(a.num("--seconds", 10));
    let cmd = a.get("--command").unwrap_or_else(|| "true".into());
    let pty = a.flag("--pty");
    let cfg = client_config(a.get("--kex").as_deref());
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(Mutex::new(None::<String>));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..conc {
        let (addr, user, cmd, cfg, secrets) = (
            addr.clone(),
            user.clone(),
            cmd.clone(),
            cfg.clone(),
            secrets.clone(),
        );
        let (done, failed, first_error) = (done.clone(), failed.clone(), first_error.clone());
        tasks.push(tokio::spawn(async move {
            while start.elapsed() < dur {
                let Some(secret) = secrets.next() else { break };
                match one_session(cfg.clone(), &addr, &user, &secret, &cmd, pty).await {
                    Ok(()) => done.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        first_error.lock().unwrap().get_or_insert(e);
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let secs = start.elapsed().as_secs_f64();
    let d = done.load(Ordering::Relaxed);
    println!(
        "{}",
        serde_json::json!({
            "completed": d, "failed": failed.load(Ordering::Relaxed), "seconds": secs,
            "per_second": d as f64 / secs, "first_error": *first_error.lock().unwrap(),
        })
    );
}

async fn hold(a: Args) {
    let addr = a.req("--addr");
    let user = a.req("--user");
    let secrets = secrets(&a);
    let n = a.num("--sessions", 100);
    let conc = a.num("--concurrency", 32) as usize;
    let pty = a.flag("--pty");
    let cmd = a.get("--command").unwrap_or_else(|| "sleep 100000".into());
    let cfg = client_config(a.get("--kex").as_deref());
    let start = Instant::now();
    let sem = Arc::new(tokio::sync::Semaphore::new(conc));
    let mut opening = Vec::new();
    for _ in 0..n {
        let permit = sem.clone().acquire_owned().await.unwrap();
        let (addr, user, cmd, cfg) = (addr.clone(), user.clone(), cmd.clone(), cfg.clone());
        let secret = secrets.next();
        opening.push(tokio::spawn(async move {
            let _permit = permit;
            let secret = secret.ok_or("out of tokens")?;
            let h = connect(cfg, &addr, &user, &secret).await?;
            let ch = h.channel_open_session().await.map_err(|e| e.to_string())?;
            if pty {
                ch.request_pty(false, "xterm", 80, 24, 0, 0, &[])
                    .await
                    .map_err(|e| e.to_string())?;
            }
            ch.exec(true, cmd.as_str())
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>((h, ch))
        }));
    }
    let mut held = Vec::new();
    let mut failed = 0;
    let mut first_error = None;
    for t in opening {
        match t.await {
            Ok(Ok(s)) => held.push(s),
            Ok(Err(e)) => {
                failed += 1;
                first_error.get_or_insert(e);
            }
            Err(e) => {
                failed += 1;
                first_error.get_or_insert(e.to_string());
            }
        }
    }
    println!(
        "{}",
        serde_json::json!({"held": held.len(), "failed": failed, "seconds_to_open": start.elapsed().as_secs_f64(), "first_error": first_error})
    );
    std::io::stdout().flush().unwrap();
    // Keep everything open until stdin closes.
    let _ = tokio::task::spawn_blocking(|| {
        let mut sink = String::new();
        while std::io::stdin()
            .read_line(&mut sink)
            .map(|n| n > 0)
            .unwrap_or(false)
        {}
    })
    .await;
    drop(held);
}

/// Issues a pending session, an hour to live, for each (id, token hash).
fn issue_all(
    j: &mut tollgate::journal::Journal,
    made: &[(String, String)],
    profile: &str,
    user: &str,
) {
    let batch: Vec<tollgate::journal::NewSession> = made
        .iter()
        .map(|(id, hash)| tollgate::journal::NewSession {
            id,
            token_sha256: hash,
            profile,
            login_user: user,
            command: None,
            reason: Some("benchmark"),
            ttl: Duration::from_secs(3600),
            max_duration: Duration::from_secs(3600),
            target: None,
            connection_limit: None,
        })
        .collect();
    for chunk in batch.chunks(1000) {
        j.issue_many(chunk).unwrap();
    }
}

fn issue(a: Args) {
    use tollgate::journal::Journal;
    use tollgate::token::Token;
    let checked = tollgate::checked::load(std::path::Path::new(&a.req("--config"))).unwrap();
    let mut j = Journal::open_target(&checked.journal).unwrap();
    let profile = a.req("--profile");
    let user = a.req("--login-user");
    let n = a.num("--count", 1);
    let mut tokens = String::new();
    let mut made = Vec::new();
    for _ in 0..n {
        let t = Token::generate().unwrap();
        tokens.push_str(t.reveal());
        tokens.push('\n');
        made.push((tollgate::token::session_id().unwrap(), t.hash()));
    }
    issue_all(&mut j, &made, &profile, &user);
    std::fs::write(a.req("--out"), tokens).unwrap();
    println!("{}", serde_json::json!({"issued": n}));
}

/// Redemptions/s through the journal alone, with the daemon's durability
/// settings (WAL, synchronous=FULL), one redemption per transaction.
fn redeem(a: Args) {
    use tollgate::journal::Journal;
    use tollgate::token::{random_id, Token};
    let n = a.num("--count", 2000);
    let dir = std::env::temp_dir().join(random_id("tollgate-redeem-").unwrap());
    std::fs::create_dir_all(&dir).unwrap();
    // With --config, the journal it names (P6 on PostgreSQL); else a new
    // SQLite file.
    let mut j = match a.get("--config") {
        Some(c) => {
            let checked = tollgate::checked::load(std::path::Path::new(&c)).unwrap();
            Journal::open_target(&checked.journal).unwrap()
        }
        None => Journal::open(&dir.join("journal.db")).unwrap(),
    };
    let made: Vec<(String, String)> = (0..n)
        .map(|_| {
            (
                tollgate::token::session_id().unwrap(),
                Token::generate().unwrap().hash(),
            )
        })
        .collect();
    issue_all(&mut j, &made, "p", "u");
    let start = Instant::now();
    let mut ok = 0;
    for (_, hash) in &made {
        if j.redeem(hash, "u", "127.0.0.1:1").unwrap().is_some() {
            ok += 1;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "{}",
        serde_json::json!({"redeemed": ok, "seconds": secs, "per_second": ok as f64 / secs, "synchronous": "FULL", "journal_mode": "WAL"})
    );
}

/// CPU time of this process so far (user + system), in seconds.
fn cpu_seconds() -> f64 {
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage fills the struct it is given.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// The daemon's journal work per session without the rest of it: through
/// the journal thread (`Db`, group commit), `concurrency` tasks each take
/// sessions in turn and make the daemon's three calls for each: the
/// redemption, the start (with the daemon's detail) and the end.
async fn journal(a: Args) {
    use tollgate::journal::{Db, EndReason, Ending, Journal};
    use tollgate::token::{random_id, Token};
    let n = a.num("--count", 5000) as usize;
    let conc = a.num("--concurrency", 16) as usize;
    let dir = std::env::temp_dir().join(random_id("tollgate-journal-").unwrap());
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("journal.db");
    let mut j = Journal::open(&path).unwrap();
    let made: Vec<(String, String)> = (0..n)
        .map(|_| {
            (
                tollgate::token::session_id().unwrap(),
                Token::generate().unwrap().hash(),
            )
        })
        .collect();
    issue_all(&mut j, &made, "bench", "tgbench");
    let pages = |p: &std::path::Path| {
        rusqlite::Connection::open(p)
            .and_then(|c| c.query_row("PRAGMA page_count", [], |r| r.get::<_, i64>(0)))
            .unwrap_or(0)
    };
    let pages0 = pages(&path);
    let db = Db::new(j).with_reader(Journal::open(&path).unwrap());
    let hashes: Arc<Mutex<VecDeque<String>>> =
        Arc::new(Mutex::new(made.into_iter().map(|(_, h)| h).collect()));
    let commits = || {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &tollgate::metrics::get().registry())
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("tollgate_journal_commit_seconds_count "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let (c0, cpu0, start) = (commits(), cpu_seconds(), Instant::now());
    let tasks: Vec<_> = (0..conc)
        .map(|k| {
            let (db, hashes) = (db.clone(), hashes.clone());
            tokio::spawn(async move {
                let mut done = 0u64;
                loop {
                    let Some(hash) = hashes.lock().unwrap().pop_front() else {
                        return done;
                    };
                    let addr = format!("127.0.0.{}:{}", 2 + k, 40000 + done);
                    let won = db
                        .call(move |j| j.redeem(&hash, "tgbench", &addr))
                        .await
                        .unwrap()
                        .expect("a fresh token redeems");
                    let id = won.id.clone();
                    let detail = serde_json::json!({
                        "pid": 4242, "user": "tgbench", "pty": false, "argv": ["/bin/sh", "-c", "true"],
                        "term": null, "request": "exec", "cgroup": null,
                    });
                    db.call(move |j| j.started(&id, 4242, Some("boot:1234".into()), detail))
                        .await
                        .unwrap();
                    let id = won.id.clone();
                    let end = Ending {
                        reason: EndReason::Exited,
                        exit_status: Some(0),
                        exit_signal: None,
                        bytes_in: 0,
                        bytes_out: 0,
                        forwards: 0,
                    };
                    db.call(move |j| j.finish(&id, &end)).await.unwrap();
                    done += 1;
                }
            })
        })
        .collect();
    let mut done = 0;
    for t in tasks {
        done += t.await.unwrap();
    }
    let (secs, cpu) = (start.elapsed().as_secs_f64(), cpu_seconds() - cpu0);
    let pages1 = pages(&path);
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "{}",
        serde_json::json!({"sessions": done, "seconds": secs, "per_second": done as f64 / secs,
            "cpu_ms_per_session": cpu * 1000.0 / done as f64,
            "commits_per_session": (commits() - c0) / done as f64,
            "pages_per_session": (pages1 - pages0) as f64 / done as f64})
    );
}

/// Accepts TCP connections on 127.0.0.1 and reads everything, discarding
/// it: a collector that costs next to nothing, so a drain's own cost shows.
fn sink(a: Args) {
    let l = std::net::TcpListener::bind(("127.0.0.1", a.num("--port", 0) as u16)).unwrap();
    println!(
        "{}",
        serde_json::json!({"port": l.local_addr().unwrap().port()})
    );
    std::io::stdout().flush().unwrap();
    for c in l.incoming().flatten() {
        std::thread::spawn(move || {
            let mut c = c;
            let mut buf = vec![0u8; 1 << 20];
            while matches!(std::io::Read::read(&mut c, &mut buf), Ok(n) if n > 0) {}
        });
    }
}

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    let mode = argv.get(1).cloned().unwrap_or_default();
    let a = Args(argv[1..].to_vec());
    SOURCES.store(a.num("--sources", 1).clamp(1, 250), Ordering::Relaxed);
    match mode.as_str() {
        "issue" => issue(a),
        "redeem" => redeem(a),
        "sink" => sink(a),
        "journal" => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(journal(a)),
        "rate" | "hold" => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                if mode == "rate" {
                    rate(a).await
                } else {
                    hold(a).await
                }
            });
        }
        _ => {
            eprintln!("usage: loadgen issue|rate|hold|redeem … (see the top of bench/loadgen.rs)");
            std::process::exit(2);
        }
    }
}
