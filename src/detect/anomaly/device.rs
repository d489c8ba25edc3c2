//! Device-level anomaly model over a device's numeric points: a change detector per point,
//! whose alarms are pooled (the strongest point decides, nothing is averaged away), beside a
//! streaming PCA for faults that no single point shows (a closing valve changes how pressure,
//! flow and current relate before any of them leaves its band).
//!
//! # Change detector (per point, pooled by maximum)
//!
//! Each point keeps a robust baseline (an EWMA level over `learn_samples / 4` samples,
//! winsorised at 2σ, and a mean absolute deviation clipped at 3σ) that learns only outside
//! episodes, plus, inside an episode, a quarter as fast, so a lasting change is accepted
//! over hours. Per sample its deviation from the *segment reference* (the baseline outside an
//! episode, the level it settled at after the last detected change inside one) is
//! standardised, AR(1)-whitened and divided by the learned variance inflation of 30-sample
//! means (the slow wander that whitening leaves; real vibration and flow sensors have it), and
//! fed to a two-sided CUSUM with slack 0.75σ. When any point's CUSUM reaches 10 (at the
//! default threshold) a change is detected: the score is that of the CUSUM, every CUSUM
//! restarts, and each point whose CUSUM reached 30 % of the interval moves its segment
//! reference to where the change took it (the mean since its CUSUM left zero), the others
//! keep theirs. So a fault that moves one loosely correlated sensor by 2σ is seen within 10–20 samples instead
//! of being diluted in a T² over eight sensors, and each later change inside the episode (a
//! valve fully closed, a valve re-opening) scores again as a new onset. Detections within 10
//! samples of the last one do not score (the same change still building up).
//!
//! While the baselines are still filling their memory (the first `learn_samples / 4` samples),
//! a detected change is learned instead of raised: the points it moved take the level it
//! took them to (a pump started or a valve set during the first minutes is the normal still
//! to be learned, not a fault; on SKAB's valve1/ this took NAB from 49.6 to 52.0).
//!
//! The episode starts at the first detection and ends when every point has been back for 45
//! samples: a point that took part in a detection (it explains the episode) once its fast
//! EWMA is within 2σ, or a quarter of its largest excursion, of its level when the episode
//! began (a process rarely settles exactly where it left); any other point within 2σ of its
//! baseline, except smooth ones (lag-1 autocorrelation at least 0.6, a temperature that
//! takes many minutes to recover), which do not hold an episode open. On SKAB this took the
//! outlier F1 from 0.74 to 0.77 (valve1/ 0.78 to 0.85). When it ends, each point that
//! explained it starts again from the mean of its values while back: the baseline learned
//! (slowly) from the fault, and a process rarely settles exactly where it left, so without
//! this the settling itself read as a new change (valve1/ F1 0.86 to 0.87). A PCA episode that began inside a
//! change episode ends with it (then raises again only if Q still says so).
//!
//! # PCA
//!
//! Each point is standardised by its baseline; an exponentially weighted covariance of the
//! standardised vectors is learned on quiet samples and decomposed (Jacobi) every 50 samples.
//! Per sample the model computes the residual Q (squared prediction error) outside the
//! retained components (those that explain 90 % of the variance), turns it into a
//! sigma-equivalent by the Wilson–Hilferty approximation of its chi-square law, and keeps a
//! CUSUM of it, so a fault that comes and goes with the load stays one episode. Both run
//! through the same calibration and episodes as the single-point model. Each point's squared
//! residual is its part, which says which sensor explains a deviation. Hotelling's T² (a
//! move along the learned correlations) is left to the change detector: the points show it
//! themselves.
//!
//! The device's episode is active while either part's is; its score is the larger of the
//! two. The `anomaly` rule without `point` runs one per device (see `configs/plantwatch.toml`).
//! Measured on SKAB (benches/anomaly.rs, `PLANTWATCH_SKAB_MODEL=device`): see the bench
//! header and the README for the figures.

use super::episode::{COMPONENTS, KIND_SAMPLES, QUIET_SURPRISE, Reading, Tracker};
use super::tail::{Null, Tail};
use super::{AnomalyKind, DEFAULT_THRESHOLD, Episode, SCORE_P0};

/// Samples between two decompositions of the covariance.
const REFIT_SAMPLES: u64 = 50;
/// Share of the variance the retained components explain.
const EXPLAINED: f64 = 0.9;
/// Samples before the first score.
const WARMUP: u64 = 120;
// Standardised values are clipped here while learning, so one wild sample barely teaches.
const LEARN_CLIP: f64 = 4.0;
// E|Z| for a standard normal Z: turns a mean absolute deviation into a sigma.
const MEAN_ABS_PER_SIGMA: f64 = 0.797_9;
// Eigenvalues are floored at this share of the largest, so a flat direction is not infinitely
// sensitive.
const EIGEN_FLOOR: f64 = 1e-3;
// The CUSUM over Q, as the single-point model's mean CUSUM: slack k, per-sample
// input clipped, statistic capped so it drains within ~64 samples once the device is back.
const CUSUM_K: f64 = 0.5;
const CUSUM_CLIP: f64 = 4.0;
const CUSUM_MAX: f64 = 32.0;

