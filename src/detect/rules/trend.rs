//! Trend rules: the robust trend of a point will cross a limit within a horizon. The model is
//! [`TrendModel`]; this is the kind around it.

use std::time::Duration;

use serde::Deserialize;

use super::Problem;
use crate::detect::engine::{Seen, ms};
use crate::detect::trend::{Direction, TrendModel, TrendParams};

/// The message of a trend rule that gives none.
pub const MESSAGE: &str =
    "{device} {point} = {value}{unit} predicted to reach {limit}{unit} in {eta}";

/// Buckets of a trend window: fine enough to follow a shift, coarse enough to be cheap.
const TREND_BUCKETS: u16 = 60;

/// `kind = "trend"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trend {
    /// The limit the trend must not reach.
    pub limit: f64,
    /// Which way it crosses.
    pub direction: Direction,
    /// Alarm when the crossing is predicted sooner than this.
    #[serde(deserialize_with = "super::duration")]
    pub horizon: Duration,
    /// The window the trend is fitted over.
    #[serde(default = "six_hours", deserialize_with = "super::duration")]
    pub window: Duration,
    /// Accepted like the limits' (and checked), but a trend alarm has no hysteresis: it
    /// clears when the predicted crossing leaves the horizon.
    #[serde(default)]
    pub deadband: f64,
    /// The fitted model (running state).
    #[serde(skip)]
    pub model: Option<Box<TrendModel>>,
}

fn six_hours() -> Duration {
    Duration::from_secs(6 * 3600)
}

impl Trend {
    pub(super) fn check(&self, out: &mut Vec<Problem>) {
        super::finite(out, "limit", self.limit);
        if self.window < Duration::from_secs(60) {
            out.push((
                "window",
                "a trend window shorter than 1 minute cannot be robust; use e.g. \"6h\"".to_owned(),
            ));
        }
        super::non_negative(out, "deadband", self.deadband);
    }

    pub(super) fn start(&mut self) {
        self.model = Some(Box::new(TrendModel::new(TrendParams {
            window_ms: ms(self.window),
            buckets: TREND_BUCKETS,
        })));
    }

    /// Adds a good sample at `at`: whether the crossing is now predicted within the
    /// horizon, with the fitted value, limit and time to the crossing in `seen`.
    pub fn holds(&mut self, at: i64, value: f64, seen: &mut Seen) -> Option<bool> {
        let model = self.model.as_mut()?;
        model.update(at, value);
        seen.limit = Some(self.limit);
        let eta = model.time_to(at, self.limit, self.direction);
        seen.eta_ms = eta;
        if let Some(f) = model.fitted(at) {
            seen.value = Some(f);
        }
        Some(eta.is_some_and(|e| e <= ms(self.horizon)))
    }
}
