//! Reading a config: the main file and its drop-ins ([`super::dropin`]), their TOML syntax,
//! the `PLANTWATCH__…` environment overlay, and the deserialization of each element with every
//! problem recorded under its key.
//!
//! Types are strict: what the `config` crate would coerce (`"502"` or `true` for a number,
//! `1000.7` for an integer) is refused at its key; only environment variables, which are text
//! by nature, are read as their key's type.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use super::describe;
use super::dropin::{self, Origins};
use super::issue::{ConfigErrors, ConfigIssue, Issues};
use super::profile::Profiles;
use super::raw::RawTable;
use super::{Environment, Plan, resolve};

/// Where environment overrides come from.
#[derive(Debug, Clone, Default)]
pub enum EnvOverrides {
    /// The process environment (`PLANTWATCH__…`).
    #[default]
    Process,
    /// A fixed map, for tests.
    Map(HashMap<String, String>),
    /// None.
    Off,
}

/// The prefix of environment overrides: `PLANTWATCH__MQTT__PORT=8883` sets `mqtt.port`.
const ENV_PREFIX: &str = "PLANTWATCH__";

/// Loads the config file at `path`, merges its drop-ins (`conf.d/*.toml` beside it, in lexical
/// order) and the environment overrides over it, and resolves the result.
///
/// # Errors
/// Every problem found, each naming its key, under the file's path; a problem whose key was
/// set by a drop-in or an environment variable names that file or variable.
pub fn load_file(
    path: &Path,
    env: &EnvOverrides,
    extra_profiles: Option<&Path>,
) -> Result<Plan, ConfigErrors> {
    let source_name = path.display().to_string();
    let layers = read_layers(path, env)?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    finish(&source_name, layers, &base, extra_profiles)
}

/// Loads and resolves config text (no drop-ins); relative paths in it are taken from
/// `base_dir`.
///
/// # Errors
/// Every problem found, each naming its key.
pub fn load_str(
    source_name: &str,
    text: &str,
    env: &EnvOverrides,
    base_dir: &Path,
    extra_profiles: Option<&Path>,
) -> Result<Plan, ConfigErrors> {
    let fail = |issues: Vec<ConfigIssue>| ConfigErrors {
        source_name: source_name.to_owned(),
        issues,
    };
    let mut issues = Issues::default();
    let mut origins = Origins::default();
    let mut table =
        parse_toml_source(source_name, text, &mut issues).ok_or_else(|| fail(issues.0))?;
    origins.record_table(&table, source_name);
    let mut issues = Issues::default();
    apply_env(&mut table, env, &mut origins, &mut issues);
    if !issues.is_empty() {
        return Err(fail(issues.0));
    }
    finish(
        source_name,
        Layers { table, origins },
        base_dir,
        extra_profiles,
    )
}

/// A config's files and environment overrides merged into one table, with where each key
/// came from.
#[derive(Debug, Clone)]
pub struct Layers {
    /// The merged table, as `resolve` takes it.
    pub table: RawTable,
    /// Who set each key.
    pub origins: Origins,
}

impl Layers {
    /// `issue`, naming the drop-in file or environment variable that set its key; `main` is
    /// the main file's path as issues show it.
    pub fn attribute(&self, issue: ConfigIssue, main: &str) -> ConfigIssue {
        with_origin(issue, &self.origins, main)
    }
}

