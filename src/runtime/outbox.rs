//! The outbox as the sinks see it: one queue of the state file, read in id order and rendered
//! when sent (JSON v1 or its compact v2, or the energy platform's body).

use std::sync::Arc;

use crate::clock::Clock;
use crate::encode::{json_compact, json_v1};
use crate::model::Timestamp;
use crate::platform::Versions;
use crate::platform::record::local_datetime;
use crate::sink::mqtt::inflight::RowId;
use crate::sink::mqtt::schema::HeldSchemas;
use crate::sink::mqtt::{Outbox, OutboxError, OutboxItem, Rendered};
use crate::store::{DEFAULT_QUEUE, OutboxRow, QueueId, Span, StoreHandle, record};

/// One outbox queue as an MQTT session sees it: stored rows, rendered when sent to JSON v1,
/// or to the platform's body for an `energy_platform` sink.
#[derive(Debug, Clone)]
pub struct StoreOutbox {
    /// The state file.
    pub store: StoreHandle,
    /// The sink's queue in it.
    pub queue: QueueId,
    /// Set for a `json_compact` sink: telemetry goes out as payload version 2.
    pub compact: bool,
    /// For a `json_compact` sink: the schemas its consumers hold, against which telemetry
    /// is written positionally.
    pub schemas: HeldSchemas,
    /// Set for an `energy_platform` sink: its rows are platform records, sent as the
    /// platform's JSON body rather than the JSON profile.
    pub platform: Option<PlatformRender>,
}

/// What an `energy_platform` MQTT sink adds to a stored record when it sends it.
#[derive(Clone)]
pub struct PlatformRender {
    /// `regVersion` and `dicVersion` from `[energy_platform]`.
    pub versions: Versions,
    /// The zone of `uploadDate`.
    pub timezone: chrono_tz::Tz,
    /// The clock `uploadDate` is read from.
    pub clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for PlatformRender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlatformRender")
            .field("versions", &self.versions)
            .field("timezone", &self.timezone)
            .finish_non_exhaustive()
    }
}

impl StoreOutbox {
    /// The default queue (`mqtt`) in the JSON profile: what a single-sink gateway always used.
    pub fn default_queue(store: StoreHandle) -> Self {
        Self {
            store,
            queue: DEFAULT_QUEUE,
            compact: false,
            schemas: HeldSchemas::default(),
            platform: None,
        }
    }
}

impl Outbox for StoreOutbox {
    async fn fetch(
        &self,
        after: Option<RowId>,
        limit: usize,
    ) -> Result<Vec<OutboxItem>, OutboxError> {
        let rows = self
            .store
            .fetch_in(self.queue, after, limit)
            .await
            .map_err(|e| OutboxError(e.to_string()))?;
        Ok(rows.into_iter().map(item).collect())
    }

    async fn fetch_both(
        &self,
        live: Option<RowId>,
        backlog: Option<(Option<RowId>, RowId)>,
        limit: usize,
    ) -> Result<(Vec<OutboxItem>, Vec<OutboxItem>), OutboxError> {
        let mut spans = vec![Span {
            queue: self.queue,
            after: live,
            until: None,
            limit,
        }];
        if let Some((after, until)) = backlog {
            spans.push(Span {
                queue: self.queue,
                after,
                until: Some(until),
                limit,
            });
        }
        let mut rows = self
            .store
            .fetch_spans(spans)
            .await
            .map_err(|e| OutboxError(e.to_string()))?
            .into_iter()
            .map(|span| span.into_iter().map(item).collect::<Vec<_>>());
        let live = rows.next().unwrap_or_default();
        let backlog = rows.next().unwrap_or_default();
        Ok((live, backlog))
    }

    async fn ack(&self, rows: Vec<RowId>) -> Result<(), OutboxError> {
        if self.compact {
            self.schemas.acked(&rows);
        }
        self.store
            .ack_in(self.queue, rows)
            .await
            .map(|_| ())
            .map_err(|e| OutboxError(e.to_string()))
    }

    async fn newest(&self) -> Result<Option<RowId>, OutboxError> {
        self.store
            .newest_in(self.queue)
            .await
            .map_err(|e| OutboxError(e.to_string()))
    }

    fn render(&self, item: &OutboxItem, backfill: bool) -> Option<Rendered> {
        if let Some(p) = &self.platform {
            // The platform de-duplicates by the record's key, so a resend needs no flag.
            let record = crate::store::record::platform_record(&item.payload).ok()?;
            let uploaded = local_datetime(p.timezone, p.clock.now().0)?;
            return Some(Rendered {
                payload: serde_json::to_vec(&record.payload(&p.versions, uploaded)).ok()?,
                retain: false,
            });
        }
        if let Some((wire, retain)) = record::decode_wire(&item.payload) {
            if self.compact && retain {
                self.schemas.sending(item.id, &item.topic, wire);
            }
            return Some(Rendered {
                payload: json_v1::mark_backfill(wire, backfill),
                retain,
            });
        }
        let stored = record::read_batch(&item.payload).ok()?;
        let payload = if self.compact {
            let layout = self.schemas.layout(stored.device);
            json_compact::telemetry_of(
                stored.device,
                stored.tick,
                &stored.samples,
                stored.seq,
                backfill,
                layout.as_deref(),
            )
        } else {
            json_v1::telemetry_of(
                stored.device,
                stored.tick,
                &stored.samples,
                stored.seq,
                backfill,
            )
        };
        Some(Rendered {
            payload,
            retain: false,
        })
    }
}

fn item(r: OutboxRow) -> OutboxItem {
    OutboxItem {
        id: r.id,
        topic: r.stream,
        created: Timestamp(r.created_ms),
        payload: r.payload,
    }
}
