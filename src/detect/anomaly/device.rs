//! Device-level anomaly model: a streaming PCA over a device's numeric points, for faults
//! that no single point shows (a closing valve changes how pressure, flow and current relate
//! before any of them leaves its band).
//!
//! Each point is standardised by a robust running level and scale; an exponentially weighted
//! covariance of the standardised vectors is learned on quiet samples and decomposed (Jacobi)
//! every 50 samples. Per sample the model computes Hotelling's T² in the retained components
//! (those that explain 90 % of the variance) and the residual Q (squared prediction error),
//! turns each into a sigma-equivalent by the Wilson–Hilferty approximation of its chi-square
//! law, and keeps a CUSUM of the two together, so a fault that comes and goes with the load
//! stays one episode. Each point also keeps a CUSUM of its AR(1)-whitened standardised
//! value, for a sensor that moves by a couple of sigma on its own. The four run through the
//! same calibration and episodes as the single-point model. Each point's part of the most
//! surprising of Q, T² and the per-point CUSUMs says which sensor explains a deviation (its
//! squared residual for Q; for T², its value times its entry of the back-projected scores,
//! which sum to T²; its own CUSUM).
//!
//! The `anomaly` rule without `point` runs one per device (see `configs/plantwatch.toml`).
//! On SKAB (`PLANTWATCH_SKAB_MODEL=device cargo bench --bench anomaly`) it does worse than
//! one model per point: outlier F1 0.68, NAB standard 19.8 on its raises and clears, 3.4
//! false episodes per device per 10 000 normal samples. SKAB's faults mostly move one sensor
//! by about 2 sigma, which a model per point with its whitening and calibration sees sooner.

use super::episode::{COMPONENTS, QUIET_SURPRISE, Reading, Tracker};
use super::tail::{Null, Tail};
use super::{AnomalyKind, Episode, SCORE_P0};

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
// The CUSUM over T² and Q, as the single-point model's mean CUSUM: slack k, per-sample
// input clipped, statistic capped so it drains within ~64 samples once the device is back.
const CUSUM_K: f64 = 0.5;
const CUSUM_CLIP: f64 = 4.0;
const CUSUM_MAX: f64 = 32.0;
// Quiet samples a point's scale learns from before its CUSUM runs; squared values beyond
// this multiple of the scale teach only that much.
const POINT_WARMUP: u64 = 60;
const POINT_SCALE_CLIP: f64 = 9.0;

/// One sample's device score.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceScore {
    /// Evidence in [0, 1] that a new device-level anomaly starts here.
    pub score: f64,
    /// The episode after this sample.
    pub episode: Episode,
    /// Each point's part of the deviation, in the statistic (T² or Q) that is the more
    /// surprising; not normalised (see [`shares`]).
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

/// Streaming PCA T²/Q model over `d` points.
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
    /// The kind of the component that started the current (or last) episode: the tracker
    /// names kinds from the single-point model's components, which are not these.
    kind: AnomalyKind,
    /// CUSUM of the standardised T² and Q together, so a fault that comes and goes with the
    /// load (a current that stops following it matches it at every crossing) stays one
    /// episode.
    cusum: f64,
    /// Per point: the learned mean square of its standardised value, samples it was learned
    /// from, and a two-sided CUSUM (up, down) of the whitened value.
    point_scale: Vec<f64>,
    point_n: u64,
    point_cusum: Vec<[f64; 2]>,
    /// Per point: the previous standardised value and the EWMAs of u_t u_(t-1) and u_t²,
    /// for the AR(1) whitening of its CUSUM input.
    point_ar: Vec<[f64; 3]>,
    z: Vec<f64>,
    /// Scratch: the part of z the retained components do not explain.
    residual: Vec<f64>,
    /// Scratch: the scores in the retained components, divided by their eigenvalues.
    weighted: Vec<f64>,
}

