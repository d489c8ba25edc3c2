//! Decode throughput on one core (docs/design.md §8): registers → typed, scaled values.
//!
//! Prints values/s and ns/value per data type, for a realistic mix, for the read-plan work a
//! link task does per poll (one `SampleBatch` of a CHINT DTSU666: 22 scaled f32 points), and for
//! the MQTT feeder's work per stored row (outbox record → JSON payload), which bounds replay.
//!
//! Run with `cargo bench --bench decode`; `BENCH_SECONDS_PER_CASE` (default 2) sets the time
//! spent on each case.
#![allow(
    clippy::disallowed_methods,
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    reason = "benchmark binary"
)]

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use plantwatch::config::{EnvOverrides, Plan, load_str};
use plantwatch::decode::{ByteOrder, Codec, DataType, decode, encode};
use plantwatch::encode::json_v1;
use plantwatch::model::{BadReason, PointSample, Quality, SampleBatch, Timestamp, Value};
use plantwatch::store::record;

/// Values per inner batch: large enough that the timing loop costs nothing, small enough to
/// stay in L1/L2.
const BATCH: usize = 4096;

/// One decode case: a codec and `BATCH` register runs encoded from realistic values.
struct Case {
    label: &'static str,
    codec: Codec,
    /// `BATCH` runs of `codec.registers()` words, back to back.
    words: Vec<u16>,
}

fn codec(data_type: DataType, order: ByteOrder, scale: f64, bit: u8) -> Codec {
    Codec {
        data_type,
        order,
        scale,
        offset: 0.0,
        bit,
        length: 1,
        decimals: None,
    }
}

/// A small deterministic generator so that runs are comparable.
struct Lcg(u64);

impl Lcg {
    fn next_f64(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        #[expect(clippy::cast_precision_loss, reason = "53 random bits")]
        let unit = (self.0 >> 11) as f64 / (1u64 << 53) as f64;
        unit
    }
}

fn case(label: &'static str, codec: Codec, mut value: impl FnMut(&mut Lcg) -> Value) -> Case {
    let mut rng = Lcg(0x5eed);
    let mut words = Vec::with_capacity(BATCH * usize::from(codec.registers()));
    for _ in 0..BATCH {
        let v = value(&mut rng);
        words.extend(encode(&v, &codec).expect("realistic values encode"));
    }
    Case {
        label,
        codec,
        words,
    }
}

fn cases() -> Vec<Case> {
    vec![
        // Voltage in 0.1 V as a scaled float (CHINT DTSU666 style).
        case(
            "f32/ABCD scaled",
            codec(DataType::F32, ByteOrder::Abcd, 0.1, 0),
            |r| Value::F64(2200.0 + r.next_f64() * 200.0),
        ),
        // Energy counter in 0.01 kWh, low word first.
        case(
            "u32/CDAB scaled",
            codec(DataType::U32, ByteOrder::Cdab, 0.01, 0),
            |r| Value::F64((r.next_f64() * 4.0e7).round() * 0.01),
        ),
        // A signed temperature, unscaled.
        case(
            "i16/ABCD",
            codec(DataType::I16, ByteOrder::Abcd, 1.0, 0),
            |r| Value::I64((r.next_f64() * 200.0 - 100.0).round() as i64),
        ),
        // A status bit of a u16 word.
        case(
            "bit/u16 b5",
            codec(DataType::Bit, ByteOrder::Abcd, 1.0, 5),
            |r| Value::Bool(r.next_f64() < 0.5),
        ),
        // A double-precision energy total.
        case(
            "f64/ABCD",
            codec(DataType::F64, ByteOrder::Abcd, 1.0, 0),
            |r| Value::F64(r.next_f64() * 1.0e9),
        ),
    ]
}

/// Decodes every run of `case` once; returns how many were good.
fn decode_all(case: &Case) -> usize {
    let width = usize::from(case.codec.registers());
    let mut good = 0;
    for run in case.words.chunks_exact(width) {
        if black_box(decode(black_box(run), &case.codec)).is_ok() {
            good += 1;
        }
    }
    good
}

/// Runs `work` (which handles `per_call` values) for about `budget`; returns values/s.
fn measure(budget: Duration, per_call: usize, mut work: impl FnMut() -> usize) -> (f64, u64) {
    // Warm-up: caches, branch predictors, frequency.
    let warm = Instant::now();
    while warm.elapsed() < budget / 10 {
        black_box(work());
    }
    let start = Instant::now();
    let mut calls: u64 = 0;
    let mut check = 0usize;
    while start.elapsed() < budget {
        for _ in 0..8 {
            check = check.wrapping_add(work());
        }
        calls += 8;
    }
    let secs = start.elapsed().as_secs_f64();
    black_box(check);
    let values = calls * per_call as u64;
    #[expect(clippy::cast_precision_loss, reason = "rates")]
    let rate = values as f64 / secs;
    (rate, values)
}

fn report(label: &str, rate: f64) {
    println!(
        "decode {label}: {:.1} M values/s ({:.1} ns/value)",
        rate / 1e6,
        1e9 / rate
    );
}

/// A DTSU666 device plan, as the daemon would resolve it.
fn dtsu666_plan() -> Plan {
    let text = "[gateway]\nsite = \"bench\"\nid = \"bench-gw\"\n\n\
        [[links]]\nname = \"l1\"\nkind = \"tcp\"\nhost = \"127.0.0.1\"\nport = 5020\n\n\
        [[devices]]\nname = \"meter-1\"\nlink = \"l1\"\nunit_id = 1\nprofile = \"chint-dtsu666\"\n";
    load_str("bench", text, &EnvOverrides::Off, Path::new("."), None).expect("bench config")
}

