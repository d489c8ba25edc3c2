//! Streaming, self-calibrating anomaly detection for one numeric point.
//!
//! One [`AnomalyModel`] per point; [`AnomalyModel::update`] is a deterministic function
//! of (state, timestamp, season bucket, value): no clock, no randomness, no I/O, no
//! allocation after [`AnomalyModel::new`] except while `season = "auto"` searches (a
//! scratch copy of the summary at each search, and the buckets of the cycle it finds).
//!
//! Per sample it returns a [`Score`]: `score`, the evidence in [0, 1] that a *new* anomaly
//! starts at this sample, and the [`Episode`] (active or not, its kind, since when). A level
//! shift that lasts six hours is one onset score and one episode, not thousands of high
//! scores; the `anomaly` rule raises when an episode starts and clears when it ends.
//!
//! # Baseline
//!
//! `expected = level + seasonal(bucket, position in the local hour)`
//!
//! * **level**: EWMA with `alpha = 2 / (learn_samples + 1)`, started as a running mean.
//! * **seasonal** (`HourOfDay`/`HourOfWeek` only): per bucket, an exponentially weighted
//!   least-squares *line* over the position inside the hour, so a smooth daily cycle
//!   leaves no saw-tooth residual. Its memory is `learn_samples / 4` samples *of that
//!   bucket* (about 6 cycles when `learn_samples` is one day of samples). Where the local
//!   hour starts is learned from the timestamps at which the caller's bucket changes
//!   (15-minute grid, so half- and quarter-hour time zones work).
//! * **scale** σ: EWMA of `min(|residual|, 1.5σ)` divided by its Gaussian expectation
//!   (0.739), floored at `min_sigma`: a bounded-influence (Huber) mean absolute deviation,
//!   which stays above zero on quantised signals where a median absolute deviation is 0.
//!
//! # `season = "auto"` (the default)
//!
//! The model looks for a cycle of its own: the stream is summarised in 512 `f32` bins (2 KiB,
//! merged pairwise as it grows, so constant memory), and each time the summary fills it is searched
//! for a period: the highest autocorrelation peak of the detrended bins that follows a dip,
//! clears the white-noise bound and sits on a periodogram peak (see `period.rs`). Three whole
//! cycles must be seen, so at one sample a minute a 90-minute cycle is found after about
//! 8.5 h, a daily one after about 6 days, a weekly one after about 23 days; after four weeks
//! without one the search stops. A found cycle gets up to 48 phase buckets (each a line, as
//! above), learned from the summary, and the model carries on without a new warm-up. Until
//! then, and without a cycle, the model is the plain one. The summary is freed as soon as the
//! search decides, and the buckets are allocated only then, so a point holds ~2.6 KiB while
//! searching and ~2.9 KiB with a cycle. Periods are counted in samples, so irregular
//! sampling blurs them.
//!
//! # Components
//!
//! Each component yields raw *evidence* `e` in sigma-equivalents (the same meaning as a
//! Gaussian `|z|` for independent noise):
//!
//! 1. **point** (`Spike`): `|z| = |value - expected| / σ`.
//! 2. **mean** (`LevelShift`/`Drift`): two-sided CUSUM, `k = 0.5`, on z clipped at ±4 and
//!    whitened (a learned AR(1) coefficient removes short-range autocorrelation and the
//!    learned variance inflation of 30-sample means the slow wander that remains).
//!    `e = sqrt(2 S)`, capped at 8 so the statistic clears within 64 samples once the mean
//!    is back. A run that left zero within 20 samples of the onset is a `LevelShift`, a
//!    slower one a `Drift`.
//! 3. **variance ratio** (`Variance`): `ln(S / D) / 0.17` with S a 30-sample EWMA and D
//!    the long EWMA of `|x_t - x_(t-1)|` (D learns from differences clipped to
//!    `[D/3, 3D]`). Differences make it blind to the baseline and the season. Exact
//!    repeats are kept out of S and D, they belong to the next component. S and D are kept
//!    per side of the baseline, so a point switching between two operating levels (a motor
//!    running and stopped) compares each level's noise with its own.
//! 4. **stuck** (`Stuck`): run length L of bit-identical consecutive values and a learned
//!    repeat probability p (never below 0.02): `e = sqrt(2 * min(L, cap) * ln(1/p))`
//!    with `cap = learn_samples / 8`; and the collapse side of the variance ratio.
//!
//! # Calibration
//!
//! Raw evidence is not comparable across real signals (heavy tails, quantisation,
//! autocorrelation). Each component's evidence has a known tail for independent Gaussian
//! noise (`2 Q(e)` for the point, `exp(-e^2 / 2)` for the others); each component also
//! learns the 98th percentile of its own evidence (not during episodes; after its first 400
//! samples, not on samples where any component is beyond `p = 0.001` either) and, where that is above the null's, deflates its evidence by the ratio before
//! reading the tail probability `p`. With four components, `score = 1 - 4 p / 1e-6` (0
//! below), so **score 0.9 ([`DEFAULT_THRESHOLD`]) is a one-in-10-million-samples event** for
//! the point's own spread: a 5.6σ spike or a CUSUM at 5.9 (a +5σ step within 2–3 samples) on
//! clean noise, more on a heavy-tailed or quantised point. The learned percentile is only an
//! estimate, and real tails are heavier than Gaussian beyond it, so the real false-alarm rate
//! is higher than nominal: on SKAB's real pump recordings it was 0.85 episodes per point per
//! 10 000 normal samples (benches/anomaly.rs). The mapping was chosen on SKAB's `valve1`
//! folder and its fault-free run: 0.9 at p = 1e-5 gave 1.5 false episodes per 10 000 there,
//! with the same detection.
//!
//! # Episodes
//!
//! Every component is *armed* while quiet (`p > 0.001`). The onset score is that of the
//! strongest armed component; when it reaches the threshold an episode starts (if none is
//! active), and every component is disarmed until it has been quiet for 20 samples. The
//! episode ends when all are quiet for 20 samples. Its kind is named from its first 20
//! samples, then kept: stuck (repeats or collapsed noise), variance (excursions on both
//! sides with raised noise), level shift or drift (a one-sided excursion or a moved mean;
//! drift when the mean crept up before the episode), pattern instead where a season is
//! modelled and every excursion took a value of another phase of the cycle (inside the
//! range the cycle covers, off the expected value by at least half that range: the cycle's
//! shape is broken, not its level), else spike. Until those 20 samples are seen (or the
//! episode ends) [`Episode::settled`] is false: the raise of a large step sees one huge
//! sample and says `Spike`, which the next samples may turn into `LevelShift`.
//!
//! # Learning during an anomaly
//!
//! After warm-up every update is winsorised: the level moves at most `2σ·alpha` per
//! sample, the scale learns from `|residual|` clipped at 1.5σ, D from differences clipped
//! at ×3, and the whitening statistics learn 4× slower than the baseline from clipped
//! inputs. An anomaly therefore teaches the model slowly and a lasting one is
//! eventually accepted, which ends its episode: at 1 sample/min with the defaults, a +5σ
//! level shift after about 14 h, a stuck signal after about 32 h.
//!
//! # Invariants
//!
//! * `score` is in [0, 1]; `None` means "no score" and is returned for: the first
//!   `warmup_samples` samples (and, when seasonal, until the sample's own bucket has seen
//!   `warmup_samples` samples: day one of `HourOfDay` at 1 sample/min, week one of
//!   `HourOfWeek`); NaN/inf values; timestamps not after the last accepted one
//!   (duplicates, replays: feed a monotonic clock, a clock stepped back stalls the
//!   model until it passes the old time); values so large (|x| near `f64::MAX`) that some
//!   state would overflow. In all these cases except warm-up the state is unchanged.
//! * A gap longer than 10× the learned sampling interval breaks the difference chain, so
//!   no repeat or difference is computed across it.
//! * A bucket index beyond the season's bucket count is reduced modulo that count.
//! * Memory: ~500 bytes for `Season::None`, plus 48 bytes per bucket (1.1 KiB hour of
//!   day, 7.9 KiB hour of week), allocated once in `new`.
//!
//! # Limits
//!
//! * Quantised signals that repeat more than ~93 % of the time cannot be tested for stuck.
//! * Steps smaller than ~1.5σ build up slowly and are labelled `Drift`.
//! * The calibration learns what is normal from what it sees: a point that is anomalous
//!   from its first sample on learns that as normal.

