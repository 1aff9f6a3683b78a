//! Several bastions on one PostgreSQL journal: two real `tollgate serve`
//! processes on their own loopback ports share a throwaway PostgreSQL 15
//! cluster; tokens issued by the CLI of either are redeemed once across
//! both; an unreachable database is named with its reason.
mod common;
use common::*;

use std::process::Stdio;
use std::time::{Duration, Instant};

fn node(tag: &str, pg: &Postgres) -> Server {
    node_with(tag, pg, "")
}

fn node_with(tag: &str, pg: &Postgres, extra: &str) -> Server {
    node_opts(tag, pg, extra, "")
}

/// A daemon on `pg`'s journal, with `extra` `[server]` lines and `tail`
/// tables.
fn node_opts(tag: &str, pg: &Postgres, extra: &str, tail: &str) -> Server {
    Server::start_with(
        tag,
        Opts {
            journal: Some(pg.journal_lines()),
            // Sixty connections at once from one address: none refused at
            // accept, so the race is decided by the journal alone.
            server_extra: format!(
                "max_startups = \"1000\"\nper_source_max_startups = \"none\"\n{extra}"
            ),
            tail: tail.to_string(),
            ..Opts::default()
        },
    )
}

/// A session live on `node` running `cmd`, once it printed "started".
fn start_live(node: &Server, cmd: &str) -> (String, String, std::process::Child) {
    let (id, token) = node.issue("ops", &[]);
    let mut ssh = node
        .ssh("ops", &token)
        .arg(cmd)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = buffered(ssh.stdout.take().unwrap());
    read_until(&mut out, "started");
    (id, token, ssh)
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
        let v = b.wait_state(&id, "terminated", Duration::from_secs(10));
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

/// Acceptance 3 of issue 17: node A killed with SIGKILL while it holds two
/// live sessions; node B declares it lost and ends them `node_lost` within
/// the heartbeat timeout and 2 s, once; A restarted kills what is left of
/// their processes; the tokens stay spent. `node list` shows it all.
#[test]
fn a_killed_node_is_declared_lost_by_another_and_cleans_up_when_back() {
    let pg = Postgres::start();
    let beat = "node_heartbeat = \"500ms\"\nnode_timeout = \"3s\"\n";
    let mut a = node_with("pg-lost-a", &pg, beat);
    let b = node_with("pg-lost-b", &pg, beat);
    let mut live = Vec::new();
    for n in 0..2 {
        let (id, token, ssh) =
            start_live(&a, &format!("sleep 741{n} & echo started; sleep 742{n}"));
        live.push((id, token, ssh));
    }
    let nodes = b.cli_json(&["node", "list"]);
    let a_id = format!("{}:{}", hostname(), a.port);
    let row = |nodes: &serde_json::Value, id: &str| {
        nodes
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("no node {id}: {nodes:#}"))
    };
    assert_eq!(row(&nodes, &a_id)["state"], "running", "{nodes:#}");
    assert_eq!(row(&nodes, &a_id)["live_sessions"], 2, "{nodes:#}");

    a.child.take().unwrap().kill().unwrap();
    let killed = Instant::now();
    for (id, _, _) in &live {
        let v = b.wait_state(id, "terminated", Duration::from_secs(10));
        assert_eq!(v["end_reason"], "node_lost", "{v:#}");
    }
    let took = killed.elapsed();
    println!("node A declared lost, its sessions ended, {took:?} after the kill");
    assert!(
        took <= Duration::from_secs(3 + 2),
        "declared lost {took:?} after the kill"
    );
    let lost = b.events_of(None, "node.lost");
    assert_eq!(lost.len(), 1, "{lost:#?}");
    assert_eq!(lost[0]["detail"]["node"], a_id.as_str());
    assert_eq!(row(&b.cli_json(&["node", "list"]), &a_id)["state"], "lost");
    // The killed daemon's sessions' processes outlived it...
    assert!(!pids_matching("sleep 7410").is_empty());
    assert!(!pids_matching("sleep 7421").is_empty());
    // ...until it comes back and kills them.
    a.spawn();
    let gone = eventually(Duration::from_secs(10), || {
        ["sleep 7410", "sleep 7420", "sleep 7411", "sleep 7421"]
            .iter()
            .all(|p| pids_matching(p).is_empty())
    });
    assert!(gone.is_some(), "leftovers of the lost sessions still run");
    assert!(a.log_text().contains("ended by another while it was down"));
    for (_, token, mut ssh) in live {
        let _ = ssh.kill();
        let _ = ssh.wait();
        let out = b.ssh_run("ops", &token, &[], "echo again");
        assert!(!out.status.success() && !text(&out.stdout).contains("again"));
    }
    let nodes = b.cli_json(&["node", "list"]);
    assert_eq!(row(&nodes, &a_id)["state"], "running", "{nodes:#}");
}

