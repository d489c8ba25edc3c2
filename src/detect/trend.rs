//! Robust trend (Theil–Sen over time buckets) and time-to-threshold for one numeric point.
//!
//! # Model
//!
//! Samples are aggregated into buckets of `width = window_ms / buckets` milliseconds
//! aligned to `ts_ms.div_euclid(width)` (integer division, so the effective window is
//! `width * buckets`). Each bucket keeps its count, the sum of values and the sum of
//! sample offsets inside the bucket, so a bucket is one point (mean time, mean value):
//! partial or irregularly sampled buckets do not bias the line the way bucket centres would.
//!
//! When a sample opens a newer bucket, the previous one *closes* and the fit is recomputed
//! over the window of the last `buckets` closed buckets (the open bucket is never used,
//! so the fit lags by at most one bucket):
//!
//! * slope = Theil–Sen: median of the pairwise slopes between all bucket points;
//! * intercept = median of `mean_value - slope * mean_time` (the line's value at the
//!   start of the open bucket);
//! * residual scale = 1.4826 × median absolute residual of the bucket means.
//!
//! A single outlier sample moves only its bucket's mean, and Theil–Sen tolerates up to
//! ~29 % bad buckets, so spikes barely move the slope.
//!
//! # Rules and invariants
//!
//! * **Enough data**: a fit exists only if at least `max(2, ceil(buckets / 2))` of the
//!   window's closed buckets hold data; otherwise every query returns `None`.
//! * **Staleness**: `fitted` and `time_to` return `None` once `now_ms` lies more than half
//!   a window past the open bucket (the data stopped); `slope_per_hour` reports the last fit.
//! * **Flat**: `time_to` treats the trend as flat when |slope| is within three standard
//!   errors of zero (residual scale / sqrt(Σ(t - mean t)²)), so noise around a constant
//!   never produces an ETA; an exactly constant signal has slope 0 and is flat too.
//! * **Out of order**: a sample older than the open bucket is ignored (folding it into a
//!   closed bucket would force a refit per late sample); within the open bucket order does
//!   not matter. NaN/inf values and samples that would overflow a bucket sum are ignored.
//! * **Cost**: `update` is O(1) except when a bucket closes, which costs O(buckets²)
//!   (`buckets` is capped at 256); `time_to`, `fitted` and `slope_per_hour` are O(1).
//!   All buffers are allocated in `new`; nothing allocates afterwards.
//! * Time arithmetic is done in `i128`, so any `i64` timestamp is safe.

const HOUR_MS: f64 = 3_600_000.0;
const MAX_BUCKETS: u16 = 256;
// 1 / Φ⁻¹(3/4): makes the median absolute residual a consistent Gaussian sigma.
const MAD_TO_SIGMA: f64 = 1.482_6;
// The slope must exceed this many standard errors before time_to extrapolates it.
const FLAT_STANDARD_ERRORS: f64 = 3.0;

/// Window and resolution of a [`TrendModel`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TrendParams {
    /// Length of the fitted window in milliseconds.
    pub window_ms: i64,
    /// Number of time buckets in the window (clamped to 2..=256).
    pub buckets: u16,
}

impl Default for TrendParams {
    fn default() -> Self {
        Self {
            window_ms: 6 * 3_600_000,
            buckets: 60,
        }
    }
}

/// Which way the signal must cross the limit (`"rising"` or `"falling"` in a rule).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// The limit is crossed from below.
    Rising,
    /// The limit is crossed from above.
    Falling,
}

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
struct Slot {
    index: i64,
    count: u32,
    sum: f64,
    sum_offset_ms: f64,
}

const EMPTY: Slot = Slot {
    index: i64::MIN,
    count: 0,
    sum: 0.0,
    sum_offset_ms: 0.0,
};

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
struct Fit {
    /// Units per millisecond.
    slope: f64,
    /// Fitted value at `origin_ms`.
    intercept: f64,
    /// Start of the bucket that was open when the fit was made.
    origin_ms: i128,
    /// Index of that bucket.
    open_index: i64,
    significant: bool,
}

/// Robust trend over a sliding window of time buckets; a plain value, no I/O.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrendModel {
    params: TrendParams,
    width: i64,
    buckets: usize,
    slots: Vec<Slot>,
    open: Option<i64>,
    fit: Option<Fit>,
    xs: Vec<f64>,
    ys: Vec<f64>,
    scratch: Vec<f64>,
}

