//! Fleet drop-ins: `conf.d/*.toml` beside the main file, merged over it in lexical order, and
//! the record of where every key came from (`plantwatch check --explain KEY`).
//!
//! Merge rules, so that one fleet-wide file plus a small per-gateway file describes a box:
//! - tables merge key by key;
//! - an array of tables (`[[devices]]`, `[[rules]]`…) merges by `name`: an entry whose `name`
//!   is already there overrides and extends that entry, key by key; a new name is appended;
//! - anything else (a value, a plain array such as `exclude_points`) replaces what was there.
//!
//! Invariant: [`Origins`] is keyed exactly as issues are (`devices[2].points.ua.scale`), so an
//! issue can name the file or environment variable that set its key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use config::ValueKind;

use super::issue::ConfigIssue;
use super::raw::RawTable;

/// The drop-in directory of the config file at `main`: `conf.d/` beside it.
pub fn drop_in_dir(main: &Path) -> PathBuf {
    main.parent().unwrap_or(Path::new("")).join("conf.d")
}

/// The drop-ins of the config file at `main`, in the order they apply (lexical by file name).
/// A missing `conf.d/` means none.
///
/// # Errors
/// The directory exists but cannot be listed: the issue names it.
pub fn drop_ins(main: &Path) -> Result<Vec<PathBuf>, ConfigIssue> {
    let dir = drop_in_dir(main);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => {
            return Err(ConfigIssue::new(
                dir.display().to_string(),
                format!("cannot list the drop-in directory: {err}"),
            ));
        }
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|err| {
            ConfigIssue::new(
                dir.display().to_string(),
                format!("cannot list the drop-in directory: {err}"),
            )
        })?;
        let path = entry.path();
        // Editors' backups (`x.toml~`) and disabled files (`x.toml.off`) do not end in `.toml`.
        if path.extension().is_some_and(|e| e == "toml") && !path.is_dir() {
            files.push(path);
        }
    }
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(files)
}

/// One setting of a key: who set it, and to what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// The file's path, or the environment variable's name.
    pub source: String,
    /// The value as written (tables and arrays summarised).
    pub value: String,
}

/// Where each key of a merged config was set, oldest setting first.
#[derive(Debug, Clone, Default)]
pub struct Origins {
    settings: BTreeMap<String, Vec<Setting>>,
}

impl Origins {
    /// Records `value`, and everything under it, as set at `key` by `source`.
    pub(super) fn record_tree(&mut self, key: &str, value: &config::Value, source: &str) {
        self.settings
            .entry(key.to_owned())
            .or_default()
            .push(Setting {
                source: source.to_owned(),
                value: render(value),
            });
        match &value.kind {
            ValueKind::Table(t) => {
                for (k, v) in t {
                    self.record_tree(&join(key, k), v, source);
                }
            }
            ValueKind::Array(a) => {
                for (i, v) in a.iter().enumerate() {
                    self.record_tree(&format!("{key}[{i}]"), v, source);
                }
            }
            _ => {}
        }
    }

    /// Records every key of `table` as set by `source`.
    pub(super) fn record_table(&mut self, table: &RawTable, source: &str) {
        for (k, v) in table {
            self.record_tree(k, v, source);
        }
    }

    /// Who set `key` last, or, when nobody set it (a missing key), who set the nearest
    /// enclosing table.
    pub fn source_of(&self, key: &str) -> Option<&str> {
        let mut at = key;
        loop {
            if let Some(s) = self.settings.get(at).and_then(|s| s.last()) {
                return Some(&s.source);
            }
            at = parent(at)?;
        }
    }

    /// The settings of `key` and of every key under it, in key order.
    pub fn under<'a>(&'a self, key: &'a str) -> impl Iterator<Item = (&'a str, &'a [Setting])> {
        self.settings
            .range::<str, _>((std::ops::Bound::Included(key), std::ops::Bound::Unbounded))
            .take_while(move |(k, _)| k.starts_with(key))
            .filter(move |(k, _)| {
                k.len() == key.len() || matches!(k.as_bytes()[key.len()], b'.' | b'[')
            })
            .map(|(k, v)| (k.as_str(), v.as_slice()))
    }
}

/// `key` less its last segment: `devices[2]` for `devices[2].host`, `devices` for `devices[2]`.
fn parent(key: &str) -> Option<&str> {
    key.rfind(['.', '[']).map(|i| &key[..i])
}

/// Joins a table key and a field.
fn join(key: &str, field: &str) -> String {
    if key.is_empty() {
        field.to_owned()
    } else {
        format!("{key}.{field}")
    }
}

/// A value as an operator would write it; tables and arrays of tables summarised.
fn render(value: &config::Value) -> String {
    match &value.kind {
        ValueKind::String(s) => format!("{s:?}"),
        ValueKind::Table(t) => format!("(table of {} keys)", t.len()),
        ValueKind::Array(a) if a.iter().any(|v| matches!(v.kind, ValueKind::Table(_))) => {
            format!("(array of {} tables)", a.len())
        }
        ValueKind::Array(a) => {
            let items: Vec<String> = a.iter().map(render).collect();
            format!("[{}]", items.join(", "))
        }
        other => other.to_string(),
    }
}

/// The `name` of an array element, if it is a table with a string `name`.
fn element_name(value: &config::Value) -> Option<&str> {
    match &value.kind {
        ValueKind::Table(t) => match &t.get("name")?.kind {
            ValueKind::String(s) => Some(s),
            _ => None,
        },
        _ => None,
    }
}