// The baselines remember `learn_samples / BASELINE_SHARE` samples: slow wander (a motor
// warming up, a vibration level creeping) is followed, an abrupt change is not.
const BASELINE_SHARE: f64 = 4.0;
// Baseline learning is winsorised at these multiples of sigma (level, scale).
const LEVEL_CLIP: f64 = 2.0;
const SCALE_CLIP: f64 = 3.0;
// Inside an episode the baselines learn this much slower, so a lasting fault is accepted
// only over hours and the episode does not end while the fault is still there.
const EPISODE_LEARN: f64 = 0.25;
// CUSUM slack and decision interval (at DEFAULT_THRESHOLD) of the per-point change detector,
// in whitened sigmas: a 2σ step is caught after about 8 samples; chosen on SKAB's valve1/.
const CHANGE_K: f64 = 0.75;
const CHANGE_H: f64 = 10.0;
// Per-sample input of the change CUSUM is clipped, so one wild sample cannot fake a change.
const CHANGE_CLIP: f64 = 4.0;
// Cap on the learned lag-1 autocorrelation used to whiten a point.
const PHI_MAX: f64 = 0.98;
// The variance inflation of 30-sample means of a point's whitened values, and its null.
const SHORT_ALPHA: f64 = 2.0 / 31.0;
const SHORT_MEAN_VAR: f64 = SHORT_ALPHA / (2.0 - SHORT_ALPHA);
// Squared short means are clipped at this multiple of their learned variance, and
// E[min(X, 2)] for X ~ chi-squared(1) undoes the bias that clipping causes.
const VIF_CLIP: f64 = 2.0;
const VIF_CONSISTENCY: f64 = 0.742_4;
// The fast EWMA of each point, for the end of an episode (about 5 samples).
const FAST_ALPHA: f64 = 0.2;
// At a detected change, a point whose CUSUM reached this share of the decision interval took
// part in it and moves its segment reference.
const REBASE_SHARE: f64 = 0.3;
// Detections closer than this to the previous one are the same change building up.
const REARM_SAMPLES: u32 = 10;
// The change episode ends when every point has been back for CLEAR_SAMPLES samples: a point
// that explained a detection within BACK_SIGMA, or BACK_SHARE of its largest excursion, of its
// level when the episode began; another within BACK_SIGMA of its baseline, unless it is
// smooth (lag-1 autocorrelation at least SLOW_PHI). Chosen on SKAB's valve1/.
const BACK_SIGMA: f64 = 2.0;
const BACK_SHARE: f64 = 0.25;
const SLOW_PHI: f64 = 0.6;
const CLEAR_SAMPLES: u32 = 45;

/// One sample's device score.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceScore {
    /// Evidence in [0, 1] that a new device-level anomaly starts here.
    pub score: f64,
    /// The episode after this sample.
    pub episode: Episode,
    /// Each point's part of the deviation: its squared PCA residual, or, when the change
    /// detector scores higher, its CUSUM (at a detection) or squared deviation from its
    /// baseline; not normalised (see [`shares`]).
    pub contributions: Vec<f64>,
}

/// `parts` as shares that sum to 1 (all 0 when there is nothing to share).
pub fn shares(parts: &[f64]) -> Vec<f64> {
    let total: f64 = parts.iter().map(|p| p.max(0.0)).sum();
    parts
        .iter()
        .map(|p| if total > 0.0 { p.max(0.0) / total } else { 0.0 })
        .collect()
}

/// One point's state in the change detector.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct Channel {
    /// Segment reference: the level the point settled at after the last detected change.
    segment: f64,
    /// Fast EWMA of the value, for the end of an episode.
    fast: f64,
    /// Two-sided CUSUM of the whitened deviation from the segment reference.
    up: f64,
    down: f64,
    /// Sum and count of the values since each CUSUM last left zero: their mean is the
    /// level after a change (the classic CUSUM estimate of where the change took it).
    up_sum: f64,
    up_n: f64,
    down_sum: f64,
    down_n: f64,
    /// Previous standardised deviation from the segment reference (for whitening).
    prev_segment_z: f64,
    /// Previous standardised deviation from the baseline, and the EWMAs of z_t z_(t-1) and
    /// z_t², for the AR(1) coefficient.
    prev_z: f64,
    ac_num: f64,
    ac_den: f64,
    /// Short mean of the whitened baseline deviation and its learned variance.
    short_mean: f64,
    short_var: f64,
    /// The baseline level when the current episode started: where the point must return.
    anchor: f64,
    /// Whether the point took part in a detected change of the current episode.
    moved: bool,
    /// Largest distance of the fast EWMA from the anchor in this episode, in sigmas.
    peak: f64,
    /// Sum of the values while every point has been back (the level the episode ends at).
    #[serde(default)]
    back_sum: f64,
}

impl Channel {
    /// Restarts both CUSUMs and their run sums.
    fn restart(&mut self) {
        self.up = 0.0;
        self.down = 0.0;
        self.up_sum = 0.0;
        self.up_n = 0.0;
        self.down_sum = 0.0;
        self.down_n = 0.0;
    }
}

