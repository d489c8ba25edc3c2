//! Process: pure stages between acquisition and the sinks. Deterministic in
//! (state, batch, time); no I/O, no clock.

pub mod baseline;
pub mod coal;
pub mod counter;
pub mod demand;
pub mod ledger;
pub mod report;
pub mod spec;
pub mod tou;
