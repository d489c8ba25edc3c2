//! The detect stage on synthetic signals whose correct alarm times are known.
//!
//! Every signal is sampled once a second from t = 0; times below are seconds.

use std::path::Path;

use plantwatch::config::{EnvOverrides, Plan, load_str};
use plantwatch::detect::{AlarmEvent, AlarmStatus, CommandError, Engine, FLOOD_ALARM};
use plantwatch::model::{BadReason, Name, PointSample, Quality, SampleBatch, Timestamp, Value};

const BASE: &str = r#"
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
"#;

fn plan(rules: &str) -> Plan {
    let text = format!("{BASE}\n{rules}");
    load_str("test.toml", &text, &EnvOverrides::Off, Path::new("."), None)
        .unwrap_or_else(|e| panic!("{e}"))
}

/// One poll of `motor-1` at second `t` with the given point values (`None`: no answer).
fn poll(t: i64, values: &[(&str, Option<f64>)]) -> SampleBatch {
    SampleBatch {
        device: Name::new("motor-1").unwrap(),
        tick: Timestamp(t * 1000),
        samples: values
            .iter()
            .map(|(p, v)| PointSample {
                point: Name::new(p).unwrap(),
                ts: Timestamp(t * 1000),
                value: v.map(Value::F64),
                quality: if v.is_some() {
                    Quality::Good
                } else {
                    Quality::Bad(BadReason::Timeout)
                },
            })
            .collect(),
    }
}

/// Feeds `series` (one value per second) to `point` and returns (second, alarm, state).
fn run(
    engine: &mut Engine,
    point: &str,
    series: &[Option<f64>],
) -> Vec<(i64, String, AlarmStatus)> {
    let mut events = Vec::new();
    for (t, v) in series.iter().enumerate() {
        engine.evaluate(&poll(t as i64, &[(point, *v)]), &mut events);
    }
    events
        .iter()
        .map(|e: &AlarmEvent| (e.ts / 1000, e.alarm.clone(), e.state))
        .collect()
}

fn active(t: i64, a: &str) -> (i64, String, AlarmStatus) {
    (t, a.into(), AlarmStatus::Active)
}
fn cleared(t: i64, a: &str) -> (i64, String, AlarmStatus) {
    (t, a.into(), AlarmStatus::Cleared)
}

#[test]
fn high_limit_with_deadband_and_delays_raises_and_clears_at_the_exact_seconds() {
    let p = plan(
        r#"[[rules]]
name = "hot"
kind = "high"
point = "bearing_temp"
limit = 90
deadband = 2
on_delay = "3s"
off_delay = "2s""#,
    );
    let mut e = Engine::from_spec(&p.engine_spec());
    // Above 90 from t=2; held 3 s → raised at t=5. Back below 88 from t=10 (89 at t=8..9
    // is inside the deadband); off-delay 2 s → cleared at t=12.
    let s: Vec<Option<f64>> = [
        85., 89., 91., 92., 93., 94., 92., 90., 89., 89., 87., 86., 85., 84.,
    ]
    .iter()
    .map(|v| Some(*v))
    .collect();
    assert_eq!(
        run(&mut e, "bearing_temp", &s),
        vec![active(5, "hot"), cleared(12, "hot")]
    );
}

#[test]
fn a_noisy_signal_around_the_limit_raises_once_not_fifty_times() {
    let p = plan(
        r#"[[rules]]
name = "hot"
kind = "high"
point = "bearing_temp"
limit = 90
deadband = 1.5"#,
    );
    let mut e = Engine::from_spec(&p.engine_spec());
    // 90 ± 1 noise for 200 s, then well below.
    let mut s: Vec<Option<f64>> = (0..200)
        .map(|i| Some(90.0 + if i % 2 == 0 { 0.9 } else { -0.9 } * f64::from((i % 7) as u8) / 6.0))
        .collect();
    s.extend(std::iter::repeat_n(Some(80.0), 5));
    let got = run(&mut e, "bearing_temp", &s);
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0].2, AlarmStatus::Active);
    assert_eq!(got[1], cleared(200, "hot"));
    // Without a deadband the same signal chatters: the deadband is what prevents it.
    let p = plan(
        r#"[[rules]]
name = "hot"
kind = "high"
point = "bearing_temp"
limit = 90"#,
    );
    let mut e = Engine::from_spec(&p.engine_spec());
    assert!(run(&mut e, "bearing_temp", &s).len() > 20);
}

