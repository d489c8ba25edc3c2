//! Sinks: the I/O shell for outputs. Each sink is its own task; a slow sink never slows
//! polling or another sink (DESIGN.md §1).

pub(crate) mod backoff;
pub mod influx;
pub mod mqtt;
pub mod platform_http;
pub mod platform_queue;
pub mod sparkplug;
pub mod webhook;
