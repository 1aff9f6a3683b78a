//! What a recording's screen showed, as text: its output run through a
//! terminal emulator (vt100) of the recorded size, resizes included, and
//! kept as one line per screen line with the moment it was shown. A line
//! is taken when it scrolls off the top, when the screen is cleared or a
//! full-screen program leaves (what it last showed), and at the end (what
//! was left on the screen). Cursor movement, colours and redraws do not
//! appear; the text they left does.

use super::cast::{self, Event};

/// One line of a transcript: seconds into the session, and its text.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub time: f64,
    pub text: String,
}

/// Rows scrolled off the top, as the emulator reports them.
#[derive(Default)]
struct Scrolled(Vec<String>);

impl vt100::Callbacks for Scrolled {
    fn on_scroll(&mut self, contents: vt100::capture::RowContents<'_>, _alternate: bool) {
        let mut s = String::new();
        let mut state = vt100::capture::BasicFormattedCaptureState::default();
        let _ = contents.write_formatted_basic(&mut s, &mut state);
        self.0.push(strip_sgr(&s));
    }
}

/// Removes `ESC [ … letter` sequences (the emulator's own formatting).
fn strip_sgr(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars().peekable();
    while let Some(c) = it.next() {
        if c == '\x1b' && it.peek() == Some(&'[') {
            it.next();
            for d in it.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
            continue;
        }
        if c != '\n' {
            out.push(c);
        }
    }
    out.trim_end().to_string()
}

/// Where the screen is about to lose what it shows without scrolling:
/// clearing it (`ESC [ 2 J`, `ESC [ 3 J`, or `ESC [ J` from the top left
/// corner, as `clear` does for screen and tmux), a full-screen program
/// leaving its screen (`ESC [ ? 1049 l`, `47`, `1047`), a reset (`ESC c`).
/// The flag: only when the cursor is in the top left corner.
const ERASERS: &[(&[u8], bool)] = &[
    (b"\x1b[2J", false),
    (b"\x1b[3J", false),
    (b"\x1b[J", true),
    (b"\x1b[0J", true),
    (b"\x1b[?1049l", false),
    (b"\x1b[?47l", false),
    (b"\x1b[?1047l", false),
    (b"\x1bc", false),
];

/// Builds a transcript event by event.
pub struct Transcript {
    parser: vt100::Parser<Scrolled>,
    lines: Vec<Line>,
}

/// The largest terminal a recording keeps: a client may claim 65535 by
/// 65535, which an emulator (ours, or a player's) would have to allocate.
pub const MAX_COLS: u32 = 1000;
pub const MAX_ROWS: u32 = 500;

fn size(v: u32, default: u16, max: u32) -> std::num::NonZeroU16 {
    let v = v.min(max) as u16;
    std::num::NonZeroU16::new(v)
        .or(std::num::NonZeroU16::new(default))
        .unwrap_or(std::num::NonZeroU16::MIN)
}

impl Transcript {
    /// A screen of the recording's size (`cols`×`rows`).
    pub fn new(cols: u32, rows: u32) -> Transcript {
        Transcript {
            parser: vt100::Parser::new_with_callbacks(
                size(rows, 24, MAX_ROWS),
                size(cols, 80, MAX_COLS),
                0,
                Scrolled::default(),
            ),
            lines: Vec::new(),
        }
    }

    /// The emulator, as the events so far left it (for replay).
    pub fn screen(&self) -> &vt100::Screen {
        self.parser.screen()
    }

    fn take_scrolled(&mut self, time: f64) {
        for text in self.parser.callbacks_mut().0.drain(..) {
            self.lines.push(Line { time, text });
        }
    }

    /// Takes the visible screen's lines (without trailing blank ones).
    fn take_screen(&mut self, time: f64) {
        let (_, cols) = self.parser.screen().size();
        let mut rows: Vec<String> = self
            .parser
            .screen()
            .rows(0, cols.get())
            .map(|r| r.trim_end().to_string())
            .collect();
        while rows.last().is_some_and(|r| r.is_empty()) {
            rows.pop();
        }
        self.lines
            .extend(rows.into_iter().map(|text| Line { time, text }));
    }