#[test]
fn low_and_low_low_limits_nest() {
    let p = plan(
        r#"[[rules]]
name = "slow"
kind = "low"
point = "speed"
limit = 1000

[[rules]]
name = "stopped"
kind = "low_low"
point = "speed"
limit = 100
severity = "critical""#,
    );
    let mut e = Engine::from_spec(&p.engine_spec());
    let s = [1500., 900., 50., 900., 1500.].map(Some);
    assert_eq!(
        run(&mut e, "speed", &s),
        vec![
            active(1, "slow"),
            active(2, "stopped"),
            cleared(3, "stopped"),
            cleared(4, "slow")
        ]
    );
}

#[test]
fn rate_of_change_is_judged_over_its_window() {
    let p = plan(
        r#"[[rules]]
name = "heating-fast"
kind = "rate"
point = "motor_temp"
limit = 30
per = "minute"
window = "10s""#,
    );
    let mut e = Engine::from_spec(&p.engine_spec());
    // Flat 60 for 20 s, then +1 °C/s (60 °C/min) for 20 s, then flat.
    let s: Vec<Option<f64>> = (0..60)
        .map(|t| {
            Some(match t {
                ..20 => 60.0,
                20..40 => 60.0 + f64::from(t - 20),
                _ => 80.0,
            })
        })
        .collect();
    // The 10 s rate passes 30/min once more than 5 °C of rise is inside the window: at t=26
    // (6 °C over 10 s = 36/min). It falls to 30/min or less once at most 5 °C remains: t=45.
    assert_eq!(
        run(&mut e, "motor_temp", &s),
        vec![active(26, "heating-fast"), cleared(45, "heating-fast")]
    );
}

#[test]
fn a_stuck_value_alarms_after_its_duration_only_while_the_device_answers() {
    let p = plan(
        r#"[[rules]]
name = "frozen"
kind = "stuck"
point = "vibration"
tolerance = 0.01
duration = "30s""#,
    );
    let mut e = Engine::from_spec(&p.engine_spec());
    let mut s: Vec<Option<f64>> = (0..10).map(|t| Some(2.0 + f64::from(t) * 0.1)).collect();
    // t=10..: stuck at 3.0 (within tolerance) → 30 s after t=10, raised at t=40.
    s.extend((10..50).map(|t| Some(3.0 + if t % 2 == 0 { 0.005 } else { 0.0 })));
    s.push(Some(3.5));
    assert_eq!(
        run(&mut e, "vibration", &s),
        vec![active(40, "frozen"), cleared(50, "frozen")]
    );
    // A device that does not answer is offline, not stuck.
    let mut e = Engine::from_spec(&p.engine_spec());
    let mut s = vec![Some(1.0)];
    s.extend(std::iter::repeat_n(None, 100));
    assert_eq!(run(&mut e, "vibration", &s), vec![]);
}

#[test]
fn comm_loss_raises_after_its_duration_and_holds_the_device_other_alarms() {
    let p = plan(
        r#"[[rules]]
name = "offline"
kind = "comm_loss"
duration = "5s"

[[rules]]
name = "cold"
kind = "low"
point = "motor_temp"
limit = 10"#,
    );
    let mut e = Engine::from_spec(&p.engine_spec());
    let mut s = vec![Some(40.0); 3];
    s.extend(std::iter::repeat_n(None, 10));
    s.push(Some(40.0));
    // No answer from t=3; 5 s later (t=8) comm loss. The `cold` rule does not fire on the
    // missing values. The first answer (t=13) clears it.
    assert_eq!(
        run(&mut e, "motor_temp", &s),
        vec![active(8, "offline"), cleared(13, "offline")]
    );
}

#[test]
fn a_point_glob_makes_one_alarm_per_point() {
    let p = plan(
        r#"[[rules]]
name = "hot"
kind = "high"
point = "*_temp"
limit = 90"#,
    );
    let mut e = Engine::from_spec(&p.engine_spec());
    let mut events = Vec::new();
    e.evaluate(
        &poll(
            0,
            &[
                ("motor_temp", Some(95.0)),
                ("bearing_temp", Some(91.0)),
                ("ambient_temp", Some(20.0)),
            ],
        ),
        &mut events,
    );
    let names: Vec<&str> = events.iter().map(|e| e.alarm.as_str()).collect();
    assert_eq!(names, ["hot.motor_temp", "hot.bearing_temp"]);
    assert_eq!(events[0].id, "motor-1/hot.motor_temp/0");
    assert_eq!(
        events[0].message,
        "motor-1 motor_temp = 95 °C, above the limit 90 °C"
    );
}