impl TrendModel {
    /// Creates an empty model; buckets are clamped to 2..=256 and the width to ≥ 1 ms.
    pub fn new(params: TrendParams) -> Self {
        let buckets = params.buckets.clamp(2, MAX_BUCKETS);
        let width = (params.window_ms / i64::from(buckets)).max(1);
        let n = usize::from(buckets);
        Self {
            params: TrendParams {
                window_ms: width * i64::from(buckets),
                buckets,
            },
            width,
            buckets: n,
            // One extra slot holds the open bucket next to a full window of closed ones.
            slots: vec![EMPTY; n + 1],
            open: None,
            fit: None,
            xs: Vec::with_capacity(n),
            ys: Vec::with_capacity(n),
            scratch: Vec::with_capacity(n * (n - 1) / 2),
        }
    }

    /// The effective parameters (after clamping and rounding the window to whole buckets).
    pub fn params(&self) -> TrendParams {
        self.params
    }

    /// Feeds a good sample (NaN/inf ignored).
    pub fn update(&mut self, ts_ms: i64, value: f64) {
        if !value.is_finite() {
            return;
        }
        let index = ts_ms.div_euclid(self.width);
        match self.open {
            Some(open) if index < open => return,
            Some(open) if index == open => {}
            Some(_) => {
                self.open_bucket(index);
                self.refit(index);
            }
            None => self.open_bucket(index),
        }
        let offset = (i128::from(ts_ms) - i128::from(index) * i128::from(self.width)) as f64;
        let slot_index = self.slot_of(index);
        if let Some(slot) = self.slots.get_mut(slot_index) {
            let sum = slot.sum + value;
            if sum.is_finite() {
                slot.sum = sum;
                slot.sum_offset_ms += offset;
                slot.count = slot.count.saturating_add(1);
            }
        }
    }

    /// Robust slope in units per hour over the window, None until at least half the window has data (see module docs for the exact rule).
    pub fn slope_per_hour(&self) -> Option<f64> {
        self.fit.map(|f| f.slope * HOUR_MS)
    }

    /// Predicted ms from `now_ms` until the fitted line crosses `limit` going in `direction` (Rising: crosses upward; Falling: downward); Some(0) if the fitted current value is already past it; None when the trend points away, is flat, or there is not enough data.
    pub fn time_to(&self, now_ms: i64, limit: f64, direction: Direction) -> Option<i64> {
        if !limit.is_finite() {
            return None;
        }
        let fit = self.current_fit(now_ms)?;
        let value = fit.intercept + fit.slope * (i128::from(now_ms) - fit.origin_ms) as f64;
        // Distance still to go and speed towards the limit, both positive when approaching.
        let (gap, speed) = match direction {
            Direction::Rising => (limit - value, fit.slope),
            Direction::Falling => (value - limit, -fit.slope),
        };
        if !gap.is_finite() {
            return None;
        }
        if gap <= 0.0 {
            return Some(0);
        }
        if !fit.significant || speed <= 0.0 {
            return None;
        }
        let ms = (gap / speed).ceil();
        // Anything beyond ~292 million years is "never" for an alarm.
        if ms.is_finite() && ms < i64::MAX as f64 {
            Some(ms as i64)
        } else {
            None
        }
    }

    /// The fitted value at `now_ms` (for the alarm message).
    pub fn fitted(&self, now_ms: i64) -> Option<f64> {
        let fit = self.current_fit(now_ms)?;
        let value = fit.intercept + fit.slope * (i128::from(now_ms) - fit.origin_ms) as f64;
        value.is_finite().then_some(value)
    }

    fn current_fit(&self, now_ms: i64) -> Option<Fit> {
        let fit = self.fit?;
        let now_index = now_ms.div_euclid(self.width);
        let stale = i128::from(now_index) - i128::from(fit.open_index) > (self.buckets / 2) as i128;
        (!stale).then_some(fit)
    }

    fn slot_of(&self, index: i64) -> usize {
        index.rem_euclid(self.slots.len() as i64) as usize
    }

    fn open_bucket(&mut self, index: i64) {
        self.open = Some(index);
        let slot_index = self.slot_of(index);
        if let Some(slot) = self.slots.get_mut(slot_index) {
            *slot = Slot { index, ..EMPTY };
        }
    }

