//! The feeder: reads the outbox ahead of the MQTT session and renders rows to wire messages,
//! so that the session's loop only hands finished messages to the client.
//!
//! Why a task of its own: a store round trip waits behind the store thread's current group (an
//! ack commit, say), and rendering a stored batch to JSON costs more than publishing it. Done
//! inline, both stalled the event loop with the in-flight window half empty; a replay ran at
//! the store's latency instead of the broker's. Here the next batch is fetched and rendered
//! while the session publishes the previous one, on the other worker thread when there is one.
//!
//! One feeder serves one broker connection and is dropped with it (aborting the task), so
//! nothing fetched for a dead connection is ever handed to a live one; the next connection
//! starts a new feeder with fresh cursors.
//!
//! Invariants:
//! - messages leave in one order per connection: the backlog (rows up to the watermark taken
//!   when the feeder starts) oldest first, live rows (above it) oldest first, interleaved by
//!   [`interleave`] with `backfill_per_live` backlog rows per live row;
//! - every row is sent at most once per connection; a row is never skipped, except an
//!   unreadable one, which is deleted and counted (as before this feeder existed);
//! - at most three batches of [`BATCH`] rows are held (one being read, one in the channel,
//!   one in the session), so memory stays bounded however large the backlog.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use tracing::error;

use super::inflight::RowId;
use super::{MqttStats, Outbox, OutboxItem, Rendered};
use crate::model::Timestamp;

/// Rows read from the outbox per store round trip.
pub(super) const BATCH: usize = 128;

/// Wait before reading again after the outbox could not be read.
const RETRY: Duration = Duration::from_secs(1);

/// One stored row rendered for the wire.
#[derive(Debug)]
pub(super) struct Ready {
    /// The outbox row, deleted on this message's PUBACK.
    pub(super) row: RowId,
    /// Full topic, prefix included.
    pub(super) topic: String,
    /// Wire bytes.
    pub(super) payload: Vec<u8>,
    /// Publish with the retain flag.
    pub(super) retain: bool,
}

/// Where the feeder stands within one connection.
#[derive(Debug)]
struct Cursors {
    /// Rows up to here existed when the feeder started: the backlog.
    watermark: Option<RowId>,
    /// Last backlog row read.
    backlog: Option<RowId>,
    /// Last live row read.
    live: Option<RowId>,
}

/// What the feeder needs besides the outbox.
pub(super) struct FeedPlan {
    /// Topic prefix, without the trailing `/`.
    pub(super) prefix: String,
    /// Backlog rows per live row.
    pub(super) backfill_per_live: usize,
    /// Rows created before this are replays, marked `"backfill":true`.
    pub(super) backfill_before: Timestamp,
}

/// A running feeder; dropping it stops the task.
pub(super) struct Feed {
    /// Rendered batches, in hand-over order.
    rx: mpsc::Receiver<Vec<Ready>>,
    task: tokio::task::JoinHandle<()>,
    /// No more batches are taken: the task ended on its own (it panicked; reported once), or
    /// the session stopped taking them.
    ended: bool,
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Feed {
    /// Starts a feeder for a connection that just came up; `wake` is notified when rows are
    /// added.
    pub(super) fn start<O: Outbox>(
        outbox: Arc<O>,
        wake: Arc<Notify>,
        stats: Arc<MqttStats>,
        plan: FeedPlan,
    ) -> Self {
        // One batch waits here while the next is read: enough to hide a store round trip.
        let (tx, rx) = mpsc::channel(1);
        #[expect(
            clippy::disallowed_methods,
            reason = "the feeder is owned by its session, which aborts it on drop"
        )]
        let task = tokio::spawn(run(outbox, wake, stats, plan, tx));
        Self {
            rx,
            task,
            ended: false,
        }
    }

    /// Takes no more batches from this feeder.
    pub(super) fn stop(&mut self) {
        self.ended = true;
        self.task.abort();
    }

    /// The next batch; `None` once if the task ended, after which this never resolves.
    pub(super) async fn next(&mut self) -> Option<Vec<Ready>> {
        if self.ended {
            return std::future::pending().await;
        }
        let batch = self.rx.recv().await;
        self.ended = batch.is_none();
        batch
    }
}