#[test]
fn a_flood_is_summarised_and_the_hidden_alarms_announced_when_it_ends() {
    let rules: String = (0..11)
        .map(|i| {
            format!(
                "[[rules]]\nname = \"r{i}\"\nkind = \"high\"\npoint = \"motor_temp\"\nlimit = {}\n\n",
                10 + i
            )
        })
        .collect();
    let p = plan(&format!(
        "[alarms]\nmax_per_device_per_minute = 4\n\n{rules}"
    ));
    let mut e = Engine::from_spec(&p.engine_spec());
    let mut events = Vec::new();
    e.evaluate(&poll(0, &[("motor_temp", Some(100.0))]), &mut events);
    let raised: Vec<&str> = events.iter().map(|e| e.alarm.as_str()).collect();
    assert_eq!(raised, ["r0", "r1", "r2", "r3", FLOOD_ALARM]);
    assert_eq!(events[4].value, Some(7.0));
    events.clear();
    // Quiet for a minute: the summary clears and the 7 still-raised alarms are announced.
    for t in 1..=60 {
        e.evaluate(&poll(t, &[("motor_temp", Some(100.0))]), &mut events);
    }
    assert_eq!(events[0].alarm, FLOOD_ALARM);
    assert_eq!(events[0].state, AlarmStatus::Cleared);
    assert_eq!(events[0].ts, 60_000);
    let announced: Vec<&str> = events[1..].iter().map(|e| e.alarm.as_str()).collect();
    assert_eq!(announced, ["r4", "r5", "r6", "r7", "r8", "r9", "r10"]);
}

#[test]
fn a_restart_with_raised_alarms_neither_raises_them_again_nor_forgets_them() {
    let p = plan(
        r#"[[rules]]
name = "hot"
kind = "high"
point = "bearing_temp"
limit = 90"#,
    );
    let mut first = Engine::from_spec(&p.engine_spec());
    let mut events = Vec::new();
    first.evaluate(&poll(0, &[("bearing_temp", Some(95.0))]), &mut events);
    assert_eq!(events.len(), 1);
    first.ack("motor-1/hot", 500).unwrap();
    let saved = first.raised();
    assert_eq!(saved[0].state, AlarmStatus::Acked);

    let mut second = Engine::from_spec(&p.engine_spec());
    second.restore(&saved);
    let mut events = Vec::new();
    second.evaluate(&poll(1, &[("bearing_temp", Some(96.0))]), &mut events);
    assert!(events.is_empty(), "re-raised after restart: {events:?}");
    assert_eq!(second.raised()[0].id, "motor-1/hot/0");
    assert_eq!(second.raised()[0].state, AlarmStatus::Acked);
    second.evaluate(&poll(2, &[("bearing_temp", Some(80.0))]), &mut events);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].state, AlarmStatus::Cleared);
    assert_eq!(events[0].id, "motor-1/hot/0");
}

#[test]
fn ack_and_shelve_change_only_raised_alarms_and_a_shelve_expires() {
    let p = plan(
        r#"[[rules]]
name = "hot"
kind = "high"
point = "bearing_temp"
limit = 90"#,
    );
    let mut e = Engine::from_spec(&p.engine_spec());
    assert_eq!(
        e.ack("motor-1/hot", 0),
        Err(CommandError::Unknown("motor-1/hot".into()))
    );
    let mut events = Vec::new();
    e.evaluate(&poll(0, &[("bearing_temp", Some(95.0))]), &mut events);
    let shelved = e.shelve("motor-1/hot/0", 10_000, 1_000).unwrap();
    assert_eq!(shelved.state, AlarmStatus::Shelved);
    assert_eq!(shelved.shelved_until, Some(11_000));
    assert_eq!(
        e.shelve("motor-1/hot", -5, 1_000).map(|_| ()),
        Err(CommandError::Duration(-5))
    );
    assert_eq!(
        e.ack("motor-1/hot", 2_000).unwrap().state,
        AlarmStatus::Shelved
    );
    assert_eq!(
        e.ack("motor-1/hot", 2_000),
        Err(CommandError::AlreadyAcked("motor-1/hot".into()))
    );
    events.clear();
    e.tick(10_999, &mut events);
    assert!(events.is_empty());
    e.tick(11_000, &mut events);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].state, AlarmStatus::Acked);
}