pub mod device;
mod episode;
mod period;
pub mod regime;
mod tail;

pub use self::episode::Episode;
use self::episode::{COMPONENTS, QUIET_SURPRISE, Reading, Tracker};
use self::period::Summary;
use self::tail::{Null, Tail};

/// Default onset threshold on [`Score::score`]: nominally a one-in-10-million-samples event.
pub const DEFAULT_THRESHOLD: f64 = 0.9;
/// Recommended number of consecutive samples at or above [`DEFAULT_THRESHOLD`] before alarming.
pub const DEFAULT_HOLD: u32 = 1;

const HOUR_MS: i64 = 3_600_000;
const QUARTER_MS: i64 = 900_000;

// Score mapping: a tail probability p maps to 1 - p / SCORE_P0, so 0.9 is p = 1e-7.
const SCORE_P0: f64 = 1e-6;
// Four components are tested at every sample; each one's p is multiplied by their number.
const BONFERRONI: f64 = COMPONENTS as f64;

// Huber-style learning: residuals beyond these multiples of sigma teach only this much.
const LEVEL_CLIP: f64 = 2.0;
const SCALE_CLIP: f64 = 1.5;
// E[min(|Z|, SCALE_CLIP)] for a standard normal Z, so the clipped mean stays unbiased.
const SCALE_CONSISTENCY: f64 = 0.739_26;

const CUSUM_K: f64 = 0.5;
// Cap on the learned lag-1 autocorrelation used to whiten the CUSUM input.
const PHI_MAX: f64 = 0.98;
// Null variance of an EWMA (alpha = SHORT_ALPHA) of independent unit-variance values.
const SHORT_MEAN_VAR: f64 = SHORT_ALPHA / (2.0 - SHORT_ALPHA);
// Squared short means are clipped at this multiple of their learned variance...
const VIF_CLIP: f64 = 2.0;
// ...and E[min(X, 2)] for X ~ chi-squared(1) undoes the bias that clipping causes.
const VIF_CONSISTENCY: f64 = 0.742_4;
// One sample moves the CUSUM by at most 4 - k, so a lone spike cannot fake a shift.
const CUSUM_CLIP: f64 = 4.0;
// sqrt(2 * 32) = 8: caps the evidence so the statistic recovers within ~64 samples.
const CUSUM_MAX: f64 = 32.0;
// A CUSUM run that reached alarm level faster than this is a step, slower is a drift.
const ABRUPT_SAMPLES: u64 = 20;

