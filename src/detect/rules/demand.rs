//! Demand alarms: the running demand block is projected above the contract. Made by
//! `contract_kw` on a `[[meters]]` entry, never written in `[[rules]]`.

use serde::Deserialize;

use crate::process::demand::DemandState;

/// Where demand alarms come from, for a `[[rules]]` entry that asks for one.
pub const MADE_BY: &str = "demand alarms come from `contract_kw` on a [[meters]] entry";

/// The message of a demand alarm.
pub const MESSAGE: &str =
    "{device}: demand projected at {value} kW this block, contract {limit} kW";

/// `demand`: takes no keys in `[[rules]]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Demand {
    /// Index into the engine's meters.
    #[serde(skip)]
    pub meter: usize,
    /// Contracted demand, kW.
    #[serde(skip)]
    pub contract_kw: f64,
    /// Share of the contract that warns.
    #[serde(skip)]
    pub warn_at: f64,
    /// The demand window (running state).
    #[serde(skip)]
    pub state: Box<DemandState>,
}