#[test]
fn an_expression_over_several_points_alarms_while_it_holds() {
    let p = plan(
        r#"[[rules]]
name = "running-dry"
kind = "expression"
when = "run_state == 1 && motor_current < 0.5"
on_delay = "2s""#,
    );
    let mut e = Engine::from_spec(&p.engine_spec());
    let mut events = Vec::new();
    let rows = [
        (1.0, 10.0),
        (1.0, 0.2),
        (1.0, 0.2),
        (1.0, 0.3),
        (0.0, 0.0),
        (1.0, 0.1),
    ];
    for (t, (run, amps)) in rows.iter().enumerate() {
        e.evaluate(
            &poll(
                t as i64,
                &[("run_state", Some(*run)), ("motor_current", Some(*amps))],
            ),
            &mut events,
        );
    }
    let got: Vec<(i64, AlarmStatus)> = events.iter().map(|e| (e.ts / 1000, e.state)).collect();
    assert_eq!(got, [(3, AlarmStatus::Active), (4, AlarmStatus::Cleared)]);
    assert_eq!(
        events[0].message,
        "motor-1: run_state == 1 && motor_current < 0.5"
    );
}

/// Feeds one value per minute for `minutes`; returns the events.
fn per_minute(
    engine: &mut Engine,
    point: &str,
    minutes: i64,
    f: impl Fn(i64) -> f64,
) -> Vec<AlarmEvent> {
    let mut events = Vec::new();
    for m in 0..minutes {
        engine.evaluate(&poll(m * 60, &[(point, Some(f(m)))]), &mut events);
    }
    events
}

#[test]
fn a_trend_rule_warns_before_the_limit_is_reached() {
    let p = plan(
        r#"[[rules]]
name = "bearing-will-overheat"
kind = "trend"
point = "bearing_temp"
limit = 90
direction = "rising"
horizon = "2h"
window = "2h""#,
    );
    let mut e = Engine::from_spec(&p.engine_spec());
    // 60 °C rising 5 °C/h: crosses 90 at 6 h, so "within 2 h" from 4 h on. Small ripple.
    let events = per_minute(&mut e, "bearing_temp", 8 * 60, |m| {
        60.0 + 5.0 * m as f64 / 60.0 + 0.2 * ((m % 7) as f64 - 3.0) / 3.0
    });
    let raised = events.first().expect("a trend alarm");
    assert_eq!(raised.state, AlarmStatus::Active);
    let at_h = raised.ts as f64 / 3_600_000.0;
    assert!(
        (3.8..=4.3).contains(&at_h),
        "raised at {at_h:.2} h: {raised:?}"
    );
    assert!(
        raised
            .message
            .contains("= 80 °C predicted to reach 90 °C in 2h 0m"),
        "{}",
        raised.message
    );
    // A flat signal never predicts a crossing.
    let mut e = Engine::from_spec(&p.engine_spec());
    assert!(
        per_minute(&mut e, "bearing_temp", 8 * 60, |m| 60.0
            + 0.1 * ((m % 5) as f64))
        .is_empty()
    );
}

#[test]
fn an_anomaly_rule_scores_every_sample_and_alarms_on_a_spike() {
    let p = plan(
        r#"[[rules]]
name = "vibration-odd"
kind = "anomaly"
point = "vibration"
warmup_samples = 60"#,
    );
    let mut e = Engine::from_spec(&p.engine_spec());
    let (d, pt) = (e.device_index("motor-1").unwrap(), 0);
    let pt = e.point_index(d, "vibration").unwrap_or(pt);
    // A deterministic wobble for a day, then one spike.
    let noise = |m: i64| 2.0 + 0.1 * (((m * 7919) % 13) as f64 - 6.0) / 6.0;
    let events = per_minute(&mut e, "vibration", 1440, noise);
    assert!(events.is_empty(), "false alarms on normal data: {events:?}");
    let quiet = e.score(d, pt).expect("scored after warm-up");
    assert!((0.0..0.9).contains(&quiet), "{quiet}");
    let mut events = Vec::new();
    e.evaluate(&poll(1440 * 60, &[("vibration", Some(4.0))]), &mut events);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].alarm, "vibration-odd");
    assert!(e.score(d, pt).unwrap() >= 0.9);
}