impl DeviceModel {
    /// A model over `points` points with a memory of `learn_samples` samples.
    pub fn new(points: usize, learn_samples: u32) -> Self {
        let d = points.max(1);
        Self {
            d,
            alpha: 2.0 / (f64::from(learn_samples.max(2)) + 1.0),
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
            cusum: 0.0,
            point_scale: vec![0.0; d],
            point_n: 0,
            point_cusum: vec![[0.0; 2]; d],
            point_ar: vec![[0.0; 3]; d],
            z: vec![0.0; d],
            residual: vec![0.0; d],
            weighted: vec![0.0; d],
        }
    }

    /// Bytes the model holds, its matrices included.
    pub fn memory_bytes(&self) -> usize {
        let floats = self.level.capacity()
            + self.absdev.capacity()
            + self.cov.capacity()
            + self.vectors.capacity()
            + self.values.capacity()
            + self.z.capacity()
            + self.residual.capacity()
            + self.weighted.capacity()
            + self.point_scale.capacity()
            + 2 * self.point_cusum.capacity();
        std::mem::size_of::<Self>() + floats * std::mem::size_of::<f64>()
    }

    /// The current (or last) episode.
    pub fn episode(&self) -> Episode {
        Episode {
            kind: self.kind,
            ..self.tracker.episode()
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
        }
        for (((z, v), level), absdev) in self.z.iter_mut().zip(x).zip(&self.level).zip(&self.absdev)
        {
            *z = (v - level) / (absdev / MEAN_ABS_PER_SIGMA).max(1e-9);
        }
        let scored = self.n > WARMUP && self.kept > 0;
        let result = if scored {
            Some(self.judge(ts_ms, threshold))
        } else {
            None
        };
        let quiet = !self.tracker.episode().active;
        {
            let warm = self.n > WARMUP;
            for ((v, level), absdev) in x.iter().zip(&mut self.level).zip(&mut self.absdev) {
                let sigma = (*absdev / MEAN_ABS_PER_SIGMA).max(1e-9);
                let r = v - *level;
                let clipped = if warm {
                    r.clamp(-2.0 * sigma, 2.0 * sigma)
                } else {
                    r
                };
                *level += rate * clipped;
                let spread = if warm {
                    r.abs().min(3.0 * sigma)
                } else {
                    r.abs()
                };
                *absdev += rate * (spread - *absdev);
            }
        }
        // The correlations learn only from quiet samples: an anomaly's pattern must not
        // become the reference it is judged by. Levels and scales learn always, clipped, so
        // a device that settles at a new operating point ends its episode.
        if quiet {
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

    fn judge(&mut self, ts_ms: i64, threshold: f64) -> DeviceScore {
        let d = self.d;
        let mut t2 = 0.0;
        self.residual.copy_from_slice(&self.z);
        for j in 0..self.kept {
            let v = &self.vectors[j * d..(j + 1) * d];
            let t: f64 = v.iter().zip(&self.z).map(|(a, b)| a * b).sum();
            t2 += t * t / self.values[j];
            self.weighted[j] = t / self.values[j];
            for (r, vi) in self.residual.iter_mut().zip(v) {
                *r -= t * vi;
            }
        }
        let q: f64 = self.residual.iter().map(|r| r * r).sum();
        // Chi-square laws of T² (kept degrees of freedom) and Q (Box: g chi²_h from the
        // discarded eigenvalues), each made a standard normal by Wilson–Hilferty.
        let e_t2 = wilson_hilferty(t2, 1.0, self.kept as f64);
        let (th1, th2) = self.values[self.kept..]
            .iter()
            .fold((0.0, 0.0), |(a, b), l| (a + l, b + l * l));
        let e_q = if th1 > 0.0 && th2 > 0.0 {
            wilson_hilferty(q, th2 / th1, th1 * th1 / th2)
        } else {
            0.0
        };
        // T² and Q live in orthogonal subspaces, so for Gaussian noise their standard-normal
        // readings are independent and their scaled sum is standard normal again.
        let combined =
            ((e_t2 + e_q) * std::f64::consts::FRAC_1_SQRT_2).clamp(-CUSUM_CLIP, CUSUM_CLIP);
        self.cusum = (self.cusum + combined - CUSUM_K).clamp(0.0, CUSUM_MAX);
        // A point that moves to one side and stays there: a flow that drops by 2 sigma is
        // diluted in T² (it lies inside the retained components when the points are only
        // loosely correlated), so each point keeps a CUSUM of its own.
        let learned = self.point_n >= POINT_WARMUP;
        let mut point_best = 0.0f64;
        let ar_rate = self.alpha * 0.25;
        for (((r, scale), cusum), ar) in self
            .z
            .iter()
            .zip(&self.point_scale)
            .zip(&mut self.point_cusum)
            .zip(&mut self.point_ar)
        {
            let raw = if learned && *scale > 0.0 {
                (r / scale.sqrt()).clamp(-CUSUM_CLIP, CUSUM_CLIP)
            } else {
                0.0
            };
            // Real signals are autocorrelated; an AR(1) filter turns them into innovations,
            // as the single-point model does before its CUSUM, or the CUSUM would fill up
            // on every slow wander and its calibration would deflate it to nothing.
            let phi = if ar[2] > 0.0 {
                (ar[1] / ar[2]).clamp(0.0, 0.98)
            } else {
                0.0
            };
            let u = ((raw - phi * ar[0]) / (1.0 - phi * phi).sqrt()).clamp(-CUSUM_CLIP, CUSUM_CLIP);
            if learned {
                ar[1] += ar_rate * (raw * ar[0] - ar[1]);
                ar[2] += ar_rate * (raw * raw - ar[2]);
            }
            ar[0] = raw;
            cusum[0] = (cusum[0] + u - CUSUM_K).clamp(0.0, CUSUM_MAX);
            cusum[1] = (cusum[1] - u - CUSUM_K).clamp(0.0, CUSUM_MAX);
            point_best = point_best.max(cusum[0]).max(cusum[1]);
        }
        // Component order as the single-point model's, so episodes are named alike: a lone
        // excursion (Q) is a spike, a lasting one (a CUSUM) a level shift.
        let evidence = [
            e_q.max(0.0),
            (2.0 * point_best).sqrt(),
            e_t2.max(0.0),
            (2.0 * self.cusum).sqrt(),
        ];
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
        let (score, onset) = self.tracker.step(self.n, ts_ms, threshold, &readings, 0.0);
        if quiet && self.tracker.episode().active {
            self.kind = onset.map_or(AnomalyKind::None, |i| kinds[i]);
        }
        if quiet && !self.tracker.episode().active {
            for (tail, e) in self.tails.iter_mut().zip(evidence) {
                tail.learn(e, strongest < QUIET_SURPRISE);
            }
            self.point_n += 1;
            let rate = (self.alpha).max(1.0 / self.point_n as f64);
            for (scale, r) in self.point_scale.iter_mut().zip(&self.z) {
                let target = if learned {
                    (r * r).min(POINT_SCALE_CLIP * *scale)
                } else {
                    r * r
                };
                *scale += rate * (target - *scale);
            }
        }
        // Q splits into squared residuals; T² into z_i times the i-th entry of
        // V diag(1/lambda) t, which sum to T² exactly (an entry may be negative: that point
        // pulls against the deviation, and gets no share).
        let top = readings
            .iter()
            .take(3)
            .enumerate()
            .max_by(|a, b| a.1.surprise.total_cmp(&b.1.surprise))
            .map_or(0, |(i, _)| i);
        let contributions = if top == 1 {
            // The per-point CUSUMs: each point's own.
            self.point_cusum.iter().map(|c| c[0].max(c[1])).collect()
        } else if top == 0 {
            self.residual.iter().map(|r| r * r).collect()
        } else {
            (0..d)
                .map(|i| {
                    let back: f64 = (0..self.kept)
                        .map(|j| self.vectors[j * d + i] * self.weighted[j])
                        .sum();
                    (self.z[i] * back).max(0.0)
                })
                .collect()
        };
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
        self.point_cusum.iter_mut().for_each(|c| *c = [0.0; 2]);
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
