//! Cuts what a terminal showed into one message text per line.
//!
//! Output arrives in arbitrary chunks. A line ends at `\n`; trailing `\r`s
//! are dropped; terminal escape sequences are removed (or kept, escaped);
//! invalid UTF-8 becomes U+FFFD; every remaining control character and the
//! backslash are escaped here (`\x1b`, `\\`), so every collector stores the
//! same text whatever it does with control bytes. A line longer than the
//! budget is split into numbered parts on character boundaries, never inside
//! an escape. Memory is bounded: a line that never ends is cut at
//! [`LineCutter::MAX_PENDING_FACTOR`] times the budget.

pub use crate::config::Ansi;

/// One message's worth of a terminal line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// Line number within the session, from 1.
    pub seq: u64,
    /// Part number from 1 when the line was split, `None` when it was not.
    pub part: Option<u32>,
    pub text: String,
}

/// Turns a byte stream into [`Line`]s.
pub struct LineCutter {
    pending: Vec<u8>,
    budget: usize,
    ansi: Ansi,
    seq: u64,
}

impl LineCutter {
    /// A line with no newline is cut once this many budgets are pending.
    pub const MAX_PENDING_FACTOR: usize = 8;

    /// `budget`: the most bytes of text one message may carry (at least 16).
    pub fn new(budget: usize, ansi: Ansi) -> Self {
        LineCutter {
            pending: Vec::new(),
            budget: budget.max(16),
            ansi,
            seq: 0,
        }
    }

    /// Feeds output; complete lines are appended to `out`.
    pub fn push(&mut self, data: &[u8], out: &mut Vec<Line>) {
        let mut rest = data;
        while let Some(i) = memchr::memchr(b'\n', rest) {
            self.pending.extend_from_slice(&rest[..i]);
            self.emit(out);
            rest = &rest[i + 1..];
        }
        self.pending.extend_from_slice(rest);
        if self.pending.len() >= self.budget * Self::MAX_PENDING_FACTOR {
            self.emit(out);
        }
    }

