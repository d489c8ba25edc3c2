//! When the session subscribes to downlink commands, as a pure state machine.
//!
//! Commands are the one thing the broker pushes at us, and so the one way a peer can hurt
//! delivery: a message larger than the client's packet limit drops the connection, and a
//! retained one comes back after every resubscribe, which made a reconnect loop that held
//! up telemetry. So:
//! - the command subscription waits until the connection has delivered something (the first
//!   PUBACK), so that the outbox is flowing before any downlink can arrive;
//! - after a connection dropped for an oversized packet, no connection subscribes until a
//!   cool-down has passed: one reconnect per cool-down at most, never a loop. The cool-down
//!   doubles while the cause persists (a retained message stays until someone clears it),
//!   up to [`MAX_COOLDOWN`], and starts over once a subscription survives a whole cool-down.

use std::time::Duration;

use tokio::time::Instant;

/// The first cool-down after an oversized packet.
pub const FIRST_COOLDOWN: Duration = Duration::from_secs(5 * 60);

/// The longest cool-down: commands come back within the hour once the broker is cleaned up.
pub const MAX_COOLDOWN: Duration = Duration::from_secs(60 * 60);

/// Whether and when this connection subscribes to commands.
#[derive(Debug)]
pub struct CommandGate {
    enabled: bool,
    /// This connection has delivered a message: the outbox session is up.
    delivering: bool,
    subscribed: bool,
    /// No subscription before this instant.
    paused_until: Option<Instant>,
    /// The cool-down the next oversized packet costs.
    next_cooldown: Duration,
    /// When the current subscription was made, to tell that it survived.
    subscribed_at: Option<Instant>,
}

/// What the caller should do after an oversized packet dropped the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Paused {
    /// How long commands stay off.
    pub cooldown: Duration,
    /// True the first time: the caller logs then, and counts the rest.
    pub first: bool,
}

impl CommandGate {
    /// A gate for a session that takes commands (`enabled`) or not.
    pub fn new(enabled: bool) -> Self {
        Self {
            enabled,
            delivering: false,
            subscribed: false,
            paused_until: None,
            next_cooldown: FIRST_COOLDOWN,
            subscribed_at: None,
        }
    }

    /// A new connection: a clean session has no subscriptions and has delivered nothing yet.
    pub fn on_connected(&mut self) {
        self.delivering = false;
        self.subscribed = false;
        self.subscribed_at = None;
    }

    /// The broker acknowledged a publish on this connection.
    pub fn on_delivered(&mut self) {
        self.delivering = true;
    }

    /// True when the caller should subscribe now (it then calls [`Self::on_subscribed`]).
    pub fn should_subscribe(&self, now: Instant) -> bool {
        self.enabled
            && self.delivering
            && !self.subscribed
            && self.paused_until.is_none_or(|until| now >= until)
    }

    /// The SUBSCRIBE was queued.
    pub fn on_subscribed(&mut self, now: Instant) {
        self.subscribed = true;
        self.subscribed_at = Some(now);
    }

    /// When the pause ends, if commands are paused while this connection is otherwise ready
    /// for them: the caller wakes then to subscribe.
    pub fn resume_at(&self) -> Option<Instant> {
        (self.enabled && self.delivering && !self.subscribed)
            .then_some(self.paused_until)
            .flatten()
    }

    /// The connection dropped for a packet over the limit: commands pause for a cool-down.
    pub fn on_too_large(&mut self, now: Instant) -> Paused {
        // A subscription that lived through a whole cool-down means the cause went away and
        // came back: start the doubling over.
        if self
            .subscribed_at
            .is_some_and(|at| now.duration_since(at) >= self.next_cooldown)
        {
            self.next_cooldown = FIRST_COOLDOWN;
        }
        let first = self.paused_until.is_none();
        let cooldown = self.next_cooldown;
        self.paused_until = Some(now + cooldown);
        self.next_cooldown = (cooldown * 2).min(MAX_COOLDOWN);
        self.subscribed = false;
        self.subscribed_at = None;
        Paused { cooldown, first }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_wait_until_the_connection_has_delivered_something() {
        let now = Instant::now();
        let mut gate = CommandGate::new(true);
        gate.on_connected();
        assert!(!gate.should_subscribe(now), "nothing delivered yet");
        gate.on_delivered();
        assert!(gate.should_subscribe(now));
        gate.on_subscribed(now);
        assert!(!gate.should_subscribe(now), "once per connection");
        gate.on_connected();
        assert!(!gate.should_subscribe(now), "a new connection waits again");
        assert!(!CommandGate::new(false).should_subscribe(now));
    }

    #[test]
    fn an_oversized_packet_pauses_commands_for_a_doubling_cooldown() {
        let t0 = Instant::now();
        let mut gate = CommandGate::new(true);
        gate.on_connected();
        gate.on_delivered();
        gate.on_subscribed(t0);
        let p = gate.on_too_large(t0);
        assert_eq!(
            p,
            Paused {
                cooldown: FIRST_COOLDOWN,
                first: true
            }
        );
        // Reconnected and delivering: still paused until the cool-down ends.
        gate.on_connected();
        gate.on_delivered();
        assert!(!gate.should_subscribe(t0 + FIRST_COOLDOWN / 2));
        assert_eq!(gate.resume_at(), Some(t0 + FIRST_COOLDOWN));
        let t1 = t0 + FIRST_COOLDOWN;
        assert!(gate.should_subscribe(t1));
        gate.on_subscribed(t1);
        // The retained message is still there: the next pause is twice as long.
        let p = gate.on_too_large(t1);
        assert_eq!(
            p,
            Paused {
                cooldown: FIRST_COOLDOWN * 2,
                first: false
            }
        );
        let mut t = t1;
        for _ in 0..10 {
            t += MAX_COOLDOWN;
            gate.on_subscribed(t);
            assert!(gate.on_too_large(t).cooldown <= MAX_COOLDOWN);
        }
        // A subscription that outlives its cool-down starts the doubling over.
        t += MAX_COOLDOWN;
        gate.on_subscribed(t);
        let p = gate.on_too_large(t + MAX_COOLDOWN);
        assert_eq!(p.cooldown, FIRST_COOLDOWN);
    }
}
