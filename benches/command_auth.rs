//! Cost of admitting one signed downlink command (issue 17): envelope parsing, the signature
//! check (Ed25519 or HMAC-SHA256), the `ts` window and the replay set, as the core runs it
//! for every command.
//!
//! Run with `cargo bench --bench command_auth`; `BENCH_SECONDS_PER_CASE` (default 2) sets the
//! time spent on each case.
#![allow(
    clippy::disallowed_methods,
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    reason = "benchmark binary"
)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use plantwatch::auth::envelope::{signed_bytes, wrap};
use plantwatch::auth::keys::{Keyring, SigningSecret, key_pair_from_seed};
use plantwatch::auth::{Gate, Role};

const PREFIX: &str = "plantwatch/plant/gw1";
const NOW: i64 = 1_765_000_000_000;

fn seconds_per_case() -> Duration {
    let s = std::env::var("BENCH_SECONDS_PER_CASE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2.0);
    Duration::from_secs_f64(s)
}

/// Signs `n` distinct `ack` commands (distinct ids, so none is a replay).
fn commands(secret: &SigningSecret, n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let cmd = format!(r#"{{"id":"c{i}","ts":{NOW},"alarm":"pump-1/motor-hot"}}"#);
            let sig = secret.sign(&signed_bytes(PREFIX, "ack", cmd.as_bytes()));
            wrap("ops1", &sig, &cmd).into_bytes()
        })
        .collect()
}

fn case(label: &str, secret: &SigningSecret) {
    let budget = seconds_per_case();
    let payloads = commands(secret, 20_000);
    let keys = Keyring::from_keys(vec![secret.to_key("ops1", Role::Operate)]);
    let mut admitted = 0u64;
    let start = Instant::now();
    // A fresh gate per pass: the ids are unique within one pass only.
    while start.elapsed() < budget {
        let mut gate = Gate::new(Ok(keys.clone()), 60_000);
        for p in &payloads {
            if gate.admit(PREFIX, "ack", black_box(p), NOW).is_ok() {
                admitted += 1;
            }
            if start.elapsed() >= budget {
                break;
            }
        }
    }
    let elapsed = start.elapsed();
    #[expect(clippy::cast_precision_loss, reason = "a count shown as a rate")]
    let per = elapsed.as_secs_f64() / admitted as f64;
    println!(
        "{label:<12} {admitted:>9} commands admitted in {:.2} s: {:>7.1} µs/command, {:>9.0} commands/s",
        elapsed.as_secs_f64(),
        per * 1e6,
        1.0 / per
    );
}

fn main() {
    let ed25519 = SigningSecret::parse(&key_pair_from_seed(&[7; 32]).0, false).unwrap();
    let hmac = SigningSecret::parse(&"s".repeat(48), true).unwrap();
    case("ed25519", &ed25519);
    case("hmac-sha256", &hmac);
}
