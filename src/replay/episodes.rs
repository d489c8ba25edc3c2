//! `replay --episodes FILE`: every anomaly episode of a replay, one per line, so an engineer
//! reads a month of recordings as a list of events instead of a column of scores.
//!
//! After each poll the episodes of its device's `anomaly` rules are read from the engine
//! ([`Engine::anomaly_episodes`]). An episode is written when it ends, with the time of the
//! poll that ended it; episodes still open when the input ends are written last, with no
//! end. A line carries the device, the alarm, the watched point (none for a device-level
//! model), the kind, start and end, the highest onset score seen during the episode and the
//! points that explain it: a device-level model's points with their share of the deviation
//! summed over the episode (largest first, those of at least 1 %), or the point model's own
//! point with share 1.
//!
//! Format by file name: `.jsonl`, `.ndjson` or `.json` gives one JSON object per line, any
//! other name CSV with a header.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use chrono::{SecondsFormat, TimeZone};

use crate::detect::anomaly::AnomalyKind;
use crate::detect::{Engine, PointShare};
use crate::model::Name;

/// Header of the CSV form.
pub const CSV_HEADER: &str = "device,alarm,point,kind,start,end,start_ms,end_ms,peak_score,points";

/// How the episode list is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EpisodeFormat {
    /// CSV with [`CSV_HEADER`]; `points` is `point:share` pairs joined by `;`.
    Csv,
    /// One JSON object per line.
    JsonLines,
}

impl EpisodeFormat {
    /// JSON lines for a file named `*.jsonl`, `*.ndjson` or `*.json`; CSV for any other.
    pub fn for_path(path: &Path) -> Self {
        match path.extension().and_then(|e| e.to_str()) {
            Some("jsonl" | "ndjson" | "json") => Self::JsonLines,
            _ => Self::Csv,
        }
    }
}

/// An episode seen active and not yet written.
#[derive(Debug, Clone, Copy)]
struct Open {
    since_ms: i64,
    kind: AnomalyKind,
    peak: f64,
}

/// Follows the anomaly episodes of a replay and writes each one once it has ended.
pub struct EpisodeLog<'a> {
    out: &'a mut dyn Write,
    format: EpisodeFormat,
    tz: chrono_tz::Tz,
    /// Device names by engine index.
    devices: Vec<Name>,
    /// Open episodes by (device, rule instance).
    open: HashMap<(usize, usize), Open>,
    /// Episodes written.
    pub written: u64,
}

impl<'a> EpisodeLog<'a> {
    /// A log writing to `out` (the CSV header at once); times are shown in `tz`.
    ///
    /// # Errors
    /// A failed write of the header.
    pub fn new(
        out: &'a mut dyn Write,
        format: EpisodeFormat,
        tz: chrono_tz::Tz,
        devices: Vec<Name>,
    ) -> std::io::Result<Self> {
        if format == EpisodeFormat::Csv {
            out.write_all(CSV_HEADER.as_bytes())?;
            out.write_all(b"\n")?;
        }
        Ok(Self {
            out,
            format,
            tz,
            devices,
            open: HashMap::new(),
            written: 0,
        })
    }

    /// Reads the episodes of `device`'s anomaly rules after its poll at `at_ms`: opens the
    /// ones that started, writes the ones that ended.
    ///
    /// # Errors
    /// A failed write.
    pub fn observe(&mut self, engine: &Engine, device: usize, at_ms: i64) -> std::io::Result<()> {
        for state in engine.anomaly_episodes(device) {
            let key = (device, state.instance);
            let score = state.score.unwrap_or(0.0);
            let ep = state.episode;
            match self.open.get_mut(&key) {
                // A new episode began since the last look: the old one ended before it.
                Some(open) if ep.active && open.since_ms != ep.since_ms => {
                    let ended = *open;
                    self.write(engine, key, ended, Some(at_ms))?;
                    self.open.insert(
                        key,
                        Open {
                            since_ms: ep.since_ms,
                            kind: ep.kind,
                            peak: score,
                        },
                    );
                }
                Some(open) if ep.active => {
                    open.kind = ep.kind;
                    open.peak = open.peak.max(score);
                }
                Some(_) => {
                    if let Some(ended) = self.open.remove(&key) {
                        self.write(engine, key, ended, Some(at_ms))?;
                    }
                }
                None if ep.active => {
                    self.open.insert(
                        key,
                        Open {
                            since_ms: ep.since_ms,
                            kind: ep.kind,
                            peak: score,
                        },
                    );
                }
                None => {}
            }
        }
        Ok(())
    }

    /// Writes the episodes still open at the end of the input (no end), oldest first.
    ///
    /// # Errors
    /// A failed write.
    pub fn finish(&mut self, engine: &Engine) -> std::io::Result<()> {
        let mut open: Vec<((usize, usize), Open)> = self.open.drain().collect();
        open.sort_by_key(|(key, o)| (o.since_ms, *key));
        for (key, o) in open {
            self.write(engine, key, o, None)?;
        }
        self.out.flush()
    }

    fn time(&self, ms: i64) -> String {
        self.tz
            .timestamp_millis_opt(ms)
            .single()
            .map(|t| t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
            .unwrap_or_default()
    }

    fn write(
        &mut self,
        engine: &Engine,
        (device, instance): (usize, usize),
        ep: Open,
        end_ms: Option<i64>,
    ) -> std::io::Result<()> {
        let Some(rule) = engine.anomaly_rule(device, instance) else {
            return Ok(());
        };
        let device_name = self.devices.get(device).map_or("", Name::as_str);
        let points: Vec<PointShare> = match rule.point {
            Some(p) => vec![PointShare {
                point: p.to_owned(),
                share: 1.0,
            }],
            None => rule
                .shares
                .into_iter()
                .filter(|s| s.share >= 0.01)
                .collect(),
        };
        let start = self.time(ep.since_ms);
        let end = end_ms.map(|e| self.time(e));
        let peak = ep.peak.clamp(0.0, 1.0);
        match self.format {
            EpisodeFormat::JsonLines => {
                let line = serde_json::json!({
                    "device": device_name,
                    "alarm": rule.alarm,
                    "point": rule.point,
                    "kind": ep.kind.as_str(),
                    "start": start,
                    "end": end,
                    "start_ms": ep.since_ms,
                    "end_ms": end_ms,
                    "peak_score": peak,
                    "points": points,
                });
                serde_json::to_writer(&mut *self.out, &line)?;
                self.out.write_all(b"\n")?;
            }
            EpisodeFormat::Csv => {
                let mut ryu = ryu::Buffer::new();
                let shares: Vec<String> = points
                    .iter()
                    .map(|s| format!("{}:{}", s.point, crate::detect::fmt_num(s.share)))
                    .collect();
                let line = format!(
                    "{device_name},{},{},{},{start},{},{},{},{},{}\n",
                    rule.alarm,
                    rule.point.unwrap_or(""),
                    ep.kind.as_str(),
                    end.as_deref().unwrap_or(""),
                    ep.since_ms,
                    end_ms.map(|e| e.to_string()).unwrap_or_default(),
                    ryu.format_finite(peak),
                    shares.join(";"),
                );
                self.out.write_all(line.as_bytes())?;
            }
        }
        self.written += 1;
        Ok(())
    }
}
