//! Process: pure stages between acquisition and the sinks. Deterministic in
//! (state, batch, time); no I/O, no clock.

pub mod report;
