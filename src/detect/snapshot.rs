//! Learned model state that survives a restart: the anomaly (point and device-level), trend
//! and rate models of every rule, as snapshots the runtime keeps in the state file.
//!
//! A snapshot is keyed by the rule instance (`device`, `alarm`) and carries a *fingerprint*:
//! a hash of the rule's kind and parameters, the names of the points it watches and the
//! layout of its freshly built model (the `Debug` text of the model as built, so an upgrade
//! that changes a model's fields or defaults counts as a change too). A snapshot is restored
//! only where the fingerprint is unchanged; an edited rule learns afresh. A snapshot of an
//! unknown encoding [`SNAPSHOT_VERSION`] or one that does not decode is ignored, never
//! trusted half-way.
//!
//! The encoding is JSON (serde_json with exact float round trips): a model is a few hundred
//! bytes to ~20 KiB (an `auto` season's 512-bin summary while it searches, an hour-of-week
//! season's 168 buckets, a rate rule's window of up to 4096 samples), and JSON keeps the
//! state file readable with `sqlite3`. A value that is not finite would not round-trip; the
//! models keep none (they refuse a step that would make one), and such a snapshot would
//! fail to decode and be ignored.
//!
//! Pure: [`Engine::model_snapshots`] and [`Engine::restore_models`] do no I/O and read no
//! clock; the caller stores the rows and logs the outcomes.

use std::fmt::Write as _;

use super::engine::{Detector, Engine};

/// Version of the snapshot encoding; a snapshot written with another is ignored. Bump it when
/// the encoding itself changes (a model's fields are covered by the fingerprint).
pub const SNAPSHOT_VERSION: u32 = 1;

/// One rule instance's learned state, as kept in the state file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSnapshot {
    /// The device.
    pub device: String,
    /// The rule instance's alarm name on that device.
    pub alarm: String,
    /// Hash of the rule's parameters and model layout, as 16 hex digits.
    pub fingerprint: String,
    /// The encoding version, [`SNAPSHOT_VERSION`] when written by this build.
    pub version: u32,
    /// The model state (JSON).
    pub body: String,
}

/// What became of one saved snapshot at [`Engine::restore_models`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Restored {
    /// The rule resumes with its trained model.
    Resumed,
    /// The rule's parameters (or its model's layout) changed: it learns afresh.
    Changed,
    /// The snapshot cannot be read (unknown version, or it does not decode): the rule learns
    /// afresh.
    Unreadable(String),
    /// No rule of the current config has this device and alarm (the snapshot stays unused).
    NoRule,
}

/// A saved snapshot's outcome, naming its rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreOutcome {
    /// The device.
    pub device: String,
    /// The alarm name.
    pub alarm: String,
    /// What happened.
    pub restored: Restored,
}

/// FNV-1a, 64 bit: stable across Rust versions and builds, unlike `DefaultHasher`, so a
/// fingerprint written by one build is compared with one computed by the next.
struct Fnv(u64);

impl std::fmt::Write for Fnv {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        for b in s.bytes() {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
        Ok(())
    }
}

/// Whether a detector's learned state is snapshotted.
fn learns(detector: &Detector) -> bool {
    matches!(
        detector,
        Detector::Anomaly(_) | Detector::DeviceAnomaly(_) | Detector::Trend(_) | Detector::Rate(_)
    )
}

/// The fingerprint of a rule instance whose model is `fresh` as built (0 for a detector
/// that learns nothing): its kind with its parameters, what it watches (point names, as
/// `watched` says them) and the fresh model itself. Hashed as it is formatted, so the model's
/// text is never allocated.
pub(super) fn fingerprint(kind: &dyn std::fmt::Debug, watched: &str, fresh: &Detector) -> u64 {
    if !learns(fresh) {
        return 0;
    }
    let mut h = Fnv(0xcbf2_9ce4_8422_2325);
    let _infallible = write!(h, "{kind:?}|{watched}|{fresh:?}");
    h.0
}

/// The learned state of a detector, as JSON; `None` for one that learns nothing.
fn encode(detector: &Detector) -> Option<Result<String, serde_json::Error>> {
    Some(match detector {
        Detector::Anomaly(models) => serde_json::to_string(models),
        Detector::DeviceAnomaly(state) => serde_json::to_string(state),
        Detector::Trend(model) => serde_json::to_string(model),
        Detector::Rate(state) => serde_json::to_string(state),
        _ => return None,
    })
}