/// Reads the config file at `path`, its drop-ins and the environment overrides, without
/// resolving them: what `check --explain` shows.
///
/// # Errors
/// A file that cannot be read or is not valid TOML (every such file at once, each issue keyed
/// by the file's path), or an environment variable that names no key.
pub fn read_layers(path: &Path, env: &EnvOverrides) -> Result<Layers, ConfigErrors> {
    let source_name = path.display().to_string();
    let fail = |issues: Vec<ConfigIssue>| ConfigErrors {
        source_name: source_name.clone(),
        issues,
    };
    let text = std::fs::read_to_string(path).map_err(|err| {
        fail(vec![ConfigIssue::new(
            source_name.clone(),
            format!("cannot read config file: {err}"),
        )])
    })?;
    let mut issues = Issues::default();
    let main = parse_toml_source(&source_name, &text, &mut issues);
    let mut drop_ins = Vec::new();
    match dropin::drop_ins(path) {
        Ok(files) => {
            for file in files {
                let origin = file.display().to_string();
                match std::fs::read_to_string(&file) {
                    Ok(text) => {
                        if let Some(t) = parse_toml_source(&origin, &text, &mut issues) {
                            drop_ins.push((origin, t));
                        }
                    }
                    Err(err) => issues.push(origin, format!("cannot read drop-in: {err}")),
                }
            }
        }
        Err(issue) => issues.0.push(issue),
    }
    let Some(mut table) = main.filter(|_| issues.is_empty()) else {
        return Err(fail(issues.0));
    };
    let mut origins = Origins::default();
    origins.record_table(&table, &source_name);
    for (origin, top) in drop_ins {
        dropin::merge(&mut table, top, &origin, "", &mut origins);
    }
    apply_env(&mut table, env, &mut origins, &mut issues);
    if issues.is_empty() {
        Ok(Layers { table, origins })
    } else {
        Err(fail(issues.0))
    }
}

/// Adds the profiles and resolves merged layers; issues name the drop-in or variable that set
/// their key.
fn finish(
    source_name: &str,
    layers: Layers,
    base_dir: &Path,
    extra_profiles: Option<&Path>,
) -> Result<Plan, ConfigErrors> {
    let Layers { table, origins } = layers;
    let fail = |issues: Vec<ConfigIssue>| ConfigErrors {
        source_name: source_name.to_owned(),
        issues: issues
            .into_iter()
            .map(|i| with_origin(i, &origins, source_name))
            .collect(),
    };
    let mut profiles = Profiles::built_in().map_err(fail)?;
    let dir_in_file = table
        .get("gateway")
        .and_then(|g| g.clone().into_table().ok())
        .and_then(|g| g.get("profiles_dir").cloned())
        .and_then(|d| d.into_string().ok())
        .map(|d| base_dir.join(d));
    if let Some(dir) = &dir_in_file {
        // A directory that cannot be read is the fault of `gateway.profiles_dir`.
        profiles.add_dir(dir).map_err(|issues| {
            let shown = dir.display().to_string();
            fail(
                issues
                    .into_iter()
                    .map(|i| {
                        if i.key == shown {
                            ConfigIssue::new(
                                "gateway.profiles_dir",
                                format!(
                                    "{} (`{shown}`); give an existing directory, relative to \
                                     the config file's directory",
                                    i.message
                                ),
                            )
                        } else {
                            i
                        }
                    })
                    .collect(),
            )
        })?;
    }
    if let Some(dir) = extra_profiles {
        profiles.add_dir(dir).map_err(fail)?;
    }
    // The one environment input of resolution besides the `PLANTWATCH__` overrides, read
    // here, where the files are read, so that `resolve` stays pure.
    resolve(table, &profiles, &Environment::from_process()).map_err(fail)
}

/// `issue`, naming the drop-in file or environment variable that set its key (the main file
/// goes without saying).
fn with_origin(mut issue: ConfigIssue, origins: &Origins, main: &str) -> ConfigIssue {
    match origins.source_of(&issue.key) {
        Some(s) if s.starts_with(ENV_PREFIX) => {
            issue.message = format!("{} (set by environment variable {s})", issue.message);
        }
        Some(s) if s != main => {
            issue.message = format!("{} (set in drop-in {s})", issue.message);
        }
        _ => {}
    }
    issue
}

