//! asciicast v2, the format `asciinema play` and asciinema-player read: a
//! JSON header line, then one `[seconds, "code", "data"]` line per event.
//!
//! asciicast strings are UTF-8, terminal output need not be. Output is
//! kept exactly with Python's `surrogateescape` convention (PEP 383): each
//! byte that is not part of valid UTF-8 is written as the JSON escape of
//! the lone surrogate U+DC80 + (byte − 0x80). A reader with that error
//! handler (`PYTHONUTF8=1 asciinema cat`, our own export and replay) gets
//! the bytes back; an incomplete sequence at the end of one read is held
//! for the next, so a character split across reads is never escaped.
//! [`Utf8Stream`] encodes, [`parse_event`] decodes. Export can also
//! replace each such byte with U+FFFD ([`Invalid::Replace`]), for players
//! whose output refuses lone surrogates.

use std::fmt::Write;

/// Appends `s` as the inside of a JSON string.
fn escape_str(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
}

/// What becomes of a byte that is not valid UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    /// `\udcXX`: exact (surrogateescape).
    Escape,
    /// U+FFFD, as a UTF-8 terminal shows it.
    Replace,
}

/// Appends `bytes` (complete: no sequence continues after them) as the
/// inside of a JSON string.
pub fn escape_bytes(out: &mut String, mut bytes: &[u8], invalid: Invalid) {
    loop {
        match std::str::from_utf8(bytes) {
            Ok(s) => return escape_str(out, s),
            Err(e) => {
                let (good, rest) = bytes.split_at(e.valid_up_to());
                // `good` is what from_utf8 just accepted.
                escape_str(out, std::str::from_utf8(good).unwrap_or_default());
                let bad = e.error_len().unwrap_or(rest.len()).max(1);
                for b in &rest[..bad] {
                    match invalid {
                        Invalid::Escape => {
                            let _ = write!(out, "\\udc{:02x}", b);
                        }
                        Invalid::Replace => out.push('\u{fffd}'),
                    }
                }
                bytes = &rest[bad..];
            }
        }
    }
}

/// Output as it arrives, one read at a time: holds back an incomplete
/// UTF-8 sequence at the end of a read until the next one completes it.
#[derive(Default)]
pub struct Utf8Stream {
    held: Vec<u8>,
}

impl Utf8Stream {
    /// The JSON string body for `chunk` (with what was held before it),
    /// keeping an incomplete sequence at its end for the next call.
    pub fn push(&mut self, chunk: &[u8], out: &mut String) {
        let mut data = std::mem::take(&mut self.held);
        data.extend_from_slice(chunk);
        let keep = incomplete_tail(&data);
        self.held = data.split_off(data.len() - keep);
        escape_bytes(out, &data, Invalid::Escape);
    }

    /// Whatever is still held (the stream ended inside a sequence).
    pub fn finish(&mut self, out: &mut String) {
        let held = std::mem::take(&mut self.held);
        escape_bytes(out, &held, Invalid::Escape);
    }
}

/// How many bytes at the end of `data` begin a UTF-8 sequence that more
/// bytes could still complete (0 to 3).
fn incomplete_tail(data: &[u8]) -> usize {
    for back in 1..=3.min(data.len()) {
        let b = data[data.len() - back];
        if b & 0xC0 == 0x80 {
            continue; // a continuation byte: look further back
        }
        let need = match b {
            0xC2..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF4 => 4,
            _ => return 0,
        };
        if need <= back {
            return 0;
        }
        // Held only if what is there so far is a valid start.
        return match std::str::from_utf8(&data[data.len() - back..]) {
            Err(e) if e.valid_up_to() == 0 && e.error_len().is_none() => back,
            _ => 0,
        };
    }
    0
}

/// One event line: `[t, "code", "data"]` and a newline.
pub fn event_line(out: &mut String, seconds: f64, code: &str, data_json: &str) {
    let _ = writeln!(out, "[{seconds:.6}, \"{code}\", \"{data_json}\"]");
}

/// An event read back.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub time: f64,
    pub code: String,
    /// The data, with `\udcXX` escapes turned back into their bytes.
    pub data: Vec<u8>,
}

