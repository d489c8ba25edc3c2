//! The reporting policy (per device or point): every poll, or on change with an absolute or
//! percent deadband, a maximum silence and a minimum interval between a device's messages,
//! because many gateways sit on metered 4G links.
//!
//! Invariants: a change of quality is always reported at once; a point is never silent for
//! longer than its `max_silence`; a point's first sample is always reported; a move waits at
//! most its `min_interval` after the device's last message. Pure.

use std::collections::HashMap;
use std::time::Duration;

use serde::Deserialize;

use crate::model::{Quality, SampleBatch, Timestamp, Value};

/// When a point's value is reported upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportMode {
    /// Every poll.
    #[default]
    EveryPoll,
    /// When it changes beyond the deadband (once the device's minimum interval has passed),
    /// when its quality changes, or after the maximum silence (for metered 4G links).
    OnChange,
}

/// A point's reporting policy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Report {
    /// Every poll, or on change.
    pub mode: ReportMode,
    /// Absolute deadband (engineering units); 0 reports any change.
    pub deadband: f64,
    /// Relative deadband in percent of the last reported value; 0 disables it.
    pub deadband_percent: f64,
    /// Report anyway after this long without a report.
    pub max_silence: Duration,
    /// A move alone opens a message only this long after the device's last one; until then it
    /// waits, and rides along when a quality change or another point opens one. What is
    /// reported is the reading of the poll that sends it. 0 sends a move at once.
    pub min_interval: Duration,
    /// The deadband is at least this many deviations of the noise in the difference between
    /// two readings (√2 times the reading's own poll-to-poll scatter σ, estimated online by
    /// [`Scatter`]), since a move is judged against the last reported reading, which carries
    /// noise too; 0 disables it. The compact profile's default.
    pub noise: f64,
}

impl Default for Report {
    fn default() -> Self {
        Self {
            mode: ReportMode::EveryPoll,
            deadband: 0.0,
            deadband_percent: 0.0,
            max_silence: Duration::from_secs(300),
            min_interval: Duration::ZERO,
            noise: 0.0,
        }
    }
}

/// A device as the reporter sees it: its name and the policy of each of its points, indexed
/// as the samples of its batches are. `config` implements it for its resolved device.
pub trait ReportedDevice {
    /// The device's name, which keys what was last reported.
    fn name(&self) -> &str;
    /// How many points the device has.
    fn point_count(&self) -> usize;
    /// The policy of point `index`; `None` past the last point.
    fn policy(&self, index: usize) -> Option<&Report>;
    /// How often the device is polled: a minimum interval is met by the poll that comes at
    /// it, give or take half of this, however late or early that poll started.
    fn poll_interval(&self) -> Duration;
}

/// A device's reporting policies, as the pipeline holds them: its name and each point's policy,
/// indexed as the samples of its batches are.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceReport {
    /// The device's name.
    pub name: crate::model::Name,
    /// Each point's policy.
    pub points: Vec<Report>,
    /// How often the device is polled.
    pub poll_interval: Duration,
}

impl ReportedDevice for DeviceReport {
    fn name(&self) -> &str {
        self.name.as_str()
    }

    fn point_count(&self) -> usize {
        self.points.len()
    }

    fn policy(&self, index: usize) -> Option<&Report> {
        self.points.get(index)
    }

    fn poll_interval(&self) -> Duration {
        self.poll_interval
    }
}

#[derive(Debug, Clone)]
struct Last {
    value: Option<Value>,
    quality: Quality,
    at: Timestamp,
}

