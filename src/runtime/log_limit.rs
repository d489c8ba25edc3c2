//! Log lines that a peer can trigger at will, made safe to write: repeats rate-limited with
//! a count, and peer text truncated and escaped.
//!
//! A flood of 5,000 bad commands once wrote 4,934 identical WARN lines, and a refused
//! command's text went to the log whole: a 120 KB line, and raw U+202E (right-to-left
//! override), which makes a terminal show the line's text in another order than it has.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a key stays quiet after a line is written for it.
pub const REPEAT_WINDOW: Duration = Duration::from_secs(60);

/// Keys tracked at once; beyond that, new keys share one slot, so a peer that invents keys
/// cannot grow the map (or the log) without bound.
const MAX_KEYS: usize = 64;

/// The slot shared by keys beyond [`MAX_KEYS`].
const OVERFLOW_KEY: &str = "(other)";

/// Longest peer text written to a log line or a reply, in characters.
pub const MAX_PEER_TEXT: usize = 200;

#[derive(Debug)]
struct Seen {
    logged_at: Instant,
    suppressed: u64,
}

/// Lets the first of a run of identical events through and counts the rest: at most one line
/// per key per [`REPEAT_WINDOW`], which carries how many were left out since the last one.
#[derive(Debug)]
pub struct RepeatLimit {
    window: Duration,
    seen: Mutex<BTreeMap<String, Seen>>,
}

impl RepeatLimit {
    /// A limit of one line per `window` per key.
    pub const fn new(window: Duration) -> Self {
        Self {
            window,
            seen: Mutex::new(BTreeMap::new()),
        }
    }

    /// Whether to write the line for `key` at `now`: `Some(n)` with the number of lines left
    /// out since the last one written, or `None` to leave this one out (it is counted).
    pub fn admit(&self, key: &str, now: Instant) -> Option<u64> {
        // No await while the lock is held; a poisoned lock only means another thread
        // panicked mid-update of a counter, which is still usable.
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let key = if seen.len() >= MAX_KEYS && !seen.contains_key(key) {
            OVERFLOW_KEY
        } else {
            key
        };
        match seen.get_mut(key) {
            Some(s) if now.duration_since(s.logged_at) < self.window => {
                s.suppressed += 1;
                None
            }
            Some(s) => {
                s.logged_at = now;
                Some(std::mem::take(&mut s.suppressed))
            }
            None => {
                seen.insert(
                    key.to_owned(),
                    Seen {
                        logged_at: now,
                        suppressed: 0,
                    },
                );
                Some(0)
            }
        }
    }
}

/// Whether `c` may reorder or hide what a terminal shows: bidirectional controls (U+061C,
/// U+200E/F, U+202A to U+202E, U+2066 to U+2069), zero-width and other format characters.
fn is_deceptive(c: char) -> bool {
    matches!(
        c,
        '\u{061c}'
            | '\u{200b}'..='\u{200f}'
            | '\u{2028}'..='\u{202e}'
            | '\u{2060}'..='\u{2069}'
            | '\u{feff}'
    )
}

/// Whether `c` is written escaped: a control or deceptive character.
pub fn is_unsafe(c: char) -> bool {
    c.is_control() || is_deceptive(c)
}

/// `text` made safe for a log line or a reply: control and deceptive characters written as
/// `\u{…}` escapes, and cut after [`MAX_PEER_TEXT`] characters with the length it had.
pub fn peer_text(text: &str) -> String {
    escape_and_cut(text, MAX_PEER_TEXT)
}

/// As [`peer_text`], cut after `max_chars` characters.
pub fn escape_and_cut(text: &str, max_chars: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max_chars + 32));
    for (count, c) in text.chars().enumerate() {
        if count == max_chars {
            let _infallible = write!(out, "… ({} bytes in all)", text.len());
            return out;
        }
        if is_unsafe(c) {
            let _infallible = write!(out, "\\u{{{:x}}}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_of_identical_lines_costs_one_per_window_with_the_count() {
        let limit = RepeatLimit::new(Duration::from_secs(60));
        let t0 = crate::clock::monotonic();
        assert_eq!(limit.admit("queue-full", t0), Some(0));
        for i in 1..5_000 {
            assert_eq!(
                limit.admit("queue-full", t0 + Duration::from_millis(i)),
                None
            );
        }
        assert_eq!(limit.admit("other", t0), Some(0), "keys are independent");
        assert_eq!(
            limit.admit("queue-full", t0 + Duration::from_secs(61)),
            Some(4_999),
            "the next line carries the count"
        );
        assert_eq!(
            limit.admit("queue-full", t0 + Duration::from_secs(62)),
            None
        );
    }

    #[test]
    fn invented_keys_share_one_slot_beyond_the_bound() {
        let limit = RepeatLimit::new(Duration::from_secs(60));
        let t0 = crate::clock::monotonic();
        let written = (0..10_000)
            .filter(|i| limit.admit(&format!("k{i}"), t0).is_some())
            .count();
        assert_eq!(written, MAX_KEYS + 1);
    }

    #[test]
    fn peer_text_is_escaped_and_cut() {
        assert_eq!(peer_text("ack"), "ack");
        assert_eq!(
            peer_text("evil\u{202e}txt.exe\n\u{1b}[2J"),
            "evil\\u{202e}txt.exe\\u{a}\\u{1b}[2J"
        );
        let long = "x".repeat(120_000);
        let cut = peer_text(&long);
        assert!(cut.chars().count() < MAX_PEER_TEXT + 30, "{}", cut.len());
        assert!(cut.ends_with("… (120000 bytes in all)"), "{cut}");
        assert_eq!(peer_text("中文"), "中文", "ordinary text is left alone");
    }
}
