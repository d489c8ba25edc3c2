//! What the ledger is told to count: each meter or production counter, where it reads from,
//! and the calendar and coefficients its intervals are split and converted with. `config`
//! resolves `[energy]`, `[[meters]]` and `[[production]]` into these
//! ([`crate::config::energy`]); the stage never reads the file itself.

use super::coal::{Coefficients, EnergyKind};
use super::counter::MeterParams;
use super::tou::Calendar;
use crate::model::Name;

/// What a ledger counter counts.
#[derive(Debug, Clone, PartialEq)]
pub enum Counts {
    /// Energy of a kind.
    Energy(EnergyKind),
    /// Product, in this unit.
    Product(String),
}

impl Counts {
    /// The ledger's `kind` column: the energy kind, or `production`.
    pub fn kind_str(&self) -> &str {
        match self {
            Self::Energy(k) => k.as_str(),
            Self::Product(_) => "production",
        }
    }

    /// The unit of the deltas.
    pub fn unit(&self) -> &str {
        match self {
            Self::Energy(k) => k.unit(),
            Self::Product(u) => u,
        }
    }
}

/// A resolved meter or production counter.
#[derive(Debug, Clone, PartialEq)]
pub struct Meter {
    /// Its name.
    pub name: String,
    /// Index of the device that has the counter, in the configured order of devices.
    pub device: usize,
    /// Index of the counter point among that device's points.
    pub point: usize,
    /// Energy or product.
    pub counts: Counts,
    /// Counter → interval settings.
    pub params: MeterParams,
    /// Roll-up groups.
    pub groups: Vec<String>,
    /// Contracted demand (kW) and the share of it that warns.
    pub demand: Option<(f64, f64)>,
}

/// The device and point a meter's readings arrive under, as named in a sample batch.
#[derive(Debug, Clone, PartialEq)]
pub struct CounterPoint {
    /// The device's name.
    pub device: Name,
    /// The counter point's name.
    pub point: Name,
}

/// Everything a [`Ledger`](super::ledger::Ledger) needs: its meters and the rules that turn
/// their deltas into booked intervals.
#[derive(Debug, Clone)]
pub struct LedgerSpec {
    /// Energy meters and production counters; a meter's index is its place here.
    pub meters: Vec<Meter>,
    /// Where each meter reads from, by meter index.
    pub points: Vec<CounterPoint>,
    /// Time-of-use calendar the energy intervals are split over.
    pub calendar: Calendar,
    /// Standard-coal coefficients.
    pub coefficients: Coefficients,
    /// The zone of the ledger's local days and periods.
    pub timezone: chrono_tz::Tz,
}