/// Replaces `detector`'s state by the one in `body`; on an error `detector` is unchanged.
fn decode(detector: &mut Detector, body: &str) -> Result<(), serde_json::Error> {
    match detector {
        Detector::Anomaly(models) => {
            **models = serde_json::from_str(body)?;
            models
                .models_mut()
                .iter_mut()
                .for_each(crate::detect::anomaly::AnomalyModel::reserve_buffers);
        }
        Detector::DeviceAnomaly(state) => **state = serde_json::from_str(body)?,
        Detector::Trend(model) => **model = serde_json::from_str(body)?,
        Detector::Rate(state) => *state = serde_json::from_str(body)?,
        _ => {}
    }
    Ok(())
}

impl Engine {
    /// The learned state of every anomaly, trend and rate rule, to keep in the state file.
    /// A model whose state does not encode (it would need a value that is not finite) is
    /// left out, so its last good snapshot stays.
    pub fn model_snapshots(&self) -> Vec<ModelSnapshot> {
        let mut out = Vec::new();
        for d in &self.devices {
            for inst in &d.instances {
                let Some(Ok(body)) = encode(&inst.detector) else {
                    continue;
                };
                out.push(ModelSnapshot {
                    device: d.name.to_string(),
                    alarm: inst.alarm.clone(),
                    fingerprint: format!("{:016x}", inst.fingerprint),
                    version: SNAPSHOT_VERSION,
                    body,
                });
            }
        }
        out
    }

    /// Puts back the saved models whose rule is unchanged (see the module docs); returns
    /// what became of each saved snapshot. Never fails: a snapshot that cannot be used leaves
    /// its rule with a fresh model.
    pub fn restore_models(&mut self, saved: &[ModelSnapshot]) -> Vec<RestoreOutcome> {
        saved
            .iter()
            .map(|s| RestoreOutcome {
                device: s.device.clone(),
                alarm: s.alarm.clone(),
                restored: self.restore_model(s),
            })
            .collect()
    }