async fn run<O: Outbox>(
    outbox: Arc<O>,
    wake: Arc<Notify>,
    stats: Arc<MqttStats>,
    plan: FeedPlan,
    tx: mpsc::Sender<Vec<Ready>>,
) {
    let watermark = match outbox.newest().await {
        Ok(w) => w,
        Err(err) => {
            // Everything is then read as live: oldest first, none left out, none interleaved.
            error!(error = %err, "Cannot read the outbox's newest row; sending it all as live.");
            None
        }
    };
    let mut c = Cursors {
        watermark,
        backlog: None,
        live: watermark,
    };
    loop {
        let (batch, more) = match next_batch(&*outbox, &stats, &plan, &mut c).await {
            Ok(next) => next,
            Err(err) => {
                error!(error = %err, "Cannot read the outbox.");
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        if !batch.is_empty() && tx.send(batch).await.is_err() {
            // The connection is gone; its session dropped the receiver.
            return;
        }
        if !more {
            // Caught up. A row stored since the last read left a permit, so this returns at once.
            wake.notified().await;
        }
    }
}

/// Reads and renders the next batch; also returns whether rows may remain beyond it.
async fn next_batch<O: Outbox>(
    outbox: &O,
    stats: &MqttStats,
    plan: &FeedPlan,
    c: &mut Cursors,
) -> Result<(Vec<Ready>, bool), super::OutboxError> {
    let backlog_done = c.watermark.is_none() || c.backlog >= c.watermark;
    let span = c
        .watermark
        .filter(|_| !backlog_done)
        .map(|w| (c.backlog, w));
    let (live, backlog) = outbox.fetch_both(c.live, span, BATCH).await?;
    if backlog.is_empty() && !backlog_done {
        c.backlog = c.watermark;
    }
    if live.is_empty() && backlog.is_empty() {
        return Ok((Vec::new(), false));
    }
    let order = interleave(&live, &backlog, plan.backfill_per_live, BATCH);
    let fetched_all = order.len() == live.len() + backlog.len();
    let mut batch = Vec::with_capacity(order.len());
    let mut unreadable = Vec::new();
    for (item, is_live) in order {
        if is_live {
            c.live = Some(item.id);
        } else {
            c.backlog = Some(item.id);
        }
        let backfill = item.created < plan.backfill_before;
        match outbox.render(item, backfill) {
            Some(Rendered { payload, retain }) => batch.push(Ready {
                row: item.id,
                topic: [plan.prefix.as_str(), "/", item.topic.as_str()].concat(),
                payload,
                retain,
            }),
            None => {
                error!(row = item.id, topic = %item.topic, "Unreadable outbox row dropped.");
                unreadable.push(item.id);
            }
        }
    }
    if !unreadable.is_empty() {
        stats
            .unreadable
            .fetch_add(unreadable.len() as u64, Ordering::Relaxed);
        // A failed delete only means the row is read, and dropped, again after a reconnect.
        let _logged = outbox.ack(unreadable).await;
    }
    // Everything there was fitted, and the backlog was already done before this read.
    let more = !(fetched_all && live.len() < BATCH && backlog_done);
    Ok((batch, more))
}

/// The hand-over order of up to `room` rows: one live row, then up to `ratio` backlog rows, and
/// so on; `true` marks a live row. Each input keeps its own order. Pure.
pub(super) fn interleave<'a>(
    live: &'a [OutboxItem],
    backlog: &'a [OutboxItem],
    ratio: usize,
    room: usize,
) -> Vec<(&'a OutboxItem, bool)> {
    let ratio = ratio.max(1);
    let (mut l, mut b) = (live.iter().peekable(), backlog.iter().peekable());
    let mut order = Vec::with_capacity(room.min(live.len() + backlog.len()));
    while order.len() < room && (l.peek().is_some() || b.peek().is_some()) {
        if let Some(item) = l.next() {
            order.push((item, true));
        }
        for _ in 0..ratio {
            if order.len() >= room {
                break;
            }
            match b.next() {
                Some(item) => order.push((item, false)),
                None => break,
            }
        }
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(ids: std::ops::RangeInclusive<RowId>) -> Vec<OutboxItem> {
        ids.map(|id| OutboxItem {
            id,
            topic: "telemetry/d".into(),
            created: Timestamp(id),
            payload: Vec::new(),
        })
        .collect()
    }

    fn ids(order: &[(&OutboxItem, bool)]) -> Vec<(RowId, bool)> {
        order.iter().map(|(i, live)| (i.id, *live)).collect()
    }

    #[test]
    fn one_live_row_goes_before_each_run_of_backlog_rows() {
        let (live, backlog) = (items(100..=102), items(1..=7));
        let order = interleave(&live, &backlog, 3, 100);
        assert_eq!(
            ids(&order),
            [
                (100, true),
                (1, false),
                (2, false),
                (3, false),
                (101, true),
                (4, false),
                (5, false),
                (6, false),
                (102, true),
                (7, false),
            ]
        );
    }

    #[test]
    fn room_bounds_the_order_and_either_side_may_be_empty() {
        let (live, backlog) = (items(100..=109), items(1..=9));
        assert_eq!(interleave(&live, &backlog, 4, 3).len(), 3);
        let only_live = interleave(&live, &[], 4, 5);
        assert_eq!(
            ids(&only_live),
            [
                (100, true),
                (101, true),
                (102, true),
                (103, true),
                (104, true)
            ]
        );
        let only_backlog = interleave(&[], &backlog, 4, 2);
        assert_eq!(ids(&only_backlog), [(1, false), (2, false)]);
        assert!(interleave(&[], &[], 4, 10).is_empty());
    }
}
