//! `[[devices]]`: a device's link, unit id and timing, and its points — a profile's, less
//! `exclude_points`, overlaid by the device's own `[devices.points.NAME]`.

use std::collections::HashMap;
use std::sync::Arc;

use crate::acquire::plan::{ReadPlan, RequestLimits};

use super::describe;
use super::issue::Issues;
use super::load::deserialize_at;
use super::plan;
use super::point::{PointContext, overlay, resolve_point};
use super::profile::Profiles;
use super::raw::{RawDevice, RawPoint};
use super::{check_range, ms, name_at};

/// What a device is resolved against.
pub(super) struct DeviceContext<'a> {
    pub(super) links: &'a [plan::Link],
    pub(super) link_index: &'a HashMap<String, Option<usize>>,
    pub(super) profiles: &'a Profiles,
    /// The issue count before the device was deserialized (unknown keys may already be in).
    pub(super) before: usize,
    /// Every JSON sink is `json_compact`: points report on change unless they say otherwise.
    pub(super) compact_only: bool,
}

/// Lets devices whose resolved points are equal (a profile used without overrides) share one
/// table: 200 DTSU666 meters held 200 copies, 0.6 MB of the daemon's heap (heaptrack).
pub(super) fn share_point_tables(devices: &mut [plan::Device]) {
    let mut tables: Vec<Arc<[plan::Point]>> = Vec::new();
    for device in devices {
        match tables.iter().find(|t| t[..] == device.points[..]) {
            Some(shared) => device.points = Arc::clone(shared),
            None => tables.push(Arc::clone(&device.points)),
        }
    }
}