/// Deterministic, aperiodic noise in [-1, 1) for minute `m` (splitmix64 of m).
fn hashed_noise(m: i64) -> f64 {
    let mut z = (m as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 52) as f64 - 1.0
}

#[test]
fn an_anomaly_rule_raises_once_and_clears_once_for_a_lasting_shift() {
    let p = plan(
        r#"[[rules]]
name = "flow-odd"
kind = "anomaly"
point = "vibration""#,
    );
    let mut e = Engine::from_spec(&p.engine_spec());
    // A day of noise, then the level jumps by 12 noise amplitudes for six hours and comes back.
    let shifted = 1440..1440 + 360;
    let events = per_minute(&mut e, "vibration", 1440 + 720, |m| {
        let base = 50.0 + hashed_noise(m);
        if shifted.contains(&m) {
            base + 12.0
        } else {
            base
        }
    });
    let states: Vec<_> = events.iter().map(|e| (e.state, e.ts / 60_000)).collect();
    assert_eq!(states.len(), 2, "one raise and one clear: {states:?}");
    assert_eq!(states[0], (AlarmStatus::Active, 1440), "{states:?}");
    assert_eq!(states[1].0, AlarmStatus::Cleared, "{states:?}");
    assert!(
        (1440 + 360..1440 + 420).contains(&states[1].1),
        "cleared soon after the level came back: {states:?}"
    );
}

#[test]
fn running_hours_raise_a_service_alarm_and_serviced_clears_it() {
    let p = plan(
        r#"[[maintenance]]
device = "motor-1"
run_point = "run_state"
service_hours = 1
service_starts = 3
severity = "low""#,
    );
    let mut e = Engine::from_spec(&p.engine_spec());
    // Runs from minute 1; at minute 61 it has run 60 minutes.
    let events = per_minute(&mut e, "run_state", 70, |m| if m >= 1 { 1.0 } else { 0.0 });
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].alarm, "service-hours");
    assert_eq!(events[0].ts, 61 * 60_000);
    assert_eq!(events[0].value, Some(1.0));
    let h = &e.health()[0];
    assert_eq!(h.starts, Some(1));
    assert!((h.running_hours.unwrap() - 68.0 / 60.0).abs() < 1e-9);
    assert!((h.parts.alarms - 5.0).abs() < 1e-9, "a low alarm deducts 5");
    e.serviced("motor-1").unwrap();
    let mut events = Vec::new();
    e.evaluate(&poll(71 * 60, &[("run_state", Some(1.0))]), &mut events);
    assert_eq!(events[0].state, AlarmStatus::Cleared);
    assert_eq!(
        e.serviced("nope"),
        Err(CommandError::NoCounters("nope".into()))
    );
    // Three starts since the service raise the starts alarm.
    let mut events = Vec::new();
    for (i, v) in [0.0, 1.0, 0.0, 1.0, 0.0, 1.0].iter().enumerate() {
        e.evaluate(
            &poll(72 * 60 + i as i64, &[("run_state", Some(*v))]),
            &mut events,
        );
    }
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].alarm, "service-starts");
}

#[test]
fn health_falls_with_missed_polls_and_raised_alarms_and_says_why() {
    let p = plan(
        r#"[[rules]]
name = "hot"
kind = "high"
point = "motor_temp"
limit = 90
severity = "high""#,
    );
    let mut e = Engine::from_spec(&p.engine_spec());
    assert!(e.health().is_empty(), "no health before the first poll");
    let mut events = Vec::new();
    e.evaluate(&poll(0, &[("motor_temp", Some(95.0))]), &mut events);
    let h = &e.health()[0];
    assert!((h.parts.alarms - 25.0).abs() < 1e-9);
    assert_eq!(h.parts.index(), 75);
    for t in 1..=30 {
        e.evaluate(&poll(t, &[("motor_temp", None)]), &mut events);
    }
    let h = &e.health()[0];
    assert!(h.parts.comm > 30.0, "{h:?}");
    assert!(h.parts.index() < 45, "{h:?}");
}