// Short window of the difference scale: EWMA over ~30 samples.
const SHORT_ALPHA: f64 = 2.0 / 31.0;
// The long difference scale moves at most x3 per (1/alpha) samples, so a variance change
// stays visible for hours; the short one ignores single jumps beyond 6x, so the two
// large differences of one spike do not read as a variance change.
const DIFF_LONG_CLIP: f64 = 3.0;
const DIFF_SHORT_CLIP: f64 = 6.0;
// Null standard deviation of ln(short/long) for independent Gaussian noise.
const LN_RATIO_SD: f64 = 0.17;
// E|x_t - x_{t-1}| for independent unit-variance Gaussian noise.
const ABS_DIFF_PER_SIGMA: f64 = std::f64::consts::FRAC_2_SQRT_PI;

// A value within this many sigma of the range the cycle covers is inside its band; off its
// expected value by this share of that range, it belongs to another phase of the cycle.
const BAND_SIGMAS: f64 = 3.0;
const PHASE_SHARE: f64 = 0.5;
// An exact repeat is never assumed more likely than this, even if never seen.
const REPEAT_FLOOR: f64 = 0.02;

// A pause longer than 10 typical intervals is a gap: differences across it mean nothing.
const GAP_FACTOR: f64 = 10.0;
// The typical interval follows a changed poll rate within ~20 samples.
const DT_RATE: f64 = 0.05;
// Ridge on the within-hour slope so a bucket seen over a sliver of its hour gets no slope.
const SLOPE_RIDGE: f64 = 1e-3;
// Most buckets a cycle found by `season = "auto"` is modelled with.
const AUTO_BUCKETS: usize = 48;
// `season = "auto"` stops looking for a cycle once it has seen this long (four weeks).
const AUTO_SEARCH_MS: f64 = 28.0 * 24.0 * 3_600_000.0;
// Once a cycle is installed the scale re-learns within about this many samples, as the
// residuals no longer carry the cycle.
const RESCALE_SAMPLES: u64 = 30;

/// Which seasonal baseline the model keeps; for the hour seasons the caller computes the
/// bucket from local time.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
pub enum Season {
    /// The model looks for a cycle of its own (see [`Season::Auto`] in the module docs);
    /// the bucket argument is ignored.
    #[default]
    Auto,
    /// One baseline for all times; the bucket argument is ignored.
    None,
    /// 24 baselines, bucket = local hour of day (0..24).
    HourOfDay,
    /// 168 baselines, bucket = local hour of week (0..168).
    HourOfWeek,
}

impl Season {
    /// Number of season buckets (1 for [`Season::None`], the most a found cycle gets for
    /// [`Season::Auto`]).
    pub fn buckets(self) -> u16 {
        match self {
            Season::None => 1,
            Season::HourOfDay => 24,
            Season::HourOfWeek => 168,
            Season::Auto => AUTO_BUCKETS as u16,
        }
    }
}

/// A cycle found by `season = "auto"`: its length and where its phase 0 lies.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
struct Cycle {
    period_ms: f64,
    origin_ms: i64,
    buckets: usize,
}

impl Cycle {
    /// Bucket and position inside it (in [-0.5, 0.5)) of `ts_ms`.
    fn position(&self, ts_ms: i64) -> (usize, f64) {
        // Reducing first keeps the subtraction in range for any i64 timestamp.
        let since = (ts_ms as f64 - self.origin_ms as f64).rem_euclid(self.period_ms);
        let at = since / self.period_ms * self.buckets as f64;
        let b = (at as usize).min(self.buckets - 1);
        (b, at - b as f64 - 0.5)
    }
}

/// Tuning of an [`AnomalyModel`].
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AnomalyParams {
    /// Effective memory of the baselines in samples (EWMA alpha = 2 / (n + 1)).
    pub learn_samples: u32,
    /// Samples (per bucket when seasonal) that must be seen before any score is returned.
    pub warmup_samples: u32,
    /// Seasonal baseline selector.
    pub season: Season,
    /// Absolute floor on the noise scale, in signal units (about one sensor LSB).
    pub min_sigma: f64,
    /// Onset score at or above which an episode starts (and the rule raises).
    pub threshold: f64,
}

impl Default for AnomalyParams {
    fn default() -> Self {
        Self {
            learn_samples: 1440,
            warmup_samples: 60,
            season: Season::Auto,
            min_sigma: 1e-6,
            threshold: DEFAULT_THRESHOLD,
        }
    }
}

/// Which component dominated a score, for the alarm message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum AnomalyKind {
    /// A single isolated excursion from the baseline.
    Spike,
    /// An abrupt, sustained change of the mean.
    LevelShift,
    /// An increase of the noise amplitude.
    Variance,
    /// A slow, sustained change of the mean.
    Drift,
    /// The signal stopped varying (exact repeats or a collapsed noise amplitude).
    Stuck,
    /// The cycle's shape is broken: the mean moved against the seasonal baseline while the
    /// values stay inside the range the cycle covers (normal at another phase of the cycle,
    /// not at this one). Only where a season is modelled.
    Pattern,
    /// Nothing noteworthy (score 0).
    None,
}