    /// Recomputes the cached fit over the closed buckets before the open bucket `open`.
    fn refit(&mut self, open: i64) {
        self.fit = None;
        self.xs.clear();
        self.ys.clear();
        let origin = i128::from(open) * i128::from(self.width);
        for back in (1..=self.buckets).rev() {
            let index = i128::from(open) - back as i128;
            let Ok(index) = i64::try_from(index) else {
                continue;
            };
            let Some(slot) = self.slots.get(self.slot_of(index)) else {
                continue;
            };
            if slot.index != index || slot.count == 0 {
                continue;
            }
            let n = f64::from(slot.count);
            let start = i128::from(index) * i128::from(self.width);
            self.xs
                .push((start - origin) as f64 + slot.sum_offset_ms / n);
            self.ys.push(slot.sum / n);
        }
        let n = self.xs.len();
        if n < 2 || n < self.buckets.div_ceil(2) {
            return;
        }

        self.scratch.clear();
        for (i, (&xi, &yi)) in self.xs.iter().zip(&self.ys).enumerate() {
            for (&xj, &yj) in self.xs.iter().zip(&self.ys).skip(i + 1) {
                // Buckets come in time order, so xj > xi unless offsets are degenerate.
                if xj > xi {
                    self.scratch.push((yj - yi) / (xj - xi));
                }
            }
        }
        let Some(slope) = median(&mut self.scratch) else {
            return;
        };

        self.scratch.clear();
        self.scratch
            .extend(self.xs.iter().zip(&self.ys).map(|(x, y)| y - slope * x));
        let Some(intercept) = median(&mut self.scratch) else {
            return;
        };

        self.scratch.clear();
        self.scratch.extend(
            self.xs
                .iter()
                .zip(&self.ys)
                .map(|(x, y)| (y - intercept - slope * x).abs()),
        );
        let scale = median(&mut self.scratch).unwrap_or(0.0) * MAD_TO_SIGMA;
        let mean_x = self.xs.iter().sum::<f64>() / n as f64;
        let sxx: f64 = self.xs.iter().map(|x| (x - mean_x) * (x - mean_x)).sum();
        let standard_error = if sxx > 0.0 { scale / sxx.sqrt() } else { 0.0 };

        if slope.is_finite() && intercept.is_finite() {
            self.fit = Some(Fit {
                slope,
                intercept,
                origin_ms: origin,
                open_index: open,
                significant: slope.abs() > FLAT_STANDARD_ERRORS * standard_error,
            });
        }
    }
}