#[test]
fn an_anomaly_rule_looks_for_its_own_season_by_default_and_takes_its_threshold() {
    use plantwatch::config::rules::RuleKind;
    use plantwatch::detect::anomaly::Season;
    let seasons = [("", Season::Auto), ("season = \"none\"", Season::None)];
    for (line, season) in seasons {
        let p = plan(&format!(
            "[[rules]]\nname = \"odd\"\nkind = \"anomaly\"\npoint = \"vibration\"\nthreshold = 0.95\n{line}"
        ));
        let RuleKind::Anomaly { params, .. } = &p.rules[0].kind else {
            panic!("{:?}", p.rules[0].kind);
        };
        assert_eq!(params.season, season, "{line}");
        assert!((params.threshold - 0.95).abs() < 1e-12, "{params:?}");
    }
}

/// A pump-like device for `secs` seconds: speed, current and vibration follow one load, and
/// from `fault_at` on the current stops following it (it holds its mean, inside its band).
fn correlated_polls(secs: i64, fault_at: i64) -> Vec<SampleBatch> {
    (0..secs)
        .map(|t| {
            let load = (t as f64 / 40.0).sin() + 0.5 * (t as f64 / 170.0).sin();
            let current = if t >= fault_at { 0.0 } else { load };
            poll(
                t,
                &[
                    ("speed", Some(1500.0 + 100.0 * load + hashed_noise(t))),
                    (
                        "motor_current",
                        Some(20.0 + 5.0 * current + 0.2 * hashed_noise(t + 7)),
                    ),
                    (
                        "vibration",
                        Some(2.0 + 0.5 * load + 0.02 * hashed_noise(t + 13)),
                    ),
                ],
            )
        })
        .collect()
}

#[test]
fn a_device_anomaly_names_the_point_that_stopped_following_the_others() {
    let p = plan(
        r#"[[rules]]
name = "pump-odd"
kind = "anomaly"
points = ["speed", "motor_current", "vibration"]"#,
    );
    let mut e = Engine::from_spec(&p.engine_spec());
    let fault_at = 4000;
    let mut events = Vec::new();
    let mut health_during = None;
    for batch in correlated_polls(fault_at + 300, fault_at) {
        e.evaluate(&batch, &mut events);
        if health_during.is_none() && events.iter().any(|e| e.state == AlarmStatus::Active) {
            health_during = e.health().into_iter().next();
        }
    }
    let raises: Vec<&AlarmEvent> = events
        .iter()
        .filter(|e| e.state == AlarmStatus::Active)
        .collect();
    assert_eq!(raises.len(), 1, "one raise, at the fault: {events:?}");
    let raise = raises[0];
    assert!(
        (fault_at * 1000..(fault_at + 60) * 1000).contains(&raise.ts),
        "raised at {} s",
        raise.ts / 1000
    );
    assert_eq!(raise.alarm, "pump-odd");
    assert_eq!(raise.point, None);
    assert_eq!(raise.shares[0].point, "motor_current", "{:?}", raise.shares);
    assert!(raise.shares[0].share > 0.5, "{:?}", raise.shares);
    let total: f64 = raise.shares.iter().map(|s| s.share).sum();
    assert!((total - 1.0).abs() < 1e-9, "{:?}", raise.shares);
    assert!(
        raise.message.contains("explained by motor_current"),
        "{}",
        raise.message
    );
    let payload: serde_json::Value =
        serde_json::from_slice(&plantwatch::encode::json_v1::alarm(raise)).unwrap();
    assert_eq!(payload["shares"][0]["point"], "motor_current", "{payload}");
    let health = health_during.expect("health while raised");
    assert_eq!(health.shares[0].point, "motor_current", "{health:?}");
    let (alarm, kind) = health
        .anomaly_kind
        .clone()
        .expect("the episode's kind while raised");
    assert_eq!(alarm, "pump-odd");
    assert_eq!(
        Some(kind),
        raise.anomaly_kind.as_deref(),
        "{health:?} {raise:?}"
    );
    let wire: serde_json::Value = serde_json::from_slice(&plantwatch::encode::json_v1::health(
        &health,
        plantwatch::model::Timestamp(0),
    ))
    .unwrap();
    assert_eq!(wire["anomaly_kind"], kind, "{wire}");
    assert_eq!(wire["anomaly_alarm"], "pump-odd", "{wire}");
}

