//! Episodes: one raise and one clear per anomalous event, and an onset score that stays low
//! while the same event persists.
//!
//! Each evidence component is *armed* while quiet. An armed component reaching the threshold
//! starts an event: every component is disarmed, and each re-arms only after
//! [`REARM_SAMPLES`] quiet samples (calibrated surprise below [`QUIET_SURPRISE`]). The onset
//! score is the strongest armed component's, so a level shift that lasts hours scores once.
//! Inside an episode only a component that has stayed quiet all along can score: that is a
//! different event (a variance burst during a level shift), not the same one flickering. The
//! episode ends when every component has been quiet for [`REARM_SAMPLES`].

use super::AnomalyKind;

/// Number of evidence components.
pub(super) const COMPONENTS: usize = 4;
/// Below this calibrated surprise (`-log10 p`, so p > 0.001) a component is quiet.
pub(super) const QUIET_SURPRISE: f64 = 3.0;
/// Quiet samples after which a component may start a new event, and an episode ends.
pub(super) const REARM_SAMPLES: u32 = 20;
/// The episode's kind is refined over its first samples, then kept.
pub(super) const KIND_SAMPLES: u64 = 20;
/// A point excursion of at least this many sigma counts towards the sign balance.
const EXCURSION_Z: f64 = 2.0;
/// Excursions on one side that make a level shift: a spike's own and four more within 20
/// samples, which noise after a spike gives far less than once in a hundred spikes.
const ONE_SIDED: u32 = 5;
// Component order, as in the model's evidence.
const MEAN: usize = 1;
const VARIANCE: usize = 2;
const STUCK: usize = 3;

/// The anomaly episode a model is in (or was last in), for the rule, the alarm and replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Episode {
    /// Whether an anomaly is in progress: the `anomaly` rule's alarm is raised while it is.
    pub active: bool,
    /// What kind of anomaly it is (refined over its first 20 samples, then kept).
    pub kind: AnomalyKind,
    /// Timestamp (ms) of the sample that started it.
    pub since_ms: i64,
    /// Whether `kind` is final. A raise sees only the onset: one huge sample is a spike or
    /// the first sample of a level shift, and which one only the next samples tell. Until
    /// they have (20 samples, or the episode's end), `kind` is provisional and may change.
    #[serde(default = "settled")]
    pub settled: bool,
}

/// Episodes saved before `settled` existed were past their first samples or over.
fn settled() -> bool {
    true
}

impl Default for Episode {
    fn default() -> Self {
        Self {
            active: false,
            kind: AnomalyKind::None,
            since_ms: 0,
            settled: true,
        }
    }
}

/// One component's reading at one sample.
#[derive(Debug, Clone, Copy)]
pub(super) struct Reading {
    /// Calibrated score in [0, 1].
    pub(super) score: f64,
    /// Calibrated surprise, `-log10` of the tail probability.
    pub(super) surprise: f64,
    /// What an event of this component is.
    pub(super) kind: AnomalyKind,
}

/// Arming and episode state.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub(super) struct Tracker {
    episode: Episode,
    armed: [bool; COMPONENTS],
    quiet: [u32; COMPONENTS],
    started_n: u64,
    /// Components that have left the quiet level during the current episode.
    touched: [bool; COMPONENTS],
    /// Peak surprise per component since the episode started, for its kind.
    peak: [f64; COMPONENTS],
    /// Point excursions above and below the baseline since the episode started.
    above: u32,
    below: u32,
    /// The mean component's kind when it first left the quiet level in this episode.
    mean_kind: Option<AnomalyKind>,
    /// Point excursions since the episode started that belong to another phase of the
    /// point's cycle (inside its range, far from the expected value), and the others (only
    /// where a season is modelled).
    #[serde(default)]
    in_band: u32,
    #[serde(default)]
    out_band: u32,
}

impl Default for Tracker {
    fn default() -> Self {
        Self {
            episode: Episode::default(),
            armed: [true; COMPONENTS],
            quiet: [REARM_SAMPLES; COMPONENTS],
            started_n: 0,
            touched: [false; COMPONENTS],
            peak: [0.0; COMPONENTS],
            above: 0,
            below: 0,
            mean_kind: None,
            in_band: 0,
            out_band: 0,
        }
    }
}

