//! `plantwatch check`: validate a config and show what it resolves to.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::config::{ConfigErrors, Plan};

/// Arguments of `check`.
#[derive(Debug, clap::Args)]
pub(super) struct Args {
    /// Deprecated: the config as a positional argument (use --config).
    #[arg(hide = true, value_name = "CONFIG")]
    pub(super) positional_config: Option<PathBuf>,
    /// Print nothing when the config is valid (for ExecStartPre and ExecReload).
    #[arg(long, short)]
    quiet: bool,
}

pub(super) fn run(
    args: &Args,
    config: &Path,
    profiles_dir: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    match super::load(config, profiles_dir) {
        Ok(plan) => {
            let unchecked = match crate::auth::keys::Keyring::check(&plan.commands) {
                Ok(unchecked) => unchecked,
                Err(issues) => {
                    let source_name = config.display().to_string();
                    return Ok(super::config_failed(&ConfigErrors {
                        source_name,
                        issues,
                    }));
                }
            };
            for id in unchecked {
                eprintln!(
                    "warning: command key `{id}` is a systemd credential; it is checked when the \
                     service starts (no $CREDENTIALS_DIRECTORY here)"
                );
            }
            if !args.quiet {
                print_plan(config, &plan);
            }
            // Valid, but worth a second look: shown even with --quiet (ExecStartPre's output
            // lands in the journal).
            for w in &plan.warnings {
                eprintln!("warning: {w}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(errors) => Ok(super::config_failed(&errors)),
    }
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
                r.kind_name.as_str(),
                r.severity.as_str(),
                alarms.len(),
                shown
            );
        }
    }
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
