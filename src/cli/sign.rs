//! `plantwatch sign` and `plantwatch keygen`: the operator's side of the signed command
//! channel, for people and scripts that publish commands with any MQTT client.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use serde_json::{Map, Value as Json};

use crate::auth::envelope;
use crate::auth::keys::{self, SigningSecret};
use crate::clock::{Clock, SystemClock};

/// Arguments of `sign`.
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Prints the topic and the signed payload; publish them with any MQTT client, e.g.

  plantwatch sign --key-file ops1.key --key-id ops1 --prefix plantwatch/plant/gw1 \\
      ack '{\"alarm\":\"pump-1/motor-hot\"}' |
    { read -r topic; read -r payload; mosquitto_pub -q 1 -t \"$topic\" -m \"$payload\"; }

A configuration push reads the file itself (needs an `engineer` key):

  plantwatch sign --key-file eng1.key --key-id eng1 --prefix plantwatch/plant/gw1 \
      --config-file new.toml config

`id` (random) and `ts` (now) are added unless FIELDS gives them. The reply arrives on
TOPIC/reply. The signature covers the prefix and the command name: a command signed for one
gateway or one command is refused by any other.")]
pub(super) struct SignArgs {
    /// The private key: one line of base64 of an Ed25519 seed (`plantwatch keygen`), or with
    /// --hmac the shared secret.
    #[arg(long, value_name = "FILE")]
    key_file: PathBuf,
    /// The key's id, as in the gateway's `[[commands.keys]]`.
    #[arg(long, value_name = "ID")]
    key_id: String,
    /// The gateway's topic prefix (`mqtt.topic_prefix`).
    #[arg(long, value_name = "PREFIX")]
    prefix: String,
    /// The key file holds an HMAC-SHA256 secret, not an Ed25519 key.
    #[arg(long)]
    hmac: bool,
    /// With `config`: the configuration file to push, read whole into the `config` field.
    /// Only its TOML syntax is checked here; the gateway checks the rest as `plantwatch
    /// check` does (the files it names are the gateway's) and answers with every problem.
    #[arg(long, value_name = "FILE")]
    config_file: Option<PathBuf>,
    /// The command name: list, ack, shelve, unshelve, serviced, upload, write, config.
    name: String,
    /// The command's fields as a JSON object, e.g. '{"alarm":"pump-1/motor-hot"}'.
    #[arg(default_value = "{}")]
    fields: String,
}

/// Arguments of `keygen`.
#[derive(Debug, clap::Args)]
pub(super) struct KeygenArgs {
    /// Where to write the private key (mode 0600); the public key goes to OUT.pub.
    out: PathBuf,
}

pub(super) fn sign(args: &SignArgs) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(&args.key_file)
        .with_context(|| format!("cannot read the key file {}", args.key_file.display()))?;
    let secret = SigningSecret::parse(&text, args.hmac)
        .map_err(|e| anyhow::anyhow!("{}: {e}", args.key_file.display()))?;
    let mut fields: Map<String, Json> = serde_json::from_str(&args.fields)
        .with_context(|| format!("FIELDS `{}` is not a JSON object", args.fields))?;
    if let Some(path) = &args.config_file {
        if args.name != "config" {
            anyhow::bail!(
                "--config-file goes with the `config` command, not `{}`",
                args.name
            );
        }
        if fields.contains_key("config") {
            anyhow::bail!(
                "give the configuration either in FIELDS or with --config-file, not both"
            );
        }
        fields.insert("config".into(), Json::String(config_text(path)?));
    }
    if !fields.contains_key("id") {
        fields.insert("id".into(), Json::from(random_id()?));
    }
    if !fields.contains_key("ts") {
        fields.insert("ts".into(), Json::from(SystemClock.now().0));
    }
    let prefix = args.prefix.trim_end_matches('/');
    let cmd = Json::Object(fields).to_string();
    let sig = secret.sign(&envelope::signed_bytes(prefix, &args.name, cmd.as_bytes()));
    out!("{prefix}/cmd/{}", args.name);
    out!("{}", envelope::wrap(&args.key_id, &sig, &cmd));
    Ok(ExitCode::SUCCESS)
}

/// The text of the configuration file at `path`, if it is TOML within the size a push may
/// have: a file the gateway would refuse for that is not signed. The rest (keys, devices,
/// the files it names, which are the gateway's) is the gateway's to check.
fn config_text(path: &std::path::Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the configuration {}", path.display()))?;
    if let Err(e) = toml::from_str::<toml::Table>(&text) {
        anyhow::bail!("{} is not TOML: {e}", path.display());
    }
    let limit = crate::runtime::remote_config::MAX_CONFIG_BYTES;
    if text.len() > limit {
        anyhow::bail!(
            "{} is {} bytes; a pushed configuration is at most {limit}",
            path.display(),
            text.len()
        );
    }
    Ok(text)
}

/// 16 random bytes in hex: unique within any replay window.
fn random_id() -> anyhow::Result<String> {
    use rand::TryRngCore as _;
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng
        .try_fill_bytes(&mut bytes)
        .map_err(|e| anyhow::anyhow!("no randomness from the OS: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

pub(super) fn keygen(args: &KeygenArgs) -> anyhow::Result<ExitCode> {
    let (private, public) = keys::generate().map_err(anyhow::Error::msg)?;
    let mut public_path = args.out.clone().into_os_string();
    public_path.push(".pub");
    let public_path = PathBuf::from(public_path);
    write_new(&args.out, &private, 0o600)?;
    write_new(&public_path, &public, 0o644)?;
    out!(
        "private key: {} (keep it with the operator)",
        args.out.display()
    );
    out!(
        "public key:  {} (give it to the gateway: public_key_file)",
        public_path.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Writes `line` to a new file (never over an existing key) with `mode`.
fn write_new(path: &std::path::Path, line: &str, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    writeln!(file, "{line}").with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
