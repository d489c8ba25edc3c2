//! Anomaly rules: a point's (or a device's points') statistical model says the signal no
//! longer behaves as it learned. The models are [`anomaly`](crate::detect::anomaly); this is
//! the kind around them: its keys, one model per target (per point, or one over the device's
//! points), and the alarm following the model's episode.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Problem;
use crate::detect::anomaly::device::{self, DeviceModel};
use crate::detect::anomaly::regime::Regimes;
use crate::detect::anomaly::{
    AnomalyKind, AnomalyModel, AnomalyParams, DEFAULT_THRESHOLD, Episode, Season,
};
use crate::detect::engine::Seen;
use crate::detect::message::PointShare;
use crate::detect::spec::Target;
use crate::model::Name;

/// The message of a point `anomaly` rule that gives none.
pub const MESSAGE: &str = "{device} {point} = {value}{unit} looks abnormal: {kind} (score {score}, expected about {limit}{unit})";

/// The message of a device-level `anomaly` rule that gives none.
pub const DEVICE_MESSAGE: &str = "{device}: its points no longer move together as usual ({kind}, score {score}); explained by {explains}";

/// `kind = "anomaly"`: with `point`, one model per matched point; without, one model over the
/// device's `points`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Anomaly {
    /// The score in (0, 1) above which it alarms.
    #[serde(default = "default_threshold")]
    pub threshold: f64,
    /// The model's memory in samples.
    #[serde(default)]
    pub learn_samples: Option<u32>,
    /// The model's memory as a duration, turned into samples by each device's poll interval.
    #[serde(default, deserialize_with = "super::optional_duration")]
    pub learn: Option<Duration>,
    /// Samples seen before any score.
    #[serde(default)]
    pub warmup_samples: Option<u32>,
    /// The seasonal baseline.
    #[serde(default)]
    pub season: SeasonName,
    /// The smallest scale, in engineering units.
    #[serde(default)]
    pub min_sigma: Option<f64>,
    /// Without `point`: the points (names or globs) of the device-level model; every numeric
    /// point of the device when absent.
    #[serde(default)]
    pub points: Option<Vec<String>>,
    /// The device's run-state point: one model per operating regime (running or stopped), so
    /// a stop is not an anomaly.
    #[serde(default)]
    pub regime: Option<String>,
    /// The target's model (running state).
    #[serde(skip)]
    pub model: Option<Model>,
}

fn default_threshold() -> f64 {
    DEFAULT_THRESHOLD
}

/// `anomaly` seasons, as written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SeasonName {
    /// The model finds the point's cycle, if it has one.
    #[default]
    Auto,
    /// One baseline.
    None,
    /// A baseline per local hour of the day.
    HourOfDay,
    /// A baseline per local hour of the week.
    HourOfWeek,
}

/// A running `anomaly` target's model.
#[derive(Debug, Clone)]
pub enum Model {
    /// One point's model, per regime.
    Point(Box<Regimes<AnomalyModel>>),
    /// One model over several points of the device.
    Device(Box<DeviceAnomaly>),
}

/// A device-level `anomaly` rule's state: its model per regime and what explains its episode.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeviceAnomaly {
    pub(crate) models: Regimes<DeviceModel>,
    /// Scratch: this poll's values of the watched points.
    pub(crate) x: Vec<f64>,
    /// Each point's part of the deviation, summed over the current (or last) episode.
    pub(crate) parts: Vec<f64>,
}

/// The samples a model's memory of `learn` holds at one sample per `poll` (rounded to the
/// nearest, saturating).
pub fn learn_samples(learn: Duration, poll: Duration) -> u32 {
    if poll.is_zero() {
        return u32::MAX;
    }
    let samples = (learn.as_secs_f64() / poll.as_secs_f64()).round();
    if samples >= f64::from(u32::MAX) {
        u32::MAX
    } else {
        samples as u32
    }
}

impl Anomaly {
    pub(super) fn check(&self, out: &mut Vec<Problem>) {
        super::finite(out, "threshold", self.threshold);
        if self.threshold.is_finite() && !(self.threshold > 0.0 && self.threshold < 1.0) {
            out.push((
                "threshold",
                format!("{} is outside (0, 1); e.g. 0.9", self.threshold),
            ));
        }
        if self.learn_samples.is_some_and(|n| n < 10) {
            out.push(("learn_samples", "must be at least 10".to_owned()));
        }
        if let Some(s) = self.min_sigma {
            super::non_negative(out, "min_sigma", s);
        }
        if self.learn.is_some() && self.learn_samples.is_some() {
            out.push((
                "learn",
                "give `learn` (a duration) or `learn_samples`, not both".to_owned(),
            ));
        }
    }

    /// The model's settings on a device polled every `poll`: `learn`, where given, becomes
    /// that many polls.
    pub fn params(&self, poll: Option<Duration>) -> AnomalyParams {
        let mut params = AnomalyParams::default();
        if let Some(n) = self.learn_samples {
            params.learn_samples = n;
        }
        if let Some(n) = self.warmup_samples {
            params.warmup_samples = n;
        }
        if let Some(s) = self.min_sigma.filter(|s| s.is_finite()) {
            params.min_sigma = s;
        }
        params.threshold = self.threshold;
        params.season = match self.season {
            SeasonName::Auto => Season::Auto,
            SeasonName::None => Season::None,
            SeasonName::HourOfDay => Season::HourOfDay,
            SeasonName::HourOfWeek => Season::HourOfWeek,
        };
        if let (Some(learn), Some(poll)) = (self.learn, poll) {
            params.learn_samples = learn_samples(learn, poll);
        }
        params
    }

