//! One simulated device: its points' values, the registers they encode to, and its faults.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::behaviour::{Behaviour, RATED_POWER_W, load_shape, phase_of};
use crate::acquire::spec::{Device, Function, Point};
use crate::decode::{DataType, encode};
use crate::model::{Timestamp, Value};

/// A fault injected into a simulated device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Never answer.
    NoAnswer,
    /// Answer after this delay.
    Slow(Duration),
    /// Answer every read with this exception code.
    Exception(u8),
    /// Freeze every value where it is.
    Stuck,
    /// Put counters just below their register's maximum so they wrap.
    CounterRollover,
    /// Reset counters to zero.
    CounterReset,
    /// Multiply analog values by 10 for the next `n` reads.
    Spike(u32),
    /// Answer exception 02 for reads that touch an address no point uses.
    StrictAddresses,
    /// Answer every write with this exception code (reads are unaffected).
    WriteException(u8),
    /// Never answer a write (reads are unaffected).
    WriteNoAnswer,
}

impl Fault {
    /// Parses `no_answer`, `slow:500`, `exception:2`, `stuck`, `rollover`, `reset`,
    /// `spike:3`, `strict_addresses`, `write_exception:3`, `write_no_answer`.
    ///
    /// # Errors
    /// A message listing the valid forms.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (kind, arg) = s.split_once(':').map_or((s, None), |(k, a)| (k, Some(a)));
        let num = |what: &str| -> Result<u64, String> {
            arg.ok_or_else(|| {
                format!(
                    "`{kind}` needs {what}, e.g. `{kind}:{}`",
                    if kind == "slow" { 500 } else { 2 }
                )
            })?
            .parse::<u64>()
            .map_err(|_| format!("`{s}`: {what} must be a whole number"))
        };
        Ok(match kind {
            "no_answer" => Fault::NoAnswer,
            "slow" => Fault::Slow(Duration::from_millis(num("a delay in ms")?)),
            "exception" => Fault::Exception(
                u8::try_from(num("an exception code")?)
                    .map_err(|_| format!("`{s}`: exception codes are 1 to 255"))?,
            ),
            "stuck" => Fault::Stuck,
            "rollover" => Fault::CounterRollover,
            "reset" => Fault::CounterReset,
            "spike" => Fault::Spike(u32::try_from(num("a number of reads")?).unwrap_or(u32::MAX)),
            "strict_addresses" => Fault::StrictAddresses,
            "write_exception" => Fault::WriteException(
                u8::try_from(num("an exception code")?)
                    .map_err(|_| format!("`{s}`: exception codes are 1 to 255"))?,
            ),
            "write_no_answer" => Fault::WriteNoAnswer,
            _ => {
                return Err(format!(
                    "unknown fault `{s}`; valid: no_answer, slow:MS, exception:CODE, stuck, rollover, reset, spike:N, strict_addresses, write_exception:CODE, write_no_answer"
                ));
            }
        })
    }
}

/// How the device answers a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteAnswer {
    /// Written.
    Done,
    /// An exception code; nothing written.
    Exception(u8),
    /// Nothing; nothing written.
    Silence,
}

/// How the device answers a read right now.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// Registers.
    Words(Vec<u16>),
    /// Bits.
    Bits(Vec<bool>),
    /// An exception code.
    Exception(u8),
    /// Nothing.
    Silence,
}

#[derive(Debug)]
struct SimPoint {
    point: Point,
    behaviour: Behaviour,
    /// The simulated quantity, unquantized (counters accumulate here).
    value: f64,
    /// What the registers hold, decoded: exactly what a correct client reads.
    served: f64,
    /// Set by a write: the point keeps what was written instead of following its behaviour,
    /// as a setpoint or a command coil does.
    held: bool,
}