/// Merges `top`, set by `source`, over `base` at `prefix` (see the module doc for the rules).
pub(super) fn merge(
    base: &mut RawTable,
    top: RawTable,
    source: &str,
    prefix: &str,
    origins: &mut Origins,
) {
    for (k, v) in top {
        let key = join(prefix, &k);
        let Some(existing) = base.get_mut(&k) else {
            origins.record_tree(&key, &v, source);
            base.insert(k, v);
            continue;
        };
        match (&mut existing.kind, v.kind) {
            (ValueKind::Table(b), ValueKind::Table(t)) => merge(b, t, source, &key, origins),
            (ValueKind::Array(b), ValueKind::Array(t))
                if !t.is_empty() && t.iter().all(|e| matches!(e.kind, ValueKind::Table(_))) =>
            {
                merge_named(b, t, source, &key, origins);
            }
            (_, kind) => {
                let v = config::Value::new(None, kind);
                origins.record_tree(&key, &v, source);
                *existing = v;
            }
        }
    }
}

/// Merges an array of tables by `name`: a known name extends its entry, a new one appends.
fn merge_named(
    base: &mut Vec<config::Value>,
    top: Vec<config::Value>,
    source: &str,
    key: &str,
    origins: &mut Origins,
) {
    for element in top {
        let at = element_name(&element)
            .and_then(|n| base.iter().position(|b| element_name(b) == Some(n)));
        match (at, element.kind) {
            (Some(i), ValueKind::Table(t)) => {
                if let ValueKind::Table(b) = &mut base[i].kind {
                    merge(b, t, source, &format!("{key}[{i}]"), origins);
                }
            }
            (_, kind) => {
                let v = config::Value::new(None, kind);
                origins.record_tree(&format!("{key}[{}]", base.len()), &v, source);
                base.push(v);
            }
        }
    }
}

/// Turns `devices.meter-1.host` (elements of arrays by `name` or index) into the key form of
/// issues, `devices[0].host`, by walking the merged `table`.
///
/// # Errors
/// Why the key names nothing in the table (no such entry), for the operator.
pub fn index_key(table: &RawTable, key: &str) -> Result<String, String> {
    // `devices[0].host` is accepted too: `[0]` becomes the segment `0`.
    let normalised = key.replace('[', ".").replace(']', "");
    let segs: Vec<&str> = normalised.split('.').filter(|s| !s.is_empty()).collect();
    let mut out = String::new();
    let mut here: Option<&config::Value> = None;
    for (n, seg) in segs.iter().copied().enumerate() {
        match here.map(|v| &v.kind) {
            None if n == 0 => {
                here = table.get(seg);
                out = seg.to_owned();
            }
            Some(ValueKind::Table(t)) => {
                here = t.get(seg);
                out = join(&out, seg);
            }
            Some(ValueKind::Array(a)) => {
                let i = seg
                    .parse::<usize>()
                    .ok()
                    .filter(|i| *i < a.len())
                    .or_else(|| a.iter().position(|e| element_name(e) == Some(seg)))
                    .ok_or_else(|| {
                        let names: Vec<&str> = a.iter().filter_map(element_name).collect();
                        format!(
                            "no entry named `{seg}` in `{out}`; its entries: {}",
                            names.join(", ")
                        )
                    })?;
                here = a.get(i);
                out = format!("{out}[{i}]");
            }
            _ => return Err(format!("`{out}` is a value, not a table")),
        }
        if here.is_none() {
            // Not set anywhere: keep the rest as written so the caller can say "default".
            for rest in &segs[n + 1..] {
                out = join(&out, rest);
            }
            return Ok(out);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> RawTable {
        let mut issues = super::super::Issues::default();
        super::super::parse_toml_source("t.toml", text, &mut issues).unwrap()
    }

    #[test]
    fn arrays_of_tables_merge_by_name_and_new_names_append() {
        let mut base = table(
            "[[devices]]\nname = \"a\"\nhost = \"h1\"\nunit_id = 1\n\
             [[devices]]\nname = \"b\"\nhost = \"h2\"\n",
        );
        let mut origins = Origins::default();
        origins.record_table(&base, "main.toml");
        let top = table(
            "[[devices]]\nname = \"b\"\nhost = \"h9\"\n[[devices]]\nname = \"c\"\nhost = \"h3\"\n",
        );
        merge(&mut base, top, "conf.d/20.toml", "", &mut origins);
        let devices = base["devices"].clone().into_array().unwrap();
        assert_eq!(devices.len(), 3);
        let b = devices[1].clone().into_table().unwrap();
        assert_eq!(b["host"].clone().into_string().unwrap(), "h9");
        assert_eq!(origins.source_of("devices[1].host"), Some("conf.d/20.toml"));
        assert_eq!(origins.source_of("devices[0].unit_id"), Some("main.toml"));
        assert_eq!(origins.source_of("devices[2].port"), Some("conf.d/20.toml"));
        assert_eq!(
            index_key(&base, "devices.b.host").unwrap(),
            "devices[1].host"
        );
        assert_eq!(
            index_key(&base, "devices[2].host").unwrap(),
            "devices[2].host"
        );
        assert!(index_key(&base, "devices.x.host").is_err());
    }

    #[test]
    fn a_plain_array_or_value_is_replaced_not_merged() {
        let mut base = table("[gateway]\nsite = \"a\"\ntags = [\"x\", \"y\"]\n");
        let mut origins = Origins::default();
        origins.record_table(&base, "main.toml");
        merge(
            &mut base,
            table("[gateway]\ntags = [\"z\"]\n"),
            "d.toml",
            "",
            &mut origins,
        );
        let gateway = base["gateway"].clone().into_table().unwrap();
        assert_eq!(gateway["tags"].clone().into_array().unwrap().len(), 1);
        let settings: Vec<_> = origins.under("gateway.tags").collect();
        assert_eq!(
            settings[0].1.len(),
            2,
            "main, then the drop-in: {settings:?}"
        );
    }
}