#[test]
fn a_device_anomaly_takes_every_numeric_point_and_refuses_too_few_or_unknown_ones() {
    use plantwatch::config::rules::RuleKind;
    let p = plan("[[rules]]\nname = \"odd\"\nkind = \"anomaly\"\nregime = \"run_state\"");
    assert!(matches!(p.rules[0].kind, RuleKind::Anomaly { .. }));
    let t = &p.rules[0].targets[0];
    let names: Vec<&str> = t
        .points
        .iter()
        .map(|&i| p.devices[0].points[i].name.as_str())
        .collect();
    assert!(
        names.contains(&"motor_current") && names.contains(&"speed"),
        "{names:?}"
    );
    assert!(
        !names.contains(&"run_state") && !names.contains(&"fault"),
        "{names:?}"
    );
    let refused = |rule: &str| {
        let text = format!("{BASE}\n[[rules]]\nname = \"odd\"\nkind = \"anomaly\"\n{rule}");
        load_str("test.toml", &text, &EnvOverrides::Off, Path::new("."), None)
            .expect_err(rule)
            .to_string()
    };
    let e = refused("points = [\"speed\"]");
    assert!(
        e.contains("rules[0].points") && e.contains("at least 2"),
        "{e}"
    );
    let e = refused("points = [\"speed\", \"flux\"]");
    assert!(e.contains("no point matches `flux`"), "{e}");
    let e = refused("point = \"speed\"\npoints = [\"speed\", \"vibration\"]");
    assert!(e.contains("not both"), "{e}");
    let e = refused("point = \"speed\"\nregime = \"run_stat\"");
    assert!(
        e.contains("rules[0].regime") && e.contains("did you mean `run_state`"),
        "{e}"
    );
    let e = refused("point = \"speed\"\ndeadband = 1.0");
    assert!(e.contains("rules[0].deadband"), "{e}");
}

/// A motor that runs and stops every five minutes: current about 20 A running, 0.2 A stopped.
fn run_and_stop(t: i64) -> (f64, f64) {
    let running = (t / 300) % 2 == 0;
    let current = if running {
        20.0 + 0.3 * hashed_noise(t)
    } else {
        0.2 + 0.01 * hashed_noise(t)
    };
    (f64::from(u8::from(running)), current)
}

fn motor_events(rules: &str, secs: i64, mismatch_from: i64) -> Vec<AlarmEvent> {
    let mut e = Engine::from_spec(&plan(rules).engine_spec());
    let mut events = Vec::new();
    for t in 0..secs {
        let (mut running, current) = run_and_stop(t);
        if t >= mismatch_from {
            running = 1.0;
        }
        e.evaluate(
            &poll(
                t,
                &[
                    ("run_state", Some(running)),
                    ("motor_current", Some(current)),
                ],
            ),
            &mut events,
        );
    }
    events
}

#[test]
fn with_a_regime_a_stop_is_not_an_anomaly_but_stop_current_while_running_is() {
    let rule = r#"[[rules]]
name = "current-odd"
kind = "anomaly"
point = "motor_current"
season = "none""#;
    let switches = 12 * 3600;
    // Without the run state, the switching itself is what the model sees.
    let plain = motor_events(rule, switches, i64::MAX);
    assert!(!plain.is_empty(), "the switching alarms without a regime");
    let with_regime = format!("{rule}\nregime = \"run_state\"");
    let events = motor_events(&with_regime, switches, i64::MAX);
    assert!(events.is_empty(), "switching alarmed: {events:?}");
    // From a stop on, the run state says running while the current stays at stop level.
    let mismatch = switches + 300;
    assert!(
        run_and_stop(mismatch).0 < 0.5,
        "the mismatch starts in a stop"
    );
    let events = motor_events(&with_regime, mismatch + 120, mismatch);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].state, AlarmStatus::Active);
    assert!(
        (mismatch * 1000..(mismatch + 60) * 1000).contains(&events[0].ts),
        "raised at {} s",
        events[0].ts / 1000
    );
}