/// A reading's poll-to-poll scatter, estimated online from its second differences
/// (`x[t] - 2 x[t-1] + x[t-2]`), which a steady trend does not move and a reading's own noise
/// does: for white noise of deviation σ they have deviation √6 σ and mean absolute value
/// √6 σ √(2/π) ≈ 1.95 σ. Kept as a moving mean of their absolute value (about the last
/// 32 polls), each clipped at 4 times the mean so far, so a
/// machine starting (a step) does not pass for noise.
#[derive(Debug, Clone, Copy, Default)]
pub struct Scatter {
    /// The last two polled values, newest first.
    prev: [Option<f64>; 2],
    /// Moving mean of the clipped absolute second differences.
    mean_abs: f64,
    /// How many second differences it has seen (saturating).
    seen: u32,
}

/// The compact profile's default [`Report::noise`]: a change within three deviations of the
/// noise between two readings (3 √2 σ) is not reported (docs/payload.md says what it saves).
pub const DEFAULT_NOISE: f64 = 3.0;

/// The compact profile's default [`Report::min_interval`]: a device that keeps moving sends a
/// message at most this often (docs/payload.md says what it saves and what it delays).
pub const DEFAULT_MIN_INTERVAL: Duration = Duration::from_secs(5);

/// Polls the scatter's moving mean spans.
const SCATTER_POLLS: f64 = 32.0;
/// A second difference counts at most this many times the mean so far.
const SCATTER_CLIP: f64 = 4.0;
/// Second differences seen before the scatter is used: until then, the deadband alone.
const SCATTER_WARMUP: u32 = 8;

impl Scatter {
    /// Takes one polled value in.
    pub fn observe(&mut self, x: f64) {
        if !x.is_finite() {
            return;
        }
        if let [Some(a), Some(b)] = self.prev {
            let d2 = (x - 2.0 * a + b).abs();
            let taken = if self.seen == 0 {
                d2
            } else {
                d2.min(SCATTER_CLIP * self.mean_abs.max(f64::MIN_POSITIVE))
            };
            let weight = 1.0 / SCATTER_POLLS.min(f64::from(self.seen) + 1.0);
            self.mean_abs += weight * (taken - self.mean_abs);
            self.seen = self.seen.saturating_add(1);
        }
        self.prev = [Some(x), self.prev[0]];
    }

    /// The estimated deviation of the reading's noise (σ); 0 until enough polls were seen.
    pub fn sigma(&self) -> f64 {
        if self.seen < SCATTER_WARMUP {
            return 0.0;
        }
        self.mean_abs / (6.0_f64.sqrt() * (2.0 / std::f64::consts::PI).sqrt())
    }
}

/// What was last reported of one device, and when it last sent a message.
#[derive(Debug, Default)]
struct DeviceMemory {
    /// Each point's last report.
    last: Vec<Option<Last>>,
    /// Each point's scatter, for points whose policy uses it.
    scatter: Vec<Scatter>,
    /// When the poll of the device's last message started.
    message_tick: Option<Timestamp>,
}

impl DeviceMemory {
    fn new(points: usize) -> Self {
        Self {
            last: vec![None; points],
            scatter: vec![Scatter::default(); points],
            message_tick: None,
        }
    }
}

/// What was last reported, per device and point.
#[derive(Debug, Default)]
pub struct Reporter {
    devices: HashMap<String, DeviceMemory>,
}

fn moved(r: &Report, noise: f64, before: Option<&Value>, now: Option<&Value>) -> bool {
    match (before, now) {
        (Some(a), Some(b)) => match (a.as_f64(), b.as_f64()) {
            (Some(x), Some(y)) => {
                let delta = (y - x).abs();
                // Both readings carry the noise: their difference has √2 times its deviation.
                let deadband = r.deadband.max(r.noise * std::f64::consts::SQRT_2 * noise);
                if deadband == 0.0 && r.deadband_percent == 0.0 {
                    return delta > 0.0;
                }
                (deadband > 0.0 && delta >= deadband)
                    || (r.deadband_percent > 0.0 && delta >= x.abs() * r.deadband_percent / 100.0)
            }
            _ => a != b,
        },
        (None, None) => false,
        _ => true,
    }
}

