//! Reading a config: the file, its TOML syntax, the `PLANTWATCH__…` environment overlay, and
//! the deserialization of each element with every problem recorded under its key.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use super::describe;
use super::issue::{ConfigErrors, ConfigIssue, Issues};
use super::profile::Profiles;
use super::raw::RawTable;
use super::{Plan, resolve};

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

/// Loads, overrides and resolves the config file at `path`.
///
/// # Errors
/// Every problem found, each naming its key, under the file's path.
pub fn load_file(
    path: &Path,
    env: &EnvOverrides,
    extra_profiles: Option<&Path>,
) -> Result<Plan, ConfigErrors> {
    let source_name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|err| ConfigErrors {
        source_name: source_name.clone(),
        issues: vec![ConfigIssue::new(
            source_name.clone(),
            format!("cannot read config file: {err}"),
        )],
    })?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    load_str(&source_name, &text, env, &base, extra_profiles)
}

/// Loads and resolves config text; relative paths in it are taken from `base_dir`.
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
    let table =
        parse_with_env(source_name, text, env, &mut issues).ok_or_else(|| fail(issues.0))?;
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
    resolve(table, &profiles).map_err(fail)
}

fn parse_with_env(
    origin: &str,
    text: &str,
    env: &EnvOverrides,
    issues: &mut Issues,
) -> Option<RawTable> {
    // Parse once with `toml` first: its errors carry line and column, config-rs's do not.
    parse_toml_source(origin, text, issues)?;
    let mut builder = config::Config::builder()
        .add_source(config::File::from_str(text, config::FileFormat::Toml));
    let environment = config::Environment::with_prefix("PLANTWATCH")
        .prefix_separator("__")
        .separator("__")
        .try_parsing(true);
    match env {
        EnvOverrides::Process => builder = builder.add_source(environment),
        EnvOverrides::Map(map) => {
            builder = builder.add_source(environment.source(Some(
                map.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            )))
        }
        EnvOverrides::Off => {}
    }
    match builder
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
            Ok(v) => return Some(v),
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
