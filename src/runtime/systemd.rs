//! The systemd contract: `sd_notify` messages and the watchdog.
//!
//! What this module owns:
//! - [`notify`]: one datagram of [`Notify`] states to `$NOTIFY_SOCKET`, a silent no-op when the
//!   variable is unset (tests, the CLI, a daemon started by hand). [`notify_to`] is the same
//!   sender with an explicit socket, for tests.
//! - [`watchdog_interval`]: how often to feed the watchdog, from `WATCHDOG_USEC`/`WATCHDOG_PID`.
//! - [`Heartbeats`]: a pure (sans-IO, C6) record of each stage's last sign of progress. The
//!   supervisor feeds the watchdog only while [`Heartbeats::all_fresh`] holds, so a wedged stage
//!   gets the daemon restarted; a blind timer would only prove that the runtime is alive (§7.11).
//!
//! Invariants:
//! - The environment is never unset or changed (kanidm lost its `STATUS=` that way, §7.6). Every
//!   call reads `$NOTIFY_SOCKET` afresh, so every notification reaches systemd.
//! - One call sends one datagram; systemd applies its fields together.
//! - Nothing here panics, and a failed send never stops the daemon: it is logged, once per
//!   transition from working to failing (C12).
//!
//! The sender is ntpd-rs's ~20-line `UnixDatagram` approach rather than the `sd-notify` crate,
//! whose API changed between 0.4 and 0.5 (§5).

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io;
use std::os::linux::net::SocketAddrExt as _;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

/// Longest `STATUS=` text we send, in bytes. systemd drops a whole datagram that does not fit its
/// receive buffer (`NOTIFY_BUFFER_MAX`, 4 KiB on 252), which would take `READY=1` with it.
const MAX_STATUS_BYTES: usize = 1024;

/// How long one send may wait for room in systemd's socket queue. The socket is blocking so
/// that a busy manager does not lose `READY=1`; the bound keeps a stuck manager from stalling the
/// calling (runtime) thread for long.
const SEND_TIMEOUT: Duration = Duration::from_secs(1);

/// One state in an `sd_notify` message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notify {
    /// `READY=1`: start-up or a reload has finished; the daemon is doing its job.
    Ready,
    /// `RELOADING=1` plus `MONOTONIC_USEC=<CLOCK_MONOTONIC µs>`: a reload has begun. Follow it
    /// with [`Notify::Ready`] whether the reload was applied or rejected (C10).
    Reloading,
    /// `STOPPING=1`: shutdown has begun (C9).
    Stopping,
    /// `STATUS=<text>`: the one-line summary `systemctl status` shows. Line breaks become spaces
    /// and the text is cut to 1 KiB.
    Status(String),
    /// `WATCHDOG=1`: the keep-alive. Send it only while [`Heartbeats::all_fresh`] holds.
    Watchdog,
}

impl Notify {
    /// Appends this state's `KEY=VALUE` line(s), without a trailing newline.
    fn push_to(&self, out: &mut String) {
        match self {
            Self::Ready => out.push_str("READY=1"),
            Self::Reloading => {
                // systemd ≥ 253 needs the stamp only for Type=notify-reload; 252 ignores it.
                out.push_str("RELOADING=1\nMONOTONIC_USEC=");
                out.push_str(&monotonic_usec().to_string());
            }
            Self::Stopping => out.push_str("STOPPING=1"),
            Self::Status(text) => {
                out.push_str("STATUS=");
                out.push_str(&one_line(text, MAX_STATUS_BYTES));
            }
            Self::Watchdog => out.push_str("WATCHDOG=1"),
        }
    }
}

/// The datagram for `states`: their lines in order, joined by `\n`.
fn encode(states: &[Notify]) -> String {
    let mut out = String::new();
    for (i, state) in states.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        state.push_to(&mut out);
    }
    out
}

/// `text` with every line break replaced by a space (a newline would start a new field), cut to
/// at most `max` bytes on a character boundary.
fn one_line(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max));
    for c in text.chars() {
        let c = if c == '\n' || c == '\r' { ' ' } else { c };
        if out.len() + c.len_utf8() > max {
            break;
        }
        out.push(c);
    }
    out
}

