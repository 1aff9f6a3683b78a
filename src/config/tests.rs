use super::walk::{
    DRAIN_KEYS, PENALTY_KEYS, PROFILE_KEYS, SERVER_KEYS, SESSIONS_KEYS, TARGET_KEYS, TOP_KEYS,
    WEBHOOKS_KEYS,
};
use super::*;

fn problems(text: &str) -> Vec<String> {
    match Config::parse(Path::new("t.toml"), text) {
        Ok(_) => vec![],
        Err(e) => e.to_string().lines().map(String::from).collect(),
    }
}

/// tollgate.toml(5) documents every key the parser accepts, each in its
/// table's section (as `.B key` or `.BR key ...`): the page stays true.
#[test]
fn every_key_is_in_the_manual_page() {
    let page = include_str!("../../man/tollgate.toml.5");
    let tables: &[(&str, &str, &[&str])] = &[
        ("server", "[server]", SERVER_KEYS),
        ("server", "[server.per_source_penalties]", PENALTY_KEYS),
        ("sessions", "[sessions]", SESSIONS_KEYS),
        ("profiles", "[profiles.NAME]", PROFILE_KEYS),
        ("targets", "[targets.NAME]", TARGET_KEYS),
        ("drains", "[[drains]]", DRAIN_KEYS),
        ("webhooks", "[webhooks]", WEBHOOKS_KEYS),
        ("api", "[api]", super::api::API_KEYS),
        ("metrics", "[metrics]", super::api::METRICS_KEYS),
        (
            "recordings",
            "[recordings]",
            super::recordings::RECORDINGS_KEYS,
        ),
    ];
    let mut missing = Vec::new();
    for top in TOP_KEYS {
        if !tables.iter().any(|(t, _, _)| t == top) {
            missing.push(format!("table {top} has no entry in this test"));
        }
    }
    for (_, header, keys) in tables {
        let Some(start) = page.find(&format!("\n.SH {header}\n")) else {
            missing.push(format!("section .SH {header}"));
            continue;
        };
        let body = &page[start + 1..];
        let body = &body[..body[1..].find("\n.SH ").map_or(body.len(), |e| e + 1)];
        // An item's tag: the line after `.TP` (`.B key`, or `.BR a ", " b`).
        let lines: Vec<&str> = body.lines().collect();
        let tags: Vec<&str> = lines
            .windows(2)
            .filter(|w| w[0] == ".TP" && (w[1].starts_with(".B ") || w[1].starts_with(".BR ")))
            .flat_map(|w| w[1].split_whitespace().skip(1))
            .collect();
        for key in *keys {
            let documented = tags.contains(key);
            if !documented {
                missing.push(format!("{header} {key}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "not in man/tollgate.toml.5: {missing:?}"
    );
}

#[test]
fn metrics_listen_is_loopback_unless_allow_remote() {
    let p = problems("[metrics]\nlisten = [\"127.0.0.1:9187\", \"0.0.0.0:9187\", \"9187\"]\n");
    assert_eq!(
        p,
        [
            "t.toml:2:29: metrics.listen: \"0.0.0.0:9187\" is not a loopback address: /metrics has no authentication (set metrics.allow_remote = true to serve it there anyway)",
            "t.toml:2:45: metrics.listen: \"9187\" is not an IP address with a port, e.g. \"127.0.0.1:9187\"",
        ]
    );
    let c = Config::parse(
        Path::new("t.toml"),
        "[metrics]\nlisten = [\"[::1]:9187\", \"0.0.0.0:9187\"]\nallow_remote = true\n",
    )
    .unwrap();
    assert_eq!(c.metrics.listen.len(), 2);
    assert!(Config::parse(Path::new("t.toml"), "")
        .unwrap()
        .metrics
        .listen
        .is_empty());
}

#[test]
fn defaults_apply_to_an_empty_file() {
    let c = Config::parse(Path::new("t.toml"), "").unwrap();
    assert_eq!(c.server.max_auth_tries, 6);
    assert_eq!(c.server.client_alive_interval, Duration::from_secs(15));
    assert_eq!(c.server.client_alive_count_max, 4);
    assert_eq!(c.sessions.token_ttl, Duration::from_secs(900));
    assert!(c.sessions.idle_timeout.is_none());
}

#[test]
fn client_alive_settings_are_read_and_checked() {
    let c = Config::parse(
        Path::new("t.toml"),
        "[server]\nclient_alive_interval = \"0s\"\nclient_alive_count_max = 10\n",
    )
    .unwrap();
    assert!(c.server.client_alive_interval.is_zero());
    assert_eq!(c.server.client_alive_count_max, 10);
    assert_eq!(
        problems("[server]\nclient_alive_interval = \"soon\"\nclient_alive_count_max = 0\n"),
        vec![
            "t.toml:2:25: server.client_alive_interval: invalid duration \"soon\" (expected number at 0); use a number with a unit, e.g. 30s, 15m, 7d",
            "t.toml:3:26: server.client_alive_count_max must be between 1 and 100",
        ]
    );
}

#[test]
fn targets_are_checked_with_positions() {
    let p = problems(
        "[targets.db]\nhost = \"db.internal\"\nport = 70000\nconnection_limit = 0\n\n[targets.x]\nport = 22\nmax_duration = \"0s\"\n",
    );
    let joined = p.join("\n");
    for want in [
        "t.toml:3:8: targets.db.port: 70000 is not 1-65535",
        "t.toml:4:20: targets.db.connection_limit: 0 must be at least 1",
        "t.toml:6:10: targets.x.host is required",
        "t.toml:8:16: targets.x.max_duration must be more than 0s",
    ] {
        assert!(joined.contains(want), "{want} not in:\n{joined}");
    }
}

#[test]
fn unknown_key_names_line_column_and_suggestion() {
    let p = problems("[server]\nlistn = [\"127.0.0.1:22\"]\n");
    assert_eq!(
        p,
        vec!["t.toml:2:1: unknown key \"listn\" in [server] (did you mean \"listen\"?)"]
    );
}

#[test]
fn several_problems_are_all_reported_in_order() {
    let p = problems(
        "[sessions]\ntoken_ttl = \"15 parsecs\"\n[server]\nlisten = []\njournal = \"rel/j.db\"\n",
    );
    assert_eq!(p.len(), 3, "{p:?}");
    assert!(p[0].starts_with("t.toml:2:13: sessions.token_ttl: invalid duration"));
    assert!(p[1].starts_with("t.toml:4:10: server.listen must name"));
    assert!(p[2].starts_with("t.toml:5:11: server.journal must be an absolute path"));
}

#[test]
fn session_limits_parse_and_bad_ones_are_placed() {
    let base = "[profiles.a]\nuser = \"nobody\"\ncommand = \"/bin/sh\"\n";
    let c = Config::parse(
        Path::new("t.toml"),
        &format!(
            "{base}memory_max = \"512MiB\"\npids_max = 64\ncpu_weight = 20\ncpu_max = \"150%\"\n"
        ),
    )
    .unwrap();
    assert_eq!(
        c.profiles["a"].limits,
        Limits {
            memory_max: Some(512 << 20),
            pids_max: Some(64),
            cpu_weight: Some(20),
            cpu_max_percent: Some(150),
        }
    );
    let c = Config::parse(
        Path::new("t.toml"),
        &format!("{base}memory_max = 2000000\n"),
    )
    .unwrap();
    assert_eq!(c.profiles["a"].limits.memory_max, Some(2_000_000));
    assert_eq!(
        problems(&format!(
            "{base}memory_max = \"12 bananas\"\npids_max = 0\ncpu_weight = 10001\ncpu_max = \"1.5\"\n"
        )),
        vec![
            "t.toml:4:14: profiles.a.memory_max: invalid size unit \"bananas\" in \"12 bananas\" (B, KiB, MiB, GiB, KB, MB, GB)",
            "t.toml:5:12: profiles.a.pids_max must be between 1 and 4194304",
            "t.toml:6:14: profiles.a.cpu_weight must be between 1 and 10000 (100 is the default share)",
            "t.toml:7:11: profiles.a.cpu_max must be a percentage of one CPU such as \"50%\" or \"200%\"",
        ]
    );
    assert_eq!(
        problems(&format!("{base}memory_max = \"64KiB\"\n")),
        vec!["t.toml:4:14: profiles.a.memory_max must be at least 1MiB"]
    );
}

#[test]
fn ciphers_are_checked_against_the_supported_list() {
    let p = problems("[server]\nciphers = [\"aes128-gcm@openssh.com\", \"rc4\"]\n");
    assert_eq!(p.len(), 1);
    assert!(
        p[0].starts_with("t.toml:2:38: server.ciphers: unknown cipher \"rc4\""),
        "{p:?}"
    );
    let c = Config::parse(Path::new("t.toml"), "").unwrap();
    assert_eq!(c.server.ciphers, DEFAULT_CIPHERS);
}

#[test]
fn drains_are_parsed_with_defaults_and_checked() {
    let c = Config::parse(
        Path::new("t.toml"),
        "[[drains]]\nname = \"siem\"\nurl = \"tcp://127.0.0.1:514\"\nqueue_bytes = \"1MiB\"\n\n[[drains]]\nname = \"local\"\nurl = \"unix:///dev/log\"\nsend = [\"events\"]\nformat = \"rfc3164\"\nfacility = \"local3\"\n",
    )
    .unwrap();
    assert_eq!(c.drains.len(), 2);
    let d = &c.drains[0];
    assert_eq!(d.url, DrainUrl::Tcp("127.0.0.1:514".into()));
    assert_eq!(
        (
            d.spec.send_output,
            d.spec.send_events,
            d.spec.facility,
            d.spec.output_facility
        ),
        (true, true, 10, 10)
    );
    assert_eq!(
        (
            d.spec.max_message_bytes,
            d.queue_bytes,
            d.spec.sd_id.as_str()
        ),
        (2048, 1 << 20, "tollgate@32473")
    );
    let l = &c.drains[1];
    assert_eq!(
        (l.spec.send_output, l.spec.send_events, l.spec.facility),
        (false, true, 19)
    );

    let p = problems(
        "[[drains]]\nname = \"a\"\nurl = \"http://x:1\"\nmax_message_bytes = 100\n\n[[drains]]\nname = \"a\"\nurl = \"tls://x:6514\"\nca_file = \"/nonexistent/ca.pem\"\nclient_key = \"/k.pem\"\nsend = [\"output\", \"audio\"]\nqueue_bytes = \"8 parsecs\"\n",
    );
    let joined = p.join("\n");
    assert!(
        joined.contains("t.toml:3:7: drains.a.url: \"http://x:1\" is not tcp://"),
        "{joined}"
    );
    assert!(
        joined.contains("t.toml:4:21: drains.a.max_message_bytes must be between 480 and 65536"),
        "{joined}"
    );
    assert!(
        joined.contains("t.toml:10:14: drains.a: client_key needs client_cert too"),
        "{joined}"
    );
    assert!(
        joined.contains("t.toml:11:19: drains.a.send: \"audio\" is not output or events"),
        "{joined}"
    );
    assert!(
        joined.contains("t.toml:12:15: drains.a.queue_bytes: invalid size unit"),
        "{joined}"
    );
}

#[test]
fn sizes_parse_with_binary_and_decimal_units() {
    assert_eq!(parse_size("8MiB"), Ok(8 << 20));
    assert_eq!(parse_size("4096"), Ok(4096));
    assert_eq!(parse_size("2KB"), Ok(2000));
    assert!(parse_size("lots").is_err());
    assert!(parse_size("2000GiB").unwrap_err().contains("at most 1TiB"));
    assert!(parse_size("99999999999999999999").is_err());
    assert!(parse_duration("10y").is_ok());
    assert!(parse_duration("8000y").unwrap_err().contains("at most 10y"));
    assert!(parse_duration("300000000y").is_err());
}

#[test]
fn syntax_errors_have_positions() {
    let p = problems("[server]\nlisten = [\n");
    assert!(!p.is_empty());
    assert!(p[0].starts_with("t.toml:"), "{p:?}");
}

#[test]
fn split_command_handles_quotes() {
    assert_eq!(
        split_command(r#"/bin/bash -lc 'echo "hi there"' a\ b"#).unwrap(),
        vec!["/bin/bash", "-lc", "echo \"hi there\"", "a b"]
    );
    assert!(split_command("'open").is_err());
    assert!(split_command("/bin/echo \\").is_err());
    // As sh: no expansion, a comment ends the line, `\x` in double
    // quotes keeps its backslash unless x is special.
    assert_eq!(
        split_command(r#"/bin/echo $HOME "a\$b" "c\d" # the rest"#).unwrap(),
        vec!["/bin/echo", "$HOME", "a$b", "c\\d"]
    );
}

#[test]
fn printed_ssh_lines_carry_the_public_known_hosts_file() {
    let c = Config::parse(
        Path::new("t.toml"),
        "[server]\nlisten = [\"127.0.0.1:2222\"]\npublic_known_hosts = \"/tmp/dev x/known_hosts\"\n",
    )
    .unwrap();
    let d = c.destination();
    assert_eq!(
        d.login_line("ops"),
        "ssh -o UserKnownHostsFile='/tmp/dev x/known_hosts' -p 2222 ops@127.0.0.1"
    );
    let plain = Config::parse(
        Path::new("t.toml"),
        "[server]\nlisten = [\"127.0.0.1:22\"]\n",
    )
    .unwrap();
    assert_eq!(plain.destination().login_line("ops"), "ssh ops@127.0.0.1");
    let p = problems("[server]\npublic_known_hosts = \"/tmp/$(id)\"\n");
    assert!(
        p[0].starts_with("t.toml:2:22: server.public_known_hosts must be a path without quotes"),
        "{p:?}"
    );
}

#[test]
fn a_postgres_journal_url_is_taken_apart_and_bad_ones_are_placed() {
    let c = Config::parse(
        Path::new("t.toml"),
        "[server]\njournal = \"postgres://tollgate@db.example.com/bastion\"\njournal_password_env = \"PGPASS\"\n",
    )
    .unwrap();
    let JournalAt::Postgres(u) = &c.server.journal else {
        panic!("{:?}", c.server.journal)
    };
    assert_eq!(
        (
            u.host.as_str(),
            u.port,
            u.user.as_str(),
            u.dbname.as_str(),
            u.tls
        ),
        ("db.example.com", 5432, "tollgate", "bastion", true)
    );
    assert_eq!(
        c.server.journal_password,
        Some(Secret::Env("PGPASS".into()))
    );
    assert!(c.server.journal_listen, "LISTEN/NOTIFY by default");
    let quiet = Config::parse(
        Path::new("t.toml"),
        "[server]\njournal = \"postgres://tg@db/tg\"\njournal_listen = false\n",
    )
    .unwrap();
    assert!(!quiet.server.journal_listen);
    let u = PgUrl::parse("postgresql://ops@[::1]:6543?sslmode=disable").unwrap();
    assert_eq!(
        (u.host.as_str(), u.port, u.dbname.as_str(), u.tls),
        ("::1", 6543, "ops", false)
    );
    for (text, want) in [
        (
            "journal = \"postgres://tg:hunter2@db/tg\"",
            "t.toml:2:11: server.journal: the URL holds a password",
        ),
        (
            "journal = \"postgres://tg@db/tg?sslmode=require\"",
            "t.toml:2:11: server.journal: the URL has sslmode=require: use verify-full",
        ),
        (
            "journal = \"postgres://db/tg\"",
            "t.toml:2:11: server.journal: the URL names no role",
        ),
        (
            "journal = \"postgres://tg@db:99999/tg\"",
            "t.toml:2:11: server.journal: the URL has a bad port",
        ),
        (
            "journal = \"postgres://tg@db/tg?connect_timeout=3\"",
            "t.toml:2:11: server.journal: the URL has \"connect_timeout=3\"",
        ),
        (
            "journal = \"postgres://tg@db/tg\"\njournal_password_file = \"/p\"\njournal_password_env = \"P\"",
            "t.toml:4:24: server.journal_password_env: set journal_password_file or journal_password_env, not both",
        ),
        (
            "journal = \"postgres://tg@db/tg?sslmode=disable\"\njournal_ca_file = \"/ca.pem\"",
            "t.toml:3:19: server.journal_ca_file: the journal URL says sslmode=disable",
        ),
        (
            "journal = \"/var/lib/j.db\"\njournal_password_file = \"/p\"",
            "t.toml:3:25: server.journal_password_file applies only to a postgres:// journal",
        ),
        (
            "journal = \"/var/lib/j.db\"\njournal_listen = false",
            "t.toml:3:18: server.journal_listen applies only to a postgres:// journal",
        ),
    ] {
        let p = problems(&format!("[server]\n{text}\n"));
        assert!(
            p.len() == 1 && p[0].starts_with(want),
            "{text}: {p:?}"
        );
        // The password is never repeated.
        assert!(!p[0].contains("hunter2"), "{p:?}");
    }
}

#[test]
fn the_api_refuses_plain_http_off_loopback_and_half_a_tls_pair() {
    let base = "[server]\nlisten = [\"127.0.0.1:2222\"]\n";
    assert_eq!(
        problems(&format!(
            "{base}[api]\nlisten = [\"127.0.0.1:8022\", \"[::1]:8022\"]\n"
        )),
        Vec::<String>::new()
    );
    let p = problems(&format!("{base}[api]\nlisten = [\"0.0.0.0:8022\"]\n"));
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(
        p[0].starts_with("t.toml:4:11: api.listen: \"0.0.0.0:8022\" is not a loopback address: plain HTTP is refused there"),
        "{p:?}"
    );
    let p = problems(&format!(
        "{base}[api]\nlisten = [\"0.0.0.0:8022\"]\ntls_cert = \"/etc/tollgate/api.pem\"\n"
    ));
    assert_eq!(p, vec!["t.toml:5:12: api.tls_cert needs api.tls_key"]);
    let p = problems(&format!("{base}[api]\nlistn = []\nmax_body_bytes = 10\n"));
    assert!(
        p[0].contains("unknown key \"listn\" in [api] (did you mean \"listen\"?)"),
        "{p:?}"
    );
    assert!(
        p[1].starts_with("t.toml:5:18: api.max_body_bytes must be between"),
        "{p:?}"
    );
}

#[test]
fn workers_is_a_thread_count_or_auto() {
    let parse = |s: &str| Config::parse(Path::new("t.toml"), &format!("[server]\n{s}\n"));
    assert_eq!(parse("workers = 3").unwrap().server.workers(), 3);
    assert_eq!(parse("workers = 3").unwrap().server.workers, Some(3));
    let auto = parse("workers = \"auto\"").unwrap().server;
    assert_eq!(auto.workers, None);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(auto.workers(), cpus.saturating_sub(1).max(1));
    assert_eq!(
        Config::parse(Path::new("t.toml"), "")
            .unwrap()
            .server
            .workers,
        None
    );
    for bad in [
        "workers = 0",
        "workers = 1025",
        "workers = \"many\"",
        "workers = 1.5",
    ] {
        let p = problems(&format!("[server]\n{bad}\n"));
        assert_eq!(
            p,
            vec![
                "t.toml:2:11: server.workers must be a number of threads from 1 to 1024, or \"auto\""
                    .to_string()
            ],
            "{bad}"
        );
    }
}