fn hostname() -> String {
    nix::unistd::gethostname().unwrap().into_string().unwrap()
}

/// Acceptance 2 of issue 17: a session live on node A is canceled by the
/// CLI run against the database from node B's host: A disconnects the
/// client within 1 s (the cancel's NOTIFY wakes it); and with
/// `journal_listen = false` on A, by the check every second alone, within
/// 3 s.
#[test]
fn a_cancel_from_another_node_ends_the_session_within_a_second() {
    let pg = Postgres::start();
    let b = node("pg-cancel-b", &pg);
    for (tag, extra, limit) in [
        ("pg-cancel-a", "", Duration::from_secs(1)),
        (
            "pg-cancel-poll",
            "journal_listen = false\n",
            Duration::from_secs(3),
        ),
    ] {
        let a = node_with(tag, &pg, extra);
        let (id, _, mut ssh) = start_live(&a, "echo started; sleep 30");
        let asked = Instant::now();
        let cancel = b.cli(&["session", "cancel", &id]);
        assert!(cancel.status.success(), "{}", text(&cancel.stderr));
        let ended = eventually(Duration::from_secs(8), || ssh.try_wait().unwrap().is_some());
        let took = asked.elapsed();
        println!("{tag}: canceled on node B's CLI, client disconnected from node A {took:?} later");
        assert!(ended.is_some() && took <= limit, "{tag}: {took:?}");
        let v = b.wait_state(&id, "terminated", Duration::from_secs(5));
        assert_eq!(v["end_reason"], "canceled", "{v:#}");
    }
}

