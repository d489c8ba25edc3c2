//! Calibration of one evidence stream into a tail probability, learned from the stream itself.
//!
//! Each component's raw evidence has a known null distribution for independent Gaussian
//! noise ([`Null`]). Real signals are heavy-tailed, quantised and autocorrelated, so the same
//! evidence is more common on them. The stream's own 98th percentile, learned on quiet
//! samples, is compared with the null's: when it is higher, every evidence value is deflated
//! by that ratio before its null tail probability is read. On clean Gaussian noise the ratio
//! is 1 and the full sensitivity remains.

use std::f64::consts::{LN_10, PI};

/// Share of quiet samples the learned percentile leaves above it.
const SHARE: f64 = 0.02;
// Gain of the percentile's logarithm per sample: 1 / (GAIN_START + n / GAIN_SLOWDOWN), so
// it settles within the first few hundred samples, then never below GAIN_FLOOR: a slowly
// building anomaly (a drift) that exceeds it for many samples in a row lifts it by only
// 0.5 % per sample.
const GAIN_START: f64 = 20.0;
const GAIN_SLOWDOWN: f64 = 10.0;
const GAIN_FLOOR: f64 = 0.005;
// Over its first samples a tail learns from every sample outside an episode, so heavy
// tails are learned quickly; afterwards only from samples where no component is beyond the
// quiet level, so a slowly building anomaly does not teach its own evidence away.
const TRUSTED_SAMPLES: f64 = 400.0;
// The learned percentile never reads a stream as more regular than the null.
const MIN_INFLATION: f64 = 1.0;

/// Null tail of a component's evidence for independent Gaussian noise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(super) enum Null {
    /// `P(E > e) = 2 Q(e)`: a two-sided Gaussian `|z|`.
    TwoSided,
    /// `P(E > e) = exp(-e^2 / 2)`: the square-root form of a CUSUM or a log-likelihood.
    SquareRoot,
}

impl Null {
    /// Evidence the null exceeds with probability [`SHARE`].
    fn percentile(self) -> f64 {
        match self {
            // 2 Q(2.326) = 0.02.
            Null::TwoSided => 2.326_348,
            // sqrt(2 ln 50).
            Null::SquareRoot => 2.797_149,
        }
    }

    /// `-log10 P(E > e)` under the null.
    fn surprise(self, e: f64) -> f64 {
        let ln_p = match self {
            Null::TwoSided => std::f64::consts::LN_2 + ln_gaussian_tail(e),
            Null::SquareRoot => -0.5 * e * e,
        };
        (-ln_p / LN_10).max(0.0)
    }
}

/// `ln Q(x)` for the standard normal upper tail, accurate to a few per cent of Q.
fn ln_gaussian_tail(x: f64) -> f64 {
    if x < 3.0 {
        // Abramowitz and Stegun 26.2.17 (absolute error below 7.5e-8).
        let x = x.max(0.0);
        let t = 1.0 / (1.0 + 0.231_641_9 * x);
        let poly = t
            * (0.319_381_530
                + t * (-0.356_563_782
                    + t * (1.781_477_937 + t * (-1.821_255_978 + t * 1.330_274_429))));
        let density = (-0.5 * x * x).exp() / (2.0 * PI).sqrt();
        (density * poly).max(f64::MIN_POSITIVE).ln()
    } else {
        // Asymptotic series; its next term is below 2 % from x = 3 on.
        let x2 = x * x;
        -0.5 * x2 - x.ln() - 0.5 * (2.0 * PI).ln() + (1.0 - 1.0 / x2 + 3.0 / (x2 * x2)).ln()
    }
}

/// The learned percentile of one evidence stream against its null.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub(super) struct Tail {
    null: Null,
    ln_percentile: f64,
    learned: f64,
}

impl Tail {
    /// A tail that starts at its null.
    pub(super) fn new(null: Null) -> Self {
        Self {
            null,
            ln_percentile: null.percentile().ln(),
            learned: 0.0,
        }
    }

    /// How much more spread the stream has than its null (at least 1).
    pub(super) fn inflation(&self) -> f64 {
        (self.ln_percentile.exp() / self.null.percentile()).max(MIN_INFLATION)
    }

    /// `-log10 P(E >= e)` for this stream.
    pub(super) fn surprise(&self, e: f64) -> f64 {
        if e.is_nan() || e <= 0.0 {
            return 0.0;
        }
        self.null.surprise(e / self.inflation())
    }

    /// Learns from one sample outside an episode; `calm` says no component was beyond the
    /// quiet level at it.
    pub(super) fn learn(&mut self, e: f64, calm: bool) {
        if e.is_nan() || (!calm && self.learned >= TRUSTED_SAMPLES) {
            return;
        }
        let above = f64::from(u8::from(e > self.ln_percentile.exp()));
        let gain = GAIN_FLOOR.max(1.0 / (GAIN_START + self.learned / GAIN_SLOWDOWN));
        self.learned += 1.0;
        self.ln_percentile += gain * (above - SHARE);
    }

    pub(super) fn is_finite(&self) -> bool {
        self.ln_percentile.is_finite() && self.learned.is_finite()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_null_tails_match_known_values() {
        let two = Tail::new(Null::TwoSided);
        // 2 Q(3) = 0.0027, 2 Q(5) = 5.7e-7.
        assert!((two.surprise(3.0) - 0.0027f64.log10().abs()).abs() < 0.02);
        assert!((two.surprise(5.0) - 5.73e-7f64.log10().abs()).abs() < 0.02);
        assert!((two.surprise(2.0) - 0.0455f64.log10().abs()).abs() < 0.01);
        let root = Tail::new(Null::SquareRoot);
        assert!((root.surprise(4.0) - 8.0 / LN_10).abs() < 1e-12);
        assert!((ln_gaussian_tail(2.999) - ln_gaussian_tail(3.0)).abs() < 0.02);
    }

    #[test]
    fn a_heavier_stream_is_deflated_to_its_own_percentile() {
        let mut tail = Tail::new(Null::TwoSided);
        // Every 10th sample at 5 sigma: far more often than a Gaussian would.
        for i in 0..5000 {
            tail.learn(if i % 10 == 0 { 5.0 } else { 0.5 }, true);
        }
        assert!(tail.inflation() > 1.9, "{}", tail.inflation());
        assert!(tail.surprise(5.0) < 2.0, "{}", tail.surprise(5.0));
        // A Gaussian-like stream stays at full sensitivity.
        let mut tail = Tail::new(Null::TwoSided);
        for i in 0..5000 {
            tail.learn(if i % 100 == 0 { 2.4 } else { 0.8 }, true);
        }
        assert!(tail.inflation() < 1.1, "{}", tail.inflation());
    }
}
