//! Fixed-point decimals for `dataValue`, so that totals agree with their parts to the last digit.
//!
//! The platform receives values as decimal text and checks day and month figures against each
//! other (docs/platform.md §1.3). Summing `f64`s and printing the result can disagree with the sum of
//! the printed parts in the last place, so every interval's consumption is rounded **once**, to
//! a whole number of units of `10^-decimals`, and every total is an integer sum of those units.
//!
//! Rounding rule: the shortest decimal text that reads back as the same `f64` (what `{}`
//! prints, never in exponent form) is rounded half away from zero at `decimals` places. So
//! `2.675` becomes `2.68`, as a person reading the meter would expect, although the nearest
//! `f64` lies a little below 2.675.
//!
//! Invariant: `Display` of a sum equals the decimal sum of the `Display`s of its parts.

use std::fmt;
use std::str::FromStr;

/// Most decimal places a value may carry.
pub const MAX_DECIMALS: u8 = 6;

/// Most digits before the point that [`Fixed::from_f64`] accepts: a 15-minute reading above
/// 10^15 of any unit is a broken counter, and the cap keeps a year of 1-second intervals far
/// from overflowing.
const MAX_INTEGER_DIGITS: usize = 15;

/// A decimal with a fixed number of places: `units × 10^-decimals`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fixed {
    units: i128,
    decimals: u8,
}

/// Why a text is not a decimal number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a decimal number such as 12.34")]
pub struct ParseFixedError(pub String);

impl Fixed {
    /// Zero with `decimals` places (at most [`MAX_DECIMALS`]).
    pub fn zero(decimals: u8) -> Self {
        Self {
            units: 0,
            decimals: decimals.min(MAX_DECIMALS),
        }
    }

    /// `value` rounded to `decimals` places (at most [`MAX_DECIMALS`]) by the module's rule;
    /// `None` for NaN, infinities and magnitudes of 10^15 or more.
    pub fn from_f64(value: f64, decimals: u8) -> Option<Self> {
        if !value.is_finite() {
            return None;
        }
        let decimals = decimals.min(MAX_DECIMALS);
        let text = format!("{}", value.abs());
        let (int, frac) = text.split_once('.').unwrap_or((&text, ""));
        if int.len() > MAX_INTEGER_DIGITS {
            return None;
        }
        let places = usize::from(decimals);
        let kept = frac.bytes().chain(std::iter::repeat(b'0')).take(places);
        let mut units: i128 = 0;
        for b in int.bytes().chain(kept) {
            if !b.is_ascii_digit() {
                return None;
            }
            units = units.checked_mul(10)?.checked_add(i128::from(b - b'0'))?;
        }
        if frac.as_bytes().get(places).is_some_and(|b| *b >= b'5') {
            units = units.checked_add(1)?;
        }
        if value.is_sign_negative() {
            units = -units;
        }
        Some(Self { units, decimals })
    }

    /// The sum, with the larger number of places; `None` on overflow.
    pub fn checked_add(self, other: Self) -> Option<Self> {
        let decimals = self.decimals.max(other.decimals);
        let a = self.rescaled(decimals)?;
        let b = other.rescaled(decimals)?;
        Some(Self {
            units: a.checked_add(b)?,
            decimals,
        })
    }

    fn rescaled(self, decimals: u8) -> Option<i128> {
        let factor = 10_i128.checked_pow(u32::from(decimals.saturating_sub(self.decimals)))?;
        self.units.checked_mul(factor)
    }

    /// The value in units of `10^-decimals`.
    pub fn units(self) -> i128 {
        self.units
    }

    /// Decimal places.
    pub fn decimals(self) -> u8 {
        self.decimals
    }

    /// Whether the value is below zero.
    pub fn is_negative(self) -> bool {
        self.units < 0
    }
}

impl fmt::Display for Fixed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.units < 0 { "-" } else { "" };
        let abs = self.units.unsigned_abs();
        let places = usize::from(self.decimals);
        let scale = 10_u128.pow(u32::from(self.decimals));
        if places == 0 {
            write!(f, "{sign}{abs}")
        } else {
            write!(f, "{sign}{}.{:0places$}", abs / scale, abs % scale)
        }
    }
}