/// Reads one event line as [`event_line`] writes it (and as any asciicast
/// v2 writer does): `None` when it is not one.
pub fn parse_event(line: &str) -> Option<Event> {
    let mut p = Parser {
        s: line.as_bytes(),
        i: 0,
    };
    p.ws();
    p.eat(b'[')?;
    p.ws();
    let time = p.number()?;
    p.ws();
    p.eat(b',')?;
    p.ws();
    let code = String::from_utf8(p.string()?).ok()?;
    p.ws();
    p.eat(b',')?;
    p.ws();
    let data = p.string()?;
    p.ws();
    p.eat(b']')?;
    Some(Event { time, code, data })
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.s.get(self.i).is_some_and(|c| c.is_ascii_whitespace()) {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.s.get(self.i) == Some(&c)).then(|| self.i += 1)
    }

    fn number(&mut self) -> Option<f64> {
        let start = self.i;
        while self
            .s
            .get(self.i)
            .is_some_and(|c| c.is_ascii_digit() || b".eE+-".contains(c))
        {
            self.i += 1;
        }
        std::str::from_utf8(&self.s[start..self.i])
            .ok()?
            .parse()
            .ok()
    }

    fn hex4(&mut self) -> Option<u32> {
        let h = std::str::from_utf8(self.s.get(self.i..self.i + 4)?).ok()?;
        self.i += 4;
        u32::from_str_radix(h, 16).ok()
    }

    fn string(&mut self) -> Option<Vec<u8>> {
        self.eat(b'"')?;
        let mut out = Vec::new();
        loop {
            let c = *self.s.get(self.i)?;
            self.i += 1;
            match c {
                b'"' => return Some(out),
                b'\\' => {
                    let e = *self.s.get(self.i)?;
                    self.i += 1;
                    match e {
                        b'"' | b'\\' | b'/' => out.push(e),
                        b'n' => out.push(b'\n'),
                        b'r' => out.push(b'\r'),
                        b't' => out.push(b'\t'),
                        b'b' => out.push(8),
                        b'f' => out.push(12),
                        b'u' => {
                            let u = self.hex4()?;
                            let ch = match u {
                                // A byte kept by surrogateescape.
                                0xDC80..=0xDCFF => {
                                    out.push((u - 0xDC00) as u8);
                                    continue;
                                }
                                0xD800..=0xDBFF => {
                                    self.eat(b'\\')?;
                                    self.eat(b'u')?;
                                    let lo = self.hex4()?;
                                    if !(0xDC00..=0xDFFF).contains(&lo) {
                                        return None;
                                    }
                                    char::from_u32(0x10000 + ((u - 0xD800) << 10) + (lo - 0xDC00))
                                }
                                _ => char::from_u32(u),
                            }
                            .unwrap_or('\u{fffd}');
                            let mut b = [0u8; 4];
                            out.extend_from_slice(ch.encode_utf8(&mut b).as_bytes());
                        }
                        _ => return None,
                    }
                }
                c => out.push(c),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(chunks: &[&[u8]]) -> Vec<u8> {
        let mut s = Utf8Stream::default();
        let mut lines = String::new();
        for c in chunks {
            let mut body = String::new();
            s.push(c, &mut body);
            event_line(&mut lines, 0.5, "o", &body);
        }
        let mut body = String::new();
        s.finish(&mut body);
        event_line(&mut lines, 1.0, "o", &body);
        lines
            .lines()
            .map(|l| parse_event(l).unwrap())
            .flat_map(|e| e.data)
            .collect()
    }

    #[test]
    fn every_byte_sequence_comes_back_exactly() {
        let cases: &[&[&[u8]]] = &[
            &[b"plain \x1b[1;31mred\x1b[0m\r\n"],
            &["caf\u{e9} \u{1f600}".as_bytes()],
            // A character split across reads is held, not escaped.
            &[b"\xe2\x82", b"\xac euro", b"\xf0\x9f", b"\x98", b"\x80"],
            // Invalid bytes, a lone continuation, a truncated sequence
            // at the very end, and quotes and backslashes.
            &[b"\xff\xfe bad \x80 \"q\" \\ \x00\x07\x7f", b"\xe2\x82"],
            &[b"\xed\xa0\x80 surrogate in utf-8", b"\xc0\xaf overlong"],
        ];
        for chunks in cases {
            let want: Vec<u8> = chunks.concat();
            assert_eq!(roundtrip(chunks), want, "{chunks:?}");
        }
    }

    #[test]
    fn lines_are_json_that_python_reads_with_surrogateescape() {
        let mut body = String::new();
        escape_bytes(&mut body, b"a\xffb\"\n", Invalid::Escape);
        assert_eq!(body, "a\\udcffb\\\"\\n");
        let mut line = String::new();
        event_line(&mut line, 1.25, "o", &body);
        assert_eq!(line, "[1.250000, \"o\", \"a\\udcffb\\\"\\n\"]\n");
        let mut replaced = String::new();
        escape_bytes(&mut replaced, b"a\xffb", Invalid::Replace);
        assert_eq!(replaced, "a\u{fffd}b");
    }

    #[test]
    fn other_writers_events_parse_too() {
        let e = parse_event(r#"[0.1, "o", "\u001b[0m\ud83d\ude00\u00e9"]"#).unwrap();
        assert_eq!(e.data, "\x1b[0m\u{1f600}\u{e9}".as_bytes());
        assert_eq!(e.code, "o");
        assert!(parse_event(r#"{"version": 2}"#).is_none());
        assert!(parse_event(r#"[0.1, "o", "unterminated]"#).is_none());
    }
}