/// Overlays `PLANTWATCH__SECTION__KEY` variables on `table`. An array element is named by its
/// `name` or index (`PLANTWATCH__DEVICES__METER-1__HOST`, `PLANTWATCH__MQTT__0__PORT`).
///
/// Values stay text, tagged with their variable, and are read as the key's type when
/// deserialized: an environment has no other way to write a number.
fn apply_env(table: &mut RawTable, env: &EnvOverrides, origins: &mut Origins, issues: &mut Issues) {
    let mut vars: Vec<(String, String)> = match env {
        EnvOverrides::Off => return,
        EnvOverrides::Map(map) => map
            .iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        EnvOverrides::Process => std::env::vars_os()
            .filter_map(|(k, v)| {
                let k = k.into_string().ok().filter(|k| k.starts_with(ENV_PREFIX))?;
                match v.into_string() {
                    Ok(v) => Some((k, v)),
                    Err(_) => {
                        issues.push(k, "the value is not valid UTF-8");
                        None
                    }
                }
            })
            .collect(),
    };
    vars.sort();
    for (var, value) in vars {
        let path = var[ENV_PREFIX.len()..].to_lowercase();
        let segs: Vec<&str> = path.split("__").collect();
        if segs.iter().any(|s| s.is_empty()) {
            issues.push(
                var,
                "names no key: use PLANTWATCH__SECTION__KEY, segments separated by `__`",
            );
            continue;
        }
        let leaf = config::Value::new(Some(&var), config::ValueKind::String(value));
        match set_path(table, &segs, "", leaf.clone()) {
            Ok(key) => origins.record_tree(&key, &leaf, &var),
            Err(why) => issues.push(var, why),
        }
    }
}

/// Sets `leaf` at `segs` under `table` (creating tables on the way); the key set, in issue
/// form, or why the path names no key.
fn set_path(
    table: &mut RawTable,
    segs: &[&str],
    key: &str,
    leaf: config::Value,
) -> Result<String, String> {
    use config::ValueKind;
    let (seg, rest) = segs.split_first().ok_or("names no key")?;
    let key = if key.is_empty() {
        (*seg).to_owned()
    } else {
        format!("{key}.{seg}")
    };
    if rest.is_empty() {
        table.insert((*seg).to_owned(), leaf);
        return Ok(key);
    }
    let node = table
        .entry((*seg).to_owned())
        .or_insert_with(|| config::Value::new(None, ValueKind::Table(RawTable::new())));
    match &mut node.kind {
        ValueKind::Table(t) => set_path(t, rest, &key, leaf),
        ValueKind::Array(a) => {
            let (element, rest) = rest.split_first().ok_or("names no key")?;
            let i = element
                .parse::<usize>()
                .ok()
                .filter(|i| *i < a.len())
                .or_else(|| {
                    a.iter()
                        .position(|e| name_in(e).as_deref() == Some(*element))
                })
                .ok_or_else(|| {
                    let names: Vec<String> = a.iter().filter_map(name_in).collect();
                    format!(
                        "`{key}` has no entry named `{element}`; its entries: {}",
                        names.join(", ")
                    )
                })?;
            let key = format!("{key}[{i}]");
            match &mut a[i].kind {
                ValueKind::Table(t) if !rest.is_empty() => set_path(t, rest, &key, leaf),
                _ => Err(format!("give a key inside `{key}`, e.g. {element}__NAME")),
            }
        }
        _ => Err(format!("`{key}` is a value, not a section")),
    }
}

/// Parses TOML text into a table, recording a syntax error with its line under `origin`.
pub(crate) fn parse_toml_source(origin: &str, text: &str, issues: &mut Issues) -> Option<RawTable> {
    if let Err(err) = text.parse::<toml::Table>() {
        issues.push(origin, toml_error(&err, text));
        return None;
    }
    match config::Config::builder()
        .add_source(config::File::from_str(text, config::FileFormat::Toml))
        .build()
        .and_then(config::Config::try_deserialize::<RawTable>)
    {
        Ok(t) => Some(t),
        Err(err) => {
            issues.push(origin, err.to_string());
            None
        }
    }
}

/// A TOML syntax error on one line: where, what, and the offending line.
fn toml_error(err: &toml::de::Error, text: &str) -> String {
    let what = err.message().trim_end();
    let Some(span) = err.span() else {
        return format!("not valid TOML: {what}");
    };
    let start = span.start.min(text.len());
    let before = text.get(..start).unwrap_or("");
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    let source_line = text.lines().nth(line - 1).unwrap_or("").trim();
    format!("not valid TOML at line {line}, column {column}: {what} (in `{source_line}`)")
}