impl FromStr for Fixed {
    type Err = ParseFixedError;

    /// Reads `[-]digits[.digits]` exactly, keeping as many places as written.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ParseFixedError(s.to_owned());
        let (negative, body) = match s.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let (int, frac) = body.split_once('.').unwrap_or((body, ""));
        let digits_only = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
        if int.is_empty() || !digits_only(int) || !digits_only(frac) || body.ends_with('.') {
            return Err(bad());
        }
        let decimals = u8::try_from(frac.len())
            .ok()
            .filter(|d| *d <= MAX_DECIMALS)
            .ok_or_else(bad)?;
        let mut units: i128 = 0;
        for b in int.bytes().chain(frac.bytes()) {
            units = units
                .checked_mul(10)
                .and_then(|u| u.checked_add(i128::from(b - b'0')))
                .ok_or_else(bad)?;
        }
        Ok(Self {
            units: if negative { -units } else { units },
            decimals,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn show(v: f64, d: u8) -> String {
        Fixed::from_f64(v, d).unwrap().to_string()
    }

    #[test]
    fn rounding_is_half_away_from_zero_on_the_shortest_decimal() {
        assert_eq!(show(12.345, 2), "12.35");
        assert_eq!(show(2.675, 2), "2.68");
        assert_eq!(show(0.125, 2), "0.13");
        assert_eq!(show(0.124_999, 2), "0.12");
        assert_eq!(show(2.5, 0), "3");
        assert_eq!(show(-2.5, 0), "-3");
        assert_eq!(show(1234.57 - 1234.56, 2), "0.01");
        assert_eq!(show(0.0, 2), "0.00");
        assert_eq!(show(-0.0, 2), "0.00");
        assert_eq!(show(1e-7, 6), "0.000000");
        assert_eq!(show(0.000_000_5, 6), "0.000001");
        assert_eq!(show(99.995, 2), "100.00");
        assert_eq!(show(7.0, 3), "7.000");
        assert_eq!(show(123_456_789_012.5, 1), "123456789012.5");
    }

    #[test]
    fn unrepresentable_values_are_refused() {
        assert_eq!(Fixed::from_f64(f64::NAN, 2), None);
        assert_eq!(Fixed::from_f64(f64::INFINITY, 2), None);
        assert_eq!(Fixed::from_f64(1e15, 2), None);
        assert!(Fixed::from_f64(999_999_999_999_999.0, 2).is_some());
    }

    #[test]
    fn places_are_capped_at_six() {
        assert_eq!(Fixed::from_f64(1.0, 9).unwrap().decimals(), MAX_DECIMALS);
        assert_eq!(Fixed::zero(9).to_string(), "0.000000");
    }

    #[test]
    fn sums_print_as_the_sum_of_the_printed_parts() {
        let parts = [0.1, 0.2, 0.3, 1234.5678, 0.005];
        let mut total = Fixed::zero(2);
        for p in parts {
            total = total.checked_add(Fixed::from_f64(p, 2).unwrap()).unwrap();
        }
        // 0.10 + 0.20 + 0.30 + 1234.57 + 0.01
        assert_eq!(total.to_string(), "1235.18");
        let mixed = Fixed::from_f64(1.5, 1)
            .unwrap()
            .checked_add(Fixed::from_f64(0.25, 2).unwrap())
            .unwrap();
        assert_eq!(mixed.to_string(), "1.75");
    }

    #[test]
    fn text_reads_back_exactly() {
        for text in ["0", "0.00", "12.35", "-3", "100.000001", "1234567890123.5"] {
            assert_eq!(text.parse::<Fixed>().unwrap().to_string(), text);
        }
        for bad in ["", ".5", "1.", "1e3", "--1", "1.2.3", "0.1234567", " 1"] {
            assert!(bad.parse::<Fixed>().is_err(), "{bad}");
        }
    }
}
