//! 32-bit gateways, checked on x86_64: the obvious ways code stops building or silently truncates
//! on armv7 (docs/cross-build.md) are found by scanning `src/`, and each known case is listed here
//! with why it is fine. A new one fails the test until someone has looked at it; an entry that
//! no longer occurs fails it too, so the lists only shrink.
//!
//! The full check is `cargo check --target armv7-unknown-linux-gnueabihf` (docs/cross-build.md);
//! this one runs everywhere, in a second.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use crate::harness::repo;

/// The targets plantwatch is built for (docs/cross-build.md).
const SHIPPED_TARGETS: [&str; 4] = [
    "x86_64-unknown-linux-gnu",
    "aarch64-unknown-linux-gnu",
    "armv7-unknown-linux-gnueabihf",
    "i686-unknown-linux-gnu",
];

/// Files below `src/` that use `AtomicU64`/`AtomicI64` today: counters and gauges for metrics,
/// the clock and the sinks. Every shipped target has native 64-bit atomics (armv7 through
/// LDREXD/STREXD), which `atomics_of_64_bits_only_where_every_target_has_them` asks rustc about;
/// a gateway without them (ARMv5, MIPS32) would need `portable-atomic` or a mutex here.
const KNOWN_ATOMIC_64: [&str; 8] = [
    "acquire/mod.rs",
    "clock.rs",
    "runtime/metrics.rs",
    "runtime/supervisor.rs",
    "sink/influx.rs",
    "sink/mqtt/mod.rs",
    "sink/platform_queue.rs",
    "sink/webhook/task.rs",
];

/// `(file below src/, line text)` of `as usize` casts on a line that names a 64-bit integer,
/// where a value above 4 GiB would be cut on a 32-bit target. Each is bounded first. (A cast of
/// a variable whose type is not on the line escapes this scan; the armv7 build is the check.)
const KNOWN_64_TO_USIZE: [(&str, &str); 2] = [
    // `rem_euclid(len)`: in `0..len`, a slot index.
    (
        "detect/trend.rs",
        "index.rem_euclid(self.slots.len() as i64) as usize",
    ),
    // `left.min(chunk.len() as u64)`: at most the 64 KiB chunk.
    (
        "store/space.rs",
        "let n = left.min(chunk.len() as u64) as usize;",
    ),
];

/// Every `.rs` file below `dir`, as (path relative to `src/`, text). Bounded by the tree.
fn sources(dir: &Path, src: &Path, out: &mut Vec<(String, String)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, src, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let rel = path
                .strip_prefix(src)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            out.push((rel, std::fs::read_to_string(&path).unwrap()));
        }
    }
}

/// The code lines of `text`: comment lines left out, so a doc that names a type is no use.
fn code_lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.starts_with("//"))
}

fn all_sources() -> Vec<(String, String)> {
    let src = repo().join("src");
    let mut files = Vec::new();
    sources(&src, &src, &mut files);
    assert!(files.len() > 50, "found the sources: {}", files.len());
    files
}

#[test]
fn atomics_of_64_bits_only_where_listed() {
    let found: BTreeSet<String> = all_sources()
        .into_iter()
        .filter(|(_, text)| {
            code_lines(text).any(|l| l.contains("AtomicU64") || l.contains("AtomicI64"))
        })
        .map(|(file, _)| file)
        .collect();
    let known: BTreeSet<String> = KNOWN_ATOMIC_64.iter().map(|f| f.to_string()).collect();
    let new: Vec<_> = found.difference(&known).collect();
    let gone: Vec<_> = known.difference(&found).collect();
    assert!(
        new.is_empty(),
        "64-bit atomics in {new:?}: fine on every shipped target, but list the file in \
         KNOWN_ATOMIC_64 (or use a 32-bit counter) so it has been looked at"
    );
    assert!(
        gone.is_empty(),
        "{gone:?} no longer use 64-bit atomics: remove them from KNOWN_ATOMIC_64"
    );
}

#[test]
fn atomics_of_64_bits_only_where_every_target_has_them() {
    // rustc knows every target's facts without its standard library installed.
    for target in SHIPPED_TARGETS {
        let out = Command::new("rustc")
            .args(["--print", "cfg", "--target", target])
            .output()
            .unwrap();
        assert!(out.status.success(), "rustc --print cfg --target {target}");
        let cfg = String::from_utf8(out.stdout).unwrap();
        assert!(
            cfg.lines().any(|l| l == r#"target_has_atomic="64""#),
            "{target} has no 64-bit atomics, and {KNOWN_ATOMIC_64:?} use them"
        );
    }
}

#[test]
fn no_unbounded_casts_of_64_bit_integers_to_usize() {
    let mut found = BTreeSet::new();
    for (file, text) in all_sources() {
        for line in code_lines(&text) {
            let wide = ["u64", "i64"].iter().any(|t| line.contains(t));
            if wide && line.contains("as usize") {
                found.insert((file.clone(), line.to_owned()));
            }
        }
    }
    let known: BTreeSet<(String, String)> = KNOWN_64_TO_USIZE
        .iter()
        .map(|(f, l)| (f.to_string(), l.to_string()))
        .collect();
    let new: Vec<_> = found.difference(&known).collect();
    let gone: Vec<_> = known.difference(&found).collect();
    assert!(
        new.is_empty(),
        "`as usize` on a 64-bit value cuts it on armv7: use usize::try_from and name what \
         overflowed, or bound it first and list it in KNOWN_64_TO_USIZE: {new:#?}"
    );
    assert!(
        gone.is_empty(),
        "no longer in the source: remove from KNOWN_64_TO_USIZE: {gone:#?}"
    );
}
