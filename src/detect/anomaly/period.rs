//! Period detection for `season = "auto"`: does a point have a cycle, and how long is it?
//!
//! The learning stream is summarised in a fixed buffer of [`BINS`] bins, each the mean of
//! `width` consecutive samples; when the buffer is full, neighbouring bins merge and `width`
//! doubles, so the buffer covers any span at constant memory. Bins are `f32` offsets from
//! the first sample (2 KiB in all): the offset keeps a counter near 1e6 its small cycle,
//! and 24 bits of mantissa are far finer than any cycle the search can tell from noise
//! (the significance bound below is 0.3 of the variance). Each time it is full, the
//! buffer is searched (AutoPeriod style): the autocorrelation of the linearly detrended bins
//! proposes the lag of its highest local peak, which must
//! - follow a dip of the autocorrelation (a slowly wandering signal has no dip),
//! - clear the white-noise significance bound `4 / sqrt(n)` and 0.3, and
//! - sit on a periodogram peak that stands above the spectrum around it.
//!
//! Lags up to a third of the buffer are searched, so a cycle is only accepted once three
//! whole cycles have been seen: at one sample a minute a 90-minute cycle is found after
//! 8.5 h, a daily one after about 6 days, a weekly one after about 23 days.

/// Bins in the summary buffer.
pub(super) const BINS: usize = 512;
// Smallest period, in bins, that can be told from noise.
const MIN_LAG: usize = 4;
// Autocorrelation a period must reach, and by how much it must rise above the dip before it.
const MIN_ACF: f64 = 0.3;
const MIN_RISE: f64 = 0.3;
// White-noise bound on the autocorrelation, in standard errors (1 / sqrt(n) each).
const ACF_SIGMAS: f64 = 4.0;
// The periodogram at the period must be this many times the median power around it.
const PEAK_OVER_MEDIAN: f64 = 20.0;

/// The learning stream summarised at constant memory.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(super) struct Summary {
    /// Bin means minus `base`.
    bins: Vec<f32>,
    /// The first sample, which the bins are offsets from (`None` until it is seen).
    base: Option<f64>,
    /// Samples per bin.
    width: u64,
    /// Sum and count of the bin being filled.
    sum: f64,
    count: u64,
}

impl Summary {
    /// Bytes it holds, its buffer included.
    pub(super) fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>() + self.bins.capacity() * std::mem::size_of::<f32>()
    }

    /// An empty summary; allocates its buffer once.
    pub(super) fn new() -> Self {
        Self {
            bins: Vec::with_capacity(BINS),
            base: None,
            width: 1,
            sum: 0.0,
            count: 0,
        }
    }

    /// Gives the buffer the capacity `new` allocates (a summary read back from a snapshot
    /// has only what it holds), so pushing never reallocates.
    pub(super) fn reserve(&mut self) {
        self.bins
            .reserve_exact(BINS.saturating_sub(self.bins.len()));
    }

    /// Samples per bin.
    pub(super) fn width(&self) -> u64 {
        self.width
    }

    /// Samples summarised so far in whole bins.
    pub(super) fn span(&self) -> u64 {
        self.bins.len() as u64 * self.width
    }

    /// The bin means, oldest first (a copy: the search needs them in `f64` anyway).
    pub(super) fn bins(&self) -> Vec<f64> {
        self.bins
            .iter()
            .map(|&b| self.base.unwrap_or(0.0) + f64::from(b))
            .collect()
    }

    /// Adds one sample; returns true when the buffer just filled (time to search it).
    pub(super) fn push(&mut self, value: f64) -> bool {
        if self.bins.len() == BINS {
            self.merge();
        }
        let base = *self.base.get_or_insert(value);
        self.sum += value - base;
        self.count += 1;
        if self.count < self.width {
            return false;
        }
        let mean = self.sum / self.count as f64;
        self.sum = 0.0;
        self.count = 0;
        // Rounding to f32 is what halves the buffer; see the module docs.
        self.bins.push(mean as f32);
        self.bins.len() == BINS
    }

    /// Halves the resolution: pairs of bins become one, and bins hold twice the samples.
    fn merge(&mut self) {
        let half = self.bins.len() / 2;
        for i in 0..half {
            self.bins[i] = 0.5 * (self.bins[2 * i] + self.bins[2 * i + 1]);
        }
        self.bins.truncate(half);
        self.width = self.width.saturating_mul(2);
    }
}

/// The period of `bins` in bins, if there is a significant one (see the module docs).
pub(super) fn find_period(bins: &[f64]) -> Option<usize> {
    let n = bins.len();
    if n < 4 * MIN_LAG {
        return None;
    }
    let x = detrended(bins);
    let var: f64 = x.iter().map(|v| v * v).sum();
    if var <= 0.0 || !var.is_finite() {
        return None;
    }
    let max_lag = n / 3;
    let acf: Vec<f64> = (0..=max_lag)
        .map(|k| x.iter().zip(&x[k..]).map(|(a, b)| a * b).sum::<f64>() / var)
        .collect();
    let bound = MIN_ACF.max(ACF_SIGMAS / (n as f64).sqrt());
    let mut best: Option<(usize, f64)> = None;
    let mut dip = acf[0];
    for k in 1..max_lag {
        dip = dip.min(acf[k]);
        let peak = acf[k] > acf[k - 1] && acf[k] >= acf[k + 1];
        if k >= MIN_LAG
            && peak
            && acf[k] >= bound
            && acf[k] - dip >= MIN_RISE
            && best.is_none_or(|(_, r)| acf[k] > r)
        {
            best = Some((k, acf[k]));
        }
    }
    let (lag, _) = best?;
    on_spectral_peak(&x, lag).then_some(lag)
}