#[test]
fn learn_as_a_duration_is_that_many_polls_of_the_device() {
    // motor-1 polls once a second: learn = "1h" is learn_samples = 3600.
    let rule = |memory: &str| {
        format!(
            "[[rules]]\nname = \"odd\"\nkind = \"anomaly\"\npoint = \"vibration\"\nseason = \"none\"\n{memory}"
        )
    };
    let shifted = |t: i64| 50.0 + hashed_noise(t) + if t >= 3600 { 3.0 } else { 0.0 };
    let events = |memory: &str| {
        let mut e = Engine::from_spec(&plan(&rule(memory)).engine_spec());
        let series: Vec<Option<f64>> = (0..3 * 3600).map(|t| Some(shifted(t))).collect();
        run(&mut e, "vibration", &series)
    };
    let by_duration = events("learn = \"1h\"");
    assert!(
        by_duration.len() >= 2,
        "raised and accepted: {by_duration:?}"
    );
    assert_eq!(by_duration, events("learn_samples = 3600"));
    assert_ne!(by_duration, events("learn_samples = 1440"));
    let refused = |memory: &str| {
        let text = format!("{BASE}\n{}", rule(memory));
        load_str("test.toml", &text, &EnvOverrides::Off, Path::new("."), None)
            .expect_err(memory)
            .to_string()
    };
    let e = refused("learn = \"1h\"\nlearn_samples = 100");
    assert!(
        e.contains("rules[0].learn") && e.contains("not both"),
        "{e}"
    );
    let e = refused("learn = \"5s\"");
    assert!(e.contains("fewer than 10 polls of device `motor-1`"), "{e}");
    let e = refused("learn = \"a day\"");
    assert!(e.contains("rules[0].learn"), "{e}");
}

/// The `anomaly_kind` of each event of a rule on `vibration` that sees noise for a day, the
/// level shifted by `step` noise amplitudes for six hours, then noise again.
fn shift_kinds(step: f64) -> Vec<(AlarmStatus, String, AlarmEvent)> {
    let p = plan("[[rules]]\nname = \"flow-odd\"\nkind = \"anomaly\"\npoint = \"vibration\"");
    let mut e = Engine::from_spec(&p.engine_spec());
    let shifted = 1440..1440 + 360;
    let events = per_minute(&mut e, "vibration", 1440 + 720, |m| {
        50.0 + hashed_noise(m) + if shifted.contains(&m) { step } else { 0.0 }
    });
    events
        .into_iter()
        .map(|ev| {
            let payload: serde_json::Value =
                serde_json::from_slice(&plantwatch::encode::json_v1::alarm(&ev)).unwrap();
            let mut kind = payload["anomaly_kind"].as_str().unwrap_or("").to_owned();
            if payload["anomaly_kind_provisional"] == serde_json::Value::Bool(true) {
                kind.push('?');
            }
            (ev.state, kind, ev)
        })
        .collect()
}

#[test]
fn an_anomaly_alarm_names_the_kind_of_its_episode() {
    // A shift of 3 noise amplitudes builds up over a few samples: the raise knows it, and
    // says it may still change (its first 20 samples may show it is a variance change).
    let moderate = shift_kinds(3.0);
    let states: Vec<_> = moderate.iter().map(|(s, k, _)| (*s, k.as_str())).collect();
    assert_eq!(
        states,
        [
            (AlarmStatus::Active, "level_shift?"),
            (AlarmStatus::Cleared, "level_shift")
        ],
        "{moderate:?}"
    );
    let raise = &moderate[0].2;
    assert!(
        raise
            .message
            .contains("looks abnormal: level shift (provisional)"),
        "{}",
        raise.message
    );
    // A step of 12 amplitudes is one huge sample at its onset, so the raise says spike and
    // that this is provisional (payload and message); the episode's kind settles over its
    // first samples, and the clear carries the settled one, no longer provisional.
    let large = shift_kinds(12.0);
    let states: Vec<_> = large.iter().map(|(s, k, _)| (*s, k.as_str())).collect();
    assert_eq!(
        states,
        [
            (AlarmStatus::Active, "spike?"),
            (AlarmStatus::Cleared, "level_shift")
        ],
        "{large:?}"
    );
    assert!(
        large[0]
            .2
            .message
            .contains("looks abnormal: spike (provisional)"),
        "{}",
        large[0].2.message
    );
}