/// Set after a failed send so that a broken socket is logged once, not every watchdog period.
static SEND_FAILING: AtomicBool = AtomicBool::new(false);

/// Sends `states` to systemd as one datagram on `$NOTIFY_SOCKET`.
///
/// Does nothing when `$NOTIFY_SOCKET` is unset or `states` is empty. Never changes the
/// environment, so later calls still reach systemd. A failed send is logged (WARN when sending
/// starts to fail, DEBUG while it keeps failing, INFO when it works again) and otherwise ignored:
/// systemd's own timeouts are the consequence, not a crashed daemon.
pub fn notify(states: &[Notify]) {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    match notify_to(&socket, states) {
        Ok(()) => {
            if SEND_FAILING.swap(false, Ordering::Relaxed) {
                info!(socket = %Path::new(&socket).display(), "Notifications reach systemd again.");
            }
        }
        Err(error) => {
            if SEND_FAILING.swap(true, Ordering::Relaxed) {
                debug!(socket = %Path::new(&socket).display(), error = %error, "Notification to systemd failed again.");
            } else {
                warn!(socket = %Path::new(&socket).display(), error = %error, "Could not notify systemd; its start, reload and watchdog timeouts may fire.");
            }
        }
    }
}

/// Sends `states` as one datagram to `socket`: an absolute path, or `@name` for a Linux
/// abstract socket (the two forms `$NOTIFY_SOCKET` takes under systemd 252).
///
/// [`notify`] reads the socket from the environment and calls this; tests call it directly
/// with a socket they bound. An empty `states` sends nothing.
///
/// # Errors
///
/// `InvalidInput` if `socket` is neither form; otherwise the error of creating the socket or
/// of the send (no listener, permission denied, timed out after one second on a full queue),
/// or `WriteZero` if the datagram went out short.
pub fn notify_to(socket: &OsStr, states: &[Notify]) -> io::Result<()> {
    if states.is_empty() {
        return Ok(());
    }
    let addr = socket_addr(socket)?;
    let message = encode(states);
    let sender = UnixDatagram::unbound()?;
    sender.set_write_timeout(Some(SEND_TIMEOUT))?;
    let sent = sender.send_to_addr(message.as_bytes(), &addr)?;
    if sent == message.len() {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("sent {sent} of {} bytes", message.len()),
        ))
    }
}

/// Parses `$NOTIFY_SOCKET`: `@name` is abstract, `/path` a file system socket. systemd ≥ 254
/// also knows `vsock:`, which a gateway does not need.
fn socket_addr(socket: &OsStr) -> io::Result<SocketAddr> {
    let bytes = socket.as_bytes();
    if let Some(name) = bytes.strip_prefix(b"@") {
        SocketAddr::from_abstract_name(name)
    } else if bytes.starts_with(b"/") {
        SocketAddr::from_pathname(Path::new(socket))
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "NOTIFY_SOCKET is neither an absolute path nor an abstract name (@name)",
        ))
    }
}

/// The current `CLOCK_MONOTONIC` reading in microseconds, for `MONOTONIC_USEC=`.
///
/// Read with `clock_gettime(2)` through rustix, since the crate forbids `unsafe`. The call
/// cannot fail for `CLOCK_MONOTONIC`, which every Linux kernel has.
#[must_use]
pub fn monotonic_usec() -> u64 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    // The clock counts from boot, so neither field is ever negative.
    let sec = u64::try_from(now.tv_sec).unwrap_or(0);
    let nsec = u64::try_from(now.tv_nsec).unwrap_or(0);
    sec.saturating_mul(1_000_000).saturating_add(nsec / 1_000)
}

/// How often to send [`Notify::Watchdog`]: half of `WATCHDOG_USEC`, as sd_watchdog_enabled(3)
/// recommends, when `WATCHDOG_PID` is unset or names this process.
///
/// `None` when there is no watchdog (variables unset, unparsable, zero, or meant for another
/// process). Never unsets the variables.
pub fn watchdog_interval() -> Option<Duration> {
    let usec = std::env::var("WATCHDOG_USEC").ok();
    let pid = std::env::var("WATCHDOG_PID").ok();
    watchdog_interval_from(usec.as_deref(), pid.as_deref(), std::process::id())
}