/// Whether `span` has passed from `since` to `now` (milliseconds on the same clock). A clock
/// stepped back before `since` counts as passed: what waits on it goes now rather than for as
/// long as the step.
fn elapsed(since: Timestamp, now: Timestamp, span: Duration) -> bool {
    now.0 < since.0 || now.0 - since.0 >= i64::try_from(span.as_millis()).unwrap_or(i64::MAX)
}

/// Why a point's sample may go out at this poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Not at all.
    Hold,
    /// It moved beyond its deadband: at once if its minimum interval has passed since the
    /// device's last message, or with a message something else opens.
    Moved,
    /// At once: every-poll, a first sample, a quality change or the maximum silence.
    Now,
}

impl Reporter {
    /// Keeps the samples of `batch` that the policy reports at `now`; `None` when none are.
    pub fn filter(
        &mut self,
        device: &impl ReportedDevice,
        mut batch: SampleBatch,
        now: Timestamp,
    ) -> Option<SampleBatch> {
        let points = device.point_count();
        let state = self
            .devices
            .entry(device.name().to_owned())
            .or_insert_with(|| DeviceMemory::new(points));
        if state.last.len() != points {
            // The device's points changed (reload): start afresh.
            *state = DeviceMemory::new(points);
        }
        // A poll starts when its link gets to it, a little late or early against the one of
        // the last message: the poll that comes at the interval meets it.
        let slack = device.poll_interval() / 2;
        let mut verdicts = Vec::with_capacity(batch.samples.len());
        let mut open = false;
        for (i, sample) in batch.samples.iter().enumerate() {
            let Some(policy) = device.policy(i) else {
                verdicts.push(Verdict::Hold);
                continue;
            };
            let noise = if policy.noise > 0.0 {
                // The scatter before this poll: a step is judged against the calm before it.
                let sigma = state.scatter[i].sigma();
                if sample.quality == Quality::Good
                    && let Some(x) = sample.value.as_ref().and_then(Value::as_f64)
                {
                    state.scatter[i].observe(x);
                }
                sigma
            } else {
                0.0
            };
            let verdict = match (&state.last[i], policy.mode) {
                (_, ReportMode::EveryPoll) | (None, _) => Verdict::Now,
                (Some(prev), ReportMode::OnChange) => {
                    if prev.quality != sample.quality || elapsed(prev.at, now, policy.max_silence) {
                        Verdict::Now
                    } else if moved(policy, noise, prev.value.as_ref(), sample.value.as_ref()) {
                        Verdict::Moved
                    } else {
                        Verdict::Hold
                    }
                }
            };
            open |= match verdict {
                Verdict::Now => true,
                Verdict::Moved => state.message_tick.is_none_or(|at| {
                    elapsed(at, batch.tick, policy.min_interval.saturating_sub(slack))
                }),
                Verdict::Hold => false,
            };
            verdicts.push(verdict);
        }
        if !open {
            return None;
        }
        state.message_tick = Some(batch.tick);
        let mut verdicts = verdicts.into_iter();
        let mut index = 0;
        batch.samples.retain(|sample| {
            let keep = verdicts.next() != Some(Verdict::Hold);
            if keep {
                state.last[index] = Some(Last {
                    value: sample.value.clone(),
                    quality: sample.quality,
                    at: now,
                });
            }
            index += 1;
            keep
        });
        (!batch.samples.is_empty()).then_some(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::plan::Device;
    use crate::config::{EnvOverrides, load_str};
    use crate::model::{BadReason, PointSample};

    fn device(report: &str) -> Device {
        device_with(report, "")
    }

    /// A device with `report` at device level and `t_keys` on its point `t`.
    fn device_with(report: &str, t_keys: &str) -> Device {
        let text = format!(
            "[gateway]\nsite = \"s\"\nid = \"g\"\n[[links]]\nname = \"l\"\nkind = \"tcp\"\nhost = \"127.0.0.1\"\n\
             [[devices]]\nname = \"d\"\nlink = \"l\"\n{report}\n[devices.points.t]\naddress = 0\n{t_keys}\n[devices.points.u]\naddress = 1\n"
        );
        load_str(
            "t",
            &text,
            &EnvOverrides::Off,
            std::path::Path::new("."),
            None,
        )
        .unwrap()
        .devices[0]
            .clone()
    }

    fn batch(t: f64, u: f64, quality: Quality) -> SampleBatch {
        batch_at(t, u, quality, 0)
    }

    /// A poll of the grid tick `tick` (milliseconds).
    fn batch_at(t: f64, u: f64, quality: Quality, tick: i64) -> SampleBatch {
        let s = |n: &str, v: f64| PointSample {
            point: crate::model::Name::new(n).unwrap(),
            ts: Timestamp(0),
            value: (quality == Quality::Good).then_some(Value::F64(v)),
            quality,
        };
        SampleBatch {
            device: crate::model::Name::new("d").unwrap(),
            tick: Timestamp(tick),
            samples: vec![s("t", t), s("u", u)],
        }
    }

    fn names(b: &Option<SampleBatch>) -> Vec<String> {
        b.as_ref()
            .map(|b| b.samples.iter().map(|s| s.point.to_string()).collect())
            .unwrap_or_default()
    }

    #[test]
    fn every_poll_reports_everything() {
        let d = device("");
        let mut r = Reporter::default();
        for i in 0..3 {
            assert_eq!(
                names(&r.filter(&d, batch(1.0, 2.0, Quality::Good), Timestamp(i))),
                ["t", "u"]
            );
        }
    }

    #[test]
    fn on_change_reports_moves_beyond_the_deadband_only() {
        let d = device("report = \"on_change\"\ndeadband = 0.5");
        let mut r = Reporter::default();
        assert_eq!(
            names(&r.filter(&d, batch(10.0, 20.0, Quality::Good), Timestamp(0))),
            ["t", "u"],
            "first sample"
        );
        assert!(
            r.filter(&d, batch(10.4, 20.0, Quality::Good), Timestamp(1000))
                .is_none(),
            "inside the deadband"
        );
        assert_eq!(
            names(&r.filter(&d, batch(10.5, 20.1, Quality::Good), Timestamp(2000))),
            ["t"]
        );
        // The reference is the last reported value, so slow drift is still caught.
        assert!(
            r.filter(&d, batch(10.9, 20.2, Quality::Good), Timestamp(3000))
                .is_none()
        );
        assert_eq!(
            names(&r.filter(&d, batch(11.0, 20.2, Quality::Good), Timestamp(4000))),
            ["t"]
        );
    }

    #[test]
    fn percent_deadband_scales_with_the_value() {
        let d = device("report = \"on_change\"\ndeadband_percent = 1.0");
        let mut r = Reporter::default();
        r.filter(&d, batch(1000.0, 1.0, Quality::Good), Timestamp(0));
        assert_eq!(
            names(&r.filter(&d, batch(1009.0, 1.02, Quality::Good), Timestamp(1))),
            ["u"]
        );
    }

    #[test]
    fn a_change_of_quality_is_never_dropped() {
        let d = device("report = \"on_change\"\ndeadband = 1000.0");
        let mut r = Reporter::default();
        r.filter(&d, batch(1.0, 1.0, Quality::Good), Timestamp(0));
        assert_eq!(
            names(&r.filter(
                &d,
                batch(0.0, 0.0, Quality::Bad(BadReason::Timeout)),
                Timestamp(1)
            )),
            ["t", "u"]
        );
        assert_eq!(
            names(&r.filter(
                &d,
                batch(0.0, 0.0, Quality::Bad(BadReason::CommLost)),
                Timestamp(2)
            )),
            ["t", "u"]
        );
        assert_eq!(
            names(&r.filter(&d, batch(1.0, 1.0, Quality::Good), Timestamp(3))),
            ["t", "u"]
        );
    }

    #[test]
    fn the_scatter_measures_noise_and_not_a_trend_or_a_step() {
        // A ramp of 1 a poll with ±0.5 of alternating noise: the second differences are ±2,
        // which white noise of deviation 0.5 has on average too (1.95 σ ≈ 0.98; this noise is
        // the worst case, always ±2σ apart).
        let mut s = Scatter::default();
        for i in 0..200 {
            let noise = if i % 2 == 0 { 0.5 } else { -0.5 };
            s.observe(f64::from(i) + noise);
        }
        let sigma = s.sigma();
        assert!((sigma - 2.0 / 1.954).abs() < 0.05, "{sigma}");
        // A steady ramp alone has none.
        let mut ramp = Scatter::default();
        for i in 0..100 {
            ramp.observe(10.0 + 0.3 * f64::from(i));
        }
        assert!(ramp.sigma() < 1e-9, "{}", ramp.sigma());
        // A step of 100 on that noise is clipped: the estimate moves by a fraction only.
        s.observe(300.0);
        s.observe(300.5);
        assert!(s.sigma() < 1.5 * sigma, "{} against {sigma}", s.sigma());
        // Until enough polls were seen there is no estimate.
        let mut young = Scatter::default();
        for x in [1.0, 5.0, 2.0, 7.0] {
            young.observe(x);
        }
        assert!(young.sigma().abs() < f64::MIN_POSITIVE);
    }

    /// On change, a 0.05 resolution deadband and the compact profile's noise deadband.
    fn on_change_with_noise() -> Report {
        Report {
            mode: ReportMode::OnChange,
            deadband: 0.05,
            noise: DEFAULT_NOISE,
            ..Report::default()
        }
    }

    #[test]
    fn the_noise_deadband_holds_back_scatter_but_passes_a_real_move_and_quality() {
        let d = device("");
        let policy = on_change_with_noise();
        let d = DeviceReport {
            name: d.name.clone(),
            points: vec![
                policy,
                Report {
                    noise: 0.0,
                    ..policy
                },
            ],
            poll_interval: d.poll_interval,
        };
        let mut r = Reporter::default();
        let mut sent = [0, 0];
        // Both points read 100 ± 0.5: with the noise deadband only the first is held back.
        for i in 0..300 {
            let x = if i % 2 == 0 { 100.5 } else { 99.5 };
            let b = r.filter(&d, batch(x, x, Quality::Good), Timestamp(i * 1000));
            // The first polls go by the fixed deadband: no estimate yet.
            if i >= 20 {
                for s in b.iter().flat_map(|b| &b.samples) {
                    sent[usize::from(s.point.as_str() == "u")] += 1;
                }
            }
        }
        assert_eq!(sent, [0, 280]);
        // A move of 10 (about 10 σ) goes out at once.
        let b = r.filter(&d, batch(110.0, 110.0, Quality::Good), Timestamp(300_000));
        assert_eq!(names(&b), ["t", "u"]);
        // So does a change of quality.
        let b = r.filter(
            &d,
            batch(110.0, 110.0, Quality::Bad(BadReason::Timeout)),
            Timestamp(301_000),
        );
        assert_eq!(names(&b), ["t", "u"]);
    }

    /// A standard normal draw from a fixed generator (xorshift and Box-Muller), so that the
    /// test sees the same noise every run.
    fn normal(state: &mut u64) -> f64 {
        let mut uniform = || {
            *state ^= *state << 13;
            *state ^= *state >> 7;
            *state ^= *state << 17;
            (*state >> 11) as f64 / (1u64 << 53) as f64
        };
        let (u1, u2) = (uniform().max(f64::MIN_POSITIVE), uniform());
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    #[test]
    fn white_noise_is_judged_on_the_difference_of_two_readings() {
        // A steady reading of 100 with white noise of deviation 1: the difference between a
        // reading and the last reported one has deviation √2. A deadband of 3 σ let 4.6 % of
        // polls through on noise alone here (3.4 % in theory, more because the reference is a
        // reading that was reported for being far out); 3 √2 σ lets about 1 % through.
        let d = device("");
        let policy = on_change_with_noise();
        let d = DeviceReport {
            name: d.name.clone(),
            points: vec![policy; 2],
            poll_interval: d.poll_interval,
        };
        let mut r = Reporter::default();
        let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
        let mut sent = 0_u32;
        let polls = 20_000_i64;
        for i in 0..polls {
            let x = 100.0 + normal(&mut rng);
            let b = r.filter(&d, batch(x, x, Quality::Good), Timestamp(i));
            if i >= 50 {
                sent += b.map_or(0, |b| b.samples.len() as u32);
            }
        }
        let share = f64::from(sent) / (2.0 * (polls - 50) as f64);
        assert!(
            share < 0.015,
            "{:.2} % of polls sent on noise",
            share * 100.0
        );
        // A real move of 8 σ goes out at once.
        let b = r.filter(&d, batch(108.0, 108.0, Quality::Good), Timestamp(polls));
        assert_eq!(names(&b), ["t", "u"]);
    }

    #[test]
    fn max_silence_forces_a_report() {
        let d = device("report = \"on_change\"\ndeadband = 5.0\nmax_silence_ms = 60000");
        let mut r = Reporter::default();
        r.filter(&d, batch(1.0, 1.0, Quality::Good), Timestamp(0));
        assert!(
            r.filter(&d, batch(1.0, 1.0, Quality::Good), Timestamp(59_999))
                .is_none()
        );
        assert_eq!(
            names(&r.filter(&d, batch(1.0, 1.0, Quality::Good), Timestamp(60_000))),
            ["t", "u"]
        );
    }

    fn value_of(b: &Option<SampleBatch>, point: &str) -> Option<f64> {
        b.as_ref()?
            .samples
            .iter()
            .find(|s| s.point.as_str() == point)?
            .value
            .as_ref()?
            .as_f64()
    }

    /// A poll of tick `at` whose batch the core takes at the same time.
    fn poll(r: &mut Reporter, d: &Device, t: f64, u: f64, at: i64) -> Option<SampleBatch> {
        r.filter(d, batch_at(t, u, Quality::Good, at), Timestamp(at))
    }

    const HELD: &str = "report = \"on_change\"\ndeadband = 0.5\nmin_interval_ms = 5000";

    #[test]
    fn a_move_waits_out_the_minimum_interval_and_goes_as_the_reading_of_then() {
        let d = device(HELD);
        let mut r = Reporter::default();
        assert_eq!(names(&poll(&mut r, &d, 1.0, 1.0, 0)), ["t", "u"]);
        // Both move within the interval after that message: held.
        assert!(poll(&mut r, &d, 2.0, 5.0, 1000).is_none());
        assert!(poll(&mut r, &d, 3.0, 5.0, 4000).is_none());
        // At the interval `t` goes with its reading then; `u` went back within its deadband of
        // what was last reported, so the subscriber's picture of it is still right.
        let sent = poll(&mut r, &d, 3.0, 1.2, 5000);
        assert_eq!(names(&sent), ["t"]);
        assert_eq!(value_of(&sent, "t"), Some(3.0));
        // The interval counts from that message.
        assert!(poll(&mut r, &d, 9.0, 1.0, 9000).is_none());
        assert_eq!(names(&poll(&mut r, &d, 9.0, 1.0, 10_000)), ["t"]);
    }

    #[test]
    fn a_quality_change_goes_at_once_and_held_moves_ride_along() {
        let d = device(HELD);
        let mut r = Reporter::default();
        poll(&mut r, &d, 1.0, 1.0, 0);
        assert!(poll(&mut r, &d, 4.0, 1.0, 1000).is_none());
        // A timeout opens a message within the interval, and the held move goes with it.
        let mut b = batch_at(4.0, 1.0, Quality::Good, 2000);
        b.samples[1].quality = Quality::Bad(BadReason::Timeout);
        b.samples[1].value = None;
        let sent = r.filter(&d, b, Timestamp(2000));
        assert_eq!(names(&sent), ["t", "u"]);
        assert_eq!(value_of(&sent, "t"), Some(4.0));
    }

    #[test]
    fn max_silence_opens_a_message_that_held_moves_ride_along() {
        // `t`'s interval must stay below its short silence; it never moves, so it only waits.
        let d = device_with(HELD, "max_silence_ms = 3000\nmin_interval_ms = 2000");
        let mut r = Reporter::default();
        poll(&mut r, &d, 1.0, 1.0, 0);
        // `u` moved and waits for its 5 s; `t` has not moved, but its silence ends at 3 s.
        assert!(poll(&mut r, &d, 1.0, 7.0, 1000).is_none());
        assert_eq!(names(&poll(&mut r, &d, 1.0, 7.0, 3000)), ["t", "u"]);
    }

    #[test]
    fn an_every_poll_point_opens_a_message_each_poll_and_moves_go_with_it() {
        let d = device_with("report = \"every_poll\"", HELD);
        let mut r = Reporter::default();
        poll(&mut r, &d, 1.0, 1.0, 0);
        assert_eq!(names(&poll(&mut r, &d, 1.0, 1.0, 1000)), ["u"]);
        assert_eq!(names(&poll(&mut r, &d, 2.0, 1.0, 2000)), ["t", "u"]);
        // Alone, the same move of `t` would have waited.
        let alone = device(HELD);
        let mut r = Reporter::default();
        poll(&mut r, &alone, 1.0, 1.0, 0);
        assert!(poll(&mut r, &alone, 2.0, 1.0, 2000).is_none());
    }

    #[test]
    fn a_point_with_a_shorter_interval_opens_the_message_for_the_others() {
        let d = device_with(HELD, "min_interval_ms = 1000");
        let mut r = Reporter::default();
        poll(&mut r, &d, 1.0, 1.0, 0);
        // `u` alone waits; once `t` moves past its own 1 s, both go.
        assert!(poll(&mut r, &d, 1.0, 3.0, 1000).is_none());
        assert_eq!(names(&poll(&mut r, &d, 2.0, 3.0, 2000)), ["t", "u"]);
    }

    #[test]
    fn the_poll_that_comes_at_the_interval_meets_it_though_it_started_a_little_early() {
        // Polled every second; the poll of the first message started 3 ms late.
        let d = device(HELD);
        let mut r = Reporter::default();
        poll(&mut r, &d, 1.0, 1.0, 3);
        assert!(poll(&mut r, &d, 2.0, 1.0, 4001).is_none());
        // The fifth poll on started on time, 4998 ms after the late one.
        assert_eq!(names(&poll(&mut r, &d, 2.0, 1.0, 5001)), ["t"]);
    }

    #[test]
    fn a_clock_stepped_back_does_not_hold_moves_for_the_length_of_the_step() {
        let d = device(HELD);
        let mut r = Reporter::default();
        poll(&mut r, &d, 1.0, 1.0, 3_600_000);
        // Every point goes once (its silence counts as over too), and counts afresh from there.
        assert_eq!(names(&poll(&mut r, &d, 2.0, 1.0, 1000)), ["t", "u"]);
        assert!(poll(&mut r, &d, 3.0, 1.0, 2000).is_none());
    }

    #[test]
    fn without_a_minimum_interval_a_move_goes_at_once() {
        let d = device("report = \"on_change\"\ndeadband = 0.5");
        let mut r = Reporter::default();
        poll(&mut r, &d, 1.0, 1.0, 0);
        assert_eq!(names(&poll(&mut r, &d, 2.0, 1.0, 1)), ["t"]);
    }
}
