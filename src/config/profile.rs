//! Device profiles: named register maps shipped in `configs/profiles/` and embedded in the
//! binary, overridable from a directory.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::issue::{ConfigIssue, Issues};
use super::raw::{RawPoint, RawPointDefaults, RawTable};
use super::{deserialize_at, parse_toml_source};

/// The built-in profiles: (file name, text).
pub const BUILT_IN: &[(&str, &str)] = &[
    (
        "chint-dtsu666.toml",
        include_str!("../../configs/profiles/chint-dtsu666.toml"),
    ),
    (
        "eastron-sdm630.toml",
        include_str!("../../configs/profiles/eastron-sdm630.toml"),
    ),
    (
        "acrel-adl400.toml",
        include_str!("../../configs/profiles/acrel-adl400.toml"),
    ),
    (
        "generic-plc.toml",
        include_str!("../../configs/profiles/generic-plc.toml"),
    ),
];

/// `[profile]`: what the register map is for and where it came from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileMeta {
    /// The name devices use (`profile = "chint-dtsu666"`).
    pub name: String,
    /// Manufacturer, as on the nameplate.
    pub manufacturer: String,
    /// Model designation, as on the nameplate.
    pub model: String,
    /// One line on what the device is.
    pub description: String,
    /// Where the register map comes from.
    pub source: String,
    /// Caveats for commissioning.
    #[serde(default)]
    pub notes: Option<String>,
}

/// A parsed profile.
#[derive(Debug, Clone)]
pub struct Profile {
    /// Who makes the device, its model, and the source of the register map.
    pub meta: ProfileMeta,
    /// Defaults for its points.
    pub defaults: RawPointDefaults,
    /// Its points in file order.
    pub points: Vec<(String, RawPoint)>,
    /// Where it was loaded from (file name, or `built-in:<file>`).
    pub origin: String,
}

/// Every known profile, by name.
#[derive(Debug, Clone, Default)]
pub struct Profiles {
    by_name: BTreeMap<String, Profile>,
}

impl Profiles {
    /// The profiles compiled into the binary.
    ///
    /// # Errors
    /// Issues in a built-in profile (a test keeps this from ever happening in a release).
    pub fn built_in() -> Result<Self, Vec<ConfigIssue>> {
        let mut profiles = Profiles::default();
        let mut issues = Issues::default();
        for (file, text) in BUILT_IN {
            if let Some(p) = parse_profile(&format!("built-in:{file}"), text, &mut issues) {
                profiles.by_name.insert(p.meta.name.clone(), p);
            }
        }
        if issues.is_empty() {
            Ok(profiles)
        } else {
            Err(issues.0)
        }
    }

    /// Adds every `*.toml` in `dir`, replacing built-ins of the same name.
    ///
    /// # Errors
    /// Every issue found, keyed by the file.
    pub fn add_dir(&mut self, dir: &Path) -> Result<(), Vec<ConfigIssue>> {
        let mut issues = Issues::default();
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(err) => {
                return Err(vec![ConfigIssue::new(
                    dir.display().to_string(),
                    format!("cannot read profiles directory: {err}"),
                )]);
            }
        };
        let mut paths: Vec<_> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect();
        paths.sort();
        for path in paths {
            let origin = path.display().to_string();
            match std::fs::read_to_string(&path) {
                Ok(text) => {
                    if let Some(p) = parse_profile(&origin, &text, &mut issues) {
                        self.by_name.insert(p.meta.name.clone(), p);
                    }
                }
                Err(err) => issues.push(origin, format!("cannot read: {err}")),
            }
        }
        if issues.is_empty() {
            Ok(())
        } else {
            Err(issues.0)
        }
    }

    /// The profile called `name`.
    pub fn get(&self, name: &str) -> Option<&Profile> {
        self.by_name.get(name)
    }

    /// All profiles in name order.
    pub fn iter(&self) -> impl Iterator<Item = &Profile> {
        self.by_name.values()
    }

    /// Their names, for error messages.
    pub fn names(&self) -> Vec<&str> {
        self.by_name.keys().map(String::as_str).collect()
    }
}

/// Parses one profile file, recording issues under `origin`.
pub fn parse_profile(origin: &str, text: &str, issues: &mut Issues) -> Option<Profile> {
    let before = issues.0.len();
    let mut table = parse_toml_source(origin, text, issues)?;
    let meta: Option<ProfileMeta> = table
        .shift_remove("profile")
        .and_then(|v| deserialize_at(v, &format!("{origin}: profile"), issues));
    if meta.is_none() && issues.0.len() == before {
        issues.push(format!("{origin}: profile"), "missing [profile] section");
    }
    let defaults: RawPointDefaults = match table.shift_remove("defaults") {
        Some(v) => deserialize_at(v, &format!("{origin}: defaults"), issues).unwrap_or_default(),
        None => RawPointDefaults::default(),
    };
    let raw_points: RawTable = match table.shift_remove("points") {
        Some(v) => deserialize_at(v, &format!("{origin}: points"), issues).unwrap_or_default(),
        None => RawTable::default(),
    };
    for key in table.keys() {
        issues.push(
            format!("{origin}: {key}"),
            "unknown section; expected `profile`, `defaults` or `points`",
        );
    }
    let mut points = Vec::with_capacity(raw_points.len());
    for (name, value) in raw_points {
        if let Some(p) =
            deserialize_at::<RawPoint>(value, &format!("{origin}: points.{name}"), issues)
        {
            points.push((name, p));
        }
    }
    if points.is_empty() {
        issues.push(
            format!("{origin}: points"),
            "a profile needs at least one point",
        );
    }
    let meta = meta?;
    (issues.0.len() == before).then(|| Profile {
        meta,
        defaults,
        points,
        origin: origin.to_owned(),
    })
}
