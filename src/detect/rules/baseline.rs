//! Baseline alarms: an hour (or, by regression, a day) used more energy than usual. Made by
//! `[[baselines]]`, never written in `[[rules]]`; the judging is in
//! [`detect::energy`](crate::detect::energy).

use serde::Deserialize;

use crate::detect::energy::BaselineState;

/// Where baseline alarms come from, for a `[[rules]]` entry that asks for one.
pub const MADE_BY: &str = "baseline alarms come from [[baselines]]";

/// The message of a baseline alarm (the engine words its own per baseline).
pub const MESSAGE: &str = "{device}: {value} this hour, usually {limit}";

/// `baseline`: takes no keys in `[[rules]]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Baseline {
    /// Index into the engine's baselines.
    #[serde(skip)]
    pub baseline: usize,
    /// The history and the hour or day being summed (running state).
    #[serde(skip)]
    pub state: Box<BaselineState>,
}
