//! Syslog message encoding: RFC 5424 (with structured data) and RFC 3164 for
//! legacy collectors, and RFC 6587 octet-counting framing for TCP and TLS.
//!
//! No crate on the registry does this with async framing (see
//! shared/SYSLOG-NOTES.md), and it is little code. Header fields are forced
//! to printable ASCII and their RFC length limits; structured-data values are
//! escaped; the message text comes already made safe by the line cutter.

use std::time::SystemTime;

pub use crate::config::facility;

/// Severities used by tollgate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Warning = 4,
    Notice = 5,
    Info = 6,
}

/// The fixed parts of every message a daemon sends.
#[derive(Debug, Clone)]
pub struct Origin {
    pub hostname: String,
    pub app_name: String,
    pub procid: String,
}

/// One structured-data element: an SD-ID and its parameters.
pub struct StructuredData<'a> {
    pub id: &'a str,
    pub params: &'a [(&'a str, &'a str)],
}

/// Keeps printable ASCII (33-126) and cuts to `max`; `-` when nothing is left.
fn header_field(s: &str, max: usize) -> String {
    let f: String = s
        .chars()
        .filter(|c| ('!'..='~').contains(c))
        .take(max)
        .collect();
    if f.is_empty() {
        "-".into()
    } else {
        f
    }
}

/// SD-NAME: printable ASCII except `=`, space, `]`, `"`; at most 32.
fn sd_name(s: &str) -> String {
    let f: String = s
        .chars()
        .filter(|c| ('!'..='~').contains(c) && !matches!(c, '=' | ']' | '"'))
        .take(32)
        .collect();
    if f.is_empty() {
        "_".into()
    } else {
        f
    }
}

/// PARAM-VALUE escaping (RFC 5424 §6.3.3): `"`, `\` and `]`; control
/// characters are written as text.
fn sd_value(s: &str, out: &mut String) {
    for c in s.chars() {
        if matches!(c, '"' | '\\' | ']') {
            out.push('\\');
            out.push(c);
        } else if c.is_control() {
            // A client's LF, CR, ESC or NUL never reaches a collector raw:
            // written `\xNN` (the backslash escaped, as RFC 5424 wants),
            // a parser reads the four characters `\xNN`.
            out.push_str(&format!("\\\\x{:02x}", c as u32 & 0xff));
        } else {
            out.push(c);
        }
    }
}

/// An RFC 5424 message: `<PRI>1 TIMESTAMP HOST APP PROCID MSGID [SD] MSG`.
pub fn rfc5424(
    origin: &Origin,
    facility: u8,
    severity: Severity,
    at: SystemTime,
    msgid: &str,
    sd: &[StructuredData],
    msg: &str,
) -> String {
    let mut out = format!(
        "<{}>1 {} {} {} {} {} ",
        u16::from(facility) * 8 + severity as u16,
        humantime::format_rfc3339_micros(at),
        header_field(&origin.hostname, 255),
        header_field(&origin.app_name, 48),
        header_field(&origin.procid, 128),
        header_field(msgid, 32),
    );
    if sd.is_empty() {
        out.push('-');
    }
    for element in sd {
        out.push('[');
        out.push_str(&sd_name(element.id));
        for (k, v) in element.params {
            out.push(' ');
            out.push_str(&sd_name(k));
            out.push_str("=\"");
            sd_value(v, &mut out);
            out.push('"');
        }
        out.push(']');
    }
    if !msg.is_empty() {
        out.push(' ');
        out.push_str(msg);
    }
    out
}

/// An RFC 3164 message: `<PRI>Mmm dd hh:mm:ss HOST TAG[PID]: MSG`, local
/// time as the RFC has it. Structured data has no place here; callers put
/// what matters into the text.
pub fn rfc3164(
    origin: &Origin,
    facility: u8,
    severity: Severity,
    at: SystemTime,
    msg: &str,
) -> String {
    let local: chrono::DateTime<chrono::Local> = at.into();
    format!(
        "<{}>{} {} {}[{}]: {}",
        u16::from(facility) * 8 + severity as u16,
        // `Mmm dd hh:mm:ss`, the day padded with a space.
        local.format("%b %e %H:%M:%S"),
        header_field(&origin.hostname, 255),
        header_field(&origin.app_name, 32),
        header_field(&origin.procid, 16),
        msg
    )
}

