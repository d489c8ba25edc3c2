//! Conversion of energy quantities to standard coal (kgce), after GB/T 2589-2020 综合能耗计算通则.
//!
//! Invariants:
//! - Every [`EnergyKind`] has one unit and one coefficient in kgce per unit; defaults come from
//!   the table in docs/platform.md §2.1 and each can be overridden per site (the provincial platform's
//!   `collectRatio` dictionary may prescribe others). A coefficient is finite and not negative.
//! - Electricity is converted at its equivalent (calorific) value 0.1229 kgce/kWh unless an
//!   equal-value coefficient is configured; [`Coefficients::electricity_basis`] says which, so
//!   reports can print it as GB/T 2589 requires them to.
//! - Pure arithmetic: no I/O, no clock.

use serde::{Deserialize, Serialize};

/// Heat content of 1 kgce: fuel with a lower heating value of 29 307 kJ (GB/T 2589; docs/platform.md
/// §2).
pub const KJ_PER_KGCE: f64 = 29_307.0;

/// Where the default coefficients come from, for reports to print (docs/platform.md §7.3).
pub const DEFAULT_SOURCE: &str = "GB/T 2589 (2008 annex values; verify vs 2020)";

/// An energy carrier or energy-carrying medium that a meter can count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnergyKind {
    /// Electricity, kWh.
    Electricity,
    /// Raw coal (原煤), kg.
    RawCoal,
    /// Washed clean coal (洗精煤), kg.
    WashedCoal,
    /// Coke (焦炭), kg.
    Coke,
    /// Crude oil or fuel oil (原油, 燃料油), kg.
    FuelOil,
    /// Gasoline or kerosene (汽油, 煤油), kg.
    Gasoline,
    /// Diesel (柴油), kg.
    Diesel,
    /// Liquefied petroleum gas (液化石油气), kg.
    Lpg,
    /// Natural gas from a gas field (气田天然气), m³; the design's default natural gas.
    NaturalGas,
    /// Natural gas from an oil field (油田天然气), m³.
    NaturalGasOilField,
    /// Heat (热力), MJ.
    Heat,
    /// Low-pressure steam (低压蒸汽), kg.
    Steam,
    /// New (fresh) water (新水), t.
    Water,
    /// Compressed air (压缩空气), m³.
    CompressedAir,
    /// Oxygen (氧气), m³.
    Oxygen,
}

/// How many kinds there are; the coefficient table has one slot each.
const KINDS: usize = 15;

impl EnergyKind {
    /// Every kind, in table order.
    pub const ALL: [EnergyKind; KINDS] = [
        EnergyKind::Electricity,
        EnergyKind::RawCoal,
        EnergyKind::WashedCoal,
        EnergyKind::Coke,
        EnergyKind::FuelOil,
        EnergyKind::Gasoline,
        EnergyKind::Diesel,
        EnergyKind::Lpg,
        EnergyKind::NaturalGas,
        EnergyKind::NaturalGasOilField,
        EnergyKind::Heat,
        EnergyKind::Steam,
        EnergyKind::Water,
        EnergyKind::CompressedAir,
        EnergyKind::Oxygen,
    ];