/// Streaming per-point change detector and PCA residual (Q) model over `d` points.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DeviceModel {
    d: usize,
    alpha: f64,
    n: u64,
    level: Vec<f64>,
    absdev: Vec<f64>,
    cov: Vec<f64>,
    /// Eigenvectors (row-major, one per row) and eigenvalues, largest first.
    vectors: Vec<f64>,
    values: Vec<f64>,
    kept: usize,
    tails: [Tail; COMPONENTS],
    tracker: Tracker,
    /// The kind of the PCA's current (or last) episode, from the component that started it
    /// and its first samples: the tracker names kinds from the single-point model's
    /// components, which are not these.
    kind: AnomalyKind,
    /// Sample at which the PCA's current (or last) episode started: its kind is settled over
    /// its first samples (a lone excursion of Q is a spike, one its CUSUM confirms a shift).
    #[serde(default)]
    pca_started: u64,
    /// CUSUM of the standardised Q, so a fault that comes and goes with the load (a current
    /// that stops following it matches it at every crossing) stays one episode.
    cusum: f64,
    /// The change detector: per point, and its episode.
    channels: Vec<Channel>,
    change: Episode,
    /// Samples since the last detected change, and samples all points have been back.
    since_change: u32,
    back: u32,
    z: Vec<f64>,
    /// Scratch: the part of z the retained components do not explain.
    residual: Vec<f64>,
}

impl DeviceModel {
    /// A model over `points` points with a memory of `learn_samples` samples.
    pub fn new(points: usize, learn_samples: u32) -> Self {
        let d = points.max(1);
        let channel = Channel {
            short_var: SHORT_MEAN_VAR,
            ..Channel::default()
        };
        Self {
            d,
            alpha: 2.0 / (f64::from(learn_samples.max(2)) / BASELINE_SHARE + 1.0),
            n: 0,
            level: vec![0.0; d],
            absdev: vec![0.0; d],
            cov: vec![0.0; d * d],
            vectors: vec![0.0; d * d],
            values: vec![0.0; d],
            kept: 0,
            tails: [
                Tail::new(Null::TwoSided),
                Tail::new(Null::SquareRoot),
                Tail::new(Null::TwoSided),
                Tail::new(Null::SquareRoot),
            ],
            tracker: Tracker::default(),
            kind: AnomalyKind::None,
            pca_started: 0,
            cusum: 0.0,
            channels: vec![channel; d],
            change: Episode::default(),
            since_change: REARM_SAMPLES,
            back: 0,
            z: vec![0.0; d],
            residual: vec![0.0; d],
        }
    }

    /// Whether the baselines are still filling their memory (`learn_samples / 4` samples):
    /// changes are then learned, not raised.
    fn learning(&self) -> bool {
        // alpha = 2 / (memory + 1).
        (self.n as f64) <= 2.0 / self.alpha - 1.0
    }

    /// Bytes the model holds, its matrices included.
    pub fn memory_bytes(&self) -> usize {
        let floats = self.level.capacity()
            + self.absdev.capacity()
            + self.cov.capacity()
            + self.vectors.capacity()
            + self.values.capacity()
            + self.z.capacity()
            + self.residual.capacity();
        std::mem::size_of::<Self>()
            + floats * std::mem::size_of::<f64>()
            + self.channels.capacity() * std::mem::size_of::<Channel>()
    }

    /// The current (or last) episode: the change detector's or the PCA's, whichever started
    /// first.
    pub fn episode(&self) -> Episode {
        // The PCA's kind is its onset component's, until its first samples settle it.
        let tracked = self.tracker.episode();
        let pca = Episode {
            kind: self.kind,
            settled: !tracked.active || self.n.saturating_sub(self.pca_started) > KIND_SAMPLES,
            ..tracked
        };
        let change = self.change;
        match (change.active, pca.active) {
            (true, true) if pca.since_ms < change.since_ms => pca,
            (true, _) => change,
            (false, true) => pca,
            (false, false) if pca.since_ms > change.since_ms => pca,
            (false, false) => change,
        }
    }

    /// Feeds one sample of every point (same order as at creation); None while warming up or
    /// when a value is not finite or the count is wrong.
    pub fn update(&mut self, ts_ms: i64, x: &[f64], threshold: f64) -> Option<DeviceScore> {
        if x.len() != self.d || x.iter().any(|v| !v.is_finite()) {
            return None;
        }
        self.n += 1;
        let rate = self.alpha.max(1.0 / self.n as f64);
        if self.n == 1 {
            self.level.copy_from_slice(x);
            for (ch, v) in self.channels.iter_mut().zip(x) {
                ch.segment = *v;
                ch.fast = *v;
            }
        }
        for (((z, v), level), absdev) in self.z.iter_mut().zip(x).zip(&self.level).zip(&self.absdev)
        {
            *z = (v - level) / (absdev / MEAN_ABS_PER_SIGMA).max(1e-9);
        }
        let warm = self.n > WARMUP;
        let (was_change, change_since) = (self.change.active, self.change.since_ms);
        let change = self.change_step(ts_ms, x, threshold, warm);
        let scored = warm && self.kept > 0;
        let result = if scored {
            let mut s = self.judge(ts_ms, threshold);
            let pca = self.tracker.episode();
            // A PCA episode that began inside the change detector's is part of the same event
            // (often a lagging temperature's residual): it ends with it. If Q still calls the
            // device anomalous it raises afresh.
            if was_change && !self.change.active && pca.active && pca.since_ms >= change_since {
                self.tracker = Tracker::default();
                self.cusum = 0.0;
            }
            if let Some((score, parts)) = change {
                if score >= s.score || !self.tracker.episode().active {
                    s.contributions = parts;
                }
                s.score = s.score.max(score);
            }
            s.episode = self.episode();
            Some(s)
        } else {
            None
        };
        let quiet = !self.tracker.episode().active;
        let calm = !self.change.active;
        self.learn_baseline(x, rate, warm, calm);
        // The correlations learn only from quiet samples: an anomaly's pattern must not
        // become the reference it is judged by.
        if quiet && calm {
            for a in 0..self.d {
                let za = self.z[a].clamp(-LEARN_CLIP, LEARN_CLIP);
                for b in 0..self.d {
                    let zb = self.z[b].clamp(-LEARN_CLIP, LEARN_CLIP);
                    let c = &mut self.cov[a * self.d + b];
                    *c += rate * (za * zb - *c);
                }
            }
        }
        if self.n % REFIT_SAMPLES == 0 || self.n == WARMUP {
            self.refit();
        }
        result
    }