/// Median of finite values (the mean of the two middle ones for an even count); reorders `v`.
fn median(v: &mut [f64]) -> Option<f64> {
    let n = v.len();
    if n == 0 {
        return None;
    }
    let mid = n / 2;
    let (lower, upper, _) = v.select_nth_unstable_by(mid, f64::total_cmp);
    let upper = *upper;
    if n % 2 == 1 {
        return Some(upper);
    }
    let below = lower.iter().copied().max_by(f64::total_cmp)?;
    Some(0.5 * (below + upper))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const H: i64 = 3_600_000;
    const MIN: i64 = 60_000;
    const T0: i64 = 1_700_000_000_000;

    fn six_hours() -> TrendModel {
        TrendModel::new(TrendParams {
            window_ms: 6 * H,
            buckets: 60,
        })
    }

    /// Feeds one sample per minute over [from, to) minutes after T0 from `f(minute)`.
    fn feed(m: &mut TrendModel, from: i64, to: i64, f: impl Fn(i64) -> f64) {
        for k in from..to {
            m.update(T0 + k * MIN, f(k));
        }
    }

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn clean_ramp_gives_the_exact_slope() {
        let mut m = six_hours();
        feed(&mut m, 0, 8 * 60, |k| 10.0 + 2.5 * k as f64 / 60.0);
        let slope = m.slope_per_hour().unwrap();
        assert!(close(slope, 2.5, 1e-9), "{slope}");
        let now = T0 + 8 * 60 * MIN;
        let fitted = m.fitted(now).unwrap();
        assert!(close(fitted, 10.0 + 2.5 * 8.0, 1e-6), "{fitted}");
    }

    #[test]
    fn no_fit_until_half_the_window_has_data() {
        let mut m = six_hours();
        // T0 is not bucket aligned: start at a bucket boundary to count exactly.
        let start = (T0 / (6 * MIN) + 1) * 6 * MIN;
        let mut t = start;
        // 29 full buckets plus the first sample of bucket 30: 29 closed buckets.
        while t <= start + 29 * 6 * MIN {
            m.update(t, 1.0 + (t - start) as f64 / H as f64);
            t += MIN;
        }
        assert_eq!(m.slope_per_hour(), None);
        assert_eq!(m.time_to(t, 100.0, Direction::Rising), None);
        while t <= start + 30 * 6 * MIN {
            m.update(t, 1.0 + (t - start) as f64 / H as f64);
            t += MIN;
        }
        let slope = m.slope_per_hour().unwrap();
        assert!(close(slope, 1.0, 1e-9), "{slope}");
    }

    #[test]
    fn temperature_reaches_90_in_six_hours() {
        // 60 °C now, rising 5 °C/h: the 90 °C limit is 6 h away.
        let mut m = six_hours();
        let now_k = 6 * 60;
        feed(&mut m, 0, now_k + 1, |k| {
            60.0 + 5.0 * (k - now_k) as f64 / 60.0
        });
        let now = T0 + now_k * MIN;
        let eta = m.time_to(now, 90.0, Direction::Rising).unwrap();
        assert!((eta - 6 * H).abs() <= 6 * MIN, "{eta}");
        assert!(close(m.fitted(now).unwrap(), 60.0, 1e-6));
        // Rising towards a limit below: already past.
        assert_eq!(m.time_to(now, 50.0, Direction::Rising), Some(0));
        // Falling direction on a rising trend: never (unless already past).
        assert_eq!(m.time_to(now, 40.0, Direction::Falling), None);
        assert_eq!(m.time_to(now, 70.0, Direction::Falling), Some(0));
    }

    #[test]
    fn falling_pressure_with_falling_direction() {
        // 50 bar falling 2 bar/h; the 40 bar low limit is 5 h away.
        let mut m = six_hours();
        let now_k = 7 * 60;
        feed(&mut m, 0, now_k + 1, |k| {
            50.0 - 2.0 * (k - now_k) as f64 / 60.0
        });
        let now = T0 + now_k * MIN;
        let slope = m.slope_per_hour().unwrap();
        assert!(close(slope, -2.0, 1e-9), "{slope}");
        let eta = m.time_to(now, 40.0, Direction::Falling).unwrap();
        assert!((eta - 5 * H).abs() <= 6 * MIN, "{eta}");
        assert_eq!(m.time_to(now, 60.0, Direction::Rising), None);
    }

    #[test]
    fn flat_signals_have_no_eta() {
        let mut m = six_hours();
        feed(&mut m, 0, 7 * 60, |_| 42.0);
        let now = T0 + 7 * 60 * MIN;
        assert_eq!(m.slope_per_hour(), Some(0.0));
        assert_eq!(m.time_to(now, 50.0, Direction::Rising), None);
        assert_eq!(m.time_to(now, 30.0, Direction::Falling), None);
        assert_eq!(m.time_to(now, 40.0, Direction::Rising), Some(0));

        // Noise around a constant: some tiny slope, but not a significant one.
        let mut m = six_hours();
        let mut x = 0x9E37_79B9_7F4A_7C15_u64;
        for k in 0..7 * 60 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let noise = (x >> 11) as f64 / (1u64 << 53) as f64 - 0.5;
            m.update(T0 + k * MIN, 42.0 + noise);
        }
        assert!(m.slope_per_hour().is_some());
        assert_eq!(m.time_to(now, 50.0, Direction::Rising), None);
        assert_eq!(m.time_to(now, 30.0, Direction::Falling), None);
    }

    #[test]
    fn noise_alone_rarely_yields_an_eta() {
        // One day of uniform noise around a constant for 20 seeds: the 3-standard-error
        // rule should leave an ETA (either way) in well under 2 % of the minutes.
        let (mut with_eta, mut total) = (0, 0);
        for seed in 1..=20u64 {
            let mut m = six_hours();
            let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            for k in 0..24 * 60 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let noise = (x >> 11) as f64 / (1u64 << 53) as f64 - 0.5;
                let now = T0 + k * MIN;
                m.update(now, 42.0 + noise);
                if m.slope_per_hour().is_some() {
                    total += 1;
                    if m.time_to(now, 60.0, Direction::Rising).is_some()
                        || m.time_to(now, 20.0, Direction::Falling).is_some()
                    {
                        with_eta += 1;
                    }
                }
            }
        }
        let rate = f64::from(with_eta) / f64::from(total);
        assert!(rate < 0.02, "{with_eta} of {total}");
    }

    #[test]
    fn a_few_spikes_barely_move_the_slope() {
        let ramp = |k: i64| 20.0 + 3.0 * k as f64 / 60.0 + 0.2 * ((k * 7919) % 13) as f64 / 13.0;
        let mut clean = six_hours();
        feed(&mut clean, 0, 8 * 60, ramp);
        let mut spiky = six_hours();
        feed(&mut spiky, 0, 8 * 60, |k| {
            if [150, 200, 290, 333, 410, 460].contains(&k) {
                ramp(k) + 100.0
            } else {
                ramp(k)
            }
        });
        let (a, b) = (
            clean.slope_per_hour().unwrap(),
            spiky.slope_per_hour().unwrap(),
        );
        assert!(((b - a) / a).abs() < 0.05, "clean {a} spiky {b}");
    }

    #[test]
    fn gaps_and_late_samples_are_handled() {
        let line = |k: i64| 5.0 + 1.5 * k as f64 / 60.0;
        let mut m = six_hours();
        feed(&mut m, 0, 3 * 60, line);
        // Two hours without data, then one more hour.
        feed(&mut m, 5 * 60, 6 * 60 + 1, line);
        let slope = m.slope_per_hour().unwrap();
        assert!(close(slope, 1.5, 1e-9), "{slope}");
        let before = m.clone();
        // A late sample for a closed bucket is ignored outright.
        m.update(T0 + 4 * 60 * MIN, 1e9);
        assert_eq!(m, before);
        // Within the open bucket order does not matter.
        let mut a = six_hours();
        let mut b = six_hours();
        feed(&mut a, 0, 4 * 60, line);
        feed(&mut b, 0, 4 * 60 - 3, line);
        b.update(T0 + (4 * 60 - 1) * MIN, line(4 * 60 - 1));
        b.update(T0 + (4 * 60 - 3) * MIN, line(4 * 60 - 3));
        b.update(T0 + (4 * 60 - 2) * MIN, line(4 * 60 - 2));
        a.update(T0 + 4 * 60 * MIN, line(4 * 60));
        b.update(T0 + 4 * 60 * MIN, line(4 * 60));
        assert_eq!(a.slope_per_hour(), b.slope_per_hour());
    }

    #[test]
    fn stale_fits_are_not_extrapolated() {
        let mut m = six_hours();
        feed(&mut m, 0, 6 * 60 + 1, |k| k as f64);
        let now = T0 + 6 * 60 * MIN;
        assert!(m.fitted(now + 3 * H - 12 * MIN).is_some());
        assert_eq!(m.fitted(now + 4 * H), None);
        assert_eq!(m.time_to(now + 4 * H, 1e6, Direction::Rising), None);
    }

    #[test]
    fn extreme_timestamps_work() {
        for start in [i64::MAX - 7 * H, i64::MIN + 1, -3 * H] {
            let mut m = six_hours();
            for k in 0..7 * 60 {
                m.update(start + k * MIN, 100.0 - 4.0 * k as f64 / 60.0);
            }
            let slope = m.slope_per_hour().unwrap();
            assert!(close(slope, -4.0, 1e-6), "{start}: {slope}");
            let now = start + (7 * 60 - 1) * MIN;
            let eta = m.time_to(now, 0.0, Direction::Falling).unwrap();
            let expected = (100.0 - 4.0 * (7.0 * 60.0 - 1.0) / 60.0) / 4.0 * H as f64;
            assert!(
                (eta as f64 - expected).abs() <= 6.0 * MIN as f64,
                "{start}: {eta}"
            );
        }
    }

    #[test]
    fn params_are_clamped() {
        let m = TrendModel::new(TrendParams {
            window_ms: 0,
            buckets: 0,
        });
        assert_eq!(
            m.params(),
            TrendParams {
                window_ms: 2,
                buckets: 2
            }
        );
        let m = TrendModel::new(TrendParams {
            window_ms: 1000,
            buckets: 1000,
        });
        assert_eq!(m.params().buckets, 256);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn never_panics_and_eta_is_never_negative(
            window_ms in prop_oneof![Just(i64::MIN), -10i64..10, 1i64..10_000_000, Just(i64::MAX)],
            buckets in any::<u16>(),
            start in prop_oneof![Just(i64::MIN), Just(i64::MAX - 100_000_000), any::<i64>(), -1_000i64..1_000],
            steps in prop::collection::vec(
                (-1_000i64..1_000_000, prop_oneof![any::<f64>(), -1e6f64..1e6, Just(f64::MAX)]),
                0..200,
            ),
            limit in any::<f64>(),
        ) {
            let mut m = TrendModel::new(TrendParams { window_ms, buckets });
            let mut ts = start;
            for (dt, value) in steps {
                ts = ts.saturating_add(dt);
                m.update(ts, value);
                for direction in [Direction::Rising, Direction::Falling] {
                    if let Some(eta) = m.time_to(ts, limit, direction) {
                        prop_assert!(eta >= 0);
                    }
                }
                if let Some(v) = m.fitted(ts) {
                    prop_assert!(v.is_finite());
                }
                if let Some(s) = m.slope_per_hour() {
                    prop_assert!(!s.is_nan());
                }
            }
        }
    }
}