/// RFC 6587 octet counting: `LEN SP MSG`.
pub fn octet_counted(msg: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(msg.len() + 6);
    octet_counted_into(&mut out, msg);
    out
}

/// Appends `msg` framed as [`octet_counted`] does.
pub fn octet_counted_into(out: &mut Vec<u8>, msg: &str) {
    out.extend_from_slice(msg.len().to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(msg.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn origin() -> Origin {
        Origin {
            hostname: "bastion one".into(),
            app_name: "tollgate".into(),
            procid: "4242".into(),
        }
    }

    #[test]
    fn rfc5424_header_structured_data_and_escaping() {
        let at = UNIX_EPOCH + Duration::from_micros(1_700_000_000_123_456);
        let params = [
            ("session", "ses_1"),
            ("user", "a\"b]c\\d"),
            ("bad=name", "x"),
        ];
        let sd = [StructuredData {
            id: "tollgate@32473",
            params: &params,
        }];
        let m = rfc5424(
            &origin(),
            facility("authpriv").unwrap(),
            Severity::Notice,
            at,
            "output",
            &sd,
            "hello",
        );
        assert_eq!(
            m,
            r#"<85>1 2023-11-14T22:13:20.123456Z bastionone tollgate 4242 output [tollgate@32473 session="ses_1" user="a\"b\]c\\d" badname="x"] hello"#
        );
    }

    #[test]
    fn control_characters_in_structured_data_are_written_as_text() {
        let params = [("user", "a\nb\r\x1b[2J\0\u{85}")];
        let sd = [StructuredData {
            id: "tollgate@32473",
            params: &params,
        }];
        let m = rfc5424(
            &origin(),
            facility("authpriv").unwrap(),
            Severity::Notice,
            UNIX_EPOCH,
            "auth.failed",
            &sd,
            "x",
        );
        assert!(!m.chars().any(|c| c.is_control()), "{m:?}");
        assert!(
            m.contains(r#"user="a\\x0ab\\x0d\\x1b[2J\\x00\\x85""#),
            "{m}"
        );
        // A strict parser reads the escapes back as plain text.
        let parsed = syslog_rfc5424::parse_message(&m).unwrap();
        let v = parsed.sd.find_tuple("tollgate@32473", "user").unwrap();
        assert_eq!(v, "a\\x0ab\\x0d\\x1b[2J\\x00\\x85");
    }

    #[test]
    fn empty_fields_become_nil_and_long_ones_are_cut() {
        let o = Origin {
            hostname: String::new(),
            app_name: "a".repeat(60),
            procid: "1".into(),
        };
        let m = rfc5424(&o, 16, Severity::Info, UNIX_EPOCH, "", &[], "");
        assert_eq!(
            m,
            format!(
                "<134>1 1970-01-01T00:00:00.000000Z - {} 1 - -",
                "a".repeat(48)
            )
        );
    }

    #[test]
    fn rfc3164_shape_and_octet_counting() {
        let m = rfc3164(
            &origin(),
            4,
            Severity::Warning,
            UNIX_EPOCH + Duration::from_secs(86400 * 40),
            "x y",
        );
        assert!(m.starts_with("<36>"), "{m}");
        assert!(m.ends_with(" bastionone tollgate[4242]: x y"), "{m}");
        // The timestamp is local time, as date(1) prints it here.
        for secs in [86400 * 40, 1_700_000_000] {
            let m = rfc3164(
                &origin(),
                4,
                Severity::Warning,
                UNIX_EPOCH + Duration::from_secs(secs),
                "x",
            );
            let date = std::process::Command::new("date")
                .args(["-d", &format!("@{secs}"), "+%b %e %H:%M:%S"])
                .env("LC_ALL", "C")
                .output()
                .unwrap();
            let want = String::from_utf8(date.stdout).unwrap();
            assert_eq!(&m[4..19], want.trim_end(), "{m}");
        }
        assert_eq!(octet_counted("héllo"), b"6 h\xc3\xa9llo".to_vec());
        assert_eq!(facility("local7"), Some(23));
        assert_eq!(facility("nope"), None);
    }
}
