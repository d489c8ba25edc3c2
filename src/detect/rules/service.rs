//! Service alarms: running hours or starts since the last service reached their interval.
//! Made by `[[maintenance]]` (the counters live in [`maintenance`](crate::detect::maintenance)),
//! never written in `[[rules]]`.

use serde::Deserialize;

/// Where service alarms come from, for a `[[rules]]` entry that asks for one.
pub const MADE_BY: &str =
    "service alarms come from [[maintenance]] (service_hours, service_starts)";

/// The message of the running-hours service alarm.
pub const HOURS_MESSAGE: &str =
    "{device} is due for service: {value} running hours since the last (every {limit})";

/// The message of the starts service alarm.
pub const STARTS_MESSAGE: &str =
    "{device} is due for service: {value} starts since the last (every {limit})";

/// `service_hours`: takes no keys in `[[rules]]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceHours {
    /// The service interval in running hours.
    #[serde(skip)]
    pub every: f64,
}

/// `service_starts`: takes no keys in `[[rules]]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceStarts {
    /// The service interval in starts.
    #[serde(skip)]
    pub every: u64,
}
