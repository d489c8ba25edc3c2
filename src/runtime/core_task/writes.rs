//! The core's write path: a `write` (signed, or a Sparkplug metric) checked against the plan,
//! its intent committed before the link is asked, its outcome committed with the answer (the
//! reply, or the Sparkplug DDATA), each in one commit made at once
//! ([`crate::store::StoreHandle::audit_and_send`]).

use tracing::error;

use super::{Core, Draft, DraftBody};
use crate::config::daemon::Format;
use crate::model::{SampleBatch, Timestamp};
use crate::runtime::command_auth::{self, Audited};
use crate::runtime::commands;
use crate::runtime::remote_write::{self, Finished, Started};
use crate::sink::mqtt::Downlink;

impl Core {
    /// Checks a signed, parsed `write` against the plan and the room for it: the value to
    /// send, or the reply refusing it (with its refusal kind) and nothing written.
    pub(super) fn admit_write(
        &self,
        started: &Started,
        value: &serde_json::Value,
    ) -> Result<crate::model::Value, (Vec<u8>, Option<&'static str>)> {
        let value = remote_write::value_of(value).map_err(|why| {
            let reply = commands::error_reply(&started.id, &format!("refused `write`: {why}"));
            (
                command_auth::mark_refused(reply, "wrong_kind"),
                Some("wrong_kind"),
            )
        })?;
        let value = remote_write::check(&self.plan, &started.device, &started.point, &value)
            .map_err(|err| remote_write::refused_or_failed(&started.id, &err))?;
        if !self.writes.has_room() {
            let reply = commands::error_reply(
                &started.id,
                &format!(
                    "refused `write`: {}/{}: {} writes are waiting for their links already; \
                     nothing written, send it again later",
                    started.device,
                    started.point,
                    remote_write::MAX_IN_FLIGHT
                ),
            );
            return Err((command_auth::mark_refused(reply, "busy"), Some("busy")));
        }
        Ok(value)
    }

    /// Audits a write's intent, and only once that row is committed hands it to its link.
    pub(super) async fn start_write(
        &mut self,
        started: Started,
        value: crate::model::Value,
        seen: Option<crate::store::SeenId>,
        now: Timestamp,
    ) {
        let intent = remote_write::intent(&started, &value);
        let audited = Audited {
            now_ms: now.0,
            source: started.source(),
            name: "write",
            key: started.key.as_deref(),
            refused: None,
            outcome: Some("intent"),
            payload: &started.payload,
            reply: &intent,
        };
        // Nothing else goes in the intent's commit: the link waits for it alone.
        if self.audit_now(&audited, seen, Vec::new(), now).await {
            self.writes.start(started, value);
        } else {
            // Without its intent row a crash could hide the write: it is not sent.
            let reply = commands::error_reply(
                &started.id,
                "refused `write`: the gateway cannot append to its audit trail; nothing written",
            );
            let mut answer = Draft::wire(
                "cmd/write/reply".into(),
                "cmd/write".into(),
                &command_auth::mark_refused(reply, "unavailable"),
                false,
            );
            answer.only = Some(started.sink);
            // A Sparkplug host gets no reply: nothing was written, so no DDATA.
            if !started.sparkplug {
                self.store_all(vec![answer], &[], now).await;
            }
        }
    }

