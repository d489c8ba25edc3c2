//! The config reference (`docs/config-reference.md`), generated from the serde types the loader
//! uses, so that it cannot miss a key: every table and the keys its type accepts, in the
//! order the code declares them.
//!
//! The keys are read from the types themselves. Each is `deny_unknown_fields`, so feeding one a
//! table with a single unknown key makes serde list every field it knows.

use serde::de::DeserializeOwned;

use super::{benchmarks, commands, daemon, energy, influx, maintenance, platform, profile, raw};
use super::{rules, sparkplug, webhooks};
use crate::process::tou;

/// One table of the reference: its heading, what it is, and its keys.
struct Table {
    heading: &'static str,
    about: &'static str,
    keys: fn() -> Vec<String>,
}

/// Every table a config file or a profile file may hold, in the order of the reference config.
const TABLES: &[Table] = &[
    Table {
        heading: "[gateway]",
        about: "Who this gateway is.",
        keys: fields::<raw::RawGateway>,
    },
    Table {
        heading: "[[links]] kind = \"tcp\"",
        about: "A Modbus TCP link (`kind` selects the link type).",
        keys: with_kind::<raw::RawTcpLink>,
    },
    Table {
        heading: "[[links]] kind = \"rtu\"",
        about: "A serial (RS-485) link.",
        keys: with_kind::<raw::RawRtuLink>,
    },
    Table {
        heading: "[[links]] kind = \"rtu_over_tcp\"",
        about: "A serial line behind a serial-to-Ethernet converter.",
        keys: with_kind::<raw::RawRtuOverTcpLink>,
    },
    Table {
        heading: "[[devices]]",
        about: "A device polled over a link.",
        keys: fields::<raw::RawDevice>,
    },
    Table {
        heading: "[devices.points.NAME]",
        about: "A point of a device (also `[points.NAME]` in a profile file).",
        keys: fields::<raw::RawPoint>,
    },
    Table {
        heading: "[mqtt] or [[mqtt]]",
        about: "An MQTT sink.",
        keys: fields::<daemon::RawMqtt>,
    },
    Table {
        heading: "[mqtt.tls]",
        about: "TLS to the broker.",
        keys: fields::<daemon::RawTls>,
    },
    Table {
        heading: "[mqtt.sparkplug]",
        about: "The Sparkplug B edge node, for `format = \"sparkplug_b\"`.",
        keys: fields::<sparkplug::RawSparkplug>,
    },
    Table {
        heading: "[store]",
        about: "The SQLite state file: outbox, ledger, alarms.",
        keys: fields::<daemon::RawStore>,
    },
    Table {
        heading: "[influxdb]",
        about: "An optional, lossy copy of every poll to InfluxDB v2.",
        keys: fields::<influx::RawInflux>,
    },
    Table {
        heading: "[[rules]]",
        about: "An alarm rule: the keys of every kind (`kind` selects what it detects; the \
                tables below give each kind's own keys).",
        keys: rule_keys,
    },
    Table {
        heading: "[alarms]",
        about: "Alarm flood control.",
        keys: fields::<rules::RawAlarms>,
    },
    Table {
        heading: "[[webhooks]]",
        about: "Alarms to a group chat or any JSON endpoint.",
        keys: fields::<webhooks::RawWebhook>,
    },
    Table {
        heading: "[[maintenance]]",
        about: "Maintenance counters (running hours, starts).",
        keys: fields::<maintenance::RawMaintenance>,
    },
    Table {
        heading: "[health]",
        about: "Device health scoring.",
        keys: fields::<maintenance::RawHealth>,
    },
    Table {
        heading: "[energy]",
        about: "The energy ledger: interval, tariff, coefficients, demand.",
        keys: fields::<energy::RawEnergy>,
    },
    Table {
        heading: "[energy.calendar]",
        about: "A custom time-of-use calendar (`tariff = \"custom\"`).",
        keys: fields::<tou::CalendarSpec>,
    },
    Table {
        heading: "[[energy.calendar.months]] and [energy.calendar.holiday]",
        about: "One day's schedule.",
        keys: fields::<tou::DaySpec>,
    },
    Table {
        heading: "[[energy.calendar.months.periods]]",
        about: "One local-time range of a day.",
        keys: fields::<tou::RangeSpec>,
    },
    Table {
        heading: "[[meters]]",
        about: "An energy meter: a counter point that feeds the ledger.",
        keys: fields::<energy::RawMeter>,
    },
    Table {
        heading: "[[production]]",
        about: "A production counter, for energy per unit of product.",
        keys: fields::<energy::RawProduction>,
    },
    Table {
        heading: "[[quotas]]",
        about: "An energy quota per shift, day or month.",
        keys: fields::<energy::RawQuota>,
    },
    Table {
        heading: "[[baselines]]",
        about: "An hour-of-week baseline.",
        keys: fields::<energy::RawBaseline>,
    },
    Table {
        heading: "[[benchmarks]]",
        about: "A benchmark of energy per unit of product, for reports.",
        keys: fields::<benchmarks::RawBenchmark>,
    },
    Table {
        heading: "[[savings]]",
        about: "An energy-performance-contract baseline, for reports.",
        keys: fields::<benchmarks::RawSavings>,
    },
    Table {
        heading: "[energy_platform]",
        about: "Records for the national energy monitoring platform.",
        keys: fields::<platform::RawEnergyPlatform>,
    },
    Table {
        heading: "[energy_platform.https]",
        about: "Upload to the platform over HTTPS.",
        keys: fields::<platform::RawHttps>,
    },
    Table {
        heading: "[[energy_platform.items]]",
        about: "One data item reported to the platform.",
        keys: fields::<platform::RawItem>,
    },
    Table {
        heading: "[commands]",
        about: "Who may send downlink commands.",
        keys: fields::<commands::RawCommands>,
    },
    Table {
        heading: "[[commands.keys]]",
        about: "A key that signs commands.",
        keys: fields::<commands::RawKey>,
    },
    Table {
        heading: "[profile] (profile file)",
        about: "A profile file's metadata (configs/profiles/*.toml, `gateway.profiles_dir`).",
        keys: fields::<profile::ProfileMeta>,
    },
    Table {
        heading: "[defaults] (profile file)",
        about: "What a profile's points use unless they say otherwise.",
        keys: fields::<raw::RawPointDefaults>,
    },
];