/// `events --follow` run on node B's host prints what node A writes to the
/// shared journal as it happens.
#[test]
fn events_follow_on_one_node_shows_another_nodes_events() {
    let pg = Postgres::start();
    let a = node("pg-follow-a", &pg);
    let b = node("pg-follow-b", &pg);
    let mut follow = std::process::Command::new(BIN)
        .arg("--config")
        .arg(&b.config)
        .args(["events", "--follow", "--output", "json"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = buffered(follow.stdout.take().unwrap());
    std::thread::sleep(Duration::from_millis(300));
    let (id, token) = a.issue("ops", &["--reason", "follow-test"]);
    let line = read_until(&mut out, "session.issued");
    let v: serde_json::Value = serde_json::from_str(line.lines().last().unwrap()).unwrap();
    assert_eq!(v["session_id"], id.as_str());
    assert_eq!(v["detail"]["reason"], "follow-test");
    let ran = a.ssh_run("ops", &token, &[], "true");
    assert!(ran.status.success(), "{}", text(&ran.stderr));
    let line = read_until(&mut out, "session.terminated");
    let v: serde_json::Value = serde_json::from_str(line.lines().last().unwrap()).unwrap();
    assert_eq!(v["session_id"], id.as_str());
    follow.kill().unwrap();
    let _ = follow.wait();
}

/// Acceptance 4 of issue 17: PostgreSQL stopped for 10 s while a session
/// prints a line every 0.2 s: its output reaches the client throughout; a
/// login during the outage is refused with the reason and its token works
/// afterwards; an event of the live session during the outage is in the
/// journal, with its time, once the database is back.
#[test]
fn a_database_outage_keeps_live_sessions_refuses_logins_and_loses_no_event() {
    let pg = Postgres::start();
    // A drain taking the session's output and the journal's events.
    let (drain_port, seqs) = event_collector();
    let a = node_opts(
        "pg-outage",
        &pg,
        "node_heartbeat = \"500ms\"\nnode_timeout = \"3s\"\n",
        &format!("[[drains]]\nname = \"siem\"\nurl = \"tcp://127.0.0.1:{drain_port}\"\n"),
    );
    let (id, token) = a.issue("ops", &[]);
    let (_, later_token) = a.issue("ops", &[]);
    let lp = free_port();
    let mut ssh = a
        .ssh_opts("ops", &token, &["-L", &format!("{lp}:127.0.0.1:9")])
        .arg("for i in $(seq 120); do echo line $i; sleep 0.2; done")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = ssh.stdout.take().unwrap();
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(Instant, String)>::new()));
    let reader = {
        let lines = lines.clone();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for l in buffered(out).lines().map_while(Result::ok) {
                lines.lock().unwrap().push((Instant::now(), l));
            }
        })
    };
    eventually(Duration::from_secs(10), || lines.lock().unwrap().len() >= 5);

    pg.stop();
    let down = Instant::now();
    std::thread::sleep(Duration::from_secs(1));
    // A login now: refused with the reason (OpenSSH shows it at LogLevel
    // INFO), and its token is not spent.
    let refused = a
        .ssh_opts("ops", &later_token, &["-o", "LogLevel=INFO"])
        .arg("echo in")
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("cannot check tokens right now"),
        "{}",
        text(&refused.stderr)
    );
    // An event of the live session while the journal is down: a forward
    // it may not make is refused and recorded.
    let _ = std::net::TcpStream::connect(("127.0.0.1", lp));
    let refused_at = std::time::SystemTime::now();
    std::thread::sleep(Duration::from_secs(10) - down.elapsed());
    pg.restart();
    let up = Instant::now();

    ssh.wait().unwrap();
    reader.join().unwrap();
    let lines = lines.lock().unwrap();
    let during = lines.iter().filter(|(t, _)| *t > down && *t < up).count();
    println!(
        "{} lines in all, {during} while the database was down for {:?}",
        lines.len(),
        up - down
    );
    assert_eq!(lines.len(), 120, "lines lost");
    assert!(during >= 40, "only {during} lines during the outage");

    // The token refused during the outage works now.
    let ok = a.ssh_run("ops", &later_token, &[], "echo in");
    assert!(text(&ok.stdout).contains("in"), "{}", text(&ok.stderr));
    // The session's end and the event of the outage are in the journal.
    let v = a.wait_state(&id, "terminated", Duration::from_secs(15));
    assert_eq!(v["end_reason"], "exited", "{v:#}");
    let refusals = a.events_of(Some(&id), "session.request_refused");
    assert_eq!(refusals.len(), 1, "{refusals:#?}");
    // The drain: nothing dropped or held back, and the journal's events up
    // to the session's end sent, the one of the outage included.
    let end = a.events_of(Some(&id), "session.terminated")[0]["seq"]
        .as_i64()
        .unwrap();
    let sent = eventually(Duration::from_secs(15), || {
        let got = seqs.lock().unwrap();
        got.contains(&end) && got.contains(&refusals[0]["seq"].as_i64().unwrap())
    });
    assert!(sent.is_some(), "{:?}", seqs.lock().unwrap());
    // The drain's state is recorded every second: the record after the
    // last delivery.
    let mut status = a.cli_json(&["drain", "status"]);
    let _ = eventually(Duration::from_secs(5), || {
        status = a.cli_json(&["drain", "status"]);
        status[0]["queued"] == 0
    });
    let d = &status[0];
    assert_eq!(
        (&d["connected"], &d["dropped"], &d["queued"]),
        (
            &serde_json::json!(true),
            &serde_json::json!(0),
            &serde_json::json!(0)
        ),
        "{status:#}"
    );
    let at = humantime::parse_rfc3339(refusals[0]["at"].as_str().unwrap()).unwrap();
    let skew = at
        .duration_since(refused_at)
        .unwrap_or_else(|e| e.duration());
    assert!(
        skew < Duration::from_secs(2),
        "recorded at {at:?}, happened {refused_at:?}"
    );
}

