//! The house has layers that only point down (README, Layout): every
//! `crate::…` path in `src/` names a module of a layer below its own, or
//! of its own layer when the two do not import each other. Read from the
//! source text, so a new import that breaks the order fails here, naming
//! the file and the import.
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Bottom to top. A module may use any module of a lower layer, and one of
/// its own layer as long as that one does not use it back.
const LAYERS: &[&[&str]] = &[
    // Utilities: pure functions and policies, and the process's metrics
    // (counters every layer adds to, nothing else shared).
    &[
        "text",
        "token",
        "version",
        "notify",
        "logging",
        "admission",
        "collect",
        "metrics",
    ],
    // The configuration as read from the file.
    &["config"],
    // The only place that speaks SQL.
    &["journal"],
    // Processes, drains and recordings, each built from config and
    // journal types.
    &["exec", "drain", "record"],
    // The configuration checked against this host (accounts, TLS files),
    // and what the daemon's tasks share.
    &["checked", "state"],
    // The protocol adapters: the SSH server, the webhook worker, the HTTP
    // API, and the admin requests the API and the CLI share.
    &["ssh", "webhook", "admin", "api"],
    // Wiring: listeners, signals, reload, shutdown.
    &["daemon"],
    // Admin commands and `dev`, then the binary.
    &["cli"],
    &["main", "lib", "fuzzing"],
];

/// Imports that still point up, kept here until the work that removes them
/// lands. Each must still exist: a fixed one is taken off this list.
const NOT_YET: &[(&str, &str)] = &[];

fn layer_of(module: &str) -> usize {
    LAYERS
        .iter()
        .position(|l| l.contains(&module))
        .unwrap_or_else(|| {
            panic!("module {module} is in no layer: add it to LAYERS and to the README")
        })
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The top-level module a file belongs to (`src/ssh/handler.rs` → `ssh`).
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_str()
        .unwrap();
    first.trim_end_matches(".rs").to_string()
}

/// Every top-level module a file's code names through `crate::`, with the
/// line it does so on. Comments are skipped; `use crate::{a, b::{c, d}}`
/// over any number of lines names `a` and `b`.
fn imports(text: &str) -> Vec<(String, usize, String)> {
    let lines: Vec<&str> = text.lines().collect();
    let code: String = lines
        .iter()
        .map(|l| l.split("//").next().unwrap())
        .collect::<Vec<_>>()
        .join("\n");
    let line_at = |at: usize| code[..at].matches('\n').count();
    let ident = |s: &str| -> String {
        s.trim_start()
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(i) = code[from..].find("crate::") {
        let start = from + i + "crate::".len();
        let n = line_at(start);
        let shown = lines[n].trim().to_string();
        let after = &code[start..];
        if let Some(inner) = after.strip_prefix('{') {
            // Top-level items of the group: split at commas outside braces.
            let (mut depth, mut item_start) = (0, 0);
            for (k, c) in inner.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        let m = ident(&inner[item_start..k]);
                        if !m.is_empty() {
                            out.push((m, n + 1, shown.clone()));
                        }
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        let m = ident(&inner[item_start..k]);
                        if !m.is_empty() {
                            out.push((m, n + 1, shown.clone()));
                        }
                        item_start = k + 1;
                    }
                    _ => {}
                }
            }
        } else {
            out.push((ident(after), n + 1, shown));
        }
        from = start;
    }
    out
}

/// What each module uses: (user, used) → the first file:line saying so.
fn graph(src: &Path) -> BTreeMap<(String, String), String> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files.sort();
    let mut g = BTreeMap::new();
    for f in files {
        let from = module_of(src, &f);
        let text = std::fs::read_to_string(&f).unwrap();
        for (to, line, code) in imports(&text) {
            if to != from && to != "self" {
                g.entry((from.clone(), to))
                    .or_insert_with(|| format!("{}:{line}: {code}", f.display()));
            }
        }
    }
    g
}

/// Everything wrong with `g`, one line each.
fn violations(g: &BTreeMap<(String, String), String>) -> Vec<String> {
    let mut bad = Vec::new();
    for ((from, to), at) in g {
        if NOT_YET.contains(&(from.as_str(), to.as_str())) {
            continue;
        }
        let (lf, lt) = (layer_of(from), layer_of(to));
        if lt > lf {
            bad.push(format!(
                "{at}\n    {from} (layer {lf}) uses {to}, a layer above it ({lt})"
            ));
        } else if g.contains_key(&(to.clone(), from.clone())) && from < to {
            bad.push(format!(
                "{at}\n    {from} and {to} use each other (also {})",
                g[&(to.clone(), from.clone())]
            ));
        }
    }
    bad
}

#[test]
fn every_import_points_down_and_no_two_modules_use_each_other() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let g = graph(&src);
    let bad = violations(&g);
    assert!(
        bad.is_empty(),
        "imports against the layers:\n{}",
        bad.join("\n")
    );
    for (from, to) in NOT_YET {
        assert!(
            g.contains_key(&(from.to_string(), to.to_string())),
            "{from} no longer uses {to}: take it off NOT_YET"
        );
    }
    let modules: BTreeSet<&String> = g.keys().map(|(f, _)| f).collect();
    println!(
        "{} modules, {} uses, all pointing down",
        modules.len(),
        g.len()
    );
}

#[test]
fn the_check_finds_an_import_that_points_up_and_a_circle() {
    // The same check on a copy of the tree with one bad import added.
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut g = graph(&src);
    g.insert(
        ("journal".into(), "ssh".into()),
        "src/journal/mod.rs:1: use crate::ssh::Handler;".into(),
    );
    let bad = violations(&g);
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert!(bad[0].contains("journal (layer 2) uses ssh"), "{bad:?}");
    let mut g = graph(&src);
    g.insert(("drain".into(), "exec".into()), "a".into());
    g.insert(("exec".into(), "drain".into()), "b".into());
    let bad = violations(&g);
    assert!(bad.iter().any(|b| b.contains("use each other")), "{bad:?}");
    let parsed = imports(
        "use crate::{config::Config, journal::{Db, EventKind}};\nlet x = crate::text::clip(a); // crate::ssh\nuse crate::{\n    drain::X,\n    exec,\n};\n",
    );
    let names: Vec<&str> = parsed.iter().map(|(m, _, _)| m.as_str()).collect();
    assert_eq!(names, ["config", "journal", "text", "drain", "exec"]);
}

#[test]
fn unsafe_code_is_only_under_src_exec() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut found = Vec::new();
    for f in files.iter().filter(|f| !f.starts_with(src.join("exec"))) {
        for (n, line) in std::fs::read_to_string(f).unwrap().lines().enumerate() {
            let code = line.split("//").next().unwrap();
            if ["unsafe {", "unsafe fn", "unsafe impl", "allow(unsafe_code)"]
                .iter()
                .any(|u| code.contains(u))
            {
                found.push(format!("{}:{}: {}", f.display(), n + 1, line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "unsafe outside src/exec/:\n{}",
        found.join("\n")
    );
}

/// Every file in `src/` stays readable at one sitting (issue 16): at most
/// 700 lines.
#[test]
fn no_file_in_src_is_over_700_lines() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let n = std::fs::read_to_string(f).unwrap().lines().count();
            (n > 700).then(|| format!("{}: {n} lines", f.display()))
        })
        .collect();
    assert!(long.is_empty(), "{long:#?}");
}
