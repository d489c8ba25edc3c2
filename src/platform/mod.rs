//! The energy-platform profile (docs/design.md §4): the records that the national key
//! energy-consuming units online monitoring system (重点用能单位能耗在线监测系统, GB/T 37947)
//! collects, built from the energy ledger.
//!
//! This module is pure: it receives closed ledger intervals
//! ([`LedgerInterval`](crate::process::ledger::LedgerInterval)) and the time, and returns
//! records; it neither reads the clock nor does I/O. [`crate::store::platform_source`] reads
//! the ledger table for the totals that need a whole period. Delivery (outbox, transport, retries) lives in
//! [`crate::sink::platform_queue`] and [`crate::sink::platform_http`].
//!
//! - [`uscc`]: the enterprise's unified social credit code (GB 32100-2015), validated.
//! - [`decimal`]: the fixed-point values that make totals the exact sums of their parts.
//! - [`record`]: the record, its stable key, its statistic periods, its JSON payload and its
//!   stored form.
//! - [`build`]: ledger intervals → real-time, day, month (and year) records.
//! - [`live`]: the daemon's recorder: records as intervals close and periods end, across
//!   restarts.
//! - [`outbox`]: the stream a record queues under (the store wraps the record as a row).
//! - [`sm4`]: the SM4-CBC password of the platform's token request.
//! - [`spec`]: what to build (enterprise, zone, data items), as `config` resolves it from
//!   [`crate::config::platform`].

pub mod build;
pub mod decimal;
pub mod live;
pub mod outbox;
pub mod record;
pub mod sm4;
pub mod spec;
pub mod uscc;

pub use build::Builder;
pub use live::{Recorder, RecorderState};
pub use record::{Payload, Record, RecordKey, StatType, Versions};
pub use spec::{Item, Spec};
pub use uscc::{Uscc, UsccError};