impl AnomalyKind {
    /// Stable lower-case name for messages and metrics labels.
    pub fn as_str(&self) -> &'static str {
        match self {
            AnomalyKind::Spike => "spike",
            AnomalyKind::LevelShift => "level_shift",
            AnomalyKind::Variance => "variance",
            AnomalyKind::Drift => "drift",
            AnomalyKind::Stuck => "stuck",
            AnomalyKind::Pattern => "pattern",
            AnomalyKind::None => "none",
        }
    }
}

/// Result of scoring one sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score {
    /// Evidence in [0, 1] that a *new* anomaly starts at this sample (see the module docs).
    pub score: f64,
    /// The episode's kind while one is active, else the kind of the strongest component.
    pub kind: AnomalyKind,
    /// Baseline value the sample was compared with.
    pub expected: f64,
    /// Strongest uncalibrated evidence of the sample, in sigma-equivalents (for inspection).
    pub raw: f64,
    /// The episode after this sample.
    pub episode: Episode,
}

/// Per-season baseline: exponentially weighted moments of a line over the position in the hour.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
struct Bucket {
    n: u32,
    w: f64,
    su: f64,
    suu: f64,
    sy: f64,
    suy: f64,
}

impl Bucket {
    fn predict(&self, u: f64) -> f64 {
        if self.w <= 0.0 {
            return 0.0;
        }
        let inv_w = 1.0 / self.w;
        let mu = self.su * inv_w;
        let my = self.sy * inv_w;
        let var = (self.suu * inv_w - mu * mu).max(0.0);
        let cov = self.suy * inv_w - mu * my;
        my + cov / (var + SLOPE_RIDGE) * (u - mu)
    }

    fn learn(&mut self, u: f64, y: f64, gamma: f64) {
        self.learn_weighted(u, y, gamma, 1.0);
    }

    /// Learns a point that stands for `weight` samples (a summary bin).
    fn learn_weighted(&mut self, u: f64, y: f64, gamma: f64, weight: f64) {
        let keep = 1.0 - gamma;
        self.w = keep * self.w + weight;
        self.su = keep * self.su + weight * u;
        self.suu = keep * self.suu + weight * u * u;
        self.sy = keep * self.sy + weight * y;
        self.suy = keep * self.suy + weight * u * y;
        self.n = self.n.saturating_add(1);
    }

    fn is_finite(&self) -> bool {
        self.w.is_finite()
            && self.su.is_finite()
            && self.suu.is_finite()
            && self.sy.is_finite()
            && self.suy.is_finite()
    }
}

/// Scalar state; copied, updated and committed only if everything stayed finite.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
struct Core {
    n: u64,
    n_abs: u64,
    n_diff: u64,
    n_pairs: u64,
    last_ts: i64,
    dt_typ: f64,
    prev: f64,
    chain: bool,
    level: f64,
    absdev: f64,
    /// Long and short difference scales per side of the baseline (below, above).
    diff_long: [f64; 2],
    diff_short: [f64; 2],
    /// Side of the baseline the current sample is on, and the differences each side has seen.
    side: usize,
    n_side: [u64; 2],
    repeat: f64,
    run: u32,
    cusum_hi: f64,
    cusum_lo: f64,
    start_hi: u64,
    start_lo: u64,
    prev_zc: f64,
    ac_num: f64,
    ac_den: f64,
    n_ac: u64,
    short_mean: f64,
    short_mean_var: f64,
    phase_ms: i64,
    prev_bucket: usize,
    cycle: Option<Cycle>,
    tails: [Tail; COMPONENTS],
    tracker: Tracker,
}

impl Core {
    fn is_finite(&self) -> bool {
        self.dt_typ.is_finite()
            && self.level.is_finite()
            && self.absdev.is_finite()
            && self.diff_long.iter().all(|d| d.is_finite())
            && self.diff_short.iter().all(|d| d.is_finite())
            && self.repeat.is_finite()
            && self.cusum_hi.is_finite()
            && self.cusum_lo.is_finite()
            && self.prev_zc.is_finite()
            && self.ac_num.is_finite()
            && self.ac_den.is_finite()
            && self.short_mean.is_finite()
            && self.short_mean_var.is_finite()
            && self.tails.iter().all(Tail::is_finite)
    }
}

/// Streaming anomaly model for one point; a plain value, deterministic in its inputs.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AnomalyModel {
    params: AnomalyParams,
    threshold: f64,
    alpha: f64,
    gamma: f64,
    min_sigma: f64,
    warmup: u64,
    run_cap: u32,
    core: Core,
    buckets: Vec<Bucket>,
    /// `season = "auto"`: the learning stream while a cycle is searched for.
    summary: Option<Box<Summary>>,
}

/// Evidence of every component for one sample, in sigma-equivalents, in the order
/// point, mean, variance, stuck.
#[derive(Debug, Clone, Copy)]
struct Evidence {
    values: [f64; COMPONENTS],
    /// Signed point z, for the episode's kind.
    z: f64,
    mean_kind: AnomalyKind,
}

impl Evidence {
    fn kinds(&self) -> [AnomalyKind; COMPONENTS] {
        [
            AnomalyKind::Spike,
            self.mean_kind,
            AnomalyKind::Variance,
            AnomalyKind::Stuck,
        ]
    }
}

fn clip(x: f64, lo: f64, hi: f64) -> f64 {
    x.max(lo).min(hi)
}