/// [`watchdog_interval`] with its inputs explicit.
fn watchdog_interval_from(usec: Option<&str>, pid: Option<&str>, our_pid: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok()?;
    if usec == 0 {
        return None;
    }
    if let Some(pid) = pid {
        if pid.trim().parse::<u32>().ok()? != our_pid {
            return None;
        }
    }
    Some(Duration::from_micros(usec) / 2)
}

/// Each stage's last sign of progress, and whether all of them are recent enough to feed the
/// watchdog (C11). Pure: time is always passed in.
///
/// Time is a `std::time::Instant`; under `#[tokio::test(start_paused = true)]` pass
/// `tokio::time::Instant::now().into_std()` so that paused time applies.
///
/// A stage counts as fresh while no more than its own deadline has passed since its last beat
/// (registration counts as a beat). A stage that has finished for good should be
/// [removed](Self::remove), or it turns stale and stops the watchdog.
#[derive(Debug, Default, Clone)]
pub struct Heartbeats {
    /// By name, so that the stale list comes out sorted.
    stages: BTreeMap<String, Beat>,
}

/// One stage's deadline and last beat.
#[derive(Debug, Clone, Copy)]
struct Beat {
    deadline: Duration,
    last: Instant,
}

impl Heartbeats {
    /// No stages; [`all_fresh`](Self::all_fresh) holds.
    pub fn new() -> Self {
        Self::default()
    }

    /// Watches `stage`, which must beat at least every `deadline`; `now` counts as its first
    /// beat. Registering a known stage again replaces its deadline and last beat.
    pub fn register(&mut self, stage: impl Into<String>, deadline: Duration, now: Instant) {
        self.stages.insert(
            stage.into(),
            Beat {
                deadline,
                last: now,
            },
        );
    }

    /// Stops watching `stage` (it finished, or a reload removed it). Returns whether it was
    /// watched.
    pub fn remove(&mut self, stage: &str) -> bool {
        self.stages.remove(stage).is_some()
    }

    /// Records progress by `stage` at `now`. Returns `false`, and records nothing, for a stage
    /// that was never registered. A beat older than the last one is ignored.
    pub fn beat(&mut self, stage: &str, now: Instant) -> bool {
        match self.stages.get_mut(stage) {
            Some(beat) => {
                beat.last = beat.last.max(now);
                true
            }
            None => false,
        }
    }

    /// `Ok` if every stage has beaten within its deadline as of `now`.
    ///
    /// # Errors
    ///
    /// The names of the stale stages, sorted, so the supervisor can log them and withhold
    /// `WATCHDOG=1`.
    pub fn all_fresh(&self, now: Instant) -> Result<(), Vec<String>> {
        let stale: Vec<String> = self
            .stages
            .iter()
            .filter(|(_, beat)| now.saturating_duration_since(beat.last) > beat.deadline)
            .map(|(name, _)| name.clone())
            .collect();
        if stale.is_empty() { Ok(()) } else { Err(stale) }
    }

    /// How many stages are watched.
    pub fn len(&self) -> usize {
        self.stages.len()
    }