/// A webhook receiver that keeps every request's delivery id and, while
/// `hold` is set, never answers (an attempt stays in flight).
struct Hook {
    port: u16,
    seen: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    hold: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Milliseconds each answer waits.
    delay: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Hook {
    fn start() -> Hook {
        use std::io::{BufRead, Read, Write};
        use std::sync::atomic::Ordering;
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let hold = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let delay = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (s, h, d) = (seen.clone(), hold.clone(), delay.clone());
        std::thread::spawn(move || {
            for c in l.incoming() {
                let Ok(mut c) = c else { continue };
                let (s, h, d) = (s.clone(), h.clone(), d.clone());
                std::thread::spawn(move || {
                    let mut r = std::io::BufReader::new(c.try_clone().unwrap());
                    let (mut id, mut len) = (String::new(), 0usize);
                    loop {
                        let mut line = String::new();
                        if r.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let l = line.trim_end();
                        if l.is_empty() {
                            break;
                        }
                        let lower = l.to_ascii_lowercase();
                        if let Some(v) = lower.strip_prefix("x-tollgate-delivery:") {
                            id = v.trim().to_string();
                        }
                        if let Some(v) = lower.strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0; len];
                    let _ = r.read_exact(&mut body);
                    s.lock().unwrap().push(id);
                    while h.load(Ordering::SeqCst) {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    std::thread::sleep(Duration::from_millis(d.load(Ordering::SeqCst)));
                    let _ = c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
                });
            }
        });
        Hook {
            port,
            seen,
            hold,
            delay,
        }
    }
}

/// Acceptance 5 of issue 17 (webhooks): a delivery in flight on node A when
/// A is killed is delivered by node B once its claim runs out, once, with
/// its original id.
#[test]
fn a_webhook_delivery_of_a_killed_node_is_delivered_by_another_once() {
    let pg = Postgres::start();
    let hook = Hook::start();
    let opts = |tag: &str| {
        node_opts(
            tag,
            &pg,
            "node_heartbeat = \"500ms\"\nnode_timeout = \"3s\"\n",
            "[webhooks]\ntimeout = \"1s\"\n",
        )
    };
    let mut a = opts("pg-hook-a");
    let b = opts("pg-hook-b");
    let created = a.cli_json(&[
        "collect",
        "create",
        "--webhook",
        &format!("http://127.0.0.1:{}/hook", hook.port),
        "--webhook-event",
        "new_connection",
        "--webhook-retries",
        "5",
        "--webhook-initial-backoff",
        "1",
    ]);
    let collect = created["id"].as_str().unwrap().to_string();
    let ident = created["connection_identifier"].as_str().unwrap();
    let keys = TempDir::new("pg-hook-keys");
    let k = keygen(keys.path(), "ed", &["-t", "ed25519"]);
    // The connection goes to node A, whose worker takes the delivery.
    let _ = collect_connect(&a, ident, &[&k]);
    let first = eventually(Duration::from_secs(10), || {
        !hook.seen.lock().unwrap().is_empty()
    });
    assert!(first.is_some(), "node A never sent the delivery");
    let original = hook.seen.lock().unwrap()[0].clone();
    a.child.take().unwrap().kill().unwrap();
    hook.hold.store(false, std::sync::atomic::Ordering::SeqCst);
    // Node B takes it once A's claim (2 × timeout + 5 s) has run out.
    let delivered = eventually(Duration::from_secs(20), || {
        let d = b.cli_json(&["collect", "deliveries", &collect]);
        d.as_array()
            .unwrap()
            .iter()
            .any(|x| x["status"] == "delivered")
    });
    assert!(delivered.is_some(), "node B never delivered it");
    let d = b.cli_json(&["collect", "deliveries", &collect]);
    let all = d.as_array().unwrap();
    assert_eq!(all.len(), 1, "{d:#}");
    assert_eq!(all[0]["id"], original.as_str(), "{d:#}");
    assert_eq!(all[0]["attempts"].as_array().unwrap().len(), 1, "{d:#}");
    let seen = hook.seen.lock().unwrap().clone();
    assert!(seen.iter().all(|s| *s == original), "{seen:?}");
    assert_eq!(b.events_of(None, "collect.webhook_delivered").len(), 1);
}

/// Two live nodes polling the same deliveries: each is sent by one of them,
/// once (claims), whichever node's connection created it.
#[test]
fn two_live_nodes_send_each_webhook_delivery_once() {
    let pg = Postgres::start();
    let hook = Hook::start();
    hook.hold.store(false, std::sync::atomic::Ordering::SeqCst);
    // Each answer takes 2.5 s: deliveries stay in flight across the other
    // node's polls (every 2 s at most).
    hook.delay.store(2500, std::sync::atomic::Ordering::SeqCst);
    let a = node("pg-hooks-a", &pg);
    let b = node("pg-hooks-b", &pg);
    let created = a.cli_json(&[
        "collect",
        "create",
        "--multi-connection",
        "--webhook",
        &format!("http://127.0.0.1:{}/hook", hook.port),
        "--webhook-event",
        "new_connection",
    ]);
    let collect = created["id"].as_str().unwrap().to_string();
    let ident = created["connection_identifier"].as_str().unwrap();
    let keys = TempDir::new("pg-hooks-keys");
    let k = keygen(keys.path(), "ed", &["-t", "ed25519"]);
    for i in 0..10 {
        let n = if i % 2 == 0 { &a } else { &b };
        let _ = collect_connect(n, ident, &[&k]);
    }
    let all = eventually(Duration::from_secs(60), || {
        let d = b.cli_json(&["collect", "deliveries", &collect]);
        let d = d.as_array().unwrap().clone();
        d.len() == 10 && d.iter().all(|x| x["status"] == "delivered")
    });
    assert!(
        all.is_some(),
        "{:#}",
        b.cli_json(&["collect", "deliveries", &collect])
    );
    let mut seen = hook.seen.lock().unwrap().clone();
    seen.sort();
    let n = seen.len();
    seen.dedup();
    assert_eq!(
        (n, seen.len()),
        (10, 10),
        "sent twice: {n} requests for 10 deliveries"
    );
}

/// Acceptance 5 of issue 17 (collect): a collect session that takes one
/// connection, connected through node A, is refused through node B.
#[test]
fn a_single_connection_collect_session_used_on_one_node_is_refused_on_another() {
    let pg = Postgres::start();
    let a = node("pg-collect-a", &pg);
    let b = node("pg-collect-b", &pg);
    let created = a.cli_json(&["collect", "create"]);
    let id = created["id"].as_str().unwrap().to_string();
    let ident = created["connection_identifier"].as_str().unwrap();
    let keys = TempDir::new("pg-collect-keys");
    let k = keygen(keys.path(), "ed", &["-t", "ed25519"]);
    let first = collect_connect(&a, ident, &[&k]);
    assert!(
        text(&first.stdout).contains("public key recorded"),
        "{}{}",
        text(&first.stdout),
        text(&first.stderr)
    );
    let shown = b.cli_json(&["collect", "show", &id]);
    assert_eq!(shown["status"], "completed", "{shown:#}");
    let second = collect_connect(&b, ident, &[&k]);
    assert!(!second.status.success());
    assert!(!text(&second.stdout).contains("recorded"));
    let shown = a.cli_json(&["collect", "show", &id]);
    assert_eq!(
        shown["connections"].as_array().unwrap().len(),
        1,
        "{shown:#}"
    );
}

/// `tollgate journal copy` moves a bastion's SQLite journal into an empty
/// PostgreSQL one: sessions, events (with their sequence numbers),
/// collect sessions, keys, webhooks and deliveries read back the same
/// through either; a second copy is refused; new events follow on.
#[test]
fn journal_copy_moves_a_bastion_onto_postgresql() {
    let s = Server::start("copy-src");
    let (_, token) = s.issue("ops", &["--reason", "copied"]);
    let out = s.ssh_run("ops", &token, &[], "echo hello");
    assert!(text(&out.stdout).contains("hello"));
    let (canceled, _) = s.issue("ops", &[]);
    assert!(s.cli(&["session", "cancel", &canceled]).status.success());
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = closed.local_addr().unwrap().port();
    drop(closed);
    let created = s.cli_json(&[
        "collect",
        "create",
        "--webhook",
        &format!("http://127.0.0.1:{dead}/hook"),
        "--webhook-retries",
        "1",
        "--webhook-initial-backoff",
        "1",
    ]);
    let collect = created["id"].as_str().unwrap().to_string();
    let keys = TempDir::new("copy-keys");
    let k = keygen(keys.path(), "ed", &["-t", "ed25519"]);
    let _ = collect_connect(
        &s,
        created["connection_identifier"].as_str().unwrap(),
        &[&k],
    );
    // Every delivery attempted and given up (one retry).
    eventually(Duration::from_secs(20), || {
        let d = s.cli_json(&["collect", "deliveries", &collect]);
        d.as_array()
            .unwrap()
            .iter()
            .all(|x| x["status"] == "failed")
    });

    let pg = Postgres::start();
    let pw = pg.password_file();
    let url = format!("{}?sslmode=disable", pg.url());
    let copy = ["journal", "copy", "--to", &url, "--password-file"];
    let mut args = copy.to_vec();
    let pw_s = pw.display().to_string();
    args.push(&pw_s);
    let copied = s.cli_json(&args);
    println!("{copied:#}");
    assert_eq!(copied["copied"]["sessions"], 2, "{copied:#}");
    assert_eq!(copied["copied"]["collect_keys"], 1, "{copied:#}");

    let p = Server::configure(
        "copy-dst",
        Opts {
            journal: Some(pg.journal_lines()),
            ..Opts::default()
        },
    );
    for what in [
        &["session", "list"][..],
        &["events"][..],
        &["collect", "list"][..],
        &["collect", "deliveries", &collect][..],
    ] {
        assert_eq!(s.cli_json(what), p.cli_json(what), "{what:?} differs");
    }
    // Again: refused, nothing written.
    let again = s.cli(&args);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        text(&again.stderr).contains("not empty"),
        "{}",
        text(&again.stderr)
    );
    // New events follow the copied ones.
    let last = s.cli_json(&["events"]).as_array().unwrap().last().unwrap()["seq"]
        .as_i64()
        .unwrap();
    let (next, _) = p.issue("ops", &[]);
    let issued = p.events_of(Some(&next), "session.issued");
    assert_eq!(issued[0]["seq"].as_i64().unwrap(), last + 1);
}

/// A TCP syslog collector (RFC 6587 octet counting): the `event_seq` of
/// every journal event it receives, in order.
fn event_collector() -> (u16, std::sync::Arc<std::sync::Mutex<Vec<i64>>>) {
    use std::io::Read;
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let seqs = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let s = seqs.clone();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(c) = c else { continue };
            let s = s.clone();
            std::thread::spawn(move || {
                let mut r = std::io::BufReader::new(c);
                loop {
                    let mut len = Vec::new();
                    let mut b = [0u8; 1];
                    loop {
                        if r.read(&mut b).unwrap_or(0) == 0 {
                            return;
                        }
                        if b[0] == b' ' {
                            break;
                        }
                        len.push(b[0]);
                    }
                    let n: usize = String::from_utf8_lossy(&len).parse().unwrap_or(0);
                    let mut msg = vec![0; n];
                    if r.read_exact(&mut msg).is_err() {
                        return;
                    }
                    let msg = String::from_utf8_lossy(&msg);
                    if let Some(i) = msg.find("event_seq=\"") {
                        let rest = &msg[i + 11..];
                        if let Ok(seq) = rest[..rest.find('"').unwrap_or(0)].parse() {
                            s.lock().unwrap().push(seq);
                        }
                    }
                }
            });
        }
    });
    (port, seqs)
}