    pub(super) fn start(&mut self, target: &Target, poll: Option<Duration>) {
        let params = self.params(poll);
        self.model = Some(if target.points.is_empty() {
            Model::Point(Box::new(Regimes::new(
                AnomalyModel::new(params),
                target.regime.is_some(),
            )))
        } else {
            Model::Device(Box::new(DeviceAnomaly {
                models: Regimes::new(
                    DeviceModel::new(target.points.len(), params.learn_samples),
                    target.regime.is_some(),
                ),
                x: vec![0.0; target.points.len()],
                parts: vec![0.0; target.points.len()],
            }))
        });
    }

    /// The episode of the model of the current regime (`None` before the first sample).
    pub fn episode(&self) -> Option<Episode> {
        match self.model.as_ref()? {
            Model::Point(m) => m.current().map(AnomalyModel::episode),
            Model::Device(s) => s.models.current().map(DeviceModel::episode),
        }
    }

    /// The kind of the episode the alarm follows, and whether it is settled (see
    /// [`Episode::settled`]): the latest started of its regimes' (a regime switch ends it,
    /// and the new regime's model may hold an older one).
    pub fn episode_kind(&self) -> Option<(AnomalyKind, bool)> {
        let episodes: Vec<Episode> = match self.model.as_ref()? {
            Model::Point(m) => m.models().iter().map(AnomalyModel::episode).collect(),
            Model::Device(s) => s.models.models().iter().map(DeviceModel::episode).collect(),
        };
        let latest = episodes.into_iter().max_by_key(|e| e.since_ms)?;
        (latest.kind != AnomalyKind::None).then_some((latest.kind, latest.settled))
    }

    /// Whether this target is a device-level model.
    pub fn is_device(&self) -> bool {
        matches!(self.model, Some(Model::Device(_)))
    }

    /// One poll of a point model: scores the good `value` taken at `at` with run state
    /// `running`, in season bucket `(hour of day, hour of week)`; whether the model's episode
    /// is active. The score also goes to `score_out` (the point's highest this poll).
    pub fn point(
        &mut self,
        at: i64,
        value: f64,
        (hour_of_day, hour_of_week): (u16, u16),
        running: Option<bool>,
        seen: &mut Seen,
        score_out: &mut Option<f64>,
    ) -> Option<bool> {
        let bucket = match self.season {
            SeasonName::None | SeasonName::Auto => 0,
            SeasonName::HourOfDay => hour_of_day,
            SeasonName::HourOfWeek => hour_of_week,
        };
        let Some(Model::Point(models)) = self.model.as_mut() else {
            return None;
        };
        let Some(model) = models.select(running) else {
            // A regime switch is settling: whatever was raised in the regime left ended.
            return Some(false);
        };
        let score = model.update(at, bucket, value)?;
        *score_out = Some(score_out.map_or(score.score, |s: f64| s.max(score.score)));
        seen.score = Some(score.score);
        seen.limit = Some(score.expected);
        // The alarm follows the model's episode: one raise at its onset, one clear at its
        // end, however long the anomaly lasts.
        Some(score.episode.active)
    }

    /// One poll of a device-level model: scores the poll if it holds a good value of every
    /// watched point, and returns whether the model's episode is active.
    pub fn device(
        &mut self,
        at: i64,
        points: &[usize],
        values: &[Option<f64>],
        sample_of: &[Option<usize>],
        running: Option<bool>,
        seen: &mut Seen,
    ) -> Option<bool> {
        let threshold = self.threshold;
        let Some(Model::Device(state)) = self.model.as_mut() else {
            return None;
        };
        for (x, &p) in state.x.iter_mut().zip(points) {
            // Only this poll's values: a point missing from it would repeat an old value.
            sample_of.get(p).copied().flatten()?;
            *x = values.get(p).copied().flatten()?;
        }
        let Some(model) = state.models.select(running) else {
            // A regime switch is settling: whatever was raised in the regime left has ended.
            return Some(false);
        };
        let was_active = model.episode().active;
        let score = model.update(at, &state.x, threshold)?;
        if score.episode.active {
            if !was_active {
                state.parts.iter_mut().for_each(|p| *p = 0.0);
            }
            for (sum, c) in state.parts.iter_mut().zip(&score.contributions) {
                *sum += c;
            }
        }
        *seen = Seen {
            score: Some(score.score),
            ..Seen::default()
        };
        Some(score.episode.active)
    }

    /// Each watched point's share of a device-level model's deviation, largest first; empty
    /// for a point model.
    pub fn shares(&self, points: &[usize], names: &[Name]) -> Vec<PointShare> {
        let Some(Model::Device(state)) = &self.model else {
            return Vec::new();
        };
        let mut out: Vec<PointShare> = points
            .iter()
            .zip(device::shares(&state.parts))
            .filter_map(|(&p, share)| {
                Some(PointShare {
                    point: names.get(p)?.to_string(),
                    share,
                })
            })
            .collect();
        out.sort_by(|a, b| b.share.total_cmp(&a.share));
        out
    }
}