    /// Whether no stage is watched.
    pub fn is_empty(&self) -> bool {
        self.stages.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn a_new_registration_is_fresh_until_its_deadline_passes() {
        let t0 = crate::clock::monotonic();
        let mut hb = Heartbeats::new();
        hb.register("core", 10 * S, t0);
        assert_eq!(hb.all_fresh(t0), Ok(()));
        assert_eq!(
            hb.all_fresh(t0 + 10 * S),
            Ok(()),
            "the deadline itself is still fresh"
        );
        assert_eq!(hb.all_fresh(t0 + 11 * S), Err(vec!["core".to_owned()]));
    }

    #[test]
    fn a_beat_restarts_the_deadline() {
        let t0 = crate::clock::monotonic();
        let mut hb = Heartbeats::new();
        hb.register("core", 10 * S, t0);
        assert!(hb.beat("core", t0 + 8 * S));
        assert_eq!(hb.all_fresh(t0 + 17 * S), Ok(()));
        assert_eq!(hb.all_fresh(t0 + 19 * S), Err(vec!["core".to_owned()]));
    }

    #[test]
    fn one_wedged_stage_withholds_the_watchdog_and_is_named() {
        let t0 = crate::clock::monotonic();
        let mut hb = Heartbeats::new();
        hb.register("store", 5 * S, t0);
        hb.register("acquire:line1", 5 * S, t0);
        hb.register("core", 5 * S, t0);
        for i in 1..=4 {
            assert!(hb.beat("store", t0 + i * 3 * S));
            assert!(hb.beat("acquire:line1", t0 + i * 3 * S));
        }
        assert_eq!(hb.all_fresh(t0 + 12 * S), Err(vec!["core".to_owned()]));
        assert!(hb.beat("core", t0 + 12 * S));
        assert_eq!(hb.all_fresh(t0 + 12 * S), Ok(()));
    }

    #[test]
    fn stale_stages_are_listed_sorted_by_name() {
        let t0 = crate::clock::monotonic();
        let mut hb = Heartbeats::new();
        hb.register("zeta", S, t0);
        hb.register("alpha", S, t0);
        hb.register("mid", 100 * S, t0);
        assert_eq!(
            hb.all_fresh(t0 + 2 * S),
            Err(vec!["alpha".to_owned(), "zeta".to_owned()])
        );
    }

    #[test]
    fn each_stage_has_its_own_deadline() {
        let t0 = crate::clock::monotonic();
        let mut hb = Heartbeats::new();
        hb.register("fast", 2 * S, t0);
        hb.register("slow", 60 * S, t0);
        assert_eq!(hb.all_fresh(t0 + 3 * S), Err(vec!["fast".to_owned()]));
        assert!(hb.beat("fast", t0 + 3 * S));
        assert_eq!(hb.all_fresh(t0 + 3 * S), Ok(()));
    }

    #[test]
    fn a_removed_stage_no_longer_counts() {
        let t0 = crate::clock::monotonic();
        let mut hb = Heartbeats::new();
        hb.register("link:old", S, t0);
        assert!(hb.all_fresh(t0 + 5 * S).is_err());
        assert!(hb.remove("link:old"));
        assert!(!hb.remove("link:old"));
        assert!(hb.is_empty());
        assert_eq!(hb.all_fresh(t0 + 5 * S), Ok(()));
    }

    #[test]
    fn beats_for_unknown_stages_are_refused_not_invented() {
        let t0 = crate::clock::monotonic();
        let mut hb = Heartbeats::new();
        assert!(!hb.beat("ghost", t0));
        assert_eq!(hb.len(), 0);
    }

    #[test]
    fn an_out_of_order_beat_does_not_move_time_back() {
        let t0 = crate::clock::monotonic();
        let mut hb = Heartbeats::new();
        hb.register("core", 10 * S, t0);
        assert!(hb.beat("core", t0 + 9 * S));
        assert!(hb.beat("core", t0 + S));
        assert_eq!(hb.all_fresh(t0 + 18 * S), Ok(()));
    }

    #[test]
    fn re_registering_replaces_the_deadline() {
        let t0 = crate::clock::monotonic();
        let mut hb = Heartbeats::new();
        hb.register("core", S, t0);
        hb.register("core", 30 * S, t0 + S);
        assert_eq!(hb.len(), 1);
        assert_eq!(hb.all_fresh(t0 + 20 * S), Ok(()));
    }

    #[test]
    fn a_now_before_the_last_beat_is_fresh() {
        let t0 = crate::clock::monotonic();
        let mut hb = Heartbeats::new();
        hb.register("core", S, t0 + 5 * S);
        assert_eq!(hb.all_fresh(t0), Ok(()));
    }

    #[test]
    fn no_stages_means_fresh() {
        assert_eq!(
            Heartbeats::new().all_fresh(crate::clock::monotonic()),
            Ok(())
        );
    }

    #[test]
    fn watchdog_interval_is_half_of_watchdog_usec() {
        assert_eq!(
            watchdog_interval_from(Some("30000000"), None, 42),
            Some(Duration::from_secs(15))
        );
        assert_eq!(
            watchdog_interval_from(Some("30000000"), Some("42"), 42),
            Some(Duration::from_secs(15))
        );
    }

    #[test]
    fn watchdog_meant_for_another_process_or_absent_is_none() {
        assert_eq!(
            watchdog_interval_from(Some("30000000"), Some("41"), 42),
            None
        );
        assert_eq!(
            watchdog_interval_from(Some("30000000"), Some("x"), 42),
            None
        );
        assert_eq!(watchdog_interval_from(None, Some("42"), 42), None);
        assert_eq!(watchdog_interval_from(Some("0"), None, 42), None);
        assert_eq!(watchdog_interval_from(Some("soon"), None, 42), None);
    }

    #[test]
    fn states_are_joined_by_newlines_in_order() {
        assert_eq!(
            encode(&[Notify::Status("up".into()), Notify::Ready]),
            "STATUS=up\nREADY=1"
        );
        assert_eq!(encode(&[Notify::Stopping]), "STOPPING=1");
        assert_eq!(encode(&[Notify::Watchdog]), "WATCHDOG=1");
        assert_eq!(encode(&[]), "");
    }

    #[test]
    fn status_cannot_inject_fields() {
        assert_eq!(
            encode(&[Notify::Status("3 online\nREADY=1\r\n".into())]),
            "STATUS=3 online READY=1  "
        );
    }

    #[test]
    fn long_status_is_cut_on_a_character_boundary() {
        let text = "é".repeat(MAX_STATUS_BYTES);
        let line = one_line(&text, MAX_STATUS_BYTES);
        assert_eq!(line.len(), MAX_STATUS_BYTES);
        assert!(line.chars().all(|c| c == 'é'));
        assert_eq!(one_line("abc", 2), "ab");
    }

    /// `Instant { tv_sec: 3781, tv_nsec: 993209833 }` → µs: std's `Instant` is
    /// `CLOCK_MONOTONIC` on Linux, and its `Debug` shows the raw reading, which makes it a
    /// second, independent reader of the clock to check against.
    fn instant_debug_usec(instant: Instant) -> u64 {
        let text = format!("{instant:?}");
        let fields = text
            .strip_prefix("Instant { tv_sec: ")
            .and_then(|rest| rest.strip_suffix(" }"))
            .and_then(|rest| rest.split_once(", tv_nsec: "));
        let (sec, nsec) = fields.unwrap_or_else(|| panic!("unexpected Instant format: {text}"));
        sec.parse::<u64>().unwrap() * 1_000_000 + nsec.parse::<u64>().unwrap() / 1_000
    }

    #[test]
    fn monotonic_usec_reads_the_clock_std_instant_reads() {
        let before = instant_debug_usec(crate::clock::monotonic());
        let usec = monotonic_usec();
        let after = instant_debug_usec(crate::clock::monotonic());
        assert!(
            before <= usec && usec <= after,
            "CLOCK_MONOTONIC {usec} µs outside [{before}, {after}]"
        );
    }

    #[test]
    fn monotonic_usec_is_no_later_than_the_time_since_boot() {
        // /proc/uptime is CLOCK_BOOTTIME, which also counts suspended time; it is truncated to
        // 10 ms, so one unit is added.
        let usec = monotonic_usec();
        let uptime = std::fs::read_to_string("/proc/uptime").unwrap();
        let seconds: f64 = uptime.split_whitespace().next().unwrap().parse().unwrap();
        let boot_ceiling = (seconds * 1e6) as u64 + 10_000;
        assert!(usec > 0);
        assert!(
            usec <= boot_ceiling,
            "{usec} µs > boottime {boot_ceiling} µs"
        );
    }

    #[test]
    fn notify_socket_forms() {
        assert!(socket_addr(OsStr::new("/run/systemd/notify")).is_ok());
        assert!(socket_addr(OsStr::new("@sd-notify")).is_ok());
        let relative = socket_addr(OsStr::new("run/notify")).expect_err("relative path");
        assert_eq!(relative.kind(), io::ErrorKind::InvalidInput);
        assert!(socket_addr(OsStr::new("")).is_err());
    }
}