/// `bins` minus its least-squares line, so a trend does not read as a long cycle.
fn detrended(bins: &[f64]) -> Vec<f64> {
    let n = bins.len() as f64;
    let mean_t = (n - 1.0) / 2.0;
    let mean_y = bins.iter().sum::<f64>() / n;
    let (mut sty, mut stt) = (0.0, 0.0);
    for (t, y) in bins.iter().enumerate() {
        let dt = t as f64 - mean_t;
        sty += dt * (y - mean_y);
        stt += dt * dt;
    }
    let slope = if stt > 0.0 { sty / stt } else { 0.0 };
    bins.iter()
        .enumerate()
        .map(|(t, y)| y - mean_y - slope * (t as f64 - mean_t))
        .collect()
}

/// Whether the periodogram of `x` peaks at the frequency of `lag` (within one frequency
/// step) well above the median power of the frequencies from half to twice it (other than
/// its first harmonic).
fn on_spectral_peak(x: &[f64], lag: usize) -> bool {
    let n = x.len();
    let power = |k: usize| {
        let w = std::f64::consts::TAU * k as f64 / n as f64;
        let (mut re, mut im) = (0.0, 0.0);
        for (t, v) in x.iter().enumerate() {
            let a = w * t as f64;
            re += v * a.cos();
            im += v * a.sin();
        }
        re * re + im * im
    };
    let k0 = (n as f64 / lag as f64).round() as usize;
    let peak = (k0.saturating_sub(1).max(1)..=k0 + 1)
        .map(power)
        .fold(0.0, f64::max);
    let (lo, hi) = ((k0 / 2).max(1), (2 * k0 + 2).min(n / 2));
    // The harmonic at twice the frequency belongs to the cycle too (a square wave has one).
    let mut around: Vec<f64> = (lo..=hi)
        .filter(|k| k.abs_diff(k0) > 1 && k.abs_diff(2 * k0) > 1)
        .map(power)
        .collect();
    if around.is_empty() {
        return false;
    }
    around.sort_by(f64::total_cmp);
    let median = around[around.len() / 2];
    peak > PEAK_OVER_MEDIAN * median
}

#[cfg(test)]
mod tests {
    use super::*;

    /// splitmix64 Gaussian noise.
    fn noise(seed: u64) -> impl FnMut() -> f64 {
        let mut s = seed;
        let mut uniform = move || {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64 + 1e-12
        };
        move || {
            let (a, b) = (uniform(), uniform());
            (-2.0 * a.ln()).sqrt() * (std::f64::consts::TAU * b).cos()
        }
    }

    #[test]
    fn a_sine_of_period_90_is_found() {
        let mut g = noise(1);
        let bins: Vec<f64> = (0..BINS)
            .map(|t| 3.0 * (std::f64::consts::TAU * t as f64 / 90.0).sin() + g())
            .collect();
        let p = find_period(&bins);
        assert!(p.is_some_and(|p| (89..=91).contains(&p)), "{p:?}");
    }

    #[test]
    fn white_noise_and_a_random_walk_have_no_period() {
        for seed in 0..20 {
            let mut g = noise(seed);
            let white: Vec<f64> = (0..BINS).map(|_| g()).collect();
            assert_eq!(find_period(&white), None, "white noise, seed {seed}");
            let mut level = 0.0;
            let walk: Vec<f64> = (0..BINS)
                .map(|_| {
                    level += g();
                    level
                })
                .collect();
            assert_eq!(find_period(&walk), None, "random walk, seed {seed}");
        }
    }

    #[test]
    fn a_small_cycle_on_a_large_offset_survives_the_f32_bins() {
        // At 1e6 an f32 resolves 0.06; the bins are offsets from the first sample, so a
        // cycle of amplitude 0.01 is still there.
        let mut g = noise(3);
        let mut s = Summary::new();
        let mut filled = false;
        for t in 0..BINS {
            let v = 1e6 + 0.01 * (std::f64::consts::TAU * t as f64 / 90.0).sin() + 0.003 * g();
            filled = s.push(v);
        }
        assert!(filled);
        let p = find_period(&s.bins());
        assert!(p.is_some_and(|p| (89..=91).contains(&p)), "{p:?}");
    }

    #[test]
    fn a_model_searching_for_a_cycle_holds_under_4_kib() {
        use super::super::{AnomalyModel, AnomalyParams};
        let mut model = AnomalyModel::new(AnomalyParams::default());
        let mut g = noise(4);
        for i in 0..1000 {
            let _ = model.update(1_700_000_000_000 + i * 1000, 0, 10.0 + g());
        }
        assert_eq!(
            model.period_ms(),
            None,
            "noise has no cycle, so it still searches"
        );
        assert!(model.memory_bytes() < 4096, "{} B", model.memory_bytes());
    }

    #[test]
    fn merging_keeps_the_mean_and_doubles_the_width() {
        let mut s = Summary::new();
        let mut filled = 0;
        for i in 0..(3 * BINS) {
            filled += usize::from(s.push(i as f64));
        }
        assert_eq!(s.width(), 4);
        assert_eq!(s.span(), 3 * BINS as u64);
        assert_eq!(s.bins()[0].to_bits(), 1.5f64.to_bits());
        assert_eq!(filled, 2);
    }
}