pub(super) fn resolve_device(
    key: &str,
    mut raw: RawDevice,
    cx: &DeviceContext<'_>,
    issues: &mut Issues,
) -> Option<plan::Device> {
    let DeviceContext {
        links,
        link_index,
        profiles,
        before,
        compact_only,
    } = *cx;
    let name = name_at(issues, format!("{key}.name"), &raw.name);
    let link = match link_index.get(&raw.link) {
        Some(l) => *l,
        // No link at all is already reported at `links`.
        None if link_index.is_empty() => None,
        None => {
            let mut known: Vec<&str> = link_index.keys().map(String::as_str).collect();
            known.sort_unstable();
            let guess = describe::closest(&raw.link, &known)
                .map(|g| format!(" (did you mean `{g}`?)"))
                .unwrap_or_default();
            issues.push(
                format!("{key}.link"),
                format!(
                    "no link named `{}`{guess}; use the `name` of a [[links]] entry: {}",
                    raw.link,
                    known.join(", ")
                ),
            );
            None
        }
    };
    match link.and_then(|i| links.get(i)) {
        Some(l) => {
            let (lo, hi, on) = match l.transport {
                plan::Transport::Tcp(_) => (0, 255, " on a tcp link"),
                plan::Transport::Rtu(_) => (1, 247, " on an rtu link (0 is broadcast)"),
                plan::Transport::RtuOverTcp { .. } => {
                    (1, 247, " on an rtu_over_tcp link (0 is broadcast)")
                }
            };
            check_range(issues, format!("{key}.unit_id"), raw.unit_id, lo, hi, on);
        }
        // The link is broken or unknown: still catch what no link allows.
        None => {
            check_range(
                issues,
                format!("{key}.unit_id"),
                raw.unit_id,
                0,
                255,
                " (1 to 247 on a serial link)",
            );
        }
    }
    check_range(
        issues,
        format!("{key}.poll_interval_ms"),
        raw.poll_interval_ms,
        10,
        86_400_000,
        " ms",
    );
    check_range(
        issues,
        format!("{key}.timeout_ms"),
        raw.timeout_ms,
        10,
        60_000,
        " ms",
    );
    check_range(issues, format!("{key}.retries"), raw.retries, 0, 10, "");
    check_range(
        issues,
        format!("{key}.retry_backoff_ms"),
        raw.retry_backoff_ms,
        0,
        60_000,
        " ms",
    );
    check_range(
        issues,
        format!("{key}.offline_after_failures"),
        raw.offline_after_failures,
        1,
        1000,
        "",
    );
    check_range(
        issues,
        format!("{key}.offline_retry_ms"),
        raw.offline_retry_ms,
        100,
        86_400_000,
        " ms",
    );
    check_range(
        issues,
        format!("{key}.max_registers_per_request"),
        raw.max_registers_per_request,
        1,
        125,
        " (the Modbus limit for function 03/04)",
    );
    check_range(
        issues,
        format!("{key}.max_bits_per_request"),
        raw.max_bits_per_request,
        1,
        2000,
        " (the Modbus limit for function 01/02)",
    );
    check_range(
        issues,
        format!("{key}.max_gap_registers"),
        raw.max_gap_registers,
        0,
        124,
        "",
    );
    check_range(
        issues,
        format!("{key}.max_gap_bits"),
        raw.max_gap_bits,
        0,
        1999,
        "",
    );
    for (field, v) in [("pt_ratio", raw.pt_ratio), ("ct_ratio", raw.ct_ratio)] {
        if !(v.is_finite() && v > 0.0) {
            issues.push(
                format!("{key}.{field}"),
                format!("{v} is not valid; use a positive number (primary / secondary, e.g. 100)"),
            );
        }
    }

    let profile = match &raw.profile {
        None => None,
        Some(p) => match profiles.get(p) {
            Some(p) => Some(p),
            None => {
                let names = profiles.names();
                let guess = describe::closest(p, &names)
                    .map(|g| format!(" (did you mean `{g}`?)"))
                    .unwrap_or_default();
                issues.push(
                    format!("{key}.profile"),
                    format!(
                        "no profile named `{p}`{guess}; known profiles: {}",
                        names.join(", ")
                    ),
                );
                return None;
            }
        },
    };
    let defaults = profile.map(|p| p.defaults.clone()).unwrap_or_default();
    let mut merged: Vec<(String, RawPoint, String)> = Vec::new();
    if let Some(profile) = profile {
        for ex in &raw.exclude_points {
            if !profile.points.iter().any(|(n, _)| n == ex) {
                let names: Vec<&str> = profile.points.iter().map(|(n, _)| n.as_str()).collect();
                issues.push(
                    format!("{key}.exclude_points"),
                    format!(
                        "profile `{}` has no point `{ex}`; its points: {}",
                        profile.meta.name,
                        names.join(", ")
                    ),
                );
            }
        }
        for (n, p) in &profile.points {
            if !raw.exclude_points.contains(n) {
                let at = format!("{key}.points.{n} (from profile {})", profile.meta.name);
                for k in p.write_keys() {
                    // Writes are allow-listed per device in the config itself: a profile is
                    // shared by every device that uses it.
                    issues.push(
                        format!("{at}.{k}"),
                        "write keys belong in the device's own [devices.points.NAME], never in \
                         a profile",
                    );
                }
                let mut p = p.clone();
                p.clear_write_keys();
                merged.push((n.clone(), p, at));
            }
        }
    } else if !raw.exclude_points.is_empty() {
        issues.push(
            format!("{key}.exclude_points"),
            "only meaningful with a `profile`; without one, leave the points out of `points`",
        );
    }
    for (n, v) in std::mem::take(&mut raw.points) {
        let pkey = format!("{key}.points.{n}");
        let point_before = issues.0.len();
        let Some(top) = deserialize_at::<RawPoint>(v, &pkey, issues) else {
            continue;
        };
        if issues.0.len() != point_before {
            // An unknown key was dropped (e.g. `adress`); resolving the rest would only add
            // "address required" noise.
            continue;
        }
        match merged.iter_mut().find(|(m, _, _)| *m == n) {
            Some(slot) => {
                slot.1 = overlay(&slot.1, &top);
                slot.2 = pkey;
            }
            None if top.address.is_none()
                && top.register.is_none()
                && profile.is_some_and(|p| !p.points.iter().any(|(m, _)| *m == n)) =>
            {
                // Most likely a misspelt override of a profile point.
                let names: Vec<&str> = profile
                    .map(|p| p.points.iter().map(|(m, _)| m.as_str()).collect())
                    .unwrap_or_default();
                let message = match describe::closest(&n, &names) {
                    Some(s) => format!(
                        "`{n}` is not a point of profile `{}` (did you mean `{s}`?), so it \
                         needs `address` (with `function`) or a Modicon `register`",
                        raw.profile.as_deref().unwrap_or_default()
                    ),
                    None => format!(
                        "`{n}` is not a point of profile `{}`, so it needs `address` (with \
                         `function`) or a Modicon `register`; profile points: {}",
                        raw.profile.as_deref().unwrap_or_default(),
                        names.join(", ")
                    ),
                };
                issues.push(format!("{pkey}.address"), message);
            }
            None => merged.push((n, top, pkey)),
        }
    }
    if merged.is_empty() && issues.0.len() == before {
        issues.push(
            format!("{key}.points"),
            "no points: give a `profile` or at least one [devices.points.NAME]",
        );
    }
    let limits = RequestLimits {
        max_registers: u16::try_from(raw.max_registers_per_request).unwrap_or(125),
        max_bits: u16::try_from(raw.max_bits_per_request).unwrap_or(2000),
        max_gap_registers: u16::try_from(raw.max_gap_registers).unwrap_or(0),
        max_gap_bits: u16::try_from(raw.max_gap_bits).unwrap_or(0),
    };
    let mut points = Vec::with_capacity(merged.len());
    for (n, p, pkey) in &merged {
        let cx = PointContext {
            limits,
            compact_only,
        };
        if let Some(p) = resolve_point(pkey, n, p, &defaults, &raw, cx, issues) {
            points.push(p);
        }
    }
    if issues.0.len() != before {
        return None;
    }
    let read_plan = ReadPlan::build(&points, limits);
    Some(plan::Device {
        name: name?,
        link: link?,
        unit_id: u8::try_from(raw.unit_id).ok()?,
        profile: raw.profile.clone(),
        poll_interval: ms(raw.poll_interval_ms),
        timeout: ms(raw.timeout_ms),
        retries: raw.retries,
        retry_backoff: ms(raw.retry_backoff_ms),
        offline_after_failures: raw.offline_after_failures,
        offline_retry: ms(raw.offline_retry_ms),
        limits,
        points: points.into(),
        read_plan,
        write_multiple: raw.write_multiple,
    })
}