    /// True when output without a newline is waiting.
    pub fn has_partial(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Emits a pending partial line (after the output went quiet, or at
    /// the end of the session).
    pub fn flush(&mut self, out: &mut Vec<Line>) {
        if self.has_partial() {
            self.emit(out);
        }
    }

    fn emit(&mut self, out: &mut Vec<Line>) {
        let mut raw = std::mem::take(&mut self.pending);
        while raw.last() == Some(&b'\r') {
            raw.pop();
        }
        if self.ansi == Ansi::Strip {
            raw = strip_ansi(&raw);
        }
        let text = String::from_utf8_lossy(&raw);
        self.seq += 1;
        let parts = split_escaped(&text, self.budget);
        let numbered = parts.len() > 1;
        for (i, text) in parts.into_iter().enumerate() {
            out.push(Line {
                seq: self.seq,
                part: numbered.then_some(i as u32 + 1),
                text,
            });
        }
    }
}

/// Escapes controls and backslashes, cutting into parts of at most `budget`
/// bytes on character boundaries, never inside an escape.
fn split_escaped(text: &str, budget: usize) -> Vec<String> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut parts = Vec::new();
    let mut cur = String::with_capacity(budget.min(text.len() + 16));
    for c in text.chars() {
        let v = c as u32;
        let escape = v < 0x20 || c == '\u{7f}' || (0x80..=0x9f).contains(&v);
        let len = match c {
            '\\' => 2,
            _ if escape => 4,
            c => c.len_utf8(),
        };
        if cur.len() + len > budget && !cur.is_empty() {
            parts.push(std::mem::replace(&mut cur, String::with_capacity(budget)));
        }
        if c == '\\' {
            cur.push_str("\\\\");
        } else if escape {
            cur.push_str("\\x");
            cur.push(HEX[(v >> 4) as usize & 15] as char);
            cur.push(HEX[(v & 15) as usize] as char);
        } else {
            cur.push(c);
        }
    }
    parts.push(cur);
    parts
}

/// Removes ECMA-48 escape sequences: CSI (`ESC [ … final`), OSC and the
/// other string commands (`ESC ] … BEL` or `ESC \`), and the short forms
/// (`ESC`, intermediates, final: `ESC ( B`, `ESC =`).
fn strip_ansi(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        if b == 0x1b {
            match raw.get(i + 1) {
                Some(b'[') => {
                    // Parameters and intermediates, then one final byte 0x40-0x7e.
                    let mut j = i + 2;
                    while j < raw.len() && !(0x40..=0x7e).contains(&raw[j]) {
                        j += 1;
                    }
                    i = j + 1;
                }
                Some(b']') | Some(b'P') | Some(b'_') | Some(b'^') | Some(b'X') => {
                    let mut j = i + 2;
                    loop {
                        match raw.get(j) {
                            None => break,
                            Some(0x07) => {
                                j += 1;
                                break;
                            }
                            Some(0x1b) if raw.get(j + 1) == Some(&b'\\') => {
                                j += 2;
                                break;
                            }
                            _ => j += 1,
                        }
                    }
                    i = j;
                }
                Some(_) => {
                    // nF/Fp/Fe/Fs forms: intermediates 0x20-0x2f, then one final byte.
                    let mut j = i + 1;
                    while j < raw.len() && (0x20..=0x2f).contains(&raw[j]) {
                        j += 1;
                    }
                    i = j + 1;
                }
                None => i += 1,
            }
        } else {
            out.push(b);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cut(chunks: &[&[u8]], budget: usize, ansi: Ansi) -> Vec<Line> {
        let mut c = LineCutter::new(budget, ansi);
        let mut out = Vec::new();
        for ch in chunks {
            c.push(ch, &mut out);
        }
        c.flush(&mut out);
        out
    }

    fn texts(lines: &[Line]) -> Vec<&str> {
        lines.iter().map(|l| l.text.as_str()).collect()
    }

    #[test]
    fn lines_across_chunks_with_crlf_and_a_partial_tail() {
        let out = cut(&[b"$ ls\r", b"\na b\r\nc", b"d\r\r\n$ "], 100, Ansi::Strip);
        assert_eq!(texts(&out), ["$ ls", "a b", "cd", "$ "]);
        assert_eq!(out.iter().map(|l| l.seq).collect::<Vec<_>>(), [1, 2, 3, 4]);
        assert!(out.iter().all(|l| l.part.is_none()));
    }

    #[test]
    fn colours_are_stripped_or_kept_escaped() {
        let colored = b"\x1b[1;31mred\x1b[0m \x1b]0;title\x07plain\x1b(B!\n";
        assert_eq!(texts(&cut(&[colored], 100, Ansi::Strip)), ["red plain!"]);
        assert_eq!(
            texts(&cut(&[b"\x1b[1mB\x1b[0m\n"], 100, Ansi::Keep)),
            ["\\x1b[1mB\\x1b[0m"]
        );
    }

    #[test]
    fn controls_backslash_and_invalid_utf8_are_made_safe() {
        let out = cut(&[b"a\tb\\c\x00d\xff\xfee\x7f\r\n"], 100, Ansi::Strip);
        assert_eq!(texts(&out), ["a\\x09b\\\\c\\x00d\u{fffd}\u{fffd}e\\x7f"]);
        // A lone CR inside a line (a progress bar) is visible, not lost.
        assert_eq!(
            texts(&cut(&[b"10%\r20%\n"], 100, Ansi::Strip)),
            ["10%\\x0d20%"]
        );
    }

    #[test]
    fn long_lines_split_on_character_boundaries_never_inside_an_escape() {
        let line = "é".repeat(10) + "\t" + &"x".repeat(5);
        let out = cut(&[format!("{line}\n").as_bytes()], 16, Ansi::Strip);
        for l in &out {
            assert!(l.text.len() <= 16, "{l:?}");
            assert_eq!(l.seq, 1);
        }
        assert_eq!(
            out.iter().map(|l| l.part).collect::<Vec<_>>(),
            (1..=out.len() as u32).map(Some).collect::<Vec<_>>()
        );
        let joined: String = out.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(joined, "é".repeat(10) + "\\x09" + &"x".repeat(5));
        assert!(
            out.iter().any(|l| l.text.contains("\\x09")),
            "escape kept whole"
        );
    }

    #[test]
    fn a_line_that_never_ends_is_cut_so_memory_stays_bounded() {
        let mut c = LineCutter::new(16, Ansi::Strip);
        let mut out = Vec::new();
        for _ in 0..100 {
            c.push(&[b'y'; 10], &mut out);
        }
        assert!(!out.is_empty());
        assert!(c.pending.len() < 16 * LineCutter::MAX_PENDING_FACTOR);
        c.flush(&mut out);
        let total: usize = out.iter().map(|l| l.text.len()).sum();
        assert_eq!(total, 1000);
    }

    #[test]
    fn an_empty_line_is_still_a_line() {
        assert_eq!(
            texts(&cut(&[b"a\n\nb\n"], 100, Ansi::Strip)),
            ["a", "", "b"]
        );
    }
}
