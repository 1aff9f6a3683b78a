//! Replays every committed fuzz corpus (fuzz/corpus/TARGET/) and every
//! input that once crashed a target (fuzz/regressions/TARGET/) through the
//! same functions the fuzzers run (tollgate::fuzzing), on stable Rust: a
//! fix stays fixed, and a change that makes a known input panic fails
//! here. fuzz/README.md says how to fuzz for longer.
use std::path::Path;

#[test]
fn every_corpus_input_replays_without_a_panic() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    for (name, target) in tollgate::fuzzing::TARGETS {
        let mut n = 0;
        for dir in ["corpus", "regressions"] {
            let Ok(entries) = std::fs::read_dir(root.join(dir).join(name)) else {
                continue;
            };
            for e in entries.flatten() {
                let data = std::fs::read(e.path()).unwrap();
                target(&data);
                n += 1;
            }
        }
        assert!(n >= 10, "fuzz/corpus/{name}: only {n} inputs");
        eprintln!("{name}: {n} inputs replayed");
    }
}