/// Learning rate that starts as a plain running mean and settles at `alpha`.
fn rate(alpha: f64, n: u64) -> f64 {
    let n = n.max(1) as f64;
    // Skips the division once the running mean has handed over to the EWMA.
    if n * alpha >= 1.0 { alpha } else { 1.0 / n }
}

/// Maps a calibrated surprise (`-log10 p` of one component) to [0, 1]: `1 - 4p / 1e-6`.
fn surprise_to_score(surprise: f64) -> f64 {
    if surprise.is_nan() {
        return 0.0;
    }
    let p = BONFERRONI * 10f64.powf(-surprise);
    clip(1.0 - p / SCORE_P0, 0.0, 1.0)
}

impl AnomalyModel {
    /// Creates an empty model; invalid parameters are clamped to the nearest sane value.
    pub fn new(params: AnomalyParams) -> Self {
        let learn = params.learn_samples.max(2);
        let min_sigma = if params.min_sigma.is_finite() && params.min_sigma > 0.0 {
            params.min_sigma
        } else {
            f64::MIN_POSITIVE
        };
        let buckets = match params.season {
            Season::None => Vec::new(),
            s => vec![Bucket::default(); usize::from(s.buckets())],
        };
        // A found cycle gets its buckets when it is found, not before: the summary and
        // 48 reserved buckets together would be over 4 KiB while searching.
        let buckets = if params.season == Season::Auto {
            Vec::new()
        } else {
            buckets
        };
        let threshold = if params.threshold > 0.0 && params.threshold <= 1.0 {
            params.threshold
        } else {
            DEFAULT_THRESHOLD
        };
        Self {
            params,
            threshold,
            alpha: 2.0 / (f64::from(learn) + 1.0),
            gamma: (8.0 / (f64::from(learn) + 1.0)).min(1.0),
            min_sigma,
            warmup: u64::from(params.warmup_samples.max(1)),
            run_cap: (learn / 8).max(8),
            core: Core {
                n: 0,
                n_abs: 0,
                n_diff: 0,
                n_pairs: 0,
                last_ts: i64::MIN,
                dt_typ: 0.0,
                prev: 0.0,
                chain: false,
                level: 0.0,
                absdev: 0.0,
                diff_long: [0.0; 2],
                diff_short: [0.0; 2],
                side: 0,
                n_side: [0; 2],
                repeat: 0.0,
                run: 0,
                cusum_hi: 0.0,
                cusum_lo: 0.0,
                start_hi: 0,
                start_lo: 0,
                prev_zc: 0.0,
                ac_num: 0.0,
                ac_den: 0.0,
                n_ac: 0,
                short_mean: 0.0,
                short_mean_var: SHORT_MEAN_VAR,
                phase_ms: 0,
                prev_bucket: 0,
                cycle: None,
                tails: [
                    Tail::new(Null::TwoSided),
                    Tail::new(Null::SquareRoot),
                    Tail::new(Null::SquareRoot),
                    Tail::new(Null::SquareRoot),
                ],
                tracker: Tracker::default(),
            },
            buckets,
            summary: (params.season == Season::Auto).then(|| Box::new(Summary::new())),
        }
    }

    /// The cycle `season = "auto"` found, in ms, if it found one.
    pub fn period_ms(&self) -> Option<f64> {
        self.core.cycle.map(|c| c.period_ms)
    }

