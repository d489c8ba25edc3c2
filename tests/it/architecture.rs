//! The layering, checked: the pure stages (`detect`, `process`, `decode`, `encode`, `platform`,
//! `sparkplug`, and the `pipeline` step that drives them) import neither the I/O shell
//! (`store`, `sink`, `runtime`) nor the config loader, and do no I/O of their own. A stage owns
//! the types of its own spec; `config` assembles them.
//!
//! Above the pure stages the rule is narrower: no module below `runtime` and `cli` (the shell
//! that assembles a configuration and runs it) imports `config` at all. Each stage and sink
//! takes the spec it owns, and `config` builds those specs from the file.
//!
//! The known imports that still break a rule are listed (`KNOWN`, `KNOWN_CONFIG`), each to be
//! removed as its module takes over its types. A test fails on a new one, and on an entry
//! that no longer occurs, so the lists only shrink.

use std::collections::BTreeSet;
use std::path::Path;

use crate::harness::repo;

/// The pure stages, as paths below `src/`.
const PURE: [&str; 7] = [
    "detect",
    "process",
    "decode",
    "encode",
    "platform",
    "sparkplug",
    "pipeline.rs",
];

/// What a pure stage must not name: the shell's modules, the I/O crates, the clock (time is an
/// input, so replay and tests run the same code) and task spawning.
const FORBIDDEN: [&str; 16] = [
    "crate::config",
    "crate::store",
    "crate::sink",
    "crate::runtime",
    "tokio::net",
    "tokio::fs",
    "tokio::task",
    "rusqlite",
    "rumqttc",
    "reqwest",
    "Instant::now",
    "SystemTime::now",
    "Utc::now",
    "Local::now",
    "tokio::spawn",
    "thread::spawn",
];

/// `(file below src/, forbidden path)` pairs that exist today; empty now that every stage
/// takes its spec, and kept so the next exception is named here rather than slipped in.
const KNOWN: [(&str, &str); 0] = [];

/// The modules that may import `config`: itself, and the shell that loads a configuration and
/// runs it. Paths below `src/`.
const ASSEMBLERS: [&str; 3] = ["config", "cli", "runtime"];

/// Files below `src/` outside [`ASSEMBLERS`] that still import `config`: none now; kept so a
/// new importer fails with the same message as the other rules.
const KNOWN_CONFIG: [&str; 0] = [];