impl Tracker {
    /// The current episode.
    pub(super) fn episode(&self) -> Episode {
        self.episode
    }

    /// Consumes one sample's readings (sample number `n`, time `ts_ms`, signed point z, and
    /// whether the value lies inside its cycle's range, None without a season); returns the
    /// onset score and the component that gave it.
    pub(super) fn step(
        &mut self,
        n: u64,
        ts_ms: i64,
        threshold: f64,
        readings: &[Reading; COMPONENTS],
        z: f64,
        in_band: impl FnOnce() -> Option<bool>,
    ) -> (f64, Option<usize>) {
        let mut onset = (0.0, None);
        for (i, r) in readings.iter().enumerate() {
            let eligible = !self.episode.active || !self.touched[i];
            if self.armed[i] && eligible && r.score > onset.0 {
                onset = (r.score, Some(i));
            }
        }
        if onset.0 >= threshold {
            if !self.episode.active {
                self.episode = Episode {
                    active: true,
                    kind: onset.1.map_or(AnomalyKind::None, |i| readings[i].kind),
                    since_ms: ts_ms,
                    settled: false,
                };
                self.started_n = n;
                self.peak = [0.0; COMPONENTS];
                self.touched = [false; COMPONENTS];
                self.above = 0;
                self.below = 0;
                self.mean_kind = None;
                self.in_band = 0;
                self.out_band = 0;
            }
            self.armed = [false; COMPONENTS];
            self.quiet = [0; COMPONENTS];
        }
        for (i, r) in readings.iter().enumerate() {
            if r.surprise < QUIET_SURPRISE {
                self.quiet[i] = self.quiet[i].saturating_add(1);
            } else {
                self.quiet[i] = 0;
                self.touched[i] |= self.episode.active;
            }
            if self.quiet[i] >= REARM_SAMPLES {
                self.armed[i] = true;
            }
        }
        if self.episode.active {
            if n.saturating_sub(self.started_n) <= KIND_SAMPLES {
                self.refine_kind(readings, z, in_band);
            } else {
                self.episode.settled = true;
            }
            if self.quiet.iter().all(|q| *q >= REARM_SAMPLES) {
                self.episode.active = false;
                self.episode.settled = true;
            }
        }
        onset
    }

    /// Names the episode from what its first samples showed: repeats or a collapsed noise
    /// are `Stuck`; point excursions on both sides of the baseline with a raised noise are
    /// `Variance`; a one-sided excursion or a moved mean is the mean's kind (a level shift,
    /// or a drift if the mean crept up before the episode), or `Pattern` where a season is
    /// modelled and every excursion took a value of another phase of its cycle; a lone
    /// excursion is a `Spike`.
    fn refine_kind(
        &mut self,
        readings: &[Reading; COMPONENTS],
        z: f64,
        in_band: impl FnOnce() -> Option<bool>,
    ) {
        for (peak, r) in self.peak.iter_mut().zip(readings) {
            *peak = peak.max(r.surprise);
        }
        if self.mean_kind.is_none() && readings[MEAN].surprise >= QUIET_SURPRISE {
            self.mean_kind = Some(readings[MEAN].kind);
        }
        if z >= EXCURSION_Z {
            self.above += 1;
        } else if z <= -EXCURSION_Z {
            self.below += 1;
        }
        if z.abs() >= EXCURSION_Z {
            match in_band() {
                Some(true) => self.in_band += 1,
                Some(false) => self.out_band += 1,
                None => {}
            }
        }
        // The cycle's shape, not its level: the values would be normal at another phase.
        let pattern = self.in_band >= 2 && self.out_band == 0;
        let active = |i: usize| self.peak[i] >= QUIET_SURPRISE;
        self.episode.kind = if active(STUCK) && self.peak[STUCK] >= self.peak[VARIANCE] {
            AnomalyKind::Stuck
        } else if active(VARIANCE) && self.above.min(self.below) >= 2 {
            AnomalyKind::Variance
        } else if active(MEAN) || self.above.max(self.below) >= ONE_SIDED {
            if pattern {
                AnomalyKind::Pattern
            } else {
                self.mean_kind.unwrap_or(AnomalyKind::LevelShift)
            }
        } else if active(VARIANCE) {
            AnomalyKind::Variance
        } else {
            AnomalyKind::Spike
        };
    }
}