    /// Bytes the model holds: itself, its season buckets and, while `season = "auto"` is
    /// still searching, its 2 KiB summary of the stream.
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.buckets.capacity() * std::mem::size_of::<Bucket>()
            + self.summary.as_ref().map_or(0, |s| s.memory_bytes())
    }

    /// The parameters the model was built with.
    pub fn params(&self) -> &AnomalyParams {
        &self.params
    }

    /// The current (or last) episode.
    pub fn episode(&self) -> Episode {
        self.core.tracker.episode()
    }

    /// Gives a model read back from a snapshot the buffers [`AnomalyModel::new`] allocates
    /// (it holds only what was in use), so its updates allocate nothing, as documented.
    pub fn reserve_buffers(&mut self) {
        if let Some(summary) = self.summary.as_mut() {
            summary.reserve();
        }
    }

    /// Feeds one good sample at `ts_ms` with season bucket `bucket` (0 when Season::None, 0..24 hour of day, 0..168 hour of week); returns the anomaly score in [0, 1] or None while warming up.
    pub fn update(&mut self, ts_ms: i64, bucket: u16, value: f64) -> Option<Score> {
        if !value.is_finite() {
            return None;
        }
        let mut c = self.core;
        if c.n > 0 && ts_ms <= c.last_ts {
            return None;
        }
        let hourly = matches!(self.params.season, Season::HourOfDay | Season::HourOfWeek);
        let seasonal = hourly || c.cycle.is_some();
        let (b, cycle_u) = match c.cycle {
            Some(cycle) => cycle.position(ts_ms),
            None if hourly => (usize::from(bucket) % self.buckets.len(), 0.0),
            None => (0, 0.0),
        };
        let mut bk = self.buckets.get(b).copied().unwrap_or_default();

        if c.n == 0 {
            c.level = value;
            c.prev = value;
            c.chain = true;
            c.n = 1;
            c.last_ts = ts_ms;
            c.prev_bucket = b;
            if let Some(summary) = self.summary.as_mut() {
                summary.push(value);
            }
            if hourly {
                bk.learn(hour_position(ts_ms, c.phase_ms), 0.0, self.gamma);
                self.commit_bucket(b, bk);
            }
            self.core = c;
            return None;
        }

        // ts_ms > last_ts, so the wrapped difference is the exact distance as u64.
        let dt = ts_ms.wrapping_sub(c.last_ts) as u64 as f64;
        let gap = c.dt_typ > 0.0 && dt > GAP_FACTOR * c.dt_typ;
        c.dt_typ = if c.dt_typ > 0.0 {
            c.dt_typ + DT_RATE * (clip(dt, 0.5 * c.dt_typ, 2.0 * c.dt_typ) - c.dt_typ)
        } else {
            dt
        };
        // Local hour marks sit on a 15-minute grid of UTC (whole, half and quarter-hour
        // zones); a bucket change seen within 15 minutes pins which quarter it is.
        if hourly && b != c.prev_bucket && dt < QUARTER_MS as f64 {
            let within = ts_ms.rem_euclid(HOUR_MS);
            c.phase_ms = within - within % QUARTER_MS;
        }
        let u = if hourly {
            hour_position(ts_ms, c.phase_ms)
        } else {
            cycle_u
        };

        let seasonal_part = if !seasonal {
            0.0
        } else if bk.n > 0 {
            bk.predict(u)
        } else {
            // First visit: the bucket starts exactly at this sample.
            value - c.level
        };
        let expected = c.level + seasonal_part;
        let r = value - expected;
        let has_residual = !seasonal || bk.n > 0;
        let sigma = (c.absdev * (1.0 / SCALE_CONSISTENCY)).max(self.min_sigma);
        let z = r / sigma;
        let warm = c.n >= self.warmup && (!seasonal || u64::from(bk.n) >= self.warmup);
        let robust = c.n >= self.warmup;

        // Difference statistics: exact repeats feed the stuck test, everything else the
        // short/long difference scales (repeats are kept out so stuck does not also
        // collapse the variance ratio).
        // Each side of the baseline keeps its own difference scales: a point that switches
        // between two operating levels (a motor running and stopped) has a different noise
        // at each, and comparing one level's noise with the other's would be an anomaly at
        // every switch. On a single level both sides see the same noise.
        c.side = usize::from(value >= expected);
        let mut repeated = false;
        if c.chain && !gap {
            let d = (value - c.prev).abs();
            c.n_pairs = c.n_pairs.saturating_add(1);
            let rp = rate(self.alpha, c.n_pairs);
            if d == 0.0 {
                repeated = true;
                c.run = c.run.saturating_add(1);
                c.repeat += rp * (1.0 - c.repeat);
            } else {
                c.run = 0;
                c.repeat -= rp * c.repeat;
                c.n_diff = c.n_diff.saturating_add(1);
                let s = c.side;
                c.n_side[s] = c.n_side[s].saturating_add(1);
                let n = c.n_side[s];
                if n == 1 {
                    c.diff_long[s] = d;
                    c.diff_short[s] = d;
                } else {
                    let dl = c.diff_long[s];
                    c.diff_long[s] += rate(self.alpha, n)
                        * (clip(d, dl / DIFF_LONG_CLIP, dl * DIFF_LONG_CLIP) - dl);
                    c.diff_short[s] +=
                        rate(SHORT_ALPHA, n) * (d.min(dl * DIFF_SHORT_CLIP) - c.diff_short[s]);
                }
            }
        } else {
            c.run = 0;
        }
        c.chain = true;
        c.prev = value;

        let whitened = if has_residual && c.absdev > 0.0 {
            self.whiten(&mut c, z, robust)
        } else {
            0.0
        };
        let score = if warm {
            let ev = self.evidence(&mut c, z, whitened);
            Some(self.judge(&mut c, &ev, ts_ms, expected, value))
        } else {
            None
        };

        // Learning. Beyond warm-up every residual is winsorised so an anomaly teaches the
        // baseline at most LEVEL_CLIP sigma (mean) or SCALE_CLIP sigma (scale) per sample.
        let psi = if robust {
            clip(r, -LEVEL_CLIP * sigma, LEVEL_CLIP * sigma)
        } else {
            r
        };
        if has_residual {
            c.level += rate(self.alpha, c.n + 1) * psi;
            if !repeated {
                c.n_abs = c.n_abs.saturating_add(1);
                let target = if robust {
                    r.abs().min(SCALE_CLIP * sigma)
                } else {
                    r.abs()
                };
                c.absdev += rate(self.alpha, c.n_abs) * (target - c.absdev);
            }
        }
        if seasonal {
            bk.learn(u, seasonal_part + psi, self.gamma);
        }

        c.n = c.n.saturating_add(1);
        c.last_ts = ts_ms;
        c.prev_bucket = b;
        if !c.is_finite() || !bk.is_finite() {
            return None;
        }
        self.core = c;
        if seasonal {
            self.commit_bucket(b, bk);
        }
        self.search_cycle(ts_ms, value);
        score
    }

    /// `season = "auto"`: summarises the stream and, each time the summary fills, looks for
    /// a cycle; installs the first one found, gives up after [`AUTO_SEARCH_MS`].
    fn search_cycle(&mut self, ts_ms: i64, value: f64) {
        let Some(summary) = self.summary.as_mut() else {
            return;
        };
        if !summary.push(value) {
            return;
        }
        let dt = self.core.dt_typ;
        let summary_width = summary.width();
        let bin_ms = dt * summary_width as f64;
        let searched_ms = summary.span() as f64 * dt;
        let bins = summary.bins();
        let found = period::find_period(&bins);
        if let Some(lag) = found {
            self.install_cycle(ts_ms, bin_ms, lag, &bins, summary_width);
        }
        if found.is_some() || searched_ms >= AUTO_SEARCH_MS {
            self.summary = None;
        }
    }

    /// Starts the seasonal baseline of a found cycle (`lag` bins of `bin_ms` each), learned
    /// from the summary so no second warm-up is needed.
    fn install_cycle(&mut self, ts_ms: i64, bin_ms: f64, lag: usize, bins: &[f64], width: u64) {
        let period_ms = bin_ms * lag as f64;
        if !(period_ms.is_finite() && period_ms >= 1.0) {
            return;
        }
        let cycle = Cycle {
            period_ms,
            origin_ms: ts_ms,
            buckets: lag.clamp(1, AUTO_BUCKETS),
        };
        // The level is the mean over the last whole cycle, the buckets hold the rest.
        let recent = &bins[bins.len().saturating_sub(lag)..];
        let level = recent.iter().sum::<f64>() / recent.len().max(1) as f64;
        let mut fresh = vec![Bucket::default(); cycle.buckets];
        let end = ts_ms as f64;
        for (i, y) in bins.iter().enumerate() {
            // Bin i ended (bins.len() - 1 - i) bins before the last one; its middle is half
            // a bin earlier.
            let age = ((bins.len() - 1 - i) as f64 + 0.5) * bin_ms;
            let (b, u) = cycle.position((end - age) as i64);
            if let Some(bk) = fresh.get_mut(b) {
                // A bin weighs as the samples it holds, so the next samples do not
                // outweigh it.
                bk.learn_weighted(u, y - level, self.gamma, width as f64);
            }
        }
        if fresh.iter().any(|bk| !bk.is_finite()) || !level.is_finite() {
            return;
        }
        for bk in fresh.iter_mut().filter(|bk| bk.n > 0) {
            bk.n = bk.n.max(self.params.warmup_samples);
        }
        self.buckets = fresh;
        let c = &mut self.core;
        c.level = level;
        c.cycle = Some(cycle);
        c.n_abs = c.n_abs.min(RESCALE_SAMPLES);
    }

    /// Lowest and highest seasonal part over the learned buckets (each a line over its
    /// bucket, so its ends), or None without any.
    fn profile_range(&self) -> Option<(f64, f64)> {
        self.buckets
            .iter()
            .filter(|bk| bk.n > 0 && bk.w > 0.0)
            .flat_map(|bk| [bk.predict(-0.5), bk.predict(0.5)])
            .fold(None, |range, y| match range {
                None => Some((y, y)),
                Some((lo, hi)) => Some((f64::min(lo, y), f64::max(hi, y))),
            })
    }

    fn commit_bucket(&mut self, b: usize, bk: Bucket) {
        if let Some(slot) = self.buckets.get_mut(b) {
            *slot = bk;
        }
    }

    /// Whitens the clipped z-score for the CUSUM and learns how to; see the module docs.
    fn whiten(&self, c: &mut Core, z: f64, robust: bool) -> f64 {
        // Real sensors are autocorrelated, which makes a CUSUM on raw z fire constantly.
        // An AR(1) filter removes the short-range part; the variance inflation of 30-sample
        // means of what is left scales away the rest (slow wander under white noise).
        let zc = clip(z, -CUSUM_CLIP, CUSUM_CLIP);
        let phi = if c.ac_den > 0.0 {
            clip(c.ac_num / c.ac_den, 0.0, PHI_MAX)
        } else {
            0.0
        };
        // The short mean is kept on the unscaled AR(1) residual; its null variance for
        // independent innovations is SHORT_MEAN_VAR * (1 - phi^2), so one square root
        // gives the combined scale (never below the pure AR(1) one).
        let residual = zc - phi * c.prev_zc;
        let scale2 = (c.short_mean_var * (1.0 / SHORT_MEAN_VAR)).max(1.0 - phi * phi);
        let whitened = residual / scale2.sqrt();

        c.n_ac = c.n_ac.saturating_add(1);
        let ra = rate(self.alpha * 0.25, c.n_ac);
        c.ac_num += ra * (zc * c.prev_zc - c.ac_num);
        c.ac_den += ra * (zc * zc - c.ac_den);
        c.prev_zc = zc;
        c.short_mean += SHORT_ALPHA * (residual - c.short_mean);
        let sq = c.short_mean * c.short_mean;
        // The autocorrelation structure of a sensor is stable, so it is learned 4x slower
        // than the baseline and an anomaly barely dents the CUSUM's sensitivity.
        let rv = rate(self.alpha * 0.25, c.n_ac);
        if robust {
            c.short_mean_var += rv
                * ((sq / VIF_CONSISTENCY).min(VIF_CLIP * c.short_mean_var / VIF_CONSISTENCY)
                    - c.short_mean_var);
        } else {
            c.short_mean_var += rv * (sq - c.short_mean_var);
        }
        clip(whitened, -CUSUM_CLIP, CUSUM_CLIP)
    }

    /// Calibrates the evidence, moves the episode on and learns the quiet tails.
    fn judge(&self, c: &mut Core, ev: &Evidence, ts_ms: i64, expected: f64, value: f64) -> Score {
        let kinds = ev.kinds();
        let mut readings = [Reading {
            score: 0.0,
            surprise: 0.0,
            kind: AnomalyKind::None,
        }; COMPONENTS];
        let mut raw = 0.0f64;
        let mut strongest = (0.0, AnomalyKind::None);
        for (i, r) in readings.iter_mut().enumerate() {
            let e = ev.values[i];
            raw = raw.max(e);
            let surprise = c.tails[i].surprise(e);
            *r = Reading {
                score: surprise_to_score(surprise),
                surprise,
                kind: kinds[i],
            };
            if surprise > strongest.0 {
                strongest = (surprise, kinds[i]);
            }
        }
        // The tails learn only from quiet operation: an episode would teach them that
        // anomalies are normal.
        let quiet = !c.tracker.episode().active;
        let calm = strongest.0 < QUIET_SURPRISE;
        // Whether the value belongs to another phase of the cycle: inside the range the
        // cycle covers (its seasonal profile, widened by the noise) and off its expected value
        // by at least half that range, so not the same phase shifted a little. Asked only of
        // the excursions that name an episode.
        let (level, sigma) = (
            c.level,
            (c.absdev * (1.0 / SCALE_CONSISTENCY)).max(self.min_sigma),
        );
        let seasonal = c.cycle.is_some()
            || matches!(self.params.season, Season::HourOfDay | Season::HourOfWeek);
        let in_band = || {
            let (lo, hi) = self.profile_range().filter(|_| seasonal)?;
            let dev = value - level;
            let inside = dev >= lo - BAND_SIGMAS * sigma && dev <= hi + BAND_SIGMAS * sigma;
            Some(inside && (value - expected).abs() >= PHASE_SHARE * (hi - lo))
        };
        let (score, _) = c
            .tracker
            .step(c.n, ts_ms, self.threshold, &readings, ev.z, in_band);
        if quiet && !c.tracker.episode().active {
            for (tail, e) in c.tails.iter_mut().zip(ev.values) {
                tail.learn(e, calm);
            }
        }
        let episode = c.tracker.episode();
        let kind = if episode.active {
            episode.kind
        } else if strongest.0 > 0.0 {
            strongest.1
        } else {
            AnomalyKind::None
        };
        Score {
            score,
            kind,
            expected,
            raw,
            episode,
        }
    }

    fn evidence(&self, c: &mut Core, z: f64, whitened: f64) -> Evidence {
        // Two-sided CUSUM on the whitened z-score; its evidence sqrt(2 S) has roughly the
        // false-alarm rate of a Gaussian |z| of the same size (Siegmund, k = 0.5).
        let hi = clip(c.cusum_hi + whitened - CUSUM_K, 0.0, CUSUM_MAX);
        let lo = clip(c.cusum_lo - whitened - CUSUM_K, 0.0, CUSUM_MAX);
        if c.cusum_hi == 0.0 && hi > 0.0 {
            c.start_hi = c.n;
        }
        if c.cusum_lo == 0.0 && lo > 0.0 {
            c.start_lo = c.n;
        }
        c.cusum_hi = hi;
        c.cusum_lo = lo;
        let (s, start) = if hi >= lo {
            (hi, c.start_hi)
        } else {
            (lo, c.start_lo)
        };
        let mean = if s > 0.0 { (2.0 * s).sqrt() } else { 0.0 };
        let mean_kind = if c.n.saturating_sub(start) <= ABRUPT_SAMPLES {
            AnomalyKind::LevelShift
        } else {
            AnomalyKind::Drift
        };

        let (mut var_up, mut var_down) = (0.0, 0.0);
        if c.n_side[c.side] >= self.warmup {
            let floor = self.min_sigma * ABS_DIFF_PER_SIGMA;
            let ratio = c.diff_short[c.side].max(floor) / c.diff_long[c.side].max(floor);
            let l = ratio.ln();
            if l > 0.0 {
                var_up = l / LN_RATIO_SD;
            } else {
                var_down = -l / LN_RATIO_SD;
            }
        }

        let mut stuck = var_down;
        if c.run > 0 {
            let surprise = -c.repeat.clamp(REPEAT_FLOOR, 1.0).ln();
            let nats = f64::from(c.run.min(self.run_cap)) * surprise;
            stuck = stuck.max((2.0 * nats).sqrt());
        }

        Evidence {
            values: [z.abs(), mean, var_up, stuck],
            z,
            mean_kind,
        }
    }
}

impl regime::RegimeModel for AnomalyModel {
    fn end_episode(&mut self) {
        let c = &mut self.core;
        c.tracker = Tracker::default();
        c.cusum_hi = 0.0;
        c.cusum_lo = 0.0;
        c.run = 0;
        c.chain = false;
    }
}

/// Position inside the local hour in [-0.5, 0.5), given the learned offset of local hour marks.
fn hour_position(ts_ms: i64, phase_ms: i64) -> f64 {
    // Reducing first keeps the subtraction in range for any i64 timestamp.
    let within = (ts_ms.rem_euclid(HOUR_MS) - phase_ms).rem_euclid(HOUR_MS);
    within as f64 / HOUR_MS as f64 - 0.5
}

#[cfg(test)]
mod tests;
