//! Sparkplug DCMD and NCMD metric writes, handed to the core (issue 17, slice 5).
//!
//! Each metric of a command for this node ([`command::writes`]) goes to the core as one
//! `write` [`Downlink`] of this sink, its payload a [`SparkplugWrite`] in JSON. The core knows
//! the sink speaks Sparkplug (there is no signature to check), takes the write only when
//! `[mqtt.sparkplug] writes = true`, checks it against the point's limits like a signed
//! `write`, audits it with the source `sparkplug:{sink}` and no key, and answers with a DDATA
//! carrying the value read back (through this sink's queue: [`WRITTEN_STREAM`]).
//!
//! A metric that cannot be a write (unknown, null, of no writable shape), a payload that is
//! not Sparkplug and a retained command still go to the core, refused, so that the audit trail
//! holds every command. A full queue drops the command into [`DroppedCommands`], audited like
//! the JSON sink's.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use tokio::sync::mpsc;
use tracing::warn;

use crate::model::Value;
use crate::runtime::log_limit::{REPEAT_WINDOW, RepeatLimit, peer_text};
use crate::sink::mqtt::{Downlink, DroppedCommand, DroppedCommands};
use crate::sparkplug::EdgeNode;
use crate::sparkplug::command::{self, MetricWrite, NotAWrite};

/// The outbox stream (below the sink's queue) of a write's answer: a one-point poll the sink
/// sends as DDATA whether or not the value changed.
pub const WRITTEN_STREAM: &str = "sparkplug-written";

/// One metric of a Sparkplug command as the core takes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SparkplugWrite {
    /// `DCMD` or `NCMD`.
    pub via: String,
    /// The metric as the command named it (its name, or `alias N`).
    pub metric: String,
    /// The device it names, when known.
    #[serde(default)]
    pub device: Option<String>,
    /// The point it names, when known.
    #[serde(default)]
    pub point: Option<String>,
    /// The value to write, as JSON (a number, true/false or text).
    #[serde(default)]
    pub value: Option<Json>,
    /// Why it cannot be written, when the sink already knows.
    #[serde(default)]
    pub refused: Option<String>,
}

impl SparkplugWrite {
    fn wanted(via: &str, w: &MetricWrite) -> Self {
        Self {
            via: via.to_owned(),
            metric: format!("{}/{}", w.device, w.point),
            device: Some(w.device.to_string()),
            point: Some(w.point.to_string()),
            value: Some(json_of(&w.value)),
            refused: None,
        }
    }

    fn refused(via: &str, metric: String, why: String) -> Self {
        Self {
            via: via.to_owned(),
            metric,
            device: None,
            point: None,
            value: None,
            refused: Some(why),
        }
    }
}

/// `value` as JSON for the core.
fn json_of(value: &Value) -> Json {
    match value {
        Value::F64(v) => serde_json::Number::from_f64(*v).map_or(Json::Null, Json::Number),
        Value::I64(v) => Json::from(*v),
        Value::Bool(b) => Json::Bool(*b),
        Value::Str(s) => Json::String(s.clone()),
    }
}

/// Where the sink hands the writes of Sparkplug commands.
#[derive(Debug)]
pub(super) struct Forward {
    tx: mpsc::Sender<Downlink>,
    dropped: Arc<DroppedCommands>,
    sink: String,
    full: RepeatLimit,
}

impl Forward {
    /// Writes go to `tx` as commands of sink `sink`; those a full queue drops to `dropped`.
    pub(super) fn new(
        tx: mpsc::Sender<Downlink>,
        dropped: Arc<DroppedCommands>,
        sink: String,
    ) -> Self {
        Self {
            tx,
            dropped,
            sink,
            full: RepeatLimit::new(REPEAT_WINDOW),
        }
    }

    /// Hands the writes of `payload` on `topic` to the core; whether the message was a
    /// command for this node (a DCMD, or an NCMD with metrics other than its controls).
    pub(super) fn forward(
        &self,
        node: &EdgeNode,
        topic: &str,
        payload: &[u8],
        retained: bool,
    ) -> bool {
        let Some(found) = command::writes(node, topic, payload) else {
            return false;
        };
        let via = if topic.contains("/DCMD/") {
            "DCMD"
        } else {
            "NCMD"
        };
        let writes: Vec<SparkplugWrite> = match found {
            Err(e) => vec![SparkplugWrite::refused(
                via,
                String::new(),
                format!("the payload is not a Sparkplug B payload ({e})"),
            )],
            Ok(metrics) => metrics
                .into_iter()
                .map(|m| match m {
                    _ if retained => SparkplugWrite::refused(
                        via,
                        String::new(),
                        "it arrived retained, and retained commands are never carried out".into(),
                    ),
                    Ok(w) => SparkplugWrite::wanted(via, &w),
                    Err(NotAWrite { metric, why }) => SparkplugWrite::refused(via, metric, why),
                })
                .collect(),
        };
        for w in &writes {
            let payload = serde_json::to_vec(w).unwrap_or_default();
            let Err(err) = self.tx.try_send(Downlink {
                sink: self.sink.clone(),
                name: "write".to_owned(),
                payload,
                retained: false,
            }) else {
                continue;
            };
            let d = err.into_inner();
            self.dropped.push(DroppedCommand {
                sink: d.sink,
                name: "write".to_owned(),
                bytes: d.payload.len() as u64,
                sha256: crate::store::audit::sha256_hex(&d.payload),
            });
            if let Some(left_out) = self.full.admit("", crate::clock::monotonic()) {
                warn!(topic = %peer_text(topic), left_out,
                    "Command queue full (or the core stopped); Sparkplug write dropped, and \
                     audited (left_out: as many since the last such line).");
            }
        }
        !writes.is_empty()
    }
}