    fn restore_model(&mut self, s: &ModelSnapshot) -> Restored {
        let Some(inst) = self
            .devices
            .iter_mut()
            .find(|d| d.name.as_str() == s.device)
            .and_then(|d| d.instances.iter_mut().find(|i| i.alarm == s.alarm))
            .filter(|i| learns(&i.detector))
        else {
            return Restored::NoRule;
        };
        if s.version != SNAPSHOT_VERSION {
            return Restored::Unreadable(format!(
                "snapshot version {} is not {SNAPSHOT_VERSION}, the one this build reads",
                s.version
            ));
        }
        if s.fingerprint != format!("{:016x}", inst.fingerprint) {
            return Restored::Changed;
        }
        match decode(&mut inst.detector, &s.body) {
            Ok(()) => Restored::Resumed,
            Err(e) => Restored::Unreadable(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::plan::Plan;
    use crate::model::{Name, PointSample, Quality, SampleBatch, Timestamp, Value};

    const CONFIG: &str = r#"
[gateway]
site = "plant1"
id = "gw1"
timezone = "UTC"

[[links]]
name = "bus"
kind = "tcp"
host = "127.0.0.1"

[[devices]]
name = "motor-1"
link = "bus"
profile = "generic-plc"

[[rules]]
name = "odd"
kind = "anomaly"
point = "vibration"
warmup_samples = 30
season = "none"

[[rules]]
name = "odd-device"
kind = "anomaly"
points = ["vibration", "motor_temp"]

[[rules]]
name = "creep"
kind = "trend"
point = "bearing_temp"
limit = 95
direction = "rising"
horizon = "1h"
window = "10m"

[[rules]]
name = "fast"
kind = "rate"
point = "motor_temp"
limit = 5
per = "minute"
window = "1m"
"#;

    fn plan(config: &str) -> Plan {
        crate::config::load_str(
            "t",
            config,
            &crate::config::EnvOverrides::Off,
            std::path::Path::new("."),
            None,
        )
        .unwrap()
    }

    fn poll(t: i64) -> SampleBatch {
        // A little deterministic noise so every model has a spread to learn.
        let noise = ((t * 7919) % 13) as f64 / 13.0 - 0.5;
        let sample = |point: &str, v: f64| PointSample {
            point: Name::new(point).unwrap(),
            ts: Timestamp(t),
            value: Some(Value::F64(v)),
            quality: Quality::Good,
        };
        SampleBatch {
            device: Name::new("motor-1").unwrap(),
            tick: Timestamp(t),
            samples: vec![
                sample("vibration", 2.0 + 0.1 * noise),
                sample("motor_temp", 60.0 + noise),
                sample("bearing_temp", 50.0 + 0.5 * noise),
            ],
        }
    }

    fn trained(plan: &Plan, polls: i64) -> Engine {
        let mut engine = Engine::from_spec(&plan.engine_spec());
        let mut events = Vec::new();
        for i in 0..polls {
            engine.evaluate(&poll(1_760_000_000_000 + i * 1000), &mut events);
        }
        engine
    }

    #[test]
    fn a_restored_engine_scores_at_once_and_exactly_as_the_one_that_saved() {
        let plan = plan(CONFIG);
        let mut before = trained(&plan, 200);
        let saved = before.model_snapshots();
        assert_eq!(saved.len(), 4, "{saved:?}");
        let mut after = Engine::from_spec(&plan.engine_spec());
        let outcomes = after.restore_models(&saved);
        assert!(
            outcomes.iter().all(|o| o.restored == Restored::Resumed),
            "{outcomes:?}"
        );
        let vib = after.point_index(0, "vibration").unwrap();
        let mut fresh = Engine::from_spec(&plan.engine_spec());
        let mut events = Vec::new();
        let next = poll(1_760_000_000_000 + 200 * 1000);
        before.evaluate(&next, &mut events);
        after.evaluate(&next, &mut events);
        fresh.evaluate(&next, &mut events);
        // No warm-up gap: the restored model scores the first sample after the restart.
        assert!(after.score(0, vib).is_some());
        assert_eq!(after.score(0, vib), before.score(0, vib));
        assert_eq!(
            fresh.score(0, vib),
            None,
            "a fresh model is still warming up"
        );
        assert_eq!(after.model_snapshots(), before.model_snapshots());
    }

    #[test]
    fn a_restored_model_holds_the_buffers_of_a_new_one_and_no_more() {
        use crate::detect::anomaly::{AnomalyModel, AnomalyParams};
        let mut model = AnomalyModel::new(AnomalyParams::default());
        for i in 0..300 {
            let v = f64::from(i % 7);
            let _ = model.update(1_760_000_000_000 + i64::from(i) * 1000, 0, v);
        }
        let body = serde_json::to_string(&model).unwrap();
        let mut back: AnomalyModel = serde_json::from_str(&body).unwrap();
        assert_eq!(back, model);
        back.reserve_buffers();
        assert_eq!(back.memory_bytes(), model.memory_bytes());
        // 300 samples of an `auto` season: the model and its 512-bin (`f32`) search summary.
        assert!(body.len() < 8 * 1024, "{} bytes", body.len());
    }

    #[test]
    fn an_edited_rule_and_an_unreadable_snapshot_start_fresh_naming_the_rule() {
        let plan_a = plan(CONFIG);
        let mut saved = trained(&plan_a, 100).model_snapshots();
        let edited = plan(&CONFIG.replace("warmup_samples = 30", "warmup_samples = 40"));
        let mut engine = Engine::from_spec(&edited.engine_spec());
        let outcomes = engine.restore_models(&saved);
        let of = |alarm: &str| {
            outcomes
                .iter()
                .find(|o| o.alarm == alarm)
                .map(|o| o.restored.clone())
                .unwrap()
        };
        assert_eq!(of("odd"), Restored::Changed);
        assert_eq!(of("creep"), Restored::Resumed);
        assert_eq!(engine.model_snapshots().len(), 4);

        // A snapshot cut short (a torn write, a full disk).
        let half = saved[0].body.len() / 2;
        saved[0].body.truncate(half);
        saved[1].version = SNAPSHOT_VERSION + 1;
        saved[2].device = "motor-9".into();
        let mut engine = Engine::from_spec(&plan_a.engine_spec());
        let outcomes = engine.restore_models(&saved);
        assert!(
            matches!(&outcomes[0].restored, Restored::Unreadable(why) if why.contains("EOF")),
            "{outcomes:?}"
        );
        assert!(
            matches!(&outcomes[1].restored, Restored::Unreadable(why) if why.contains("version 2")),
            "{outcomes:?}"
        );
        assert_eq!(outcomes[2].restored, Restored::NoRule);
        assert_eq!(outcomes[3].restored, Restored::Resumed);
        // The unreadable ones left fresh models behind, which still work.
        let mut events = Vec::new();
        engine.evaluate(&poll(1_760_000_200_000), &mut events);
    }
}