/// Deserializes `value` as `T`, recording every problem under `key` (refined to the field at
/// fault where the error names one).
///
/// Unknown keys are recorded and dropped, and deserialization tried again, so that one typo
/// does not hide the element's other problems. The result is `Some` only when what is left
/// deserializes; the caller must still treat the config as failed if issues were recorded.
pub(crate) fn deserialize_at<T: DeserializeOwned>(
    value: config::Value,
    key: &str,
    issues: &mut Issues,
) -> Option<T> {
    let mut table = value.clone().into_table().ok();
    let mut value = value;
    let mut suggested: Vec<String> = Vec::new();
    // Each round drops one key, so the table's length bounds the rounds.
    let rounds = table.as_ref().map_or(1, |t| t.len() + 1);
    for _ in 0..rounds {
        let err = match value.clone().try_deserialize::<T>() {
            // `config` coerced what it could ("502" and `true` to numbers, 1000.7 to 1001):
            // the strict pass refuses what it had to coerce.
            Ok(v) => match strict_mismatch::<T>(&value) {
                None => return Some(v),
                Some((path, message)) => {
                    issues.push(format!("{key}{path}"), message);
                    let field = path.strip_prefix('.')?;
                    let field = field.split(['.', '[']).next().unwrap_or(field).to_owned();
                    let t = table.as_mut()?;
                    t.shift_remove(&field)?;
                    suggested.push(field);
                    value = config::Value::new(None, t.clone());
                    continue;
                }
            },
            Err(err) => err,
        };
        let d = describe::describe(&err, key);
        // "unknown `hots`, did you mean `host`?" already says that `host` is missing.
        if d.missing.as_ref().is_some_and(|m| suggested.contains(m)) {
            return None;
        }
        // An unknown key, or a known key with a bad value (a wrong type, an enum value that is
        // not one of its variants): either way the key is dropped and the rest tried again.
        let field = d.unknown.clone().or_else(|| {
            let rest = d.key.strip_prefix(key)?.strip_prefix('.')?;
            Some(rest.split(['.', '[']).next().unwrap_or(rest).to_owned())
        });
        let bad_value = d.unknown.is_none();
        issues.push(d.key, d.message);
        let t = table.as_mut()?;
        let field = field.filter(|f| t.shift_remove(f).is_some())?;
        // A required key dropped for its bad value is then "missing": already reported.
        if bad_value {
            suggested.push(field);
        }
        suggested.extend(d.suggestion);
        value = config::Value::new(None, t.clone());
    }
    None
}

/// The first value in `value` whose type `T` does not take as written, with its path under
/// `value` (`.port`, `.tls.ca_file`) and a message for the person editing the file; `None`
/// when every value has the right type.
///
/// `config` reads `"502"` and `true` as numbers and rounds 1000.7 to 1001; plant engineers'
/// typos must not be guessed at. So `value` is deserialized a second time from TOML values,
/// which serde checks strictly. Environment variables are text by nature: one may stand for a
/// number or a boolean, and only a text key given a number-like variable is let through.
fn strict_mismatch<T: DeserializeOwned>(value: &config::Value) -> Option<(String, String)> {
    let err = serde_path_to_error::deserialize::<_, T>(to_toml(value)?).err()?;
    let message = err.inner().message();
    let (found, expected) = message
        .trim_end()
        .strip_prefix("invalid type: ")?
        .split_once(", expected ")?;
    let mut path = String::new();
    let mut leaf = Some(value);
    for seg in err.path().iter() {
        match seg {
            serde_path_to_error::Segment::Map { key } => {
                path.push('.');
                path.push_str(key);
                leaf = leaf.and_then(|v| match &v.kind {
                    config::ValueKind::Table(t) => t.get(key),
                    _ => None,
                });
            }
            serde_path_to_error::Segment::Seq { index } => {
                path.push_str(&format!("[{index}]"));
                leaf = leaf.and_then(|v| match &v.kind {
                    config::ValueKind::Array(a) => a.get(*index),
                    _ => None,
                });
            }
            serde_path_to_error::Segment::Enum { .. } | serde_path_to_error::Segment::Unknown => {}
        }
    }
    let from_env = leaf
        .and_then(config::Value::origin)
        .is_some_and(|o| o.starts_with(ENV_PREFIX));
    if from_env && expected.contains("string") {
        return None;
    }
    Some((path, wrong_type(found, expected)))
}

