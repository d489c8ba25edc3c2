//! plantwatch: an edge daemon for factory gateways.
//!
//! One pipeline (docs/design.md §1), data flowing one way:
//!
//! ```text
//!  links (TCP / RTU / RTU-over-TCP)
//!    └─ acquire: scheduler → read plans → Modbus transactions → raw words
//!         └─ decode: words → typed values (type, byte/word order, scale, offset, bits)
//!              └─ SampleBatch (one per device poll) ──► process → detect → sinks
//! ```
//!
//! Module map:
//! - [`model`]: plain data that crosses stage boundaries (names, values, quality, samples).
//! - [`auth`]: the signed downlink command channel: keys, roles, the replay window.
//! - [`issue`]: a problem with one configuration key, as `config` and the stages report it.
//! - [`secret`]: passwords and keys read from a file or a systemd credential, never logged.
//! - [`config`]: raw file → pure `resolve` (all issues at once) → typed [`config::Plan`].
//! - [`decode`]: pure registers ↔ values codec.
//! - [`acquire`]: the I/O shell for Modbus: read plans, schedule, device health, link tasks.
//! - [`encode`]: pure payload encoders (the JSON profile of docs/design.md §4).
//! - [`sparkplug`]: pure Sparkplug B codec and edge node session state machine (docs/design.md §4).
//! - [`process`]: pure stages between acquisition and sinks (the reporting policy).
//! - [`detect`]: pure alarm rules and anomaly models over sample batches, energy alarms,
//!   device health and flood control; the same code runs live and in [`replay`].
//! - [`replay`]: recorded CSV through the detect stage at full speed, for tuning rules.
//! - [`pipeline`]: the one step (process → detect → reporting) that live, replay and benches run.
//! - [`platform`]: pure records for the national energy-monitoring platform, from the ledger.
//! - [`export`]: the energy report of a period (CSV, JSON, HTML) from the ledger's intervals.
//! - [`sink`]: the outputs: MQTT (outbox-driven delivery), Sparkplug B, InfluxDB, webhooks,
//!   the platform's HTTPS upload; with the `demo` feature, the embedded MQTT broker.
//! - [`runtime`]: signals, systemd notify and watchdog, metrics over HTTP.
//! - [`sim`]: a Modbus device simulator serving real sockets and ptys, with fault injection.
//! - [`clock`]: the one place that reads wall-clock time.
//! - [`store`]: the SQLite state file on one thread: the durable, bounded MQTT outbox, the
//!   energy ledger and the alarms' states.
//! - [`cli`]: the command line, the only module that prints.

pub mod acquire;
pub mod auth;
pub mod cli;
pub mod clock;
pub mod config;
pub mod decode;
pub mod detect;
pub mod encode;
pub mod export;
pub mod issue;
pub mod model;
pub mod pipeline;
pub mod platform;
pub mod process;
pub mod replay;
pub mod runtime;
pub mod secret;
pub mod sim;
pub mod sink;
pub mod sparkplug;
pub mod store;

#[cfg(test)]
pub(crate) mod test_log;

#[cfg(test)]
mod tests {
    /// The module names of the crate doc's map (`//! - [`name`]: …` lines).
    fn map_entries(source: &str) -> Vec<&str> {
        source
            .lines()
            .filter_map(|l| l.strip_prefix("//! - [`")?.split_once("`]").map(|(m, _)| m))
            .collect()
    }

    /// The `pub mod` declarations of this file, with or without a `cfg` above them.
    fn public_modules(source: &str) -> Vec<&str> {
        source
            .lines()
            .filter_map(|l| l.trim().strip_prefix("pub mod ")?.strip_suffix(';'))
            .collect()
    }

    #[test]
    fn module_map_names_every_public_module_and_nothing_else() {
        let source = include_str!("lib.rs");
        let (map, modules) = (map_entries(source), public_modules(source));
        assert!(modules.len() > 10, "no `pub mod` lines found: {modules:?}");
        let missing: Vec<_> = modules.iter().filter(|m| !map.contains(m)).collect();
        let stale: Vec<_> = map.iter().filter(|m| !modules.contains(m)).collect();
        assert!(
            missing.is_empty() && stale.is_empty(),
            "module map in src/lib.rs: missing {missing:?}, names no module {stale:?}"
        );
    }
}