/// The keys `T` accepts, as serde lists them for an unknown one.
fn fields<T: DeserializeOwned>() -> Vec<String> {
    super::rules::keys_of::<T>(&[])
}

/// The keys of every `[[rules]]` entry, with `kind` first.
fn rule_keys() -> Vec<String> {
    let mut keys = vec!["kind".to_owned()];
    keys.extend(rules::common_keys().iter().cloned());
    keys
}

/// A link type's keys with `kind` first: the loader reads `kind` before the type.
fn with_kind<T: DeserializeOwned>() -> Vec<String> {
    let mut keys = vec!["kind".to_owned()];
    keys.extend(fields::<T>());
    keys
}

/// `docs/config-reference.md` as the code defines it.
pub fn reference() -> String {
    let mut out = String::from(
        "# Configuration reference\n\n\
         Generated from the code (`src/config/reference.rs`): every table a config or profile \
         file may hold and every key the loader accepts there, in the order the code declares \
         them. A test fails when this file and the code differ; regenerate it with\n\
         `PLANTWATCH_BLESS=1 cargo test --test it config_reference`.\n\n\
         What each key means, its default and its unit: the annotated \
         [`configs/plantwatch.toml`](../configs/plantwatch.toml). How files combine: the main \
         file, then every `conf.d/*.toml` beside it in lexical order (arrays of tables merged \
         by `name`), then `PLANTWATCH__SECTION__KEY` environment variables; \
         `plantwatch check --explain KEY` shows who set a key.\n",
    );
    for t in TABLES {
        out.push_str(&format!("\n## `{}`\n\n{}\n\n", t.heading, t.about));
        for key in (t.keys)() {
            out.push_str(&format!("- `{key}`\n"));
        }
        if t.heading == "[[rules]]" {
            rule_kinds(&mut out);
        }
    }
    out
}

/// A table per kind `[[rules]]` may write, with the keys it takes beyond the common ones.
fn rule_kinds(out: &mut String) {
    for (kind, keys) in rules::kinds() {
        // Only the kinds made elsewhere take no keys of their own; [[rules]] refuses them.
        if keys.is_empty() {
            continue;
        }
        out.push_str(&format!(
            "\n## `[[rules]] kind = \"{kind}\"`\n\nThe keys of `{kind}` beside the common ones.\n\n"
        ));
        for key in keys {
            out.push_str(&format!("- `{key}`\n"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_table_lists_its_keys() {
        for t in TABLES {
            assert!(
                !(t.keys)().is_empty(),
                "{}: no keys (is the type deny_unknown_fields?)",
                t.heading
            );
        }
    }

    #[test]
    fn every_section_of_a_config_file_has_a_table() {
        for section in super::super::SECTIONS {
            assert!(
                TABLES
                    .iter()
                    .any(|t| t.heading.trim_start_matches('[').starts_with(section)),
                "[{section}] is not in the reference"
            );
        }
    }
}