/// What serde calls `invalid type: {found}, expected {expected}`, said for the file's author.
fn wrong_type(found: &str, expected: &str) -> String {
    // serde writes `string "502"`, `boolean `true``, `floating point `1000.7``.
    let written = found.strip_prefix("string ").unwrap_or_else(|| {
        found
            .rsplit_once(' ')
            .map_or(found, |(_, w)| w)
            .trim_matches('`')
    });
    let is_text = found.starts_with("string ");
    let integer = ["u8", "u16", "u32", "u64", "i8", "i16", "i32", "i64"].contains(&expected);
    let float = matches!(expected, "f32" | "f64");
    if integer && found.starts_with("floating point") {
        format!("{written} is not a whole number; write an integer (it is not rounded)")
    } else if (integer || float) && is_text {
        format!("{written} is text, not a number; write the number without quotes")
    } else if integer || float {
        format!("`{written}` is not a number; write a number")
    } else if expected == "a boolean" {
        format!("{written} is not a boolean; write true or false, without quotes")
    } else if expected.contains("string") && !is_text {
        format!("`{written}` is not text; write it in quotes")
    } else {
        format!("wrong type: {found} where {expected} was expected")
    }
}

/// `value` as TOML, its types as written; environment variables, which are text, typed as the
/// `config` crate would type them. `None` for what TOML cannot hold (nil, huge integers).
fn to_toml(value: &config::Value) -> Option<toml::Value> {
    use config::ValueKind;
    Some(match &value.kind {
        ValueKind::Nil => return None,
        ValueKind::Boolean(b) => toml::Value::Boolean(*b),
        ValueKind::I64(i) => toml::Value::Integer(*i),
        ValueKind::I128(i) => toml::Value::Integer(i64::try_from(*i).ok()?),
        ValueKind::U64(i) => toml::Value::Integer(i64::try_from(*i).ok()?),
        ValueKind::U128(i) => toml::Value::Integer(i64::try_from(*i).ok()?),
        ValueKind::Float(f) => toml::Value::Float(*f),
        ValueKind::String(s) if value.origin().is_some_and(|o| o.starts_with(ENV_PREFIX)) => {
            if let Ok(b) = s.to_lowercase().parse::<bool>() {
                toml::Value::Boolean(b)
            } else if let Ok(i) = s.parse::<i64>() {
                toml::Value::Integer(i)
            } else if let Ok(f) = s.parse::<f64>() {
                toml::Value::Float(f)
            } else {
                toml::Value::String(s.clone())
            }
        }
        ValueKind::String(s) => toml::Value::String(s.clone()),
        ValueKind::Table(t) => toml::Value::Table(
            t.iter()
                .filter_map(|(k, v)| Some((k.clone(), to_toml(v)?)))
                .collect(),
        ),
        ValueKind::Array(a) => toml::Value::Array(a.iter().filter_map(to_toml).collect()),
    })
}

/// The array at `key` (empty when absent), or `None` after recording why it is not an array.
pub(super) fn take_array(
    table: &mut RawTable,
    key: &str,
    issues: &mut Issues,
) -> Option<Vec<config::Value>> {
    match table.shift_remove(key) {
        None => Some(Vec::new()),
        Some(v) => match v.into_array() {
            Ok(a) => Some(a),
            Err(_) => {
                issues.push(
                    key,
                    format!("expected an array of tables: write [[{key}]], not [{key}]"),
                );
                None
            }
        },
    }
}

/// The `name` written in an element, even when the element as a whole is broken.
pub(super) fn name_in(value: &config::Value) -> Option<String> {
    value
        .clone()
        .into_table()
        .ok()?
        .get("name")?
        .clone()
        .into_string()
        .ok()
}

