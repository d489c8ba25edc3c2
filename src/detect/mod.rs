//! The detect stage: alarm rules and anomaly models over sample batches.
//!
//! [`Engine::evaluate`] is a deterministic function of (state, batch): time is the samples'
//! own timestamps, never the clock, so `plantwatch replay` over recorded CSV and the live
//! daemon run the same code and produce the same events. One engine owns every rule's state;
//! the daemon's core task holds it.
//!
//! Flood control (ISA-18.2): while a device does not answer, its other rules are not evaluated
//! (their alarms hold where they were, and only `comm_loss` speaks); and above
//! `[alarms] max_per_device_per_minute` raises per device, further raises are not announced
//! but summarised by one `alarm-flood` alarm on the device until a minute passes without one.
//!
//! Where things are:
//! - [`engine`]: the rule instances per device, built from the spec, and the per-poll
//!   evaluation; `settle` publishes what an observation changed, `timers` what time alone
//!   decides (only the devices with a timer due), `inspect` answers questions between polls
//!   (episodes, scores), `restore` puts back raised alarms and counters;
//! - [`energy`]: quota, baseline and demand alarms, fed by the ledger and the booked energy;
//! - [`flood`]: the per-device raise budget and its summary alarm;
//! - [`message`]: the alarm event and its text for people;
//! - [`command`]: operator acks, shelves and services;
//! - [`health`]: the device health index;
//! - [`snapshot`]: learned models saved and restored across restarts;
//! - [`rules`]: the rule kinds, one closed enum with one file per kind (its keys, checks,
//!   state and condition), over the models they use ([`trend`], [`quota`], [`expr`],
//!   [`anomaly`]), with [`alarm`] (the on/off-delay state machine) and [`maintenance`]
//!   (running hours and starts).

pub mod alarm;
pub mod anomaly;
pub mod command;
pub mod energy;
pub mod engine;
pub mod expr;
pub mod flood;
pub mod health;
mod inspect;
pub mod maintenance;
pub mod message;
pub mod quota;
mod restore;
pub mod rules;
mod settle;
pub mod snapshot;
pub mod spec;
mod timers;
pub mod trend;

pub use self::command::{CommandError, MAX_SHELVE_MS};
pub use self::energy::BaselineState;
pub use self::engine::Engine;
pub use self::flood::FLOOD_ALARM;
pub use self::health::DeviceHealth;
pub use self::inspect::{AnomalyRule, EpisodeState};
pub use self::message::{AlarmEvent, AlarmStatus, PointShare, fmt_eta, fmt_num};