    /// The per-point change detector's step: its onset score and each point's part when it
    /// detects a change at this sample, else its score and the points' current deviations.
    fn change_step(
        &mut self,
        ts_ms: i64,
        x: &[f64],
        threshold: f64,
        warm: bool,
    ) -> Option<(f64, Vec<f64>)> {
        let mut best = 0.0f64;
        for (((ch, v), level), absdev) in self
            .channels
            .iter_mut()
            .zip(x)
            .zip(&self.level)
            .zip(&self.absdev)
        {
            let sigma = (absdev / MEAN_ABS_PER_SIGMA).max(1e-9);
            if warm {
                let phi = if ch.ac_den > 0.0 {
                    (ch.ac_num / ch.ac_den).clamp(0.0, PHI_MAX)
                } else {
                    0.0
                };
                let inflation = (ch.short_var / SHORT_MEAN_VAR).max(1.0);
                let zs = ((v - ch.segment) / sigma).clamp(-CHANGE_CLIP, CHANGE_CLIP);
                let u = ((zs - phi * ch.prev_segment_z) / ((1.0 - phi * phi) * inflation).sqrt())
                    .clamp(-CHANGE_CLIP, CHANGE_CLIP);
                ch.prev_segment_z = zs;
                ch.up = (ch.up + u - CHANGE_K).max(0.0);
                ch.down = (ch.down - u - CHANGE_K).max(0.0);
                (ch.up_sum, ch.up_n) = if ch.up > 0.0 {
                    (ch.up_sum + v, ch.up_n + 1.0)
                } else {
                    (0.0, 0.0)
                };
                (ch.down_sum, ch.down_n) = if ch.down > 0.0 {
                    (ch.down_sum + v, ch.down_n + 1.0)
                } else {
                    (0.0, 0.0)
                };
                best = best.max(ch.up).max(ch.down);
            } else {
                ch.prev_segment_z = ((v - level) / sigma).clamp(-CHANGE_CLIP, CHANGE_CLIP);
            }
        }
        if !warm {
            for (ch, v) in self.channels.iter_mut().zip(x) {
                ch.fast += FAST_ALPHA * (v - ch.fast);
            }
            return None;
        }
        // The score at the default threshold is reached exactly at CHANGE_H; a higher threshold
        // asks for a proportionally stronger change (score = 1 - 0.1 * CHANGE_H / S).
        let score = if best > 0.0 {
            (1.0 - (1.0 - DEFAULT_THRESHOLD) * CHANGE_H / best).clamp(0.0, 1.0)
        } else {
            0.0
        };
        let armed = self.since_change >= REARM_SAMPLES;
        let detected = score >= threshold;
        let mut parts = Vec::new();
        // While the baselines have not yet seen one memory's worth of samples, what they hold
        // is a first impression, and a change (a pump started, a valve set) is the normal they
        // have still to learn, not an anomaly: the points it moved take its level, and
        // nothing is raised.
        let learning = self.learning();
        if detected {
            parts = self.channels.iter().map(|c| c.up.max(c.down)).collect();
            if !self.change.active && !learning {
                // A detection of the change detector is a moved mean, from its first sample.
                self.change = Episode {
                    active: true,
                    kind: AnomalyKind::LevelShift,
                    since_ms: ts_ms,
                    settled: true,
                };
                self.back = 0;
                for (ch, level) in self.channels.iter_mut().zip(&self.level) {
                    ch.anchor = *level;
                    ch.moved = false;
                    ch.peak = 0.0;
                }
            }
            // A point whose CUSUM took part in the change moves its reference to where the
            // change took it; the others keep theirs, so their noise does not become a change.
            let h = CHANGE_H * (1.0 - DEFAULT_THRESHOLD) / (1.0 - threshold).max(f64::EPSILON);
            for (ch, level) in self.channels.iter_mut().zip(&mut self.level) {
                let (sum, n) = if ch.up >= ch.down {
                    (ch.up_sum, ch.up_n)
                } else {
                    (ch.down_sum, ch.down_n)
                };
                if ch.up.max(ch.down) >= REBASE_SHARE * h && n >= 1.0 {
                    ch.segment = sum / n;
                    if learning {
                        *level = ch.segment;
                    } else {
                        ch.moved = true;
                    }
                }
                ch.restart();
                ch.prev_segment_z = 0.0;
            }
            self.since_change = 0;
        } else {
            self.since_change = self.since_change.saturating_add(1);
        }
        if self.change.active {
            let mut back = true;
            for ((ch, level), absdev) in self.channels.iter_mut().zip(&self.level).zip(&self.absdev)
            {
                let sigma = (absdev / MEAN_ABS_PER_SIGMA).max(1e-9);
                let from_anchor = (ch.fast - ch.anchor).abs() / sigma;
                ch.peak = ch.peak.max(from_anchor);
                back &= if ch.moved {
                    // An explaining point is back when it has returned most of the way to
                    // where it was: a process rarely settles exactly where it left, and a
                    // 20σ drop that recovers to 3σ is over.
                    from_anchor < BACK_SIGMA.max(BACK_SHARE * ch.peak)
                } else if ch.ac_den > 0.0 && ch.ac_num / ch.ac_den >= SLOW_PHI {
                    // A smooth point that explained nothing (a temperature that takes many
                    // minutes to recover) does not hold the episode open.
                    true
                } else {
                    (ch.fast - level).abs() < BACK_SIGMA * sigma
                };
            }
            self.back = if back { self.back.saturating_add(1) } else { 0 };
            for (ch, v) in self.channels.iter_mut().zip(x) {
                ch.back_sum = if back { ch.back_sum + v } else { 0.0 };
            }
            if self.back >= CLEAR_SAMPLES {
                self.change.active = false;
                for (ch, level) in self.channels.iter_mut().zip(&mut self.level) {
                    // The baseline learned from the fault (slowly) and the process rarely
                    // settles exactly where it left: a point that explained the episode starts
                    // again from where it has been while back, so that settling is not a new
                    // change.
                    if ch.moved {
                        *level = ch.back_sum / f64::from(self.back);
                    }
                    ch.segment = *level;
                    ch.back_sum = 0.0;
                    ch.restart();
                }
                self.back = 0;
            }
        }
        if parts.is_empty() {
            parts = self
                .channels
                .iter()
                .zip(&self.level)
                .zip(&self.absdev)
                .map(|((ch, level), absdev)| {
                    let dev = (ch.fast - level) / (absdev / MEAN_ABS_PER_SIGMA).max(1e-9);
                    dev * dev
                })
                .collect();
        }
        for (ch, v) in self.channels.iter_mut().zip(x) {
            ch.fast += FAST_ALPHA * (v - ch.fast);
        }
        // While the same change builds up it does not score again.
        Some((if armed && !learning { score } else { 0.0 }, parts))
    }