/// The default config path under systemd.
pub fn default_path() -> PathBuf {
    PathBuf::from("/etc/plantwatch/plantwatch.toml")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::raw::RawGateway;
    use crate::config::rules;

    /// `text` resolved with the built-in profiles in `env`.
    fn resolve_in(text: &str, env: &Environment) -> Plan {
        let mut issues = Issues::default();
        let table = parse_toml_source("t.toml", text, &mut issues).unwrap();
        resolve(table, &Profiles::built_in().unwrap(), env).unwrap_or_else(|e| panic!("{e:?}"))
    }

    #[test]
    fn the_store_defaults_under_the_state_directory_it_is_given() {
        let text = "[gateway]\nsite = \"s\"\nid = \"g\"\n\
                    [[links]]\nname = \"l\"\nkind = \"tcp\"\nhost = \"127.0.0.1\"\n\
                    [[devices]]\nname = \"d\"\nlink = \"l\"\n[devices.points.t]\naddress = 0\n";
        let under_systemd = Environment {
            state_directory: Some("/var/lib/pw-a:/var/lib/pw-b".into()),
        };
        assert_eq!(
            resolve_in(text, &under_systemd).store.path,
            std::path::Path::new("/var/lib/pw-a/state.db"),
            "the first of systemd's directories"
        );
        assert_eq!(
            resolve_in(text, &Environment::default()).store.path,
            std::path::Path::new("/var/lib/plantwatch/state.db")
        );
    }

    #[test]
    fn a_toml_syntax_error_is_one_line_with_line_and_column() {
        let mut issues = Issues::default();
        assert!(parse_toml_source("x.toml", "a = 1\nb = \"open\n", &mut issues).is_none());
        assert_eq!(issues.0.len(), 1);
        let message = &issues.0[0].message;
        assert!(message.contains("line 2, column"), "{message}");
        assert!(!message.contains('\n'), "{message}");
    }

    #[test]
    fn one_typo_does_not_hide_the_other_problems_of_an_element() {
        let mut table = RawTable::new();
        table.insert("sitename".into(), "a".into());
        table.insert("idd".into(), "b".into());
        table.insert("site".into(), "a".into());
        table.insert("id".into(), "b".into());
        let mut issues = Issues::default();
        let gateway: Option<RawGateway> =
            deserialize_at(config::Value::new(None, table), "gateway", &mut issues);
        assert!(gateway.is_some());
        let keys: Vec<&str> = issues.0.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(keys, ["gateway.sitename", "gateway.idd"]);
    }

    #[test]
    fn a_bad_enum_value_does_not_hide_the_other_problems_of_an_element() {
        let mut issues = Issues::default();
        let table = parse_toml_source(
            "t.toml",
            "[[rules]]\nname = \"r\"\nkind = \"anomaly\"\nseason = \"x\"\ndirection = \"up\"\nthreshhold = 0.5\n",
            &mut issues,
        )
        .unwrap();
        let value = table["rules"].clone().into_array().unwrap().remove(0);
        let rule: Option<rules::RawRule> = deserialize_at(value, "rules[0]", &mut issues);
        let keys: Vec<&str> = issues.0.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "rules[0].season",
                "rules[0].direction",
                "rules[0].threshhold"
            ],
            "{issues:?}"
        );
        assert!(rule.is_some(), "what is left deserializes");
    }

    #[test]
    fn a_required_key_with_a_bad_value_is_not_also_reported_missing() {
        let mut issues = Issues::default();
        let table = parse_toml_source(
            "t.toml",
            "[[rules]]\nname = \"r\"\nkind = \"hihg\"\n",
            &mut issues,
        )
        .unwrap();
        let value = table["rules"].clone().into_array().unwrap().remove(0);
        let rule: Option<rules::RawRule> = deserialize_at(value, "rules[0]", &mut issues);
        assert!(rule.is_none());
        assert_eq!(issues.0.len(), 1, "{issues:?}");
        assert_eq!(issues.0[0].key, "rules[0].kind");
    }
}