/// The code of a file without its test module and comments: tests may build a config to get
/// their input, or time themselves.
fn production_code(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    // A top-level `#[cfg(test)]` whose item, after any further attributes, is a module.
    let test_module = (0..lines.len()).find(|&i| {
        lines[i] == "#[cfg(test)]"
            && lines[i + 1..]
                .iter()
                // Skip attributes, written on one line or several.
                .find(|l| !(l.starts_with('#') || l.starts_with(' ') || l.starts_with(')')))
                .is_some_and(|l| l.starts_with("mod "))
    });
    let code = lines[..test_module.unwrap_or(lines.len())].join("\n");
    code.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `.rs` file at or below `path`.
fn rust_files(path: &Path, out: &mut Vec<std::path::PathBuf>) {
    if path.is_file() {
        out.push(path.to_path_buf());
        return;
    }
    for entry in std::fs::read_dir(path).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// Whether `code` names `forbidden`, written out or through a grouped `use crate::{…}`.
fn names(code: &str, forbidden: &str) -> bool {
    if code.contains(forbidden) {
        return true;
    }
    let Some(module) = forbidden.strip_prefix("crate::") else {
        return false;
    };
    code.match_indices("use crate::{").any(|(i, _)| {
        let group = &code[i..];
        let group = &group[..group.find("};").unwrap_or(group.len())];
        group
            .split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .any(|w| w == module)
    })
}

#[test]
fn pure_stages_import_no_config_store_sink_runtime_or_io() {
    let src = repo().join("src");
    let mut found = BTreeSet::new();
    for stage in PURE {
        let mut files = Vec::new();
        rust_files(&src.join(stage), &mut files);
        assert!(!files.is_empty(), "no files for {stage}");
        for file in files {
            let code = production_code(&std::fs::read_to_string(&file).unwrap());
            let rel = file
                .strip_prefix(&src)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            for forbidden in FORBIDDEN {
                if names(&code, forbidden) {
                    found.insert((rel.clone(), forbidden.to_owned()));
                }
            }
        }
    }
    let known: BTreeSet<(String, String)> = KNOWN
        .iter()
        .map(|(f, m)| ((*f).to_owned(), (*m).to_owned()))
        .collect();
    let new: Vec<_> = found.difference(&known).collect();
    let gone: Vec<_> = known.difference(&found).collect();
    assert!(
        new.is_empty(),
        "a pure stage imports the shell or does I/O: {new:?}; take the type into the stage \
         (config assembles it) or move the I/O to store/ or runtime/"
    );
    assert!(
        gone.is_empty(),
        "fixed, well done: remove {gone:?} from KNOWN in tests/it/architecture.rs"
    );
}

/// The path of `file` below `src`, with `/` separators.
fn below(src: &Path, file: &Path) -> String {
    file.strip_prefix(src)
        .unwrap()
        .to_string_lossy()
        .replace('\\', "/")
}

/// Whether `rel` (a path below `src/`) lies in one of [`ASSEMBLERS`].
fn assembles(rel: &str) -> bool {
    ASSEMBLERS
        .iter()
        .any(|m| rel == format!("{m}.rs") || rel.starts_with(&format!("{m}/")))
}

/// The files below `src/` outside [`ASSEMBLERS`] whose production code names `config`.
fn config_importers(src: &Path) -> BTreeSet<String> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files
        .iter()
        .map(|f| (below(src, f), f))
        .filter(|(rel, _)| !assembles(rel))
        .filter(|(_, f)| {
            names(
                &production_code(&std::fs::read_to_string(f).unwrap()),
                "crate::config",
            )
        })
        .map(|(rel, _)| rel)
        .collect()
}

#[test]
fn no_module_below_runtime_and_cli_imports_config() {
    let src = repo().join("src");
    let found = config_importers(&src);
    let known: BTreeSet<String> = KNOWN_CONFIG.iter().map(|f| (*f).to_owned()).collect();
    let new: Vec<_> = found.difference(&known).collect();
    let gone: Vec<_> = known.difference(&found).collect();
    assert!(
        new.is_empty(),
        "these import `config` from below runtime/cli: {new:?}; give the module a spec type \
         of its own and let config assemble it (see acquire::spec, export::spec)"
    );
    assert!(
        gone.is_empty(),
        "fixed, well done: remove {gone:?} from KNOWN_CONFIG in tests/it/architecture.rs"
    );
}

#[test]
fn the_config_rule_exempts_only_the_assemblers() {
    assert!(assembles("config/plan.rs"));
    assert!(assembles("cli/mod.rs"));
    assert!(assembles("runtime/topology.rs"));
    assert!(!assembles("sink/influx.rs"));
    assert!(
        !assembles("configure.rs"),
        "a prefix of a name is not the module"
    );
    assert!(!assembles("acquire/config.rs"));
}

#[test]
fn the_scanner_sees_grouped_imports_and_ignores_tests_and_comments() {
    assert!(names(
        "use crate::{config::plan::Plan, model::Name};",
        "crate::config"
    ));
    assert!(!names("use crate::{model::Name};", "crate::config"));
    let code = production_code(
        "// crate::store in a comment\nfn f() {}\n#[cfg(test)]\n#[allow(unused)]\nmod tests {\n    use crate::store;\n}\n",
    );
    assert!(!names(&code, "crate::store"), "{code}");
    let code = production_code("#[cfg(test)]\nfn helper() {}\nfn f() { Instant::now(); }\n");
    assert!(
        names(&code, "Instant::now"),
        "a cfg(test) item that is not a module: {code}"
    );
}
