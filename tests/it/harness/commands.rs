//! The signed-command harness of the remote-operations tests (`remote_write`, `remote_config`,
//! `command_auth`, `sparkplug_writes`): operator keys on disk and the `[commands]` section
//! naming them, commands signed as an operator's tool signs them, publish-and-await-reply,
//! the simulator serving a plant and what it holds, and the audit trail read back through
//! `plantwatch audit`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use plantwatch::auth::envelope::{signed_bytes, wrap};
use plantwatch::auth::keys::{SigningSecret, key_pair_from_seed};
use plantwatch::decode::{decode, decode_bit};
use plantwatch::model::Value;
use plantwatch::sim::Bind;
use serde_json::Value as Json;

use super::subscriber::{Received, Subscriber};
use super::{Simulator, bin};

/// An operator key of the tests: its id, the seed of its Ed25519 pair, its role.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TestKey {
    /// The key id.
    pub(crate) id: &'static str,
    /// The seed (32 times this byte).
    pub(crate) seed: u8,
    /// `read`, `operate` or `engineer`.
    pub(crate) role: &'static str,
}

/// May operate.
pub(crate) const OPS1: TestKey = TestKey {
    id: "ops1",
    seed: 1,
    role: "operate",
};

/// May only read.
pub(crate) const VIEWER: TestKey = TestKey {
    id: "viewer",
    seed: 2,
    role: "read",
};

/// May push configurations.
pub(crate) const ENG1: TestKey = TestKey {
    id: "eng1",
    seed: 4,
    role: "engineer",
};

/// Writes the public keys of `keys` into `dir` (`{id}.pub`) and returns the `[commands]`
/// section naming them, with `settings` (e.g. `replay_window = "60s"`) on its own lines.
pub(crate) fn commands_section(dir: &Path, keys: &[TestKey], settings: &str) -> String {
    let mut text = format!("[commands]\n{settings}");
    if !settings.is_empty() && !settings.ends_with('\n') {
        text.push('\n');
    }
    for key in keys {
        let (_private, public) = key_pair_from_seed(&[key.seed; 32]);
        let path = dir.join(format!("{}.pub", key.id));
        std::fs::write(&path, format!("{public}\n")).unwrap();
        text.push_str(&format!(
            "[[commands.keys]]\nid = \"{}\"\nrole = \"{}\"\npublic_key_file = \"{}\"\n",
            key.id,
            key.role,
            path.display()
        ));
    }
    text
}

/// Writes the private key of `key` into `dir` (`{id}.key`), as `plantwatch keygen` would, for
/// `plantwatch sign --key-file`.
pub(crate) fn private_key_file(dir: &Path, key: TestKey) -> std::path::PathBuf {
    let (private, _public) = key_pair_from_seed(&[key.seed; 32]);
    let path = dir.join(format!("{}.key", key.id));
    std::fs::write(&path, format!("{private}\n")).unwrap();
    path
}

/// The wall clock, ms: a signed command's `ts` is checked against the daemon's clock.
pub(crate) fn now_ms() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

/// The command text `cmd` for `{prefix}/cmd/{name}`, signed with the seed `seed` and sent as
/// key `key` (a forgery signs with another key's seed).
pub(crate) fn sign_as(seed: u8, key: &str, prefix: &str, name: &str, cmd: &str) -> Vec<u8> {
    let signer = SigningSecret::parse(&key_pair_from_seed(&[seed; 32]).0, false).unwrap();
    let sig = signer.sign(&signed_bytes(prefix, name, cmd.as_bytes()));
    wrap(key, &sig, cmd).into_bytes()
}

/// The command text `cmd` signed by `key` itself.
pub(crate) fn sign(key: TestKey, prefix: &str, name: &str, cmd: &str) -> Vec<u8> {
    sign_as(key.seed, key.id, prefix, name, cmd)
}

/// The replies on `{prefix}/cmd/{name}/reply` among `got`.
pub(crate) fn replies(got: &[Received], prefix: &str, name: &str) -> Vec<Json> {
    let topic = format!("{prefix}/cmd/{name}/reply");
    got.iter()
        .filter(|m| m.topic == topic)
        .map(Received::json)
        .collect()
}