/// The electrical side of the plant behind a meter, built so that a meter reads what a real
/// one reads second by second: a base load that never stops plus machines that switch on and
/// off every few minutes (steps), a slow drift of each machine's draw, a ripple of a few
/// tenths of a percent (motors and their driven loads are never perfectly steady), and a grid
/// whose voltage and frequency wander slowly and sag a little with the plant's own load.
/// Magnitudes are stated where they are set. Issue 19 measures on-change reporting on these
/// signals, so they must be neither calmer nor busier than a real meter's: independent jitter
/// of several volts at every reading would make every value "change" every second.
#[derive(Debug)]
struct Plant {
    /// Which machines run.
    machines: [bool; MACHINES],
    /// Slow relative drift of the running machines' draw (Ornstein-Uhlenbeck).
    drift: f64,
    /// Slow relative deviation of the grid voltage from nominal (Ornstein-Uhlenbeck).
    grid: f64,
    /// Deviation of the grid frequency from 50 Hz, in Hz (Ornstein-Uhlenbeck).
    frequency: f64,
    /// The phases' fixed share of the load relative to a balanced third (single-phase loads
    /// are never spread evenly): 1 + a few percent, summing to 3.
    imbalance: [f64; 3],
    /// Each phase's load this update, 0 to about 1.1 of rated / 3.
    phase_load: [f64; 3],
    /// Power factor this update.
    pf: f64,
    /// Whether the first update has drawn the starting state.
    started: bool,
}

/// Machines that switch; with the base load they make up the rated power.
const MACHINES: usize = 6;
/// The share of rated power that runs day and night (lighting, ventilation, controls).
const BASE_LOAD: f64 = 0.15;
/// A machine reconsiders whether it runs on average this often (s): a few steps per 10 minutes
/// across the plant.
const MACHINE_DWELL_S: f64 = 600.0;
/// Drift of the machines' draw: 3 % (1 σ) with a 2-minute memory.
const DRIFT: (f64, f64) = (0.03, 120.0);
/// Ripple of each phase's load from one reading to the next: 0.2 % (1 σ). At 0.001 A on a
/// 30 A phase current this still moves the last digit at every reading, as on a real meter.
const RIPPLE: f64 = 0.002;
/// Grid voltage: 0.4 % (1 σ, about 0.9 V at 230 V) with a 10-minute memory, so a 0.1 V
/// reading moves by about 0.05 V a second; and a 2 % sag at full load (source impedance).
const GRID: (f64, f64) = (0.004, 600.0);
const SAG_AT_FULL_LOAD: f64 = 0.02;
/// What the meter's own measurement adds to a voltage reading: 0.02 V (1 σ), below its
/// 0.1 V resolution.
const VOLTAGE_NOISE_V: f64 = 0.02;
/// Grid frequency: 0.02 Hz (1 σ) with a 30-second memory, as a large interconnected grid.
const FREQUENCY: (f64, f64) = (0.02, 30.0);