    /// A metric of a Sparkplug DCMD or NCMD (`on`: `[mqtt.sparkplug] writes = true`):
    /// checked, audited and carried out like a signed `write`, or refused and audited with
    /// nothing written. There is no reply topic; the answer is the DDATA of the value read
    /// back.
    pub(super) async fn sparkplug_write(&mut self, d: &Downlink, on: bool) {
        use crate::sink::sparkplug::commands::SparkplugWrite;
        let now = self.clock.now();
        let parsed: Result<SparkplugWrite, _> = serde_json::from_slice(&d.payload);
        let label = parsed.as_ref().map_or_else(
            |_| "?".to_owned(),
            |w| {
                format!(
                    "{} {}",
                    w.via,
                    crate::runtime::log_limit::peer_text(&w.metric)
                )
            },
        );
        let id = serde_json::Value::String(label.clone());
        let refuse = |kind: &'static str, why: &str| {
            let reply = commands::error_reply(&id, &format!("refused Sparkplug write: {why}"));
            (command_auth::mark_refused(reply, kind), Some(kind))
        };
        let (reply, refused) = match parsed {
            Err(e) => refuse("malformed", &e.to_string()),
            Ok(_) if !on => refuse(
                "disabled",
                "Sparkplug writes are off on this gateway (they carry no signature); \
                 `[mqtt.sparkplug] writes = true` turns them on",
            ),
            Ok(SparkplugWrite {
                refused: Some(why), ..
            }) => refuse("malformed", &format!("{label}: {why}")),
            Ok(SparkplugWrite {
                device: Some(device),
                point: Some(point),
                value: Some(value),
                ..
            }) => {
                let started = Started {
                    id: id.clone(),
                    sink: d.sink.clone(),
                    key: None,
                    payload: d.payload.clone(),
                    device,
                    point,
                    received: crate::clock::monotonic(),
                    sparkplug: true,
                };
                match self.admit_write(&started, &value) {
                    Ok(value) => {
                        self.start_write(started, value, None, now).await;
                        return;
                    }
                    Err(refusal) => refusal,
                }
            }
            Ok(_) => refuse("malformed", &format!("{label}: no device, point or value")),
        };
        commands::log_refused("sparkplug write", &reply);
        let audited = Audited {
            now_ms: now.0,
            source: format!("sparkplug:{}", d.sink),
            name: "write",
            key: None,
            refused,
            outcome: None,
            payload: &d.payload,
            reply: &reply,
        };
        let mut drafts = Vec::new();
        self.audit(&audited, None, &mut drafts).await;
        self.store_all(drafts, &[], now).await;
    }

    /// The answer to a Sparkplug write that landed: a one-point poll of the value read back
    /// (or written, when the point is not verified) for the sink's queue, which sends it as
    /// DDATA whether or not it changed.
    fn sparkplug_answer(&self, finished: &Finished, now: Timestamp) -> Option<Draft> {
        use crate::model::{PointSample, Quality};
        let Some(Ok(w)) = &finished.outcome else {
            return None;
        };
        let started = &finished.started;
        let device = self
            .plan
            .devices
            .iter()
            .find(|d| d.name.as_str() == started.device)?;
        let point = device
            .points
            .iter()
            .find(|p| p.name.as_str() == started.point)?;
        let value = w.verified.clone().unwrap_or_else(|| w.written.clone());
        let batch = SampleBatch {
            device: device.name.clone(),
            tick: now,
            samples: vec![PointSample {
                point: point.name.clone(),
                ts: now,
                value: Some(value),
                quality: Quality::Good,
            }],
        };
        Some(Draft {
            stream: format!(
                "{}/{}",
                crate::sink::sparkplug::commands::WRITTEN_STREAM,
                device.name
            ),
            key: device.name.to_string(),
            body: DraftBody::Batch(batch),
            only: Some(started.sink.clone()),
            format: Format::SparkplugB,
        })
    }

    /// Appends a write-path row to the audit trail and stores its copies on `{prefix}/audit`
    /// and `also` (the reply) with it, in one commit made without waiting out the store's
    /// commit window: the operator waits for each step. Whether it was committed.
    async fn audit_now(
        &mut self,
        audited: &Audited<'_>,
        seen: Option<crate::store::SeenId>,
        also: Vec<Draft>,
        now: Timestamp,
    ) -> bool {
        let entry = audited.entry();
        let oldest = entry.ts_ms - self.auth.gate.window_ms();
        let command = crate::runtime::log_limit::peer_text(&entry.command);
        // The store fills in the copies' payload: the row with its hash is made there.
        let copies = vec![Draft::wire("audit".into(), "audit".into(), &[], false)];
        let copies = self.fan_out(copies, now).await;
        let also = self.fan_out(also, now).await;
        let delivery = crate::store::AuditDelivery {
            copies,
            also,
            urgent: true,
        };
        match self
            .store
            .audit_and_send(entry, seen, oldest, delivery)
            .await
        {
            Ok(_) => {
                for sink in &self.sinks {
                    sink.wake.notify_one();
                }
                true
            }
            Err(err) => {
                error!(error = %err, command = %command, "Cannot append a command to the audit trail.");
                false
            }
        }
    }

    /// Audits a finished write's outcome and sends its reply where the command came from.
    pub(super) async fn finish_write(&mut self, finished: Finished) {
        let taken = crate::clock::monotonic();
        let now = self.clock.now();
        let (reply, _refused) = remote_write::reply(&finished);
        let (outcome, reason) = remote_write::verdict(finished.outcome.as_ref());
        if outcome != "done" {
            commands::log_refused("write", &reply);
        }
        let started = &finished.started;
        let answer = || {
            let mut answer =
                Draft::wire("cmd/write/reply".into(), "cmd/write".into(), &reply, false);
            answer.only = Some(started.sink.clone());
            answer
        };
        let audited = Audited {
            now_ms: now.0,
            source: started.source(),
            name: "write",
            key: started.key.as_deref(),
            refused: reason,
            outcome: Some(outcome),
            payload: &started.payload,
            reply: &reply,
        };
        // The outcome row and the reply share one commit: a reply is never stored without
        // the row that records it. Without the row the operator still gets the reply.
        let also: Vec<Draft> = if started.sparkplug {
            self.sparkplug_answer(&finished, now).into_iter().collect()
        } else {
            vec![answer()]
        };
        if !self.audit_now(&audited, None, also, now).await {
            let also: Vec<Draft> = if started.sparkplug {
                self.sparkplug_answer(&finished, now).into_iter().collect()
            } else {
                vec![answer()]
            };
            self.store_all(also, &[], now).await;
        }
        let stored = crate::clock::monotonic();
        remote_write::log_timing(&finished, taken, stored, stored);
    }
}
