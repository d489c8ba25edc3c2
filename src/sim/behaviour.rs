//! What a simulated point does over time, chosen from its unit and name so that any profile
//! or inline point behaves like a plant without extra configuration.
//!
//! Pure: values are functions of (state, time, random draws).

use crate::acquire::spec::Point;

/// How one simulated point evolves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Behaviour {
    /// Voltage around `nominal` with noise.
    Voltage {
        /// 230 V phase or 400 V line.
        nominal: f64,
    },
    /// Current following the load shape.
    Current,
    /// Active power (W, or kW when `kilo`), `share` of the device total.
    Power {
        /// Value is in kW (or kvar).
        kilo: bool,
        /// Fraction of the total (1 for the total, 1/3 per phase).
        share: f64,
        /// Reactive rather than active.
        reactive: bool,
    },
    /// A cumulative energy counter that integrates power and only rises.
    Energy {
        /// Counter is in Wh rather than kWh.
        watt_hours: bool,
        /// Fraction of the device's energy it counts (export counters barely move).
        share: f64,
    },
    /// Power factor.
    PowerFactor,
    /// Grid frequency.
    Frequency,
    /// A temperature that follows load with a lag.
    Temperature {
        /// Rise above ambient at full load.
        rise: f64,
    },
    /// Vibration velocity, mm/s.
    Vibration,
    /// 1 while the machine runs.
    Running,
    /// Hours counter that advances while running.
    RunningHours,
    /// Shaft speed while running.
    Speed,
    /// A constant (fault codes, flags).
    Constant(f64),
}

/// Rated device total power in W; currents and energy follow from it.
pub const RATED_POWER_W: f64 = 30_000.0;

impl Behaviour {
    /// Picks a behaviour for `point`.
    pub fn for_point(point: &Point) -> Self {
        let name = point.name.as_str();
        let unit = point.unit.as_str();
        let phase = name.ends_with('a')
            || name.ends_with('b')
            || name.ends_with('c')
            || name.ends_with("l1")
            || name.ends_with("l2")
            || name.ends_with("l3");
        let share = if phase { 1.0 / 3.0 } else { 1.0 };
        match unit {
            "V" => Behaviour::Voltage {
                nominal: if ["ab", "bc", "ca"].iter().any(|s| name.ends_with(s)) {
                    400.0
                } else {
                    230.0
                },
            },
            "A" => Behaviour::Current,
            "W" | "kW" => Behaviour::Power {
                kilo: unit == "kW",
                share,
                reactive: false,
            },
            "var" | "kvar" => Behaviour::Power {
                kilo: unit == "kvar",
                share,
                reactive: true,
            },
            "kWh" | "Wh" => Behaviour::Energy {
                watt_hours: unit == "Wh",
                share: if name.contains("export") {
                    0.001
                } else if ["sharp", "peak", "flat", "valley"]
                    .iter()
                    .any(|p| name.contains(p))
                {
                    0.25
                } else {
                    1.0
                },
            },
            "Hz" => Behaviour::Frequency,
            "°C" | "degC" | "C" => Behaviour::Temperature {
                rise: if name.contains("ambient") {
                    0.0
                } else if name.contains("bearing") {
                    30.0
                } else {
                    55.0
                },
            },
            "mm/s" => Behaviour::Vibration,
            "h" => Behaviour::RunningHours,
            "rpm" => Behaviour::Speed,
            _ if name.starts_with("pf") => Behaviour::PowerFactor,
            _ if name.contains("run") || name == "ready" => Behaviour::Running,
            _ => Behaviour::Constant(0.0),
        }
    }

    /// Whether the value is a counter that must never go down.
    pub fn is_counter(self) -> bool {
        matches!(self, Behaviour::Energy { .. } | Behaviour::RunningHours)
    }
}

/// Which phase a point measures, from its name's suffix (`ua`, `ia`, `pb`, `pfc`, `u_l1`):
/// 0, 1 or 2; `None` for totals and line-to-line values (`uab`, `p`, `freq`).
pub fn phase_of(name: &str) -> Option<usize> {
    let line_to_line = ["ab", "bc", "ca"].iter().any(|s| name.ends_with(s));
    if line_to_line {
        return None;
    }
    if name.ends_with("l1") {
        return Some(0);
    }
    if name.ends_with("l2") {
        return Some(1);
    }
    if name.ends_with("l3") {
        return Some(2);
    }
    // A single letter (`p`, `q`) is a total, not phase A.
    match name.as_bytes() {
        [_, .., b'a'] => Some(0),
        [_, .., b'b'] => Some(1),
        [_, .., b'c'] => Some(2),
        _ => None,
    }
}

/// The plant's load (0 to 1) at `local_hour` (0.0 to 24.0): low at night, a morning ramp,
/// a lunch dip, an evening shoulder. One shift pattern common to Chinese factories.
pub fn load_shape(local_hour: f64) -> f64 {
    let h = local_hour.rem_euclid(24.0);
    match h {
        h if h < 6.0 => 0.25,
        h if h < 8.0 => 0.25 + (h - 6.0) / 2.0 * 0.6,
        h if h < 11.5 => 0.85,
        h if h < 13.0 => 0.55,
        h if h < 17.5 => 0.9,
        h if h < 22.0 => 0.9 - (h - 17.5) / 4.5 * 0.55,
        _ => 0.3,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_are_told_by_suffix_and_totals_and_line_voltages_have_none() {
        for (name, phase) in [
            ("ua", Some(0)),
            ("ib", Some(1)),
            ("pfc", Some(2)),
            ("u_l2", Some(1)),
            ("uab", None),
            ("uca", None),
            ("p", None),
            ("q", None),
            ("freq", None),
            ("pf", None),
        ] {
            assert_eq!(phase_of(name), phase, "{name}");
        }
    }

    #[test]
    fn the_load_shape_is_higher_by_day_than_by_night() {
        assert!(load_shape(3.0) < 0.3);
        assert!(load_shape(10.0) > 0.8);
        assert!(load_shape(12.0) < load_shape(10.0), "lunch dip");
        for h in 0..240 {
            let l = load_shape(f64::from(h) / 10.0);
            assert!((0.0..=1.0).contains(&l));
        }
    }
}
