//! `plantwatch check`: validate a config, its drop-ins and every file they name, and show what
//! will run.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::config::{ConfigErrors, ConfigIssue, EnvOverrides, Plan};

/// Arguments of `check`.
#[derive(Debug, clap::Args)]
pub(super) struct Args {
    /// Deprecated: the config as a positional argument (use --config).
    #[arg(hide = true, value_name = "CONFIG")]
    pub(super) positional_config: Option<PathBuf>,
    /// Print nothing when the config is valid (for ExecStartPre and ExecReload).
    #[arg(long, short)]
    quiet: bool,
    /// Show which file (the main file, a conf.d/ drop-in) or environment variable set KEY,
    /// and what it overrode; e.g. `devices.meter-1.host` (array entries by name or index). A
    /// table shows every key under it.
    #[arg(long, value_name = "KEY")]
    explain: Option<String>,
}

pub(super) fn run(
    args: &Args,
    config: &Path,
    profiles_dir: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    if let Some(key) = &args.explain
        && let Err(errors) = explain(config, key)
    {
        return Ok(super::config_failed(&errors));
    }
    let plan = match super::load(config, profiles_dir) {
        Ok(plan) => plan,
        Err(errors) => return Ok(super::config_failed(&errors)),
    };
    // Every problem at once: unreadable key files and missing or broken TLS files together.
    let mut issues: Vec<ConfigIssue> = Vec::new();
    let unchecked = match crate::auth::keys::Keyring::check(&plan.commands) {
        Ok(unchecked) => unchecked,
        Err(found) => {
            issues.extend(found);
            Vec::new()
        }
    };
    let files = crate::config::files::check_files(&plan);
    issues.extend(files.issues);
    if !issues.is_empty() {
        let source_name = config.display().to_string();
        // A file named in a drop-in is the drop-in's to fix: say which.
        if let Ok(layers) = crate::config::read_layers(config, &EnvOverrides::Process) {
            issues = issues
                .into_iter()
                .map(|i| layers.attribute(i, &source_name))
                .collect();
        }
        return Ok(super::config_failed(&ConfigErrors {
            source_name,
            issues,
        }));
    }
    for id in unchecked {
        eprintln!(
            "warning: command key `{id}` is a systemd credential; it is checked when the \
             service starts (no $CREDENTIALS_DIRECTORY here)"
        );
    }
    if !args.quiet && args.explain.is_none() {
        print_plan(config, &plan);
    }
    // Valid, but worth a second look: shown even with --quiet (ExecStartPre's output lands in
    // the journal).
    for w in &plan.warnings {
        eprintln!("warning: {w}");
    }
    for w in &files.warnings {
        eprintln!("warning: {w}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints where `key` (and every key under it) was set, newest first.
fn explain(config: &Path, key: &str) -> Result<(), ConfigErrors> {
    let layers = crate::config::read_layers(config, &EnvOverrides::Process)?;
    let at = match crate::config::dropin::index_key(&layers.table, key) {
        Ok(at) => at,
        Err(why) => {
            out!("{key}: {why}");
            return Ok(());
        }
    };
    let found: Vec<_> = layers.origins.under(&at).collect();
    if at != key {
        out!("{key} is {at}");
    }
    if found.is_empty() {
        out!(
            "{at}: not set in {} or its drop-ins, nor by PLANTWATCH__ variables; its default \
             applies",
            config.display()
        );
    }
    for (k, settings) in found {
        let Some((last, earlier)) = settings.split_last() else {
            continue;
        };
        out!("{k} = {}  from {}", last.value, last.source);
        for s in earlier.iter().rev() {
            out!("    overrides {}  from {}", s.value, s.source);
        }
    }
    Ok(())
}

fn print_plan(path: &Path, plan: &Plan) {
    let g = &plan.gateway;
    out!("{}: valid", path.display());
    out!(
        "gateway  site={} id={} timezone={}",
        g.site,
        g.id,
        g.timezone
    );
    print_sources(path);
    print_outputs(plan);
    out!();
    out!("{:<20} {:<13} ENDPOINT", "LINK", "KIND");
    for l in &plan.links {
        out!(
            "{:<20} {:<13} {}",
            l.name,
            l.transport.kind(),
            l.transport.describe()
        );
    }
    out!();
    out!(
        "{:<20} {:<16} {:>4} {:<16} {:>8} {:>6} {:>8} {:>9}",
        "DEVICE",
        "LINK",
        "UNIT",
        "PROFILE",
        "POLL_MS",
        "POINTS",
        "REQUESTS",
        "REGISTERS"
    );
    for d in &plan.devices {
        out!(
            "{:<20} {:<16} {:>4} {:<16} {:>8} {:>6} {:>8} {:>9}",
            d.name,
            plan.links[d.link].name,
            d.unit_id,
            d.profile.as_deref().unwrap_or("-"),
            d.poll_interval.as_millis(),
            d.points.len(),
            d.read_plan.requests.len(),
            d.read_plan.total_count()
        );
    }
    for d in &plan.devices {
        out!();
        out!("device {}", d.name);
        out!(
            "  {:<18} {:<15} {:>7} {:<7} {:<5} {:>10} {:>8} {:<6} DESCRIPTION",
            "POINT",
            "FUNCTION",
            "ADDRESS",
            "TYPE",
            "ORDER",
            "SCALE",
            "OFFSET",
            "UNIT"
        );
        for p in d.points.iter() {
            let ty = match p.codec.data_type {
                crate::decode::DataType::Bit => format!("bit{}", p.codec.bit),
                crate::decode::DataType::String => format!("str{}", p.codec.length),
                t => t.to_string(),
            };
            out!(
                "  {:<18} {:<15} {:>7} {:<7} {:<5} {:>10} {:>8} {:<6} {}",
                p.name,
                format!("{:02} {}", p.function.code(), p.function.name()),
                format!("{:#06x}", p.address),
                ty,
                p.codec.order.to_string(),
                p.codec.scale,
                p.codec.offset,
                p.unit,
                p.description
            );
        }
        out!(
            "  read plan: {} request(s) per cycle",
            d.read_plan.requests.len()
        );
        for (i, r) in d.read_plan.requests.iter().enumerate() {
            let names: Vec<&str> = r
                .slots
                .iter()
                .map(|s| d.points[s.point].name.as_str())
                .collect();
            out!(
                "    #{:<3} fc{:02} {:#06x} ×{:<4}{} {}",
                i + 1,
                r.function.code(),
                r.address,
                r.count,
                if r.bridged { " (bridges gaps)" } else { "" },
                names.join(" ")
            );
        }
    }
    if !plan.rules.is_empty() {
        out!();
        out!(
            "{:<24} {:<11} {:<9} {:>6}  ALARMS",
            "RULE",
            "KIND",
            "SEVERITY",
            "COUNT"
        );
        for r in &plan.rules {
            let alarms: Vec<String> = r
                .targets
                .iter()
                .map(|t| format!("{}/{}", plan.devices[t.device].name, t.alarm))
                .collect();
            let shown = if alarms.len() > 4 {
                format!("{} … (+{})", alarms[..4].join(" "), alarms.len() - 4)
            } else {
                alarms.join(" ")
            };
            out!(
                "{:<24} {:<11} {:<9} {:>6}  {}",
                r.name,
                r.kind.name(),
                r.severity.as_str(),
                alarms.len(),
                shown
            );
        }
    }
    print_energy(plan);
    if !plan.webhooks.is_empty() {
        out!();
        for w in &plan.webhooks {
            out!(
                "webhook {} ({:?}), from severity {}, {} per minute",
                w.name,
                w.format,
                w.min_severity,
                w.rate_per_minute
            );
        }
    }
}

/// The files merged into this config, in the order they apply.
fn print_sources(path: &Path) {
    match crate::config::dropin::drop_ins(path) {
        Ok(files) if !files.is_empty() => {
            let shown: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
            out!("drop-ins {} (applied in this order)", shown.join(", "));
        }
        _ => {}
    }
}

/// The MQTT sinks, InfluxDB and the store, as they will run.
fn print_outputs(plan: &Plan) {
    out!();
    out!(
        "{:<12} {:<15} {:<28} {:<6} {:<8} {:>3}  TOPICS",
        "MQTT",
        "FORMAT",
        "BROKER",
        "TLS",
        "AUTH",
        "QOS"
    );
    if plan.mqtt.is_empty() {
        out!("(none: readings are stored and not sent)");
    }
    for m in &plan.mqtt {
        let auth = match (&m.username, &m.password) {
            (Some(_), Some(_)) => "password",
            (Some(_), None) => "user",
            _ => "-",
        };
        let tls = match &m.tls {
            Some(t) if t.client_auth.is_some() => "mutual",
            Some(_) => "yes",
            None => "no",
        };
        out!(
            "{:<12} {:<15} {:<28} {:<6} {:<8} {:>3}  {}/…",
            m.name,
            m.format.to_string(),
            format!("{}:{}", m.host, m.port),
            tls,
            auth,
            m.qos,
            m.topic_prefix
        );
    }
    if let Some(i) = &plan.influx {
        out!(
            "influxdb {} bucket={} measurement={} batch={}",
            i.url,
            i.bucket,
            i.measurement,
            i.batch_size
        );
    }
    let s = &plan.store;
    out!(
        "store    {} (outbox up to {} MiB, commit every {} ms, corrupt file: {:?})",
        s.path.display(),
        s.max_outbox_bytes / (1024 * 1024),
        s.commit_window.as_millis(),
        s.on_corrupt
    );
}

/// Meters, the tariff's periods on a winter and a summer day, quotas and baselines.
fn print_energy(plan: &Plan) {
    let e = &plan.energy;
    if e.meters.is_empty() {
        return;
    }
    out!();
    out!("{:<20} {:<12} {:<24} GROUPS", "METER", "COUNTS", "POINT");
    for m in &e.meters {
        let device = &plan.devices[m.device];
        out!(
            "{:<20} {:<12} {:<24} {}",
            m.name,
            m.counts.kind_str(),
            format!("{}/{}", device.name, device.points[m.point].name),
            m.groups.join(" ")
        );
    }
    out!(
        "tariff   {} (ledger every {} min)",
        e.tariff,
        e.interval.as_secs() / 60
    );
    for (label, month) in [("January", 1), ("July", 7)] {
        out!("  {label:<8} {}", day_periods(plan, month));
    }
    for q in &e.quotas {
        out!(
            "quota    {} on {}: {} {} per {}",
            q.name,
            q.target,
            q.limit,
            q.kind.as_str(),
            match &q.period {
                crate::detect::quota::QuotaPeriod::Shift(_) => "shift",
                crate::detect::quota::QuotaPeriod::Day => "day",
                crate::detect::quota::QuotaPeriod::Month => "month",
            }
        );
    }
    for b in &e.baselines {
        out!(
            "baseline {} on {}: alarm {}% over {} weeks' hour-of-week average",
            b.name,
            b.target,
            b.over_percent,
            b.weeks
        );
    }
}

/// The tariff's periods over the 15th of `month` (2026), as `00-07 valley, 07-09 flat…`.
fn day_periods(plan: &Plan, month: u32) -> String {
    use chrono::TimeZone;
    let tz = plan.gateway.timezone;
    let mut spans: Vec<(u32, u32, &str)> = Vec::new();
    for hour in 0..24 {
        let Some(at) = tz.with_ymd_and_hms(2026, month, 15, hour, 30, 0).earliest() else {
            continue;
        };
        let period = plan
            .energy
            .calendar
            .period_at(tz, at.timestamp_millis())
            .as_str();
        match spans.last_mut() {
            Some(last) if last.2 == period => last.1 = hour + 1,
            _ => spans.push((hour, hour + 1, period)),
        }
    }
    let shown: Vec<String> = spans
        .iter()
        .map(|(a, b, p)| format!("{a:02}-{b:02} {p}"))
        .collect();
    shown.join(", ")
}
