//! What the platform stage is told to build: who the enterprise is, where its days begin, and
//! which ledger meters it reports under which registered data-item codes. `config` resolves
//! `[energy_platform]` into these ([`crate::config::platform`]); the stage never reads the
//! file itself.

use chrono_tz::Tz;

use super::record::{StatType, Versions};
use super::uscc::Uscc;

/// The records to build: the resolved `[energy_platform]` without its HTTPS uplink, which is
/// the delivery's business, not the records'.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    /// `enterpriseCode`.
    pub enterprise_code: Uscc,
    /// Where the platform's days begin.
    pub timezone: Tz,
    /// Share of estimated intervals a valid day, month or year may have, 0 to 1.
    pub max_estimated_share: f64,
    /// The data items, in file order.
    pub items: Vec<Item>,
    /// The versions that records published over MQTT carry (`reg_version`, `dic_version`;
    /// empty when not given).
    pub versions: Versions,
}

/// One data item: a ledger meter under a registered code.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// The ledger meter's name.
    pub meter: String,
    /// Index of the meter in the ledger's meter list, the order `config` resolved them in.
    pub meter_index: usize,
    /// `dataCode`.
    pub data_code: String,
    /// `convertRation`.
    pub convert_ratio: f64,
    /// `scope`.
    pub scope: String,
    /// `inputType`.
    pub input_type: String,
    /// The records produced, in `statType` order, each once.
    pub stat_types: Vec<StatType>,
    /// Decimal places of `dataValue`.
    pub decimals: u8,
}

impl Item {
    /// Whether the item produces `stat_type` records.
    pub fn produces(&self, stat_type: StatType) -> bool {
        self.stat_types.contains(&stat_type)
    }
}