/// Journal events reach a drain that two nodes both configure once, not
/// once per node (one node holds the drain's lease); when that node is
/// killed, the other takes the lease over and sends what follows.
#[test]
fn two_nodes_send_each_journal_event_to_a_shared_drain_once() {
    let pg = Postgres::start();
    let (port, seqs) = event_collector();
    let drain = format!(
        "[[drains]]\nname = \"siem\"\nurl = \"tcp://127.0.0.1:{port}\"\nsend = [\"events\"]\n"
    );
    let make = |tag: &str| node_opts(tag, &pg, "", &drain);
    let mut a = make("pg-drain-a");
    let mut b = make("pg-drain-b");
    let newest = |s: &Server| {
        s.cli_json(&["events"]).as_array().unwrap().last().unwrap()["seq"]
            .as_i64()
            .unwrap()
    };
    // A new drain starts with what happens from now on: from the start of
    // whichever node takes its lease first, which may be the later node,
    // after the other's daemon.started. What follows both starts is what
    // must arrive.
    let from = newest(&a);
    let mut ids = Vec::new();
    for i in 0..10 {
        let n = if i % 2 == 0 { &a } else { &b };
        ids.push(n.issue("ops", &[]).0);
    }
    let last = newest(&a);
    let all = eventually(Duration::from_secs(15), || {
        seqs.lock().unwrap().contains(&last)
    });
    assert!(all.is_some(), "the drain never got event {last}");
    std::thread::sleep(Duration::from_secs(2));
    let got = seqs.lock().unwrap().clone();
    let mut unique = got.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        got.len(),
        unique.len(),
        "events sent more than once: {got:?}"
    );
    // Every event of the journal up to then, once.
    let journal: Vec<i64> = a
        .cli_json(&["events"])
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_i64().unwrap())
        .filter(|&s| s > from && s <= last)
        .collect();
    assert!(journal.len() >= 10, "{journal:?}");
    for s in &journal {
        assert!(unique.contains(s), "event {s} never sent: {got:?}");
    }
    // Kill the holder; the other takes over and sends what follows.
    let holder_is_a = a
        .log_text()
        .contains("this node sends the journal's events");
    let (dead, alive) = if holder_is_a {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    dead.child.take().unwrap().kill().unwrap();
    let (later, _) = alive.issue("ops", &[]);
    let seq = alive.events_of(Some(&later), "session.issued")[0]["seq"]
        .as_i64()
        .unwrap();
    let took = eventually(Duration::from_secs(15), || {
        seqs.lock().unwrap().contains(&seq)
    });
    assert!(
        took.is_some(),
        "event {seq} never sent after the holder died"
    );
    assert!(alive
        .log_text()
        .contains("this node sends the journal's events"));
    println!("after the holder was killed, event {seq} arrived {took:?} later");
}

