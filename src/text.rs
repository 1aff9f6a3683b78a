//! Text that came from a client or a command line, made safe to keep and
//! to show: cut to a cap (so nothing a client sends grows the journal, the
//! log or a drain without bound) and with control characters escaped (so
//! nothing it sends moves an admin's cursor, ends a log line or a syslog
//! message early). Pure functions; the caps are named here and documented
//! in tollgate.toml(5).

/// User names as recorded (SSH user names are short; OpenSSH's limit for
/// a login name is 255).
pub const USER_MAX: usize = 256;
/// Host names in forwarding requests (a DNS name is at most 253).
pub const HOST_MAX: usize = 255;
/// A terminal type (`pty-req`).
pub const TERM_MAX: usize = 64;
/// Commands as recorded (the process gets the whole command).
pub const COMMAND_MAX: usize = 4096;
/// Any other string value of an event.
pub const VALUE_MAX: usize = 8192;

/// `s` cut to at most `max` bytes on a character boundary, with how much
/// was cut said at the end (`…[+1234 bytes]`).
pub fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…[+{} bytes]", &s[..end], s.len() - end)
}

/// `s` with anything but printable ASCII replaced by `?`, cut to `max`
/// characters (with `…` when cut): safe to put in a log line.
pub fn printable(s: &str, max: usize) -> String {
    let mut out: String = s
        .chars()
        .take(max)
        .map(|c| if (' '..='~').contains(&c) { c } else { '?' })
        .collect();
    if s.chars().count() > max {
        out.push('…');
    }
    out
}

/// `s` with control characters (C0, DEL, C1) written as `\xNN` (and `\`
/// itself as `\\`), everything else as it is: for a terminal or a
/// structured-data value.
pub fn escape_controls(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(|c| c.is_control() || c == '\\') {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c == '\\' {
            out.push_str("\\\\");
        } else if c.is_control() {
            let n = c as u32;
            if n <= 0xff {
                out.push_str(&format!("\\x{n:02x}"));
            } else {
                out.push_str(&format!("\\u{{{n:x}}}"));
            }
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// Every string in `v` cut to [`VALUE_MAX`] (the journal's last line of
/// defence; callers cut what they know to tighter caps first).
pub fn clip_json(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::String(s) if s.len() > VALUE_MAX => *s = clip(s, VALUE_MAX),
        serde_json::Value::Array(a) => a.iter_mut().for_each(clip_json),
        serde_json::Value::Object(o) => o.values_mut().for_each(clip_json),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_cuts_on_a_character_boundary_and_says_how_much() {
        assert_eq!(clip("short", 10), "short");
        assert_eq!(clip("abcdef", 3), "abc…[+3 bytes]");
        // "é" is two bytes: never split.
        assert_eq!(clip("aéé", 2), "a…[+4 bytes]");
        let big = "x".repeat(200_000);
        assert!(clip(&big, USER_MAX).len() < USER_MAX + 20);
    }

    #[test]
    fn controls_are_escaped_and_the_rest_kept() {
        assert_eq!(escape_controls("plain é"), "plain é");
        assert_eq!(
            escape_controls("a\nb\r\x1b[31m\0\\"),
            "a\\x0ab\\x0d\\x1b[31m\\x00\\\\"
        );
        assert_eq!(escape_controls("\u{85}"), "\\x85");
        assert_eq!(printable("a\x1bé b", 10), "a?? b");
        assert_eq!(printable("abcdef", 3), "abc…");
    }

    #[test]
    fn every_string_of_a_json_value_is_capped() {
        let mut v = serde_json::json!({"a": "x".repeat(VALUE_MAX * 2), "b": ["y".repeat(VALUE_MAX + 1)], "c": 1});
        clip_json(&mut v);
        assert!(v["a"].as_str().unwrap().len() < VALUE_MAX + 32);
        assert!(v["b"][0].as_str().unwrap().len() < VALUE_MAX + 32);
        assert_eq!(v["c"], 1);
    }
}
