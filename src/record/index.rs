//! The index written beside a finished recording (`SESSION.idx.zst`): its
//! transcript (what the screen showed, line by line, with the moment:
//! what `recording search` reads) and a keyframe every
//! [`KEYFRAME_EVERY`] seconds of it (the emulator's screen then, and where
//! the next event starts in the asciicast: where `replay --at` starts
//! from), so neither runs the emulator over the whole recording again.
//! One JSON object per line; a recording without one (a crash, an older
//! version) is read the slow way.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::cast;
use super::screen::{header_size, Line, Transcript};

/// Seconds of recording between keyframes.
pub const KEYFRAME_EVERY: f64 = 30.0;

/// The screen at `time`: `state` drawn on a `cols`×`rows` terminal, then
/// the asciicast's events from byte `offset` on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Keyframe {
    pub time: f64,
    pub offset: usize,
    pub cols: u16,
    pub rows: u16,
    pub state: String,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Record {
    Line { t: f64, text: String },
    Key(Keyframe),
}

/// A recording's transcript and keyframes.
#[derive(Debug, Default)]
pub struct Index {
    pub lines: Vec<Line>,
    pub keyframes: Vec<Keyframe>,
}

/// The index file of a session's recording in `dir`.
pub fn path(dir: &Path, session: &str) -> PathBuf {
    dir.join(format!("{session}.idx.zst"))
}

fn record(out: &mut impl Write, r: &Record) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, r)?;
    out.write_all(b"\n")
}

fn put_lines(out: &mut impl Write, lines: Vec<Line>) -> std::io::Result<usize> {
    let n = lines.len();
    for l in lines {
        let text = l.text;
        record(out, &Record::Line { t: l.time, text })?;
    }
    Ok(n)
}

/// Runs the emulator over an asciicast read from `input` once, writing
/// the index (zstd-compressed JSON lines) to `out` as it goes: nothing but
/// the screen and one line of the recording is held. Returns how many
/// lines and keyframes it wrote.
pub fn write(mut input: impl BufRead, out: impl Write) -> std::io::Result<(usize, usize)> {
    let mut enc = zstd::stream::write::Encoder::new(out, 3)?;
    let mut buf = Vec::new();
    let mut at = input.read_until(b'\n', &mut buf)?;
    let (cols, rows) = header_size(&String::from_utf8_lossy(&buf));
    let mut t = Transcript::new(cols, rows);
    let mut next = KEYFRAME_EVERY;
    let mut end = 0.0;
    let (mut lines, mut keys) = (0, 0);
    loop {
        buf.clear();
        let n = input.read_until(b'\n', &mut buf)?;
        if n == 0 {
            break;
        }
        let start = at;
        at += n;
        let Some(e) = std::str::from_utf8(&buf).ok().and_then(cast::parse_event) else {
            continue;
        };
        if e.time >= next {
            let (r, c) = t.screen().size();
            let k = Keyframe {
                time: next,
                offset: start,
                cols: c.get(),
                rows: r.get(),
                state: t.screen().state_formatted(),
            };
            record(&mut enc, &Record::Key(k))?;
            keys += 1;
            while next <= e.time {
                next += KEYFRAME_EVERY;
            }
        }
        end = e.time;
        t.event(&e);
        lines += put_lines(&mut enc, t.take_lines())?;
    }
    lines += put_lines(&mut enc, t.finish(end))?;
    enc.finish()?;
    Ok((lines, keys))
}

/// The index of a whole asciicast, in memory.
pub fn build(text: &[u8]) -> Index {
    let mut out = Vec::new();
    match write(text, &mut out) {
        Ok(_) => zstd::stream::decode_all(out.as_slice())
            .ok()
            .and_then(|plain| parse(&plain))
            .unwrap_or_default(),
        Err(_) => Index::default(),
    }
}

fn parse(plain: &[u8]) -> Option<Index> {
    let mut index = Index::default();
    for line in plain.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        match serde_json::from_slice(line).ok()? {
            Record::Line { t, text } => index.lines.push(Line { time: t, text }),
            Record::Key(k) => index.keyframes.push(k),
        }
    }
    Some(index)
}

/// The index of a session's recording in `dir`, when there is one.
pub fn read(dir: &Path, session: &str) -> Option<Index> {
    let f = std::fs::File::open(path(dir, session)).ok()?;
    parse(&zstd::stream::decode_all(f).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyframes_rebuild_the_screen_as_a_full_pass_does() {
        let mut cast = String::from("{\"version\": 2, \"width\": 20, \"height\": 3}\n");
        for i in 0..200 {
            let mut body = String::new();
            cast::escape_bytes(
                &mut body,
                format!("line {i}\r\n").as_bytes(),
                cast::Invalid::Escape,
            );
            cast::event_line(&mut cast, i as f64, "o", &body);
        }
        let index = build(cast.as_bytes());
        assert_eq!(index.keyframes.len(), 6, "{:?}", index.keyframes);
        let k = &index.keyframes[2];
        assert_eq!(k.time, 90.0);
        assert!(cast[k.offset..].starts_with("[90.000000, \"o\""));
        // From the keyframe: the same screen as from the start.
        let at = 95.5;
        let mut from_key = Transcript::new(u32::from(k.cols), u32::from(k.rows));
        from_key.output(0.0, k.state.as_bytes());
        for l in cast[k.offset..].lines() {
            let e = cast::parse_event(l).unwrap();
            if e.time < at {
                from_key.event(&e);
            }
        }
        let mut full = Transcript::new(20, 3);
        for l in cast.lines().skip(1) {
            let e = cast::parse_event(l).unwrap();
            if e.time < at {
                full.event(&e);
            }
        }
        assert_eq!(from_key.screen().contents(), full.screen().contents());
        assert!(full.screen().contents().contains("line 95"));
        // Written and read back.
        let dir = std::env::temp_dir().join(format!("tg-idx-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = std::fs::File::create(path(&dir, "ses_x")).unwrap();
        write(cast.as_bytes(), f).unwrap();
        let back = read(&dir, "ses_x").unwrap();
        assert_eq!(back.keyframes, index.keyframes);
        assert_eq!(back.lines, index.lines);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
