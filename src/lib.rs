//! plantwatch: an edge daemon for factory gateways.
//!
//! One pipeline (DESIGN.md §1), data flowing one way:
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
//! - [`config`]: raw file → pure `resolve` (all issues at once) → typed [`config::Plan`].
//! - [`decode`]: pure registers ↔ values codec.
//! - [`acquire`]: the I/O shell for Modbus: read plans, schedule, device health, link tasks.
//! - [`encode`]: pure payload encoders (the JSON profile of DESIGN.md §4).
//! - [`sparkplug`]: pure Sparkplug B codec and edge node session state machine (DESIGN.md §4).
//! - [`process`]: pure stages between acquisition and sinks (the reporting policy).
//! - [`pipeline`]: the one step (process → detect → reporting) that live, replay and benches run.
//! - [`platform`]: pure records for the national energy-monitoring platform, from the ledger.
//! - [`sink`]: the MQTT sink (outbox-driven delivery) and the embedded broker.
//! - [`runtime`]: signals, systemd notify and watchdog, metrics over HTTP.
//! - [`sim`]: a Modbus device simulator serving real sockets and ptys, with fault injection.
//! - [`clock`]: the one place that reads wall-clock time.
//! - [`store`]: the SQLite state file on one thread: the durable, bounded MQTT outbox.
//! - [`cli`]: the command line, the only module that prints.

pub mod acquire;
pub mod cli;
pub mod clock;
pub mod config;
pub mod decode;
pub mod detect;
pub mod encode;
pub mod export;
pub mod model;
pub mod pipeline;
pub mod platform;
pub mod process;
pub mod replay;
pub mod runtime;
pub mod sim;
pub mod sink;
pub mod sparkplug;
pub mod store;

#[cfg(test)]
pub(crate) mod test_log;
