//! Quota alarms: a period's projected (or used) energy passes its quota. Made by
//! `[[quotas]]`, never written in `[[rules]]`; the period arithmetic is
//! [`detect::quota`](crate::detect::quota).

use serde::Deserialize;

use crate::detect::quota::QuotaState;

/// Where quota alarms come from, for a `[[rules]]` entry that asks for one.
pub const MADE_BY: &str = "quota alarms come from [[quotas]]";

/// The message of a quota alarm (the engine words its own per quota).
pub const MESSAGE: &str = "{device}: {value} used or projected this {per}, quota {limit}";

/// `quota`: takes no keys in `[[rules]]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quota {
    /// Index into the engine's quotas.
    #[serde(skip)]
    pub quota: usize,
    /// Alarms on the energy used rather than on the projection.
    #[serde(skip)]
    pub exceeded: bool,
    /// The period's energy so far (running state).
    #[serde(skip)]
    pub state: QuotaState,
}
