//! Comm-loss rules: the device has not answered for a while. Judged per poll (an answer clears
//! it) and by time alone (a device that sends nothing is noticed by the engine's timers).

use std::time::Duration;

use serde::Deserialize;

/// The message of a comm-loss rule that gives none.
pub const MESSAGE: &str = "{device} not answering";

/// `kind = "comm_loss"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommLoss {
    /// How long the device must stay silent.
    #[serde(default = "one_minute", deserialize_with = "super::duration")]
    pub duration: Duration,
}

fn one_minute() -> Duration {
    Duration::from_secs(60)
}