/// `drain status` on a shared journal: each node's record of a drain they
/// both run, naming the node.
#[test]
fn drain_status_shows_each_nodes_record() {
    let pg = Postgres::start();
    let (port, _seqs) = event_collector();
    let drain = format!("[[drains]]\nname = \"siem\"\nurl = \"tcp://127.0.0.1:{port}\"\n");
    let make = |tag: &str| node_opts(tag, &pg, "", &drain);
    let a = make("pg-status-a");
    let b = make("pg-status-b");
    let both = eventually(Duration::from_secs(10), || {
        let v = a.cli_json(&["drain", "status"]);
        v.as_array().unwrap().len() == 2
            && v.as_array().unwrap().iter().all(|d| d["connected"] == true)
    });
    let v = a.cli_json(&["drain", "status"]);
    assert!(both.is_some(), "{v:#}");
    let mut nodes: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["node"].as_str().unwrap().to_string())
        .collect();
    nodes.sort();
    let mut want = vec![
        format!("{}:{}", hostname(), a.port),
        format!("{}:{}", hostname(), b.port),
    ];
    want.sort();
    assert_eq!(nodes, want, "{v:#}");
    let text = text(&b.cli(&["drain", "status"]).stdout);
    assert!(text.contains(&format!("(node {})", want[0])), "{text}");
}