/// A standard normal draw (Box-Muller; `rand` without `rand_distr`).
fn gauss(rng: &mut SmallRng) -> f64 {
    let u1: f64 = rng.random_range(f64::MIN_POSITIVE..1.0);
    let u2: f64 = rng.random_range(0.0..1.0);
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// One exact step of `dt_s` of an Ornstein-Uhlenbeck process with stationary deviation
/// `sigma` and time constant `tau_s`: any step length gives the same statistics.
fn ou_step(x: f64, (sigma, tau_s): (f64, f64), dt_s: f64, rng: &mut SmallRng) -> f64 {
    let keep = (-dt_s / tau_s).exp();
    x * keep + sigma * (1.0 - keep * keep).sqrt() * gauss(rng)
}

impl Plant {
    fn new(rng: &mut SmallRng) -> Self {
        let mut imbalance = [0.0; 3];
        for share in &mut imbalance {
            *share = rng.random_range(-0.04..0.04);
        }
        let mean = imbalance.iter().sum::<f64>() / 3.0;
        Self {
            machines: [false; MACHINES],
            drift: 0.0,
            grid: 0.0,
            frequency: 0.0,
            imbalance: imbalance.map(|e| 1.0 + e - mean),
            phase_load: [0.0; 3],
            pf: 0.9,
            started: false,
        }
    }

    /// Moves the plant on by `dt_s` seconds to a time whose daily load shape is `shape`.
    fn step(&mut self, shape: f64, dt_s: f64, rng: &mut SmallRng) {
        // Machines run with the probability that makes the expected load follow the shape.
        let p_on = ((shape - BASE_LOAD) / (1.0 - BASE_LOAD)).clamp(0.0, 1.0);
        let redraw = if self.started {
            1.0 - (-dt_s / MACHINE_DWELL_S).exp()
        } else {
            1.0
        };
        for on in &mut self.machines {
            if rng.random_range(0.0..1.0) < redraw {
                *on = rng.random_range(0.0..1.0) < p_on;
            }
        }
        if self.started {
            self.drift = ou_step(self.drift, DRIFT, dt_s, rng);
            self.grid = ou_step(self.grid, GRID, dt_s, rng);
            self.frequency = ou_step(self.frequency, FREQUENCY, dt_s, rng);
        } else {
            // Start anywhere in the processes' stationary range, not all at nominal.
            self.drift = DRIFT.0 * gauss(rng);
            self.grid = GRID.0 * gauss(rng);
            self.frequency = FREQUENCY.0 * gauss(rng);
            self.started = true;
        }
        let running = self.machines.iter().filter(|m| **m).count() as f64;
        let load = (BASE_LOAD + (1.0 - BASE_LOAD) * running / MACHINES as f64)
            * (1.0 + self.drift).max(0.0);
        for (phase, share) in self.phase_load.iter_mut().zip(self.imbalance) {
            *phase = (load * share * (1.0 + RIPPLE * gauss(rng))).max(0.0);
        }
        self.pf = (0.9 + 0.07 * self.load().min(1.0)).min(0.99);
    }

    /// The plant's total load, 0 to about 1.1 of rated.
    fn load(&self) -> f64 {
        self.phase_load.iter().sum::<f64>() / 3.0
    }

    /// The load of `phase`, or the mean of the three for a total.
    fn load_of(&self, phase: Option<usize>) -> f64 {
        phase
            .and_then(|i| self.phase_load.get(i).copied())
            .unwrap_or_else(|| self.load())
    }

    /// The voltage a meter reads at `phase` (line-to-line when `None`) on a `nominal` system.
    fn voltage(&self, nominal: f64, phase: Option<usize>, rng: &mut SmallRng) -> f64 {
        nominal * (1.0 + self.grid) * (1.0 - SAG_AT_FULL_LOAD * self.load_of(phase))
            + VOLTAGE_NOISE_V * gauss(rng)
    }
}

#[derive(Debug)]
struct State {
    points: Vec<SimPoint>,
    registers: BTreeMap<(Function, u16), u16>,
    last_update: Option<Timestamp>,
    smoothed_load: f64,
    plant: Plant,
    running: bool,
    rng: SmallRng,
    no_answer: bool,
    slow: Option<Duration>,
    exception: Option<u8>,
    stuck: bool,
    spike_reads: u32,
    strict: bool,
    write_exception: Option<u8>,
    write_silent: bool,
}

/// A simulated Modbus device.
#[derive(Debug)]
pub struct SimDevice {
    name: String,
    unit_id: u8,
    utc_offset_hours: f64,
    state: Mutex<State>,
}

/// Values are recomputed at most this often, however often the device is read.
const UPDATE_EVERY_MS: i64 = 100;

fn seed_of(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl SimDevice {
    /// A device serving `device`'s points, whose plant runs on UTC+`utc_offset_hours`.
    pub fn new(device: &Device, utc_offset_hours: f64) -> Self {
        let seed = seed_of(device.name.as_str());
        let mut rng = SmallRng::seed_from_u64(seed);
        let points = device
            .points
            .iter()
            .map(|p| {
                let behaviour = Behaviour::for_point(p);
                // Counters start somewhere plausible and distinct per device.
                let value = match behaviour {
                    Behaviour::Energy { share, .. } => {
                        (1000.0 + rng.random_range(0.0..50_000.0)) * share
                    }
                    Behaviour::RunningHours => rng.random_range(100.0..20_000.0_f64).floor(),
                    _ => 0.0,
                };
                SimPoint {
                    point: p.clone(),
                    behaviour,
                    value,
                    served: value,
                    held: false,
                }
            })
            .collect();
        Self {
            name: device.name.to_string(),
            unit_id: device.unit_id,
            utc_offset_hours,
            state: Mutex::new(State {
                points,
                registers: BTreeMap::new(),
                last_update: None,
                smoothed_load: 0.5,
                plant: Plant::new(&mut rng),
                running: true,
                rng,
                no_answer: false,
                slow: None,
                exception: None,
                stuck: false,
                spike_reads: 0,
                strict: false,
                write_exception: None,
                write_silent: false,
            }),
        }
    }

    /// The device's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its unit id.
    pub fn unit_id(&self) -> u8 {
        self.unit_id
    }

    // The lock is never held across an await: every method here is synchronous.
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Injects `fault`.
    pub fn inject(&self, fault: Fault) {
        let mut s = self.state();
        match fault {
            Fault::NoAnswer => s.no_answer = true,
            Fault::Slow(d) => s.slow = Some(d),
            Fault::Exception(c) => s.exception = Some(c),
            Fault::Stuck => s.stuck = true,
            Fault::Spike(n) => s.spike_reads = n,
            Fault::StrictAddresses => s.strict = true,
            Fault::WriteException(c) => s.write_exception = Some(c),
            Fault::WriteNoAnswer => s.write_silent = true,
            Fault::CounterRollover | Fault::CounterReset => {
                for p in &mut s.points {
                    if p.behaviour.is_counter() {
                        p.value = if fault == Fault::CounterReset {
                            0.0
                        } else {
                            counter_near_max(&p.point)
                        };
                    }
                }
                s.last_update = None;
            }
        }
    }

    /// Clears every ongoing fault (counters keep their values).
    pub fn clear_faults(&self) {
        let mut s = self.state();
        s.no_answer = false;
        s.slow = None;
        s.exception = None;
        s.stuck = false;
        s.spike_reads = 0;
        s.strict = false;
        s.write_exception = None;
        s.write_silent = false;
    }

    /// The engineering value the device serves for `point`, as a correct client decodes it.
    pub fn value(&self, point: &str) -> Option<f64> {
        self.state()
            .points
            .iter()
            .find(|p| p.point.name.as_str() == point)
            .map(|p| p.served)
    }

    /// What the device holds at `address` onward in `function`'s table (coils as 0 and 1),
    /// bypassing faults: how a test sees what a write left behind.
    pub fn registers(&self, function: Function, address: u16, count: u16) -> Vec<u16> {
        let s = self.state();
        (0..count)
            .map(|i| {
                s.registers
                    .get(&(function, address.wrapping_add(i)))
                    .copied()
                    .unwrap_or(0)
            })
            .collect()
    }

    /// Sets `point` to `value` and freezes it there (until the next update if not stuck).
    pub fn set_value(&self, point: &str, value: f64) -> bool {
        let mut s = self.state();
        let Some(i) = s.points.iter().position(|p| p.point.name.as_str() == point) else {
            return false;
        };
        s.points[i].value = value;
        let point = s.points[i].point.clone();
        let words = encode_point(&point, value);
        s.points[i].served = served(&point, &words);
        write_words(
            &mut s.registers,
            point.function,
            point.address,
            &point,
            &words,
        );
        true
    }

    /// How long to wait before answering, if at all (`None` = never answer).
    pub fn delay(&self) -> Option<Duration> {
        let s = self.state();
        if s.no_answer {
            None
        } else {
            Some(s.slow.unwrap_or(Duration::ZERO))
        }
    }

    /// Answers a read of `count` registers or bits at `address`, at time `now`.
    pub fn read(&self, function: Function, address: u16, count: u16, now: Timestamp) -> Answer {
        let mut s = self.state();
        if s.no_answer {
            return Answer::Silence;
        }
        if let Some(code) = s.exception {
            return Answer::Exception(code);
        }
        let stale = s.last_update.is_none_or(|t| now.0 - t.0 >= UPDATE_EVERY_MS);
        // A stuck device still computes its first values once.
        if (stale && !s.stuck) || s.last_update.is_none() {
            self.update(&mut s, now);
        }
        let end = u32::from(address) + u32::from(count);
        if count == 0 || end > 65_536 {
            return Answer::Exception(3);
        }
        let spiking = s.spike_reads > 0;
        if spiking {
            s.spike_reads -= 1;
        }
        let mut words = Vec::with_capacity(usize::from(count));
        for a in address..=u16::try_from(end - 1).unwrap_or(u16::MAX) {
            match s.registers.get(&(function, a)) {
                Some(w) => words.push(*w),
                None if s.strict => return Answer::Exception(2),
                None => words.push(0),
            }
        }
        if spiking {
            spike(&s.points, function, address, &mut words);
        }
        if function.is_bits() {
            Answer::Bits(words.into_iter().map(|w| w != 0).collect())
        } else {
            Answer::Words(words)
        }
    }

    /// Answers a write of `words` (registers, or coils as 0 and 1) to `function`'s table at
    /// `address`, at time `now`. Points in the written range keep the written value.
    pub fn write(
        &self,
        function: Function,
        address: u16,
        words: &[u16],
        now: Timestamp,
    ) -> WriteAnswer {
        let mut s = self.state();
        if s.no_answer || s.write_silent {
            return WriteAnswer::Silence;
        }
        if let Some(code) = s.exception.or(s.write_exception) {
            return WriteAnswer::Exception(code);
        }
        if !matches!(function, Function::Coil | Function::Holding) {
            return WriteAnswer::Exception(1);
        }
        let count = u32::try_from(words.len()).unwrap_or(u32::MAX);
        let end = u32::from(address) + count;
        if count == 0 || end > 65_536 {
            return WriteAnswer::Exception(3);
        }
        if s.last_update.is_none() {
            self.update(&mut s, now);
        }
        let touches = |p: &SimPoint| {
            let start = u32::from(p.point.address);
            p.point.function == function
                && start < end
                && start + u32::from(p.point.width()) > u32::from(address)
        };
        if s.strict && !s.points.iter().any(touches) {
            return WriteAnswer::Exception(2);
        }
        for (i, w) in (0u16..).zip(words) {
            let w = if function.is_bits() {
                u16::from(*w != 0)
            } else {
                *w
            };
            s.registers.insert((function, address.wrapping_add(i)), w);
        }
        let State {
            points, registers, ..
        } = &mut *s;
        for p in points.iter_mut().filter(|p| touches(p)) {
            let own: Vec<u16> = (0..p.point.width())
                .map(|i| {
                    registers
                        .get(&(function, p.point.address.wrapping_add(i)))
                        .copied()
                        .unwrap_or(0)
                })
                .collect();
            p.held = true;
            p.served = served(&p.point, &own);
            p.value = p.served;
        }
        WriteAnswer::Done
    }

    fn update(&self, s: &mut State, now: Timestamp) {
        let dt_h = s
            .last_update
            .map_or(0.0, |t| (now.0 - t.0).max(0) as f64 / 3_600_000.0);
        s.last_update = Some(now);
        let hour = (now.0 as f64 / 3_600_000.0 + self.utc_offset_hours).rem_euclid(24.0);
        let noise: f64 = s.rng.random_range(-0.03..0.03);
        // The machine side (PLC temperatures, vibration, speed) follows the smooth shape.
        let load = (load_shape(hour) + noise).clamp(0.0, 1.0);
        // Temperatures lag the load: first-order filter with a ~10 minute time constant.
        let alpha = (dt_h * 6.0).min(1.0);
        s.smoothed_load += (load - s.smoothed_load) * alpha;
        s.running = load > 0.2;
        let State {
            points,
            registers,
            rng,
            running,
            smoothed_load,
            plant,
            ..
        } = s;
        plant.step(load_shape(hour), dt_h * 3600.0, rng);
        let pf = plant.pf;
        let reactive_per_active = (1.0 - pf * pf).sqrt() / pf;
        for p in points.iter_mut().filter(|p| !p.held) {
            let jitter: f64 = rng.random_range(-1.0..1.0);
            let phase = phase_of(p.point.name.as_str());
            p.value = match p.behaviour {
                Behaviour::Voltage { nominal } => plant.voltage(nominal, phase, rng),
                Behaviour::Current => {
                    let volts = plant.voltage(230.0, phase, rng);
                    RATED_POWER_W / 3.0 * plant.load_of(phase) / volts / pf
                }
                Behaviour::Power {
                    kilo,
                    share,
                    reactive,
                } => {
                    // A phase reads its own load, a total the sum of the three.
                    let w = RATED_POWER_W * share * plant.load_of(phase);
                    let w = if reactive { w * reactive_per_active } else { w };
                    if kilo { w / 1000.0 } else { w }
                }
                Behaviour::Energy { watt_hours, share } => {
                    let kwh = RATED_POWER_W / 1000.0 * plant.load() * share * dt_h;
                    p.value + if watt_hours { kwh * 1000.0 } else { kwh }
                }
                Behaviour::PowerFactor => pf,
                Behaviour::Frequency => 50.0 + plant.frequency,
                Behaviour::Temperature { rise } => 25.0 + rise * *smoothed_load + 0.2 * jitter,
                Behaviour::Vibration => 1.2 + 2.0 * load + 0.1 * jitter,
                Behaviour::Running => f64::from(u8::from(*running)),
                Behaviour::RunningHours => p.value + if *running { dt_h } else { 0.0 },
                Behaviour::Speed => {
                    if *running {
                        1480.0 + 3.0 * jitter
                    } else {
                        0.0
                    }
                }
                Behaviour::Constant(v) => v,
            };
            if p.behaviour.is_counter() {
                p.value = wrap_counter(&p.point, p.value);
            }
            let words = encode_point(&p.point, quantise(&p.point, p.value, p.behaviour));
            p.served = served(&p.point, &words);
            write_words(
                registers,
                p.point.function,
                p.point.address,
                &p.point,
                &words,
            );
        }
    }
}

/// What the meter puts in its register for `value`: a whole number of its resolution (0.1 V,
/// 0.001 A, … from the point's `decimals` or `scale`), as a meter that counts in fixed steps
/// does; a float register that states no resolution gets the value as computed. Counters show
/// the steps completed so far (rounded down), so they never run ahead of the energy used.
fn quantise(point: &Point, value: f64, behaviour: Behaviour) -> f64 {
    let step = point.codec.resolution();
    if step <= 0.0 || !value.is_finite() {
        return value;
    }
    let counts = value / step;
    // Tolerance: 0.3 / 0.1 is 2.9999999999999996, which is 3 steps and not 2.
    let counts = if behaviour.is_counter() {
        (counts + 1e-9).floor()
    } else {
        counts.round()
    };
    counts * step
}

/// A counter held in an integer register wraps at the register width, as real meters do.
fn wrap_counter(point: &Point, value: f64) -> f64 {
    let max = match point.codec.data_type {
        DataType::U16 => f64::from(u16::MAX),
        DataType::U32 => f64::from(u32::MAX),
        _ => return value,
    };
    let raw = ((value - point.codec.offset) / point.codec.scale).round();
    if raw > max {
        (raw - max - 1.0) * point.codec.scale + point.codec.offset
    } else {
        value
    }
}

fn counter_near_max(point: &Point) -> f64 {
    let raw_max = match point.codec.data_type {
        DataType::U16 => f64::from(u16::MAX),
        DataType::U32 => f64::from(u32::MAX),
        // Float counters cannot wrap; they restart from a small value instead.
        _ => return 1.0,
    };
    (raw_max - 5.0) * point.codec.scale + point.codec.offset
}

fn encode_point(point: &Point, value: f64) -> Vec<u16> {
    if point.function.is_bits() {
        return vec![u16::from(value != 0.0)];
    }
    let v = match point.codec.data_type {
        DataType::String => Value::Str(point.name.to_string()),
        _ => Value::F64(value),
    };
    encode(&v, &point.codec).unwrap_or_else(|_| vec![0; usize::from(point.codec.registers())])
}

/// Decodes what was encoded, so the simulator reports what it actually serves.
fn served(point: &Point, words: &[u16]) -> f64 {
    if point.function.is_bits() {
        return f64::from(words.first().copied().unwrap_or(0));
    }
    crate::decode::decode(words, &point.codec)
        .ok()
        .and_then(|v| v.as_f64())
        .unwrap_or(f64::NAN)
}

fn write_words(
    registers: &mut BTreeMap<(Function, u16), u16>,
    function: Function,
    address: u16,
    point: &Point,
    words: &[u16],
) {
    if point.codec.data_type == DataType::Bit {
        // Several bit points share one register: set or clear only this bit.
        let mask = 1u16 << point.codec.bit;
        let order_swapped = matches!(
            point.codec.order,
            crate::decode::ByteOrder::Badc | crate::decode::ByteOrder::Dcba
        );
        let mask = if order_swapped {
            mask.swap_bytes()
        } else {
            mask
        };
        let word = registers.entry((function, address)).or_insert(0);
        if words.first().is_some_and(|w| *w != 0) {
            *word |= mask
        } else {
            *word &= !mask
        }
        return;
    }
    for (i, w) in words.iter().enumerate() {
        let Ok(offset) = u16::try_from(i) else { break };
        registers.insert((function, address.wrapping_add(offset)), *w);
    }
}

fn spike(points: &[SimPoint], function: Function, address: u16, words: &mut [u16]) {
    for p in points {
        if p.point.function != function || p.behaviour.is_counter() || p.point.address < address {
            continue;
        }
        let at = usize::from(p.point.address - address);
        let n = usize::from(p.point.codec.registers());
        if let Some(slot) = words.get_mut(at..at + n) {
            let spiked = encode_point(&p.point, p.served * 10.0);
            if spiked.len() == n {
                slot.copy_from_slice(&spiked);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{EnvOverrides, load_str};

    fn sim(profile: &str) -> (Device, SimDevice) {
        let text = format!(
            "[gateway]\nsite = \"s\"\nid = \"g\"\n[[links]]\nname = \"l\"\nkind = \"tcp\"\nhost = \"127.0.0.1\"\n\
             [[devices]]\nname = \"d\"\nlink = \"l\"\nprofile = \"{profile}\"\n"
        );
        let plan = load_str(
            "t",
            &text,
            &EnvOverrides::Off,
            std::path::Path::new("."),
            None,
        )
        .unwrap();
        let device = plan.devices[0].clone();
        let sim = SimDevice::new(&device, 8.0);
        (device, sim)
    }

    fn read_point(device: &Device, sim: &SimDevice, name: &str, now: i64) -> f64 {
        let p = device
            .points
            .iter()
            .find(|p| p.name.as_str() == name)
            .unwrap();
        match sim.read(p.function, p.address, p.codec.registers(), Timestamp(now)) {
            Answer::Words(w) => crate::decode::decode(&w, &p.codec)
                .unwrap()
                .as_f64()
                .unwrap(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn energy_counters_integrate_power_and_only_rise() {
        let (device, sim) = sim("eastron-sdm630");
        let mut last = read_point(&device, &sim, "ep_import", 0);
        for minute in 1..=60 {
            let e = read_point(&device, &sim, "ep_import", minute * 60_000);
            assert!(e >= last, "minute {minute}: {last} -> {e}");
            last = e;
        }
        let first = sim.value("ep_import").unwrap();
        assert!(first > 0.0);
        // At least the night load (25 % of 30 kW) for an hour.
        let hour_one = read_point(&device, &sim, "ep_import", 3_600_000);
        let risen = read_point(&device, &sim, "ep_import", 2 * 3_600_000) - hour_one;
        assert!(risen > 7.0, "one hour added {risen} kWh");
    }

    /// Issue 19: a DTSU666 counts in 0.1 V, 0.001 A, 0.1 W, 0.001 (PF), 0.01 Hz and
    /// 0.01 kWh, so its float registers hold whole counts and the payload shows those digits.
    #[test]
    fn meter_registers_hold_whole_counts_of_the_meters_resolution() {
        let (device, sim) = sim("chint-dtsu666");
        for second in 0..120 {
            for p in device.points.iter() {
                let Answer::Words(w) = sim.read(
                    p.function,
                    p.address,
                    p.codec.registers(),
                    Timestamp(second * 1000),
                ) else {
                    panic!("{} answers", p.name)
                };
                let raw = f32::from_bits((u32::from(w[0]) << 16) | u32::from(w[1]));
                let step = p.codec.resolution();
                assert!(step > 0.0, "{} has a resolution", p.name);
                let counts = f64::from(raw) * p.codec.scale / step;
                assert!(
                    (counts - counts.round()).abs() < 1e-3 * counts.abs().max(1.0),
                    "{} = {raw} is not a whole number of {step}",
                    p.name
                );
            }
        }
    }

    /// Issue 19: a meter's readings move like a plant's, not like dice. Over an hour at 1 s:
    /// the voltage stays put (in 0.1 V) in a good share of seconds but is never frozen, the
    /// current's last digit (1 mA) moves nearly every second as any real load's does, and the
    /// load steps when a machine switches.
    #[test]
    fn meter_readings_drift_and_step_like_a_plant_load() {
        let (device, sim) = sim("chint-dtsu666");
        let (mut ua_moves, mut ia_moves, mut steps) = (0, 0, 0);
        let mut last: Option<(f64, f64, f64)> = None;
        for second in 0..3600 {
            let now = 36_000_000 + second * 1000;
            let (ua, ia, p) = (
                read_point(&device, &sim, "ua", now),
                read_point(&device, &sim, "ia", now),
                read_point(&device, &sim, "p", now),
            );
            if let Some((u0, i0, p0)) = last {
                ua_moves += usize::from((ua - u0).abs() > 0.05);
                ia_moves += usize::from((ia - i0).abs() > 0.0005);
                // A machine is about 14 % of rated power: 4 kW on a 30 kW plant.
                steps += usize::from((p - p0).abs() > 2000.0);
            }
            assert!((200.0..260.0).contains(&ua), "{ua} V at {second} s");
            last = Some((ua, ia, p));
        }
        assert!(
            (360..2900).contains(&ua_moves),
            "ua moved by a step in {ua_moves} of 3599 seconds"
        );
        assert!(ia_moves > 3000, "ia moved in {ia_moves} of 3599 seconds");
        assert!(
            (2..60).contains(&steps),
            "{steps} load steps in an hour of the working day"
        );
    }

    #[test]
    fn an_integer_counter_wraps_at_its_register_width_after_rollover() {
        let (device, sim) = sim("acrel-adl400");
        read_point(&device, &sim, "ep_total", 0);
        sim.inject(Fault::CounterRollover);
        let near_max = read_point(&device, &sim, "ep_total", 1000);
        assert!(
            near_max > 42_000_000.0,
            "u32 × 0.01 kWh near its maximum: {near_max}"
        );
        let wrapped = read_point(&device, &sim, "ep_total", 3_600_000);
        assert!(wrapped < 1000.0, "wrapped to a small value: {wrapped}");
    }

    #[test]
    fn reset_zeroes_counters_and_spike_multiplies_analog_values_once() {
        let (device, sim) = sim("chint-dtsu666");
        read_point(&device, &sim, "ua", 0);
        sim.inject(Fault::CounterReset);
        assert!(read_point(&device, &sim, "ep_import", 200) < 1.0);
        sim.inject(Fault::Stuck);
        let normal = read_point(&device, &sim, "ua", 400);
        sim.inject(Fault::Spike(1));
        let spiked = read_point(&device, &sim, "ua", 600);
        assert!(
            (spiked / normal - 10.0).abs() < 1e-3,
            "{normal} -> {spiked}"
        );
        assert!(
            (read_point(&device, &sim, "ua", 800) - normal).abs() < 1e-9,
            "one read only"
        );
    }

    #[test]
    fn a_written_setpoint_is_held_and_write_faults_refuse_without_writing() {
        let (device, sim) = sim("generic-plc");
        let p = device
            .points
            .iter()
            .find(|p| p.function == Function::Holding && p.codec.registers() == 1)
            .unwrap()
            .clone();
        read_point(&device, &sim, p.name.as_str(), 0);
        assert_eq!(
            sim.write(Function::Holding, p.address, &[7], Timestamp(100)),
            WriteAnswer::Done
        );
        // Held through later updates, as a setpoint is.
        let later = sim.read(Function::Holding, p.address, 1, Timestamp(3_600_000));
        assert_eq!(later, Answer::Words(vec![7]));
        for (fault, answer) in [
            (Fault::WriteException(3), WriteAnswer::Exception(3)),
            (Fault::WriteNoAnswer, WriteAnswer::Silence),
        ] {
            sim.inject(fault);
            assert_eq!(
                sim.write(Function::Holding, p.address, &[9], Timestamp(200)),
                answer
            );
            // Reads still answer.
            assert_eq!(
                sim.read(Function::Holding, p.address, 1, Timestamp(300)),
                Answer::Words(vec![7])
            );
            sim.clear_faults();
        }
        assert_eq!(
            sim.write(Function::Input, 0, &[1], Timestamp(400)),
            WriteAnswer::Exception(1),
            "input registers are read-only"
        );
        assert_eq!(
            sim.write(Function::Coil, 5, &[1, 0, 1], Timestamp(500)),
            WriteAnswer::Done
        );
        assert_eq!(sim.registers(Function::Coil, 5, 3), [1, 0, 1]);
    }

    #[test]
    fn faults_parse_from_their_documented_forms() {
        assert_eq!(
            Fault::parse("slow:250"),
            Ok(Fault::Slow(Duration::from_millis(250)))
        );
        assert_eq!(Fault::parse("exception:2"), Ok(Fault::Exception(2)));
        assert_eq!(Fault::parse("no_answer"), Ok(Fault::NoAnswer));
        assert_eq!(
            Fault::parse("write_exception:4"),
            Ok(Fault::WriteException(4))
        );
        assert_eq!(Fault::parse("write_no_answer"), Ok(Fault::WriteNoAnswer));
        assert!(Fault::parse("slow").unwrap_err().contains("slow:500"));
        assert!(Fault::parse("melt").unwrap_err().contains("valid:"));
    }
}
