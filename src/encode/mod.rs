//! Payload encoders (DESIGN.md §4): pure functions from samples to wire bytes.
//!
//! Only the JSON profile exists yet; Sparkplug B and the energy-platform profile will be
//! further variants of the same shape, one file each.

pub mod json_v1;