    /// The name used on the wire and in config ("electricity", "natural_gas", ...).
    pub fn as_str(self) -> &'static str {
        match self {
            EnergyKind::Electricity => "electricity",
            EnergyKind::RawCoal => "raw_coal",
            EnergyKind::WashedCoal => "washed_coal",
            EnergyKind::Coke => "coke",
            EnergyKind::FuelOil => "fuel_oil",
            EnergyKind::Gasoline => "gasoline",
            EnergyKind::Diesel => "diesel",
            EnergyKind::Lpg => "lpg",
            EnergyKind::NaturalGas => "natural_gas",
            EnergyKind::NaturalGasOilField => "natural_gas_oil_field",
            EnergyKind::Heat => "heat",
            EnergyKind::Steam => "steam",
            EnergyKind::Water => "water",
            EnergyKind::CompressedAir => "compressed_air",
            EnergyKind::Oxygen => "oxygen",
        }
    }

    /// The unit the coefficient is per and meters of this kind count in ("kWh", "kg", "m³", ...).
    pub fn unit(self) -> &'static str {
        match self {
            EnergyKind::Electricity => "kWh",
            EnergyKind::RawCoal
            | EnergyKind::WashedCoal
            | EnergyKind::Coke
            | EnergyKind::FuelOil
            | EnergyKind::Gasoline
            | EnergyKind::Diesel
            | EnergyKind::Lpg
            | EnergyKind::Steam => "kg",
            EnergyKind::NaturalGas
            | EnergyKind::NaturalGasOilField
            | EnergyKind::CompressedAir
            | EnergyKind::Oxygen => "m³",
            EnergyKind::Heat => "MJ",
            EnergyKind::Water => "t",
        }
    }

    /// The GB/T 2589 default in kgce per [`unit`](Self::unit).
    pub fn default_kgce_per_unit(self) -> f64 {
        // docs/platform.md §2.1 "Conversion factors" (long-standing GB/T 2589 annex values, tagged [S];
        // the 2020 Annex A/B table itself was not seen, §7.3), as also listed in docs/design.md §6.
        match self {
            EnergyKind::Electricity => 0.1229, // equivalent value, 3 600 kJ/kWh
            EnergyKind::RawCoal => 0.7143,     // 20 908 kJ/kg (5 000 kcal)
            EnergyKind::WashedCoal => 0.9000,  // 26 344 kJ/kg (6 300 kcal)
            EnergyKind::Coke => 0.9714,        // 28 435 kJ/kg (6 800 kcal)
            EnergyKind::FuelOil => 1.4286,     // 41 816 kJ/kg (10 000 kcal)
            EnergyKind::Gasoline => 1.4714,    // 43 070 kJ/kg (10 300 kcal)
            EnergyKind::Diesel => 1.4571,      // 42 652 kJ/kg (10 200 kcal)
            EnergyKind::Lpg => 1.7143,         // 50 179 kJ/kg (12 000 kcal)
            EnergyKind::NaturalGas => 1.2143,  // gas-field, 35 544 kJ/m³ (8 500 kcal)
            EnergyKind::NaturalGasOilField => 1.3300, // 38 931 kJ/m³ (9 310 kcal)
            EnergyKind::Heat => 0.03412,       // 34.12 kgce/GJ
            EnergyKind::Steam => 0.1286,       // low pressure, 3 763 MJ/t = 128.6 kgce/t
            EnergyKind::Water => 0.2571,       // equal value, 7.54 MJ/t
            EnergyKind::CompressedAir => 0.0400, // equal value, 1.17 MJ/m³
            EnergyKind::Oxygen => 0.4000,      // equal value, 11.72 MJ/m³
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// On what basis electricity is converted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ElectricityBasis {
    /// 当量值, the calorific equivalent of 1 kWh (3 600 kJ → 0.1229 kgce).
    Equivalent,
    /// 等价值, the coal burnt to generate 1 kWh (the year's thermal-power figure, about 0.3).
    EqualValue,
}

impl ElectricityBasis {
    /// The name reports print: "equivalent" or "equal_value".
    pub fn as_str(self) -> &'static str {
        match self {
            ElectricityBasis::Equivalent => "equivalent",
            ElectricityBasis::EqualValue => "equal_value",
        }
    }
}

/// Why a coefficient was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CoalError {
    /// The coefficient is negative, infinite or NaN.
    #[error(
        "standard-coal coefficient for `{kind}`: {value} kgce/{unit} is not a finite, \
         non-negative number"
    )]
    InvalidCoefficient {
        /// The energy kind, as named in config.
        kind: &'static str,
        /// Its unit.
        unit: &'static str,
        /// The value refused.
        value: f64,
    },
}

/// The coefficient table in force at a site.
#[derive(Debug, Clone, PartialEq)]
pub struct Coefficients {
    kgce_per_unit: [f64; KINDS],
    electricity: ElectricityBasis,
    source: String,
}

impl Default for Coefficients {
    fn default() -> Self {
        Coefficients {
            kgce_per_unit: EnergyKind::ALL.map(EnergyKind::default_kgce_per_unit),
            electricity: ElectricityBasis::Equivalent,
            source: DEFAULT_SOURCE.into(),
        }
    }
}

impl Coefficients {
    /// The GB/T 2589 defaults, electricity at its equivalent value.
    pub fn gb_t_2589() -> Coefficients {
        Coefficients::default()
    }

    /// The coefficient in force for `kind`, kgce per unit.
    pub fn get(&self, kind: EnergyKind) -> f64 {
        self.kgce_per_unit
            .get(kind.index())
            .copied()
            .unwrap_or_else(|| kind.default_kgce_per_unit())
    }

    /// Overrides the coefficient of `kind` (for electricity this keeps the basis; see
    /// [`set_electricity_equal_value`](Self::set_electricity_equal_value)).
    ///
    /// # Errors
    /// A negative, infinite or NaN coefficient.
    pub fn set(&mut self, kind: EnergyKind, kgce_per_unit: f64) -> Result<(), CoalError> {
        if !(kgce_per_unit.is_finite() && kgce_per_unit >= 0.0) {
            return Err(CoalError::InvalidCoefficient {
                kind: kind.as_str(),
                unit: kind.unit(),
                value: kgce_per_unit,
            });
        }
        if let Some(slot) = self.kgce_per_unit.get_mut(kind.index()) {
            *slot = kgce_per_unit;
        }
        Ok(())
    }

    /// Converts electricity at an equal-value coefficient (kgce/kWh) instead of 0.1229.
    ///
    /// # Errors
    /// A negative, infinite or NaN coefficient.
    pub fn set_electricity_equal_value(&mut self, kgce_per_kwh: f64) -> Result<(), CoalError> {
        self.set(EnergyKind::Electricity, kgce_per_kwh)?;
        self.electricity = ElectricityBasis::EqualValue;
        Ok(())
    }