/// The words each request of the plan would get back, from encoding realistic values.
fn responses(plan: &Plan) -> Vec<Vec<u16>> {
    let device = &plan.devices[0];
    let mut rng = Lcg(7);
    device
        .read_plan
        .requests
        .iter()
        .map(|request| {
            let mut words = vec![0u16; usize::from(request.count)];
            for slot in &request.slots {
                let point = &device.points[slot.point];
                let raw = 1000.0 + rng.next_f64() * 1000.0;
                let v = Value::F64(raw * point.codec.scale + point.codec.offset);
                let encoded = encode(&v, &point.codec).expect("encodes");
                let at = usize::from(slot.offset);
                words[at..at + encoded.len()].copy_from_slice(&encoded);
            }
            words
        })
        .collect()
}

/// What `acquire::poll_device` does on the CPU for one answered cycle, minus the I/O:
/// pre-fill every sample bad, decode each request's slots, wrap it in a `SampleBatch`.
fn build_batch(plan: &Plan, responses: &[Vec<u16>], tick: Timestamp) -> SampleBatch {
    let device = &plan.devices[0];
    let mut samples: Vec<PointSample> = device
        .points
        .iter()
        .map(|p| PointSample {
            point: p.name.clone(),
            ts: tick,
            value: None,
            quality: Quality::Bad(BadReason::Timeout),
        })
        .collect();
    for (request, words) in device.read_plan.requests.iter().zip(responses) {
        for slot in &request.slots {
            let point = &device.points[slot.point];
            let s = &mut samples[slot.point];
            s.ts = tick;
            match words
                .get(usize::from(slot.offset)..)
                .map(|w| decode(w, &point.codec))
            {
                Some(Ok(v)) => {
                    s.value = Some(v);
                    s.quality = Quality::Good;
                }
                _ => s.quality = Quality::Bad(BadReason::Decode),
            }
        }
    }
    SampleBatch {
        device: device.name.clone(),
        tick,
        samples,
    }
}

fn main() {
    let seconds: f64 = std::env::var("BENCH_SECONDS_PER_CASE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0);
    let budget = Duration::from_secs_f64(seconds);
    println!("decode benchmark: one thread, {seconds} s per case, {BATCH} values per batch");

    let cases = cases();
    for case in &cases {
        assert_eq!(
            decode_all(case),
            BATCH,
            "{}: every value decodes",
            case.label
        );
        let (rate, _) = measure(budget, BATCH, || decode_all(case));
        report(case.label, rate);
    }

    // The mix, interleaved so that the branch predictor sees the types alternate.
    let (rate, _) = measure(budget, BATCH * cases.len(), || {
        cases.iter().map(decode_all).sum()
    });
    report("mix (5 types, batched per type)", rate);
    let widths: Vec<usize> = cases
        .iter()
        .map(|c| usize::from(c.codec.registers()))
        .collect();
    let (rate, _) = measure(budget, BATCH * cases.len(), || {
        let mut good = 0;
        for i in 0..BATCH {
            for (case, &w) in cases.iter().zip(&widths) {
                let run = &case.words[i * w..(i + 1) * w];
                if black_box(decode(black_box(run), &case.codec)).is_ok() {
                    good += 1;
                }
            }
        }
        good
    });
    report("mix (5 types, interleaved)", rate);

    // Read-plan work: one DTSU666 poll's batch, as the link task builds it.
    let plan = dtsu666_plan();
    let device = &plan.devices[0];
    let responses = responses(&plan);
    let points = device.points.len();
    let requests = device.read_plan.requests.len();
    let first = build_batch(&plan, &responses, Timestamp(0));
    let good = first
        .samples
        .iter()
        .filter(|s| s.quality == Quality::Good)
        .count();
    assert_eq!(good, points, "every DTSU666 point decodes");
    let mut tick = 0i64;
    let (rate, _) = measure(budget, points, || {
        tick += 1000;
        let batch = black_box(build_batch(&plan, black_box(&responses), Timestamp(tick)));
        batch.samples.len()
    });
    println!(
        "read-plan batch (chint-dtsu666: {points} points in {requests} request(s), \
         pre-fill + decode + SampleBatch, dropped): {:.1} M values/s ({:.1} ns/value, {:.2} µs/batch)",
        rate / 1e6,
        1e9 / rate,
        1e6 * points as f64 / rate
    );

    // The feeder's work per stored row: the outbox record rendered to its JSON payload, read in
    // place (what the daemon does) and through an owned SampleBatch (what it did before).
    let stored = record::encode_batch(&first, 1);
    let in_place = || {
        let b = record::read_batch(black_box(&stored)).expect("reads");
        json_v1::telemetry_of(b.device, b.tick, &b.samples, b.seq, true).len()
    };
    let owned = || {
        let (b, seq) = record::decode_batch(black_box(&stored)).expect("decodes");
        json_v1::telemetry(&b, seq, true).len()
    };
    assert_eq!(in_place(), owned(), "both render the same payload");
    for (label, render) in [
        ("read in place", &in_place as &dyn Fn() -> usize),
        ("as an owned SampleBatch", &owned),
    ] {
        let (rate, _) = measure(budget, points, render);
        println!(
            "outbox row → JSON ({points} points, {label}): {:.2} µs/message",
            1e6 * points as f64 / rate
        );
    }
}
