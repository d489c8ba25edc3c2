//! Flood control (ISA-18.2): above `[alarms] max_per_device_per_minute` raises per device,
//! further raises are not announced but summarised by one `alarm-flood` alarm on the device
//! until a minute passes without one; then the suppressed alarms still raised are announced.

use std::collections::VecDeque;

use super::alarm::{AlarmState, Transition};
use super::engine::DeviceRules;
use super::message::{AlarmEvent, AlarmStatus, event};
use super::spec::{AlarmPolicy, Severity};

/// The alarm name of the flood summary alarm.
pub const FLOOD_ALARM: &str = "alarm-flood";

#[derive(Debug, Clone, Default)]
pub(super) struct Flood {
    pub(super) raises: VecDeque<i64>,
    pub(super) suppressed_last: Option<i64>,
    pub(super) suppressed_count: u64,
    pub(super) summary: AlarmState,
}

/// Records a raise at `at`; false when it exceeds the device's rate and must be summarised.
pub(super) fn flood_allows(flood: &mut Flood, policy: &AlarmPolicy, at: i64) -> bool {
    let max = policy.max_per_device_per_minute;
    if max == 0 {
        return true;
    }
    while flood.raises.front().is_some_and(|&t| t <= at - 60_000) {
        flood.raises.pop_front();
    }
    if flood.raises.len() < max as usize {
        flood.raises.push_back(at);
        return true;
    }
    flood.suppressed_last = Some(at);
    flood.suppressed_count += 1;
    false
}

/// Raises the device's flood summary while raises are being suppressed; clears it a minute
/// after the last one, announcing the suppressed alarms that are still raised.
pub(super) fn flood_summary(
    dev: &mut DeviceRules,
    policy: &AlarmPolicy,
    now: i64,
    events: &mut Vec<AlarmEvent>,
) {
    let flooding = dev.flood.suppressed_last.is_some_and(|t| now - t < 60_000);
    let transition = dev.flood.summary.step(flooding, now, 0, 0);
    let summary = |state: &AlarmState, status, count: u64| AlarmEvent {
        id: format!("{}/{FLOOD_ALARM}/{}", dev.name, state.raised_ms),
        device: dev.name.to_string(),
        alarm: FLOOD_ALARM.to_owned(),
        rule: FLOOD_ALARM.to_owned(),
        point: None,
        state: status,
        severity: Severity::High,
        raised: state.raised_ms,
        ts: now,
        value: Some(count as f64),
        limit: Some(f64::from(policy.max_per_device_per_minute)),
        message: format!(
            "{}: alarm flood, {count} alarms not announced (more than {} per minute)",
            dev.name, policy.max_per_device_per_minute
        ),
        shelved_until: None,
        shares: Vec::new(),
        anomaly_kind: None,
        anomaly_kind_provisional: false,
    };
    match transition {
        Some(Transition::Raised) => {
            events.push(summary(
                &dev.flood.summary,
                AlarmStatus::Active,
                dev.flood.suppressed_count,
            ));
        }
        Some(Transition::Cleared) => {
            events.push(summary(
                &dev.flood.summary,
                AlarmStatus::Cleared,
                dev.flood.suppressed_count,
            ));
            dev.flood.suppressed_count = 0;
            for inst in &mut dev.instances {
                if inst.state.suppressed && inst.state.is_raised() {
                    inst.state.suppressed = false;
                    events.push(event(
                        &dev.name,
                        &dev.point_names,
                        &dev.units,
                        inst,
                        AlarmStatus::Active,
                        now,
                    ));
                }
            }
        }
        None => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(max: u32) -> AlarmPolicy {
        AlarmPolicy {
            max_per_device_per_minute: max,
        }
    }

    #[test]
    fn the_budget_admits_max_raises_per_sliding_minute_and_counts_the_rest() {
        let mut flood = Flood::default();
        let p = policy(3);
        let allowed: Vec<bool> = [0, 10_000, 20_000, 30_000, 40_000]
            .into_iter()
            .map(|t| flood_allows(&mut flood, &p, t))
            .collect();
        assert_eq!(allowed, [true, true, true, false, false]);
        assert_eq!(flood.suppressed_count, 2);
        assert_eq!(flood.suppressed_last, Some(40_000));
        // The raise at 0 leaves the window exactly a minute later; one at 10 s is still in it.
        assert!(flood_allows(&mut flood, &p, 60_000));
        assert!(!flood_allows(&mut flood, &p, 65_000));
        assert_eq!(flood.suppressed_count, 3);
    }

    #[test]
    fn a_budget_of_zero_never_suppresses() {
        let mut flood = Flood::default();
        let p = policy(0);
        assert!((0..1000).all(|t| flood_allows(&mut flood, &p, t)));
        assert_eq!(flood.suppressed_count, 0);
        assert!(
            flood.raises.is_empty(),
            "nothing is tracked without a budget"
        );
    }
}
