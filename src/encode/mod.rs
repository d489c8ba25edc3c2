//! Payload encoders (docs/design.md §4): pure functions from samples to wire bytes.
//!
//! Only the JSON profile exists yet; the energy-platform profile will be a further variant of
//! the same shape. Sparkplug B lives in [`crate::sparkplug`] instead: it is a session (births,
//! `seq`, `bdSeq`, aliases, host-gated buffering), not a function of one batch.

pub mod json_v1;
