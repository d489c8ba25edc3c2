//! `[[maintenance]]`: running hours and start counts per device from a run-state (or current)
//! point, with service-interval alarms; and `[health]`, the device health index.

use std::time::Duration;

use serde::Deserialize;

use super::describe;
use super::issue::Issues;
use super::plan::Device;
use super::rules::{Severity, glob_match, parse_duration};

/// `[[maintenance]]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMaintenance {
    /// Device name or glob.
    pub device: String,
    /// The point that says whether the machine runs: a run state, or a current.
    pub run_point: String,
    /// Running while the point's value is above this. Default 0.5 (a 0/1 run state).
    #[serde(default)]
    pub run_above: Option<f64>,
    /// Raise `service-hours` every this many running hours since the last service.
    #[serde(default)]
    pub service_hours: Option<f64>,
    /// Raise `service-starts` every this many starts since the last service.
    #[serde(default)]
    pub service_starts: Option<u64>,
    /// Severity of the service alarms.
    #[serde(default)]
    pub severity: Option<Severity>,
}

pub use crate::detect::spec::Maintenance;

/// `[health]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    /// How often each device's health is published; `"0s"` turns it off.
    #[serde(default)]
    pub interval: Option<String>,
}

/// `[health]`, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    /// Publish period; zero for never.
    pub interval: Duration,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(60),
        }
    }
}

/// Resolves `[health]`.
pub fn resolve_health(raw: Option<RawHealth>, issues: &mut Issues) -> Health {
    let mut h = Health::default();
    if let Some(text) = raw.and_then(|r| r.interval) {
        match parse_duration(&text) {
            Ok(d) if d.is_zero() || d >= Duration::from_secs(1) => h.interval = d,
            Ok(_) => issues.push("health.interval", "must be 0s (off) or at least 1s"),
            Err(m) => issues.push("health.interval", m),
        }
    }
    h
}

/// Resolves `[[maintenance]]` entries against the devices; one per matched device.
pub fn resolve_maintenance(
    raw: Vec<(String, RawMaintenance)>,
    devices: &[Device],
    issues: &mut Issues,
) -> Vec<Maintenance> {
    let mut out: Vec<Maintenance> = Vec::new();
    for (key, r) in raw {
        let matched: Vec<usize> = (0..devices.len())
            .filter(|&i| glob_match(&r.device, devices[i].name.as_str()))
            .collect();
        if matched.is_empty() {
            let names: Vec<&str> = devices.iter().map(|d| d.name.as_str()).collect();
            let hint = describe::closest(&r.device, &names)
                .map(|c| format!("; did you mean `{c}`?"))
                .unwrap_or_default();
            issues.push(
                format!("{key}.device"),
                format!("no device matches `{}`{hint}", r.device),
            );
        }
        if r.service_hours.is_some_and(|h| !(h.is_finite() && h > 0.0)) {
            issues.push(format!("{key}.service_hours"), "must be above 0");
        }
        if r.service_starts == Some(0) {
            issues.push(format!("{key}.service_starts"), "must be at least 1");
        }
        let run_above = r.run_above.unwrap_or(0.5);
        if !run_above.is_finite() {
            issues.push(format!("{key}.run_above"), "must be a finite number");
        }
        for d in matched {
            let Some(p) = devices[d]
                .points
                .iter()
                .position(|p| p.name.as_str() == r.run_point)
            else {
                let names: Vec<&str> = devices[d].points.iter().map(|p| p.name.as_str()).collect();
                let hint = describe::closest(&r.run_point, &names)
                    .map(|c| format!("; did you mean `{c}`?"))
                    .unwrap_or_default();
                issues.push(
                    format!("{key}.run_point"),
                    format!(
                        "device `{}` has no point `{}`{hint}",
                        devices[d].name, r.run_point
                    ),
                );
                continue;
            };
            if out.iter().any(|m| m.device == d) {
                issues.push(
                    format!("{key}.device"),
                    format!(
                        "device `{}` already has a [[maintenance]] entry; one per device",
                        devices[d].name
                    ),
                );
                continue;
            }
            out.push(Maintenance {
                device: d,
                run_point: p,
                run_above,
                service_hours: r.service_hours,
                service_starts: r.service_starts,
                severity: r.severity.unwrap_or(Severity::Medium),
            });
        }
    }
    out
}
