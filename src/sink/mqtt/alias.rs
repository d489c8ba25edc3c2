//! MQTT 5 topic aliases for the sink's own publishes (MQTT 5 §3.3.2.3.4): a topic published
//! often goes out once with its name and an alias, then with the alias alone, which saves its
//! name on every later PUBLISH (45 of a bench telemetry message's 56 bytes of MQTT,
//! docs/payload.md "Bytes on the wire"). The payload is not touched, so every profile gains.
//!
//! Invariants:
//! - an alias lives on one connection: [`TopicAliases::reset`] at every ConnAck forgets them
//!   all and takes the broker's Topic Alias Maximum from that CONNACK (absent means 0, no
//!   aliases), so an alias is never used on a connection that was not told its topic;
//! - an alias is set (topic and alias together) before it is used alone, in publish order: a
//!   `Set` counts as told once handed to the client ([`TopicAliases::sent`]), since the client
//!   writes requests in order and drops them all with the connection, and a `Set` the client
//!   refused is undone ([`TopicAliases::refused`]) and set again with the next publish;
//! - a topic gets an alias on its second publish within a connection, while aliases remain,
//!   so that one-off topics (status, schema) do not use up the broker's few (mosquitto grants
//!   10 by default); aliases are never reassigned, so a consumer's view never changes.

use std::collections::{HashMap, HashSet};

/// How one PUBLISH names its topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Alias {
    /// The topic alone (MQTT 3.1.1, or no alias for this topic).
    None,
    /// The topic and this alias, which sets it for the connection.
    Set(u16),
    /// This alias alone, set earlier on the same connection.
    Use(u16),
}

/// The aliases of one connection.
#[derive(Debug, Default)]
pub(crate) struct TopicAliases {
    /// The broker's Topic Alias Maximum on this connection: aliases 1..=max may be used.
    max: u16,
    /// Topics seen once on this connection, not yet given an alias.
    seen: HashSet<String>,
    /// Topics with an alias, and whether the broker was told it (a `Set` was taken).
    assigned: HashMap<String, (u16, bool)>,
}

impl TopicAliases {
    /// Forgets every alias: a new connection, whose broker grants `max` of them.
    pub(crate) fn reset(&mut self, max: u16) {
        self.max = max;
        self.seen.clear();
        self.assigned.clear();
    }

    /// How the next publish on `topic` names it. Call [`Self::sent`] once the client took it.
    pub(crate) fn for_topic(&mut self, topic: &str) -> Alias {
        if self.max == 0 {
            return Alias::None;
        }
        if let Some(&(alias, told)) = self.assigned.get(topic) {
            return if told {
                Alias::Use(alias)
            } else {
                Alias::Set(alias)
            };
        }
        let next = self.assigned.len() + 1;
        let Ok(alias) = u16::try_from(next) else {
            return Alias::None;
        };
        if alias > self.max {
            return Alias::None;
        }
        if !self.seen.remove(topic) {
            // Bounded by the topics of one connection, and emptied once aliases run out.
            self.seen.insert(topic.to_owned());
            return Alias::None;
        }
        self.assigned.insert(topic.to_owned(), (alias, false));
        if alias == self.max {
            self.seen.clear();
        }
        Alias::Set(alias)
    }

    /// A publish on `topic` named as `alias` is handed to the client: a `Set` is now known.
    pub(crate) fn sent(&mut self, topic: &str, alias: Alias) {
        if let Alias::Set(a) = alias
            && let Some(entry) = self.assigned.get_mut(topic)
            && entry.0 == a
        {
            entry.1 = true;
        }
    }

    /// The client refused the publish on `topic` named as `alias`: a `Set` was not told.
    pub(crate) fn refused(&mut self, topic: &str, alias: Alias) {
        if let Alias::Set(a) = alias
            && let Some(entry) = self.assigned.get_mut(topic)
            && entry.0 == a
        {
            entry.1 = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Publishes `topic` as a sink would: asks, and records what the client took.
    fn publish(a: &mut TopicAliases, topic: &str) -> Alias {
        let alias = a.for_topic(topic);
        a.sent(topic, alias);
        alias
    }

    #[test]
    fn a_topic_is_aliased_from_its_second_publish_and_set_before_it_is_used_alone() {
        let mut a = TopicAliases::default();
        a.reset(10);
        assert_eq!(publish(&mut a, "p/telemetry/m1"), Alias::None);
        assert_eq!(publish(&mut a, "p/telemetry/m1"), Alias::Set(1));
        assert_eq!(publish(&mut a, "p/telemetry/m1"), Alias::Use(1));
        assert_eq!(publish(&mut a, "p/telemetry/m2"), Alias::None);
        assert_eq!(publish(&mut a, "p/telemetry/m2"), Alias::Set(2));
        assert_eq!(publish(&mut a, "p/telemetry/m1"), Alias::Use(1));
        assert_eq!(publish(&mut a, "p/telemetry/m2"), Alias::Use(2));
    }

    #[test]
    fn a_set_the_client_refused_is_set_again_and_never_used_alone() {
        let mut a = TopicAliases::default();
        a.reset(10);
        publish(&mut a, "t");
        let set = a.for_topic("t");
        assert_eq!(set, Alias::Set(1));
        a.sent("t", set);
        a.refused("t", set);
        assert_eq!(a.for_topic("t"), Alias::Set(1), "refused: set again");
        a.sent("t", Alias::Set(1));
        assert_eq!(a.for_topic("t"), Alias::Use(1));
        // A refused use changes nothing.
        a.refused("t", Alias::Use(1));
        assert_eq!(a.for_topic("t"), Alias::Use(1));
    }

    #[test]
    fn a_new_connection_forgets_every_alias_and_no_grant_means_none() {
        let mut a = TopicAliases::default();
        a.reset(10);
        for _ in 0..3 {
            publish(&mut a, "t");
        }
        a.reset(10);
        assert_eq!(
            publish(&mut a, "t"),
            Alias::None,
            "the new broker session knows none"
        );
        assert_eq!(publish(&mut a, "t"), Alias::Set(1));
        a.reset(0);
        for _ in 0..3 {
            assert_eq!(publish(&mut a, "t"), Alias::None);
        }
        // MQTT 3.1.1 never resets: it has none from the start.
        let mut v311 = TopicAliases::default();
        assert_eq!(publish(&mut v311, "t"), Alias::None);
        assert_eq!(publish(&mut v311, "t"), Alias::None);
    }

    #[test]
    fn aliases_stop_at_the_brokers_maximum_and_are_never_reassigned() {
        let mut a = TopicAliases::default();
        a.reset(2);
        let topics = ["a", "b", "c", "d"];
        let mut last = Vec::new();
        for _ in 0..4 {
            last = topics.iter().map(|t| publish(&mut a, t)).collect();
        }
        assert_eq!(
            last,
            [Alias::Use(1), Alias::Use(2), Alias::None, Alias::None]
        );
        // Topics past the maximum are not remembered either.
        assert!(a.seen.is_empty(), "{:?}", a.seen);
    }
}