    /// Records where the table came from (a site standard, the platform's dictionary version).
    pub fn set_source(&mut self, source: impl Into<String>) {
        self.source = source.into();
    }

    /// Where the table came from, for reports.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The basis electricity is converted on, for reports.
    pub fn electricity_basis(&self) -> ElectricityBasis {
        self.electricity
    }

    /// `amount` of `kind` (in its unit) as kgce.
    pub fn kgce(&self, kind: EnergyKind, amount: f64) -> f64 {
        amount * self.get(kind)
    }

    /// Every kind with the coefficient in force, for reports to print.
    pub fn iter(&self) -> impl Iterator<Item = (EnergyKind, f64)> + '_ {
        EnergyKind::ALL.into_iter().map(|k| (k, self.get(k)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn same(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12 * a.abs().max(b.abs()).max(1.0)
    }

    #[test]
    fn each_default_is_the_documented_gb_t_2589_value() {
        // docs/design.md §6 and docs/platform.md §2.1, value by value.
        let documented = [
            (EnergyKind::Electricity, 0.1229, "kWh"),
            (EnergyKind::RawCoal, 0.7143, "kg"),
            (EnergyKind::WashedCoal, 0.9000, "kg"),
            (EnergyKind::Coke, 0.9714, "kg"),
            (EnergyKind::FuelOil, 1.4286, "kg"),
            (EnergyKind::Gasoline, 1.4714, "kg"),
            (EnergyKind::Diesel, 1.4571, "kg"),
            (EnergyKind::Lpg, 1.7143, "kg"),
            (EnergyKind::NaturalGas, 1.2143, "m³"),
            (EnergyKind::NaturalGasOilField, 1.3300, "m³"),
            (EnergyKind::Heat, 0.03412, "MJ"),
            (EnergyKind::Steam, 0.1286, "kg"),
            (EnergyKind::Water, 0.2571, "t"),
            (EnergyKind::CompressedAir, 0.0400, "m³"),
            (EnergyKind::Oxygen, 0.4000, "m³"),
        ];
        assert_eq!(documented.len(), EnergyKind::ALL.len());
        let table = Coefficients::gb_t_2589();
        for (kind, value, unit) in documented {
            assert!(
                same(table.get(kind), value),
                "{kind:?}: {}",
                table.get(kind)
            );
            assert_eq!(kind.unit(), unit, "{kind:?}");
        }
        assert_eq!(table.electricity_basis(), ElectricityBasis::Equivalent);
        assert_eq!(table.source(), DEFAULT_SOURCE);
    }

    #[test]
    fn calorific_defaults_agree_with_29307_kj_per_kgce_to_the_tables_precision() {
        // The table was set in kcal (860 kcal/kWh ÷ 7 000 = 0.12286), 29 307 kJ gives 0.12284:
        // both round to the published 4 decimals, which is all that can be asked.
        assert!((3_600.0 / KJ_PER_KGCE - 0.1229).abs() < 1e-4);
        assert!((1_000.0 / KJ_PER_KGCE - 0.03412).abs() < 1e-5);
    }

    #[test]
    fn kgce_multiplies_amount_by_the_coefficient_in_force() {
        let mut table = Coefficients::default();
        assert!(same(table.kgce(EnergyKind::Electricity, 1_000.0), 122.9));
        assert!(same(table.kgce(EnergyKind::Steam, 1_000.0), 128.6));
        table.set(EnergyKind::NaturalGas, 1.33).unwrap();
        assert!(same(table.kgce(EnergyKind::NaturalGas, 10.0), 13.3));
        table.set_electricity_equal_value(0.3).unwrap();
        assert_eq!(table.electricity_basis(), ElectricityBasis::EqualValue);
        assert!(same(table.kgce(EnergyKind::Electricity, 1_000.0), 300.0));
    }

    #[test]
    fn a_bad_override_names_the_kind_and_keeps_the_old_value() {
        let mut table = Coefficients::default();
        let err = table.set(EnergyKind::Diesel, -1.0).unwrap_err();
        assert!(err.to_string().contains("`diesel`"), "{err}");
        assert!(table.set(EnergyKind::Diesel, f64::NAN).is_err());
        assert!(table.set_electricity_equal_value(f64::INFINITY).is_err());
        assert_eq!(table.electricity_basis(), ElectricityBasis::Equivalent);
        assert!(same(table.get(EnergyKind::Diesel), 1.4571));
    }

    #[test]
    fn kinds_are_indexed_in_table_order() {
        for kind in EnergyKind::ALL {
            assert_eq!(
                kind.index(),
                EnergyKind::ALL.iter().position(|k| *k == kind).unwrap()
            );
        }
        assert_eq!(
            EnergyKind::NaturalGasOilField.as_str(),
            "natural_gas_oil_field"
        );
        assert_eq!(
            Coefficients::default().iter().count(),
            EnergyKind::ALL.len()
        );
    }
}
