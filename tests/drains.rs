//! Drains against a real rsyslog on loopback: what the person saw, line by
//! line, and the session's events, over TCP (octet counting) and UDP.
mod common;
use common::*;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Rsyslog {
    child: Child,
    received: std::path::PathBuf,
    tcp: u16,
    udp: u16,
}

impl Rsyslog {
    fn start(dir: &std::path::Path) -> Rsyslog {
        let (tcp, udp) = (free_port(), free_port());
        let work = dir.join("rsyslog-work");
        std::fs::create_dir_all(&work).unwrap();
        let received = dir.join("received.log");
        let conf = dir.join("rsyslog.conf");
        std::fs::write(
            &conf,
            format!(
                r#"global(workDirectory="{work}" maxMessageSize="64k" net.enableDNS="off"
       parser.escapeControlCharactersOnReceive="off")
module(load="imtcp")
module(load="imudp")
template(name="raw" type="string" string="%rawmsg%\n")
ruleset(name="drain") {{
  action(type="omfile" file="{received}" template="raw")
}}
input(type="imtcp" address="127.0.0.1" port="{tcp}" ruleset="drain")
input(type="imudp" address="127.0.0.1" port="{udp}" ruleset="drain")
"#,
                work = work.display(),
                received = received.display()
            ),
        )
        .unwrap();
        let child = Command::new("rsyslogd")
            .args(["-n", "-f"])
            .arg(&conf)
            .arg("-i")
            .arg(dir.join("rsyslogd.pid"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("rsyslogd (scripts/test.sh installs rsyslog)");
        let up = eventually(Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", tcp)).is_ok()
        });
        assert!(up.is_some(), "rsyslogd did not start");
        Rsyslog {
            child,
            received,
            tcp,
            udp,
        }
    }

    fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.received)
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The text of `output` messages for `session` whose SD has `drain_tag`.
fn output_texts(lines: &[String], session: &str, sd_id: &str) -> Vec<String> {
    lines
        .iter()
        .filter(|l| {
            l.contains(" output [") && l.contains(&format!("[{sd_id} session=\"{session}\""))
        })
        .map(|l| l.split("\"] ").nth(1).unwrap_or_default().to_string())
        .collect()
}

#[test]
fn session_output_and_events_reach_rsyslog_over_tcp_and_udp() {
    let d = TempDir::new("drains");
    let r = Rsyslog::start(d.path());
    let s = Server::start_with(
        "drains",
        Opts {
            tail: format!(
                "[[drains]]\nname = \"tcp\"\nurl = \"tcp://127.0.0.1:{}\"\nsd_id = \"tgtcp@32473\"\n\n\
                 [[drains]]\nname = \"udp\"\nurl = \"udp://127.0.0.1:{}\"\nsd_id = \"tgudp@32473\"\nsend = [\"output\"]\n",
                r.tcp, r.udp
            ),
            ..Opts::default()
        },
    );
    let (id, tok) = s.issue("ops", &[]);
    let out = s.ssh_run(
        "ops",
        &tok,
        &["-tt"],
        "echo line-one; printf 'col\\033[31mored\\033[0m\\tx\\n'; printf 'no-newline'",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    s.wait_state(&id, "terminated", Duration::from_secs(5));

    let expected = ["line-one", "colored\\x09x", "no-newline"];
    let mut got = (Vec::new(), Vec::new());
    let arrived = eventually(Duration::from_secs(10), || {
        let lines = r.lines();
        got = (
            output_texts(&lines, &id, "tgtcp@32473"),
            output_texts(&lines, &id, "tgudp@32473"),
        );
        got.0 == expected && got.1 == expected
    });
    assert!(
        arrived.is_some(),
        "received over tcp {:?} and udp {:?}\nall:\n{}",
        got.0,
        got.1,
        r.lines().join("\n")
    );

    // Events follow the journal within a second or so.
    eventually(Duration::from_secs(5), || {
        r.lines()
            .iter()
            .any(|l| l.contains(" session.terminated ["))
    });
    let lines = r.lines();
    let first = lines
        .iter()
        .find(|l| l.contains("line-one") && l.contains("tgtcp"))
        .unwrap();
    assert!(
        first.starts_with("<86>1 "),
        "authpriv.info: output_facility defaults to facility: {first}"
    );
    assert!(
        first.contains(r#"user="ops""#)
            && first.contains(r#"profile="console""#)
            && first.contains(r#"seq="1""#),
        "{first}"
    );
    // Events: only the TCP drain wants them; MSGID is the event kind.
    let events: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains(&format!("session=\"{id}\"")) && !l.contains(" output ["))
        .collect();
    for kind in [
        "session.issued",
        "session.redeemed",
        "session.started",
        "session.exited",
        "session.terminated",
    ] {
        assert!(
            events
                .iter()
                .any(|l| l.contains(&format!(" {kind} [tgtcp@32473 "))),
            "no {kind} event: {events:#?}"
        );
    }
    assert!(
        events.iter().all(|l| !l.contains("tgudp")),
        "the udp drain does not take events"
    );
}