    /// Learns each point's baseline (winsorised after warm-up, a quarter as fast inside an
    /// episode) and, outside episodes, its whitening statistics.
    fn learn_baseline(&mut self, x: &[f64], rate: f64, warm: bool, calm: bool) {
        let slow = if calm { 1.0 } else { EPISODE_LEARN };
        let whiten_rate = (self.alpha * 0.25).max(1.0 / self.n as f64);
        for (((ch, v), level), absdev) in self
            .channels
            .iter_mut()
            .zip(x)
            .zip(&mut self.level)
            .zip(&mut self.absdev)
        {
            let sigma = (*absdev / MEAN_ABS_PER_SIGMA).max(1e-9);
            let r = v - *level;
            let step = if warm {
                r.clamp(-LEVEL_CLIP * sigma, LEVEL_CLIP * sigma)
            } else {
                r
            };
            *level += rate * slow * step;
            if !calm {
                continue;
            }
            let spread = if warm {
                (v - *level).abs().min(SCALE_CLIP * sigma)
            } else {
                (v - *level).abs()
            };
            *absdev += rate * (spread - *absdev);
            ch.segment = *level;
            let phi = if ch.ac_den > 0.0 {
                (ch.ac_num / ch.ac_den).clamp(0.0, PHI_MAX)
            } else {
                0.0
            };
            let z = ((v - *level) / (*absdev / MEAN_ABS_PER_SIGMA).max(1e-9))
                .clamp(-LEARN_CLIP, LEARN_CLIP);
            let w = (z - phi * ch.prev_z) / (1.0 - phi * phi).sqrt();
            ch.short_mean += SHORT_ALPHA * (w - ch.short_mean);
            let sq = ch.short_mean * ch.short_mean;
            ch.short_var += whiten_rate
                * if warm {
                    (sq / VIF_CONSISTENCY).min(VIF_CLIP * ch.short_var / VIF_CONSISTENCY)
                        - ch.short_var
                } else {
                    sq - ch.short_var
                };
            ch.ac_num += whiten_rate * (z * ch.prev_z - ch.ac_num);
            ch.ac_den += whiten_rate * (z * z - ch.ac_den);
            ch.prev_z = z;
        }
    }

