//! Payload encoders (docs/design.md §4): pure functions from samples to wire bytes.
//!
//! The JSON profile in two versions: v1 ([`json_v1`]) and the compact v2 for metered links
//! ([`json_compact`]), which shares v1's messages apart from telemetry and adds a schema. Sparkplug B lives in [`crate::sparkplug`] instead: it is a session (births,
//! `seq`, `bdSeq`, aliases, host-gated buffering), not a function of one batch.

pub mod json_compact;
pub mod json_v1;