    /// Output shown at `time`.
    pub fn output(&mut self, time: f64, mut data: &[u8]) {
        while !data.is_empty() {
            let next = ERASERS
                .iter()
                .filter_map(|(e, home)| {
                    memchr::memmem::find(data, e).map(|at| (at, e.len(), *home))
                })
                .min();
            match next {
                Some((at, len, home)) => {
                    self.parser.process(&data[..at]);
                    self.take_scrolled(time);
                    if !home || self.parser.screen().cursor_position() == (0, 0) {
                        self.take_screen(time);
                    }
                    self.parser.process(&data[at..at + len]);
                    data = &data[at + len..];
                }
                None => {
                    self.parser.process(data);
                    self.take_scrolled(time);
                    data = &[];
                }
            }
        }
    }

    /// The terminal became `cols`×`rows`.
    pub fn resize(&mut self, cols: u32, rows: u32) {
        self.parser
            .screen_mut()
            .set_size(size(rows, 24, MAX_ROWS), size(cols, 80, MAX_COLS));
    }

    /// One event of a recording (output and resizes; the rest is not
    /// on the screen).
    pub fn event(&mut self, e: &Event) {
        match e.code.as_str() {
            "o" => self.output(e.time, &e.data),
            "r" => {
                let text = String::from_utf8_lossy(&e.data);
                if let Some((c, r)) = text.split_once('x') {
                    if let (Ok(c), Ok(r)) = (c.parse(), r.parse()) {
                        self.resize(c, r);
                    }
                }
            }
            _ => {}
        }
    }

    /// The lines taken so far (they are not kept).
    pub fn take_lines(&mut self) -> Vec<Line> {
        std::mem::take(&mut self.lines)
    }

    /// The lines, with what the screen shows at the end (at `end`).
    pub fn finish(mut self, end: f64) -> Vec<Line> {
        self.take_screen(end);
        self.lines
    }
}

/// The header's size, `(cols, rows)`, of an asciicast.
pub fn header_size(header: &str) -> (u32, u32) {
    let v: serde_json::Value = serde_json::from_str(header).unwrap_or_default();
    let get = |k: &str| v[k].as_u64().unwrap_or(0) as u32;
    (get("width"), get("height"))
}

/// The transcript of a whole asciicast.
pub fn transcript(text: &str) -> Vec<Line> {
    let mut lines = text.lines();
    let (cols, rows) = header_size(lines.next().unwrap_or_default());
    let mut t = Transcript::new(cols, rows);
    let mut end = 0.0;
    for line in lines {
        if let Some(e) = cast::parse_event(line) {
            end = e.time;
            t.event(&e);
        }
    }
    t.finish(end)
}

/// `seconds` as `M:SS` (or `H:MM:SS`).
pub fn clock(seconds: f64) -> String {
    let s = seconds.max(0.0) as u64;
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(lines: &[Line]) -> Vec<&str> {
        lines.iter().map(|l| l.text.as_str()).collect()
    }

    #[test]
    fn what_scrolled_was_cleared_and_was_left_is_kept_once() {
        let mut t = Transcript::new(20, 3);
        t.output(1.0, b"one\r\ntwo\r\nthree\r\nfour\r\n");
        // Overwritten in place: only what was left shows.
        t.output(2.0, b"typo\rfixed\r\n");
        t.output(3.0, b"\x1b[31mred\x1b[0m\r\n\x1b[H\x1b[2Jafter clear\r\n");
        // As `clear` does it for screen and tmux; a partial erase is not.
        t.output(3.5, b"x\x1b[J\x1b[H\x1b[Jcleared again");
        let lines = t.finish(4.0);
        assert_eq!(
            texts(&lines),
            [
                "one",
                "two",
                "three",
                "four",
                "fixed",
                "red",
                "after clear",
                "x",
                "cleared again"
            ]
        );
        assert_eq!(lines[0].time, 1.0);
        assert_eq!(lines[5].time, 3.0);
        assert_eq!(lines[6].time, 3.5);
        assert_eq!(lines[8].time, 4.0);
    }

    #[test]
    fn a_full_screen_program_leaves_its_last_screen() {
        let mut t = Transcript::new(20, 4);
        t.output(1.0, b"$ less file\r\n");
        t.output(
            2.0,
            b"\x1b[?1049h\x1b[H\x1b[2Jpage one\x1b[2;1Hline two\x1b[?1049l$ ",
        );
        let lines = t.finish(3.0);
        let shown = texts(&lines);
        assert!(shown.contains(&"page one"), "{shown:?}");
        assert!(shown.contains(&"line two"), "{shown:?}");
        assert_eq!(shown.last(), Some(&"$"), "{shown:?}");
    }

    #[test]
    fn clock_reads_like_a_player() {
        assert_eq!(clock(0.4), "0:00");
        assert_eq!(clock(750.9), "12:30");
        assert_eq!(clock(3725.0), "1:02:05");
    }
}
