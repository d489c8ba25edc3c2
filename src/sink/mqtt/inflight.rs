//! Which outbox rows are inside the MQTT client, and under which packet id.
//!
//! rumqttc's `publish()` only queues and returns no packet id; the event loop later reports
//! `Outgoing::Publish(pkid)` for each queued publish in FIFO order. One task hands publishes to
//! the client in order, so the n-th outgoing publish is the n-th hand-over. A PUBACK names the
//! pkid, which names the row to delete. Pure: no I/O.

use std::collections::{HashMap, VecDeque};

/// An outbox row id.
pub type RowId = i64;

/// What a publish handed to the client stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tracked {
    /// An outbox row, deleted on its PUBACK.
    Row(RowId),
    /// A message outside the outbox (the status birth), acked without effect.
    Untracked,
}

/// The client's outgoing publishes disagree with what we handed over; reconnect to resync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Desync {
    /// An `Outgoing::Publish` arrived with nothing handed over.
    #[error("the client sent a publish (pkid {0}) that was never handed to it")]
    UnexpectedPublish(u16),
    /// A pkid was reused while still awaiting its PUBACK.
    #[error("pkid {0} reused while still in flight")]
    PkidReused(u16),
}

/// Rows handed to the MQTT client and not yet acknowledged.
#[derive(Debug, Default)]
pub struct InFlight {
    awaiting_pkid: VecDeque<Tracked>,
    by_pkid: HashMap<u16, Tracked>,
}

impl InFlight {
    /// A publish for `tracked` was handed to the client.
    pub fn handed_to_client(&mut self, tracked: Tracked) {
        self.awaiting_pkid.push_back(tracked);
    }

    /// The client reports it sent a publish with `pkid` (QoS ≥ 1).
    ///
    /// # Errors
    /// [`Desync`] when nothing was waiting or the pkid is still in flight.
    pub fn on_outgoing_publish(&mut self, pkid: u16) -> Result<(), Desync> {
        let tracked = self
            .awaiting_pkid
            .pop_front()
            .ok_or(Desync::UnexpectedPublish(pkid))?;
        if self.by_pkid.insert(pkid, tracked).is_some() {
            return Err(Desync::PkidReused(pkid));
        }
        Ok(())
    }

    /// A PUBACK arrived: the row it acknowledges, if it was ours.
    pub fn on_puback(&mut self, pkid: u16) -> Option<Tracked> {
        self.by_pkid.remove(&pkid)
    }

    /// Publishes handed over and not yet acknowledged.
    pub fn len(&self) -> usize {
        self.awaiting_pkid.len() + self.by_pkid.len()
    }

    /// Whether nothing is in flight.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// After any disconnect every row we handed over is unsent again (rumqttc may have dropped
    /// it with its clean session); returns them oldest first.
    pub fn on_connection_lost(&mut self) -> Vec<RowId> {
        let mut rows: Vec<RowId> = self
            .awaiting_pkid
            .drain(..)
            .chain(self.by_pkid.drain().map(|(_, t)| t))
            .filter_map(|t| match t {
                Tracked::Row(r) => Some(r),
                Tracked::Untracked => None,
            })
            .collect();
        rows.sort_unstable();
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_puback_names_the_row_handed_over_in_the_same_order() {
        let mut f = InFlight::default();
        f.handed_to_client(Tracked::Row(10));
        f.handed_to_client(Tracked::Untracked);
        f.handed_to_client(Tracked::Row(11));
        f.on_outgoing_publish(1).unwrap();
        f.on_outgoing_publish(2).unwrap();
        f.on_outgoing_publish(3).unwrap();
        assert_eq!(f.on_puback(3), Some(Tracked::Row(11)));
        assert_eq!(f.on_puback(2), Some(Tracked::Untracked));
        assert_eq!(f.on_puback(1), Some(Tracked::Row(10)));
        assert_eq!(f.on_puback(1), None, "a duplicate ack names nothing");
        assert!(f.is_empty());
    }

    #[test]
    fn an_unexpected_publish_is_a_desync() {
        let mut f = InFlight::default();
        assert_eq!(f.on_outgoing_publish(5), Err(Desync::UnexpectedPublish(5)));
    }

    #[test]
    fn a_lost_connection_returns_every_unacked_row_oldest_first() {
        let mut f = InFlight::default();
        for r in [3, 1, 2] {
            f.handed_to_client(Tracked::Row(r));
        }
        f.on_outgoing_publish(7).unwrap();
        assert_eq!(f.on_connection_lost(), vec![1, 2, 3]);
        assert!(f.is_empty());
    }

    #[derive(Debug, Clone)]
    enum Op {
        Hand(bool),
        Sent,
        Ack(usize),
        Lost,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            any::<bool>().prop_map(Op::Hand),
            Just(Op::Sent),
            (0usize..8).prop_map(Op::Ack),
            Just(Op::Lost),
        ]
    }

    proptest! {
        /// Against a model: rows are acked exactly once and every unacked row is returned on loss.
        #[test]
        fn agrees_with_a_queue_and_map_model(ops in prop::collection::vec(op(), 1..200)) {
            let mut f = InFlight::default();
            let mut next_row: RowId = 0;
            let mut next_pkid: u16 = 1;
            let mut model_waiting: VecDeque<Tracked> = VecDeque::new();
            let mut model_sent: Vec<(u16, Tracked)> = Vec::new();
            for op in ops {
                match op {
                    Op::Hand(row) => {
                        let t = if row { next_row += 1; Tracked::Row(next_row) } else { Tracked::Untracked };
                        f.handed_to_client(t);
                        model_waiting.push_back(t);
                    }
                    Op::Sent => {
                        let r = f.on_outgoing_publish(next_pkid);
                        match model_waiting.pop_front() {
                            Some(t) => { prop_assert!(r.is_ok()); model_sent.push((next_pkid, t)); }
                            None => prop_assert_eq!(r, Err(Desync::UnexpectedPublish(next_pkid))),
                        }
                        next_pkid = next_pkid.wrapping_add(1).max(1);
                    }
                    Op::Ack(i) => {
                        if model_sent.is_empty() { continue; }
                        let (pkid, t) = model_sent.remove(i % model_sent.len());
                        prop_assert_eq!(f.on_puback(pkid), Some(t));
                    }
                    Op::Lost => {
                        let mut expected: Vec<RowId> = model_waiting.drain(..).chain(model_sent.drain(..).map(|(_, t)| t))
                            .filter_map(|t| match t { Tracked::Row(r) => Some(r), Tracked::Untracked => None }).collect();
                        expected.sort_unstable();
                        prop_assert_eq!(f.on_connection_lost(), expected);
                    }
                }
                prop_assert_eq!(f.len(), model_waiting.len() + model_sent.len());
            }
        }
    }
}