    fn judge(&mut self, ts_ms: i64, threshold: f64) -> DeviceScore {
        let d = self.d;
        self.residual.copy_from_slice(&self.z);
        for j in 0..self.kept {
            let v = &self.vectors[j * d..(j + 1) * d];
            let t: f64 = v.iter().zip(&self.z).map(|(a, b)| a * b).sum();
            for (r, vi) in self.residual.iter_mut().zip(v) {
                *r -= t * vi;
            }
        }
        let q: f64 = self.residual.iter().map(|r| r * r).sum();
        // Chi-square law of Q (Box: g chi²_h from the discarded eigenvalues), made a standard
        // normal by Wilson–Hilferty.
        let (th1, th2) = self.values[self.kept..]
            .iter()
            .fold((0.0, 0.0), |(a, b), l| (a + l, b + l * l));
        let e_q = if th1 > 0.0 && th2 > 0.0 {
            wilson_hilferty(q, th2 / th1, th1 * th1 / th2)
        } else {
            0.0
        };
        // Hotelling's T² is not tested: a move along the learned correlations shows in the
        // points themselves, which the change detector watches (on SKAB, T² beside it raised
        // 6.1 instead of 3.4 false episodes per 10 000 normal samples for +0.8 NAB). Q is what
        // no point shows alone: the points no longer relate as they did.
        let q_in = e_q.clamp(-CUSUM_CLIP, CUSUM_CLIP);
        self.cusum = (self.cusum + q_in - CUSUM_K).clamp(0.0, CUSUM_MAX);
        // Component order as the single-point model's, so episodes are named alike: a lone
        // excursion of Q is a spike, a lasting one (its CUSUM) a level shift. The per-point
        // slots stay empty: the change detector has them.
        let evidence = [e_q.max(0.0), 0.0, 0.0, (2.0 * self.cusum).sqrt()];
        let kinds = [
            AnomalyKind::Spike,
            AnomalyKind::LevelShift,
            AnomalyKind::Spike,
            AnomalyKind::LevelShift,
        ];
        let mut readings = [Reading {
            score: 0.0,
            surprise: 0.0,
            kind: AnomalyKind::None,
        }; COMPONENTS];
        let mut strongest = 0.0f64;
        for (i, r) in readings.iter_mut().enumerate() {
            let surprise = self.tails[i].surprise(evidence[i]);
            strongest = strongest.max(surprise);
            let p = 2.0 * 10f64.powf(-surprise);
            *r = Reading {
                score: (1.0 - p / SCORE_P0).clamp(0.0, 1.0),
                surprise,
                kind: kinds[i],
            };
        }
        let quiet = !self.tracker.episode().active;
        let (score, onset) = self
            .tracker
            .step(self.n, ts_ms, threshold, &readings, 0.0, || None);
        let pca = self.tracker.episode();
        if quiet && pca.active {
            self.kind = onset.map_or(AnomalyKind::None, |i| kinds[i]);
            self.pca_started = self.n;
        }
        // Q that stays off (its CUSUM alarms) within the first samples is a lasting change of
        // how the points relate, not a spike.
        if pca.active
            && self.n.saturating_sub(self.pca_started) <= KIND_SAMPLES
            && readings[3].surprise >= QUIET_SURPRISE
        {
            self.kind = AnomalyKind::LevelShift;
        }
        if quiet && !self.tracker.episode().active {
            for (tail, e) in self.tails.iter_mut().zip(evidence) {
                tail.learn(e, strongest < QUIET_SURPRISE);
            }
        }
        // Q splits into squared residuals: each point's part.
        let contributions = self.residual.iter().map(|r| r * r).collect();
        DeviceScore {
            score,
            episode: self.episode(),
            contributions,
        }
    }

    /// Decomposes the covariance and keeps the components that explain [`EXPLAINED`].
    fn refit(&mut self) {
        let d = self.d;
        let (values, vectors) = jacobi(&self.cov, d);
        let largest = values.first().copied().unwrap_or(0.0).max(1e-12);
        self.values = values
            .iter()
            .map(|v| v.max(EIGEN_FLOOR * largest))
            .collect();
        self.vectors = vectors;
        let total: f64 = self.values.iter().sum();
        let mut sum = 0.0;
        self.kept = d;
        for (j, v) in self.values.iter().enumerate() {
            sum += v;
            if sum >= EXPLAINED * total {
                self.kept = (j + 1).min(d.saturating_sub(1)).max(1);
                break;
            }
        }
    }
}

impl super::regime::RegimeModel for DeviceModel {
    fn end_episode(&mut self) {
        self.tracker = Tracker::default();
        self.cusum = 0.0;
        self.change.active = false;
        self.back = 0;
        for (ch, level) in self.channels.iter_mut().zip(&self.level) {
            ch.segment = *level;
            ch.restart();
        }
    }
}

/// A standard-normal reading of `x ~ g chi²_h` (Wilson–Hilferty).
fn wilson_hilferty(x: f64, g: f64, h: f64) -> f64 {
    if !(g > 0.0 && h > 0.0) || x <= 0.0 {
        return 0.0;
    }
    let c = 2.0 / (9.0 * h);
    ((x / (g * h)).cbrt() - (1.0 - c)) / c.sqrt()
}