/// Waits (bounded by `limit`) for `n` replies to `name` carrying `id`; those that came.
pub(crate) async fn answers(
    sub: &mut Subscriber,
    prefix: &str,
    name: &str,
    id: &str,
    n: usize,
    limit: Duration,
) -> Vec<Json> {
    let got = sub
        .collect_until(limit, |g| {
            replies(g, prefix, name)
                .iter()
                .filter(|r| r["id"] == id)
                .count()
                >= n
        })
        .await;
    replies(&got, prefix, name)
        .into_iter()
        .filter(|r| r["id"] == id)
        .collect()
}

/// Publishes `payload` on `{prefix}/cmd/{name}` and waits (bounded) for the reply carrying
/// `id`; fails the test with `log()` (the daemon's log) when none comes.
pub(crate) async fn ask(
    sub: &mut Subscriber,
    prefix: &str,
    name: &str,
    id: &str,
    payload: &[u8],
    log: &dyn Fn() -> String,
) -> Json {
    sub.publish(&format!("{prefix}/cmd/{name}"), payload).await;
    answers(sub, prefix, name, id, 1, Duration::from_secs(20))
        .await
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no reply to {name} {id}\n{}", log()))
}

/// Serves `plant` (one link, `port = 502` or `path = "/dev/null"`) from the simulator; the
/// same text pointing at where it listens.
pub(crate) async fn serve(plant: &str) -> (Simulator, String) {
    let sim = Simulator::start(
        &super::plan(&format!("[gateway]\nsite = \"s\"\nid = \"g\"\n\n{plant}")),
        Bind::LOOPBACK,
    )
    .await
    .unwrap();
    let at = sim.endpoints[0].1.clone();
    let text = match at.parse::<std::net::SocketAddr>() {
        Ok(addr) => plant.replace("port = 502", &format!("port = {}", addr.port())),
        Err(_) => plant.replace("path = \"/dev/null\"", &format!("path = \"{at}\"")),
    };
    (sim, text)
}

/// What the simulator holds for `device`/`point`, decoded as a client would.
pub(crate) fn held(sim: &Simulator, device: &str, point: &str) -> Value {
    let p = sim
        .plan
        .device(device)
        .unwrap()
        .points
        .iter()
        .find(|p| p.name.as_str() == point)
        .unwrap()
        .clone();
    let raw = sim
        .device(device)
        .unwrap()
        .registers(p.function, p.address, p.width());
    if p.function.is_bits() {
        decode_bit(raw[0] != 0, &p.codec)
    } else {
        decode(&raw, &p.codec).unwrap()
    }
}

/// `plantwatch audit --state STATE ACTION…`: whether it succeeded, and its stdout and stderr.
pub(crate) fn audit_cli(state: &Path, action: &[&str]) -> (bool, String) {
    let out = Command::new(bin())
        .args(["audit", "--state"])
        .arg(state)
        .args(action)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Every audit row of the state file, one JSON object each (`plantwatch audit list`).
pub(crate) fn audit_rows(state: &Path) -> Vec<Json> {
    state_listing(state, "audit", &["list", "--last", "100000"])
}

/// The JSON lines that `plantwatch {command} --state STATE {args}` prints, failing the test
/// if it does not exit 0: the audit trail, the config history.
pub(crate) fn state_listing(state: &Path, command: &str, args: &[&str]) -> Vec<Json> {
    let out = Command::new(bin())
        .args([command, "--state"])
        .arg(state)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The outcomes audited for command id `id` (as the command gave it), in order, each as
/// `outcome` or `outcome:reason`.
pub(crate) fn outcomes(rows: &[Json], id: &str) -> Vec<String> {
    let id = format!("\"{id}\"");
    rows.iter()
        .filter(|r| r["id"] == id.as_str())
        .map(|r| match r["reason"].as_str() {
            Some(reason) => format!("{}:{reason}", r["outcome"].as_str().unwrap()),
            None => r["outcome"].as_str().unwrap().to_owned(),
        })
        .collect()
}