/// Eigenvalues (descending) and eigenvectors (rows) of the symmetric `d`×`d` matrix `a`.
fn jacobi(a: &[f64], d: usize) -> (Vec<f64>, Vec<f64>) {
    let mut m = a.to_vec();
    let mut v = vec![0.0; d * d];
    for i in 0..d {
        v[i * d + i] = 1.0;
    }
    for _sweep in 0..50 {
        let off: f64 = (0..d)
            .flat_map(|i| (0..d).filter(move |j| *j != i).map(move |j| (i, j)))
            .map(|(i, j)| m[i * d + j] * m[i * d + j])
            .sum();
        if off < 1e-18 {
            break;
        }
        for p in 0..d {
            for q in p + 1..d {
                let apq = m[p * d + q];
                if apq.abs() < 1e-300 {
                    continue;
                }
                let theta = (m[q * d + q] - m[p * d + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..d {
                    let mkp = m[k * d + p];
                    let mkq = m[k * d + q];
                    m[k * d + p] = c * mkp - s * mkq;
                    m[k * d + q] = s * mkp + c * mkq;
                }
                for k in 0..d {
                    let mpk = m[p * d + k];
                    let mqk = m[q * d + k];
                    m[p * d + k] = c * mpk - s * mqk;
                    m[q * d + k] = s * mpk + c * mqk;
                }
                for k in 0..d {
                    let vkp = v[k * d + p];
                    let vkq = v[k * d + q];
                    v[k * d + p] = c * vkp - s * vkq;
                    v[k * d + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    let mut order: Vec<usize> = (0..d).collect();
    order.sort_by(|x, y| m[y * d + y].total_cmp(&m[x * d + x]));
    let values = order.iter().map(|&j| m[j * d + j]).collect();
    let mut vectors = vec![0.0; d * d];
    for (row, &j) in order.iter().enumerate() {
        for k in 0..d {
            vectors[row * d + k] = v[k * d + j];
        }
    }
    (values, vectors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jacobi_diagonalises_a_known_matrix() {
        let (values, vectors) = jacobi(&[2.0, 1.0, 1.0, 2.0], 2);
        assert!((values[0] - 3.0).abs() < 1e-9 && (values[1] - 1.0).abs() < 1e-9);
        assert!((vectors[0].abs() - std::f64::consts::FRAC_1_SQRT_2).abs() < 1e-9);
    }

    /// Eight loosely correlated noisy points; point 5 steps by `step` sigma at `at` and back
    /// at `back`. Returns the samples that scored an onset and the first raise's shares.
    fn step_in_one_of_eight(step: f64, at: usize, back: usize) -> (Vec<usize>, Vec<f64>) {
        let mut s = 11u64;
        let mut gauss = move || {
            let mut u = || {
                s = s
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                ((s >> 11) as f64 + 0.5) / (1u64 << 53) as f64
            };
            let (a, b) = (u(), u());
            (-2.0 * a.ln()).sqrt() * (std::f64::consts::TAU * b).cos()
        };
        let mut model = DeviceModel::new(8, 1440);
        let (mut onsets, mut shares_at_raise) = (Vec::new(), Vec::new());
        let mut active = false;
        for i in 0..back + 300 {
            let common = 0.3 * gauss();
            let mut x = [0.0; 8];
            for (k, v) in x.iter_mut().enumerate() {
                *v = 10.0 * k as f64 + common + gauss();
            }
            if (at..back).contains(&i) {
                x[5] += step;
            }
            let Some(s) = model.update(i as i64 * 1000, &x, super::super::DEFAULT_THRESHOLD) else {
                continue;
            };
            if s.score >= super::super::DEFAULT_THRESHOLD {
                onsets.push(i);
            }
            if s.episode.active && !active && shares_at_raise.is_empty() {
                shares_at_raise = shares(&s.contributions);
            }
            active = s.episode.active;
        }
        (onsets, shares_at_raise)
    }

    /// Eight noisy points, point 5 offset by `offset(i)` sigma; returns the samples at which
    /// the change detector's episode started and ended.
    fn episodes_with_offset(
        samples: usize,
        offset: impl Fn(usize) -> f64,
    ) -> (Vec<usize>, Vec<usize>) {
        let mut s = 5u64;
        let mut gauss = move || {
            let mut u = || {
                s = s
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                ((s >> 11) as f64 + 0.5) / (1u64 << 53) as f64
            };
            let (a, b) = (u(), u());
            (-2.0 * a.ln()).sqrt() * (std::f64::consts::TAU * b).cos()
        };
        let mut model = DeviceModel::new(8, 1440);
        let (mut raises, mut clears, mut active) = (Vec::new(), Vec::new(), false);
        for i in 0..samples {
            let mut x = [0.0; 8];
            for (k, v) in x.iter_mut().enumerate() {
                *v = 10.0 * k as f64 + gauss();
            }
            x[5] += offset(i);
            model.update(i as i64 * 1000, &x, super::super::DEFAULT_THRESHOLD);
            let now = model.change.active;
            if now && !active {
                raises.push(i);
            } else if active && !now {
                clears.push(i);
            }
            active = now;
        }
        (raises, clears)
    }

    #[test]
    fn a_change_while_the_baselines_fill_is_learned_not_raised() {
        // learn_samples 1440: the baselines remember 360 samples. A pump set to a new duty at
        // sample 200 is the normal they have still to learn.
        let (raises, _) = episodes_with_offset(1500, |i| if i >= 200 { 8.0 } else { 0.0 });
        assert!(raises.is_empty(), "raised at {raises:?}");
        // The same change once the baselines are full is raised, once.
        let (raises, _) = episodes_with_offset(1500, |i| if i >= 600 { 8.0 } else { 0.0 });
        assert_eq!(raises.len(), 1, "raised at {raises:?}");
        assert!((600..620).contains(&raises[0]), "raised at {raises:?}");
    }

    #[test]
    fn a_point_that_settles_a_little_off_after_its_fault_does_not_raise_again() {
        // Down by 12 sigma for 300 samples, then back to 2.5 sigma above where it was: near
        // enough to end the episode (within a quarter of its largest excursion), and the
        // baseline, which learned slowly from the fault meanwhile, must not see the settling
        // as a new change.
        let (raises, clears) = episodes_with_offset(3200, |i| match i {
            0..2000 => 0.0,
            2000..2300 => -12.0,
            _ => 2.5,
        });
        assert!(
            raises.len() == 1 && (2000..2020).contains(&raises[0]),
            "raised at {raises:?}"
        );
        assert!(
            clears.len() == 1 && (2300..2400).contains(&clears[0]),
            "cleared at {clears:?}"
        );
    }

    #[test]
    fn a_three_sigma_step_of_one_point_in_eight_is_caught_soon_and_named() {
        let (at, back) = (2000, 2300);
        let (onsets, shares) = step_in_one_of_eight(3.0, at, back);
        assert!(
            onsets.iter().all(|&i| i >= at),
            "no onset before the step: {onsets:?}"
        );
        let first = onsets.first().copied().expect("the step scores an onset");
        assert!(
            first < at + 20,
            "caught {} samples after the step",
            first - at
        );
        let top = (0..8).max_by(|a, b| shares[*a].total_cmp(&shares[*b]));
        assert_eq!(top, Some(5), "shares {shares:?}");
        // The step back is a new change: it scores again, soon after it happens.
        assert!(
            onsets.iter().any(|&i| (back..back + 20).contains(&i)),
            "the return is an onset: {onsets:?}"
        );
        // While the step lasts it is one event: once the new level is settled (the reference
        // a detection moves to is the mean of a few samples, so one more onset may follow
        // within 30 samples), no onset until the step ends.
        assert!(
            !onsets.iter().any(|&i| i > first + 30 && i < back),
            "onsets inside the step: {onsets:?}"
        );
    }

    #[test]
    fn the_episode_ends_when_its_point_returns_though_a_slow_point_lags() {
        // Point 7 (a flow) drops by 10σ and comes back; point 4 (a temperature: smooth,
        // strongly autocorrelated) follows it down and recovers only over many minutes, as
        // on SKAB's valve experiments. The change detector's episode lasts as long as the
        // flow's fault (the PCA part, which sees the lagging point's residual, has its own).
        let mut s = 3u64;
        let mut gauss = move || {
            let mut u = || {
                s = s
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                ((s >> 11) as f64 + 0.5) / (1u64 << 53) as f64
            };
            let (a, b) = (u(), u());
            (-2.0 * a.ln()).sqrt() * (std::f64::consts::TAU * b).cos()
        };
        let (at, back) = (2000usize, 2400usize);
        let mut model = DeviceModel::new(8, 1440);
        let (mut slow, mut offset) = (0.0, 0.0);
        let (mut raised, mut cleared) = (None, None);
        for i in 0..back + 600 {
            slow = 0.95 * slow + gauss();
            let target = if (at..back).contains(&i) { -20.0 } else { 0.0 };
            // Down within a minute, back up over a quarter of an hour.
            offset += (target - offset) / if target < offset { 50.0 } else { 1000.0 };
            let mut x = [0.0; 8];
            for (k, v) in x.iter_mut().enumerate() {
                *v = 10.0 * k as f64 + gauss();
            }
            x[4] = 40.0 + slow + offset;
            if (at..back).contains(&i) {
                x[7] -= 10.0;
            }
            let Some(s) = model.update(i as i64 * 1000, &x, super::super::DEFAULT_THRESHOLD) else {
                continue;
            };
            if i < at {
                assert!(!s.episode.active, "false episode at {i}");
            }
            if model.change.active && raised.is_none() {
                raised = Some(i);
            }
            if raised.is_some() && !model.change.active && cleared.is_none() {
                cleared = Some(i);
            }
        }
        let raised = raised.expect("the drop raises");
        assert!(raised < at + 20, "raised at {raised}");
        let cleared = cleared.expect("the episode ends while the slow point still lags");
        assert!(
            (back..back + 120).contains(&cleared),
            "cleared at {cleared}, the fault ended at {back}"
        );
    }

    #[test]
    fn a_broken_correlation_is_caught_and_explained_by_its_point() {
        // Three points driven by one load, plus noise; then point 2 stops following it.
        let mut s = 7u64;
        let mut noise = move || {
            s = s
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((s >> 11) as f64 / (1u64 << 53) as f64 - 0.5) * 0.2
        };
        let mut model = DeviceModel::new(3, 1440);
        let at = 3000;
        let mut found = None;
        for i in 0..at + 200 {
            let load = (i as f64 / 40.0).sin() * 5.0;
            let third = if i >= at { -load } else { load };
            let x = [load + noise(), 2.0 * load + noise(), third + noise()];
            let s = model.update(i as i64 * 1000, &x, super::super::DEFAULT_THRESHOLD);
            if let Some(s) = s {
                if i < at {
                    assert!(!s.episode.active, "false episode at {i}");
                } else if found.is_none() && s.episode.active {
                    found = Some((i, s.contributions.clone()));
                }
            }
        }
        let (i, c) = found.expect("the broken correlation starts an episode");
        assert!(i < at + 60, "caught at {i}");
        let c = shares(&c);
        let top = (0..3).max_by(|a, b| c[*a].total_cmp(&c[*b]));
        assert_eq!(top, Some(2), "contributions {c:?}");
    }
}
