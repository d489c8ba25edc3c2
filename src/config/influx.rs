//! `[influxdb]`: the optional InfluxDB v2 sink (or anything that accepts `/api/v2/write`, such
//! as VictoriaMetrics).
//!
//! The sink is lossy by design: it has its own bounded queue and drops, with a
//! count, what does not fit, so a slow or dead database never holds up polling or MQTT. The
//! keys here size that queue, the batches and the retries.
//!
//! Units: `batch_size` counts lines (one line = one device poll); `queue_capacity` counts
//! points (one point = one field of a line, i.e. one good or uncertain value).

use std::num::{NonZeroU32, NonZeroUsize};
use std::path::PathBuf;
use std::time::Duration;

use reqwest::Url;
use serde::Deserialize;

use super::issue::Issues;
pub use crate::sink::influx::Influx;

/// `[influxdb]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawInflux {
    /// Base URL of the server, e.g. `http://127.0.0.1:8086`; `/api/v2/write` is appended.
    pub url: String,
    /// Organization (name or id) that owns the bucket.
    pub org: String,
    /// Bucket written to.
    pub bucket: String,
    /// File holding the API token (first line).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Name of a systemd credential (`LoadCredential=`) holding the API token.
    #[serde(default)]
    pub token_credential: Option<String>,
    /// Measurement name of every line.
    #[serde(default = "default_measurement")]
    pub measurement: String,
    /// Most lines (device polls) per write request.
    #[serde(default = "default_batch_size")]
    pub batch_size: u64,
    /// Longest a line waits for its batch to fill before the batch is written anyway.
    #[serde(default = "default_batch_interval_ms")]
    pub batch_interval_ms: u64,
    /// Points queued between the core and the sink; beyond it new points are dropped and counted.
    #[serde(default = "default_queue_capacity")]
    pub queue_capacity: u64,
    /// First wait before retrying a failed write; doubles up to `retry_max_ms`.
    #[serde(default = "default_retry_min_ms")]
    pub retry_min_ms: u64,
    /// Longest wait between retries.
    #[serde(default = "default_retry_max_ms")]
    pub retry_max_ms: u64,
    /// Tries per batch, the first included; then its points are dropped and counted.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Limit on connecting plus one whole write request.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_measurement() -> String {
    "plantwatch".to_owned()
}
fn default_batch_size() -> u64 {
    5000
}
fn default_batch_interval_ms() -> u64 {
    1000
}
fn default_queue_capacity() -> u64 {
    100_000
}
fn default_retry_min_ms() -> u64 {
    500
}
fn default_retry_max_ms() -> u64 {
    30_000
}
fn default_max_attempts() -> u32 {
    5
}
fn default_timeout_ms() -> u64 {
    10_000
}

/// Checks `[influxdb] url` and returns it as a base URL (path ending in `/`).
fn resolve_url(raw: &str, issues: &mut Issues) -> Option<Url> {
    let key = "influxdb.url";
    let mut url = match Url::parse(raw) {
        Ok(u) => u,
        Err(err) => {
            issues.push(
                key,
                format!("`{raw}` is not a URL ({err}); write it like `http://127.0.0.1:8086`"),
            );
            return None;
        }
    };
    let before = issues.0.len();
    if !matches!(url.scheme(), "http" | "https") {
        issues.push(
            key,
            format!(
                "scheme `{}` is not supported; use http or https",
                url.scheme()
            ),
        );
    }
    if url.host_str().is_none_or(str::is_empty) {
        issues.push(key, format!("`{raw}` has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        // A secret in the URL would end up in logs; tokens belong in a file.
        issues.push(
            key,
            "credentials in the URL are not allowed; use `token_file` or `token_credential`",
        );
    }
    if url.query().is_some() || url.fragment().is_some() {
        issues.push(
            key,
            "give the base URL only; `org`, `bucket` and precision are added by plantwatch",
        );
    }
    if issues.0.len() != before {
        return None;
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Some(url)
}

/// Checks a measurement name against what InfluxDB accepts.
fn measurement_problem(m: &str) -> Option<&'static str> {
    if m.is_empty() || m.len() > 255 {
        Some("must be 1 to 255 bytes")
    } else if m.starts_with('_') {
        Some("names starting with `_` are reserved by InfluxDB")
    } else if m.chars().any(char::is_control) {
        Some("control characters (newlines, tabs) cannot be written in line protocol")
    } else {
        None
    }
}

/// Resolves `[influxdb]`; every problem is pushed with its key path (`influxdb.url`, …).
pub fn resolve_influx(raw: &RawInflux, issues: &mut Issues) -> Option<Influx> {
    let before = issues.0.len();
    let url = resolve_url(&raw.url, issues);
    if raw.org.trim().is_empty() {
        issues.push(
            "influxdb.org",
            "must not be empty (InfluxDB v2 needs it; VictoriaMetrics ignores it)",
        );
    }
    if raw.bucket.trim().is_empty() {
        issues.push("influxdb.bucket", "must not be empty");
    }
    let token = super::daemon::password_source(
        "influxdb",
        ("token_file", raw.token_file.as_ref()),
        ("token_credential", raw.token_credential.as_ref()),
        issues,
    );
    if let Some(problem) = measurement_problem(&raw.measurement) {
        issues.push("influxdb.measurement", problem);
    }
    let batch_size = usize::try_from(raw.batch_size)
        .ok()
        .filter(|n| (1..=100_000).contains(n))
        .and_then(NonZeroUsize::new);
    if batch_size.is_none() {
        issues.push(
            "influxdb.batch_size",
            format!("{} is out of range; use 1 to 100000 lines", raw.batch_size),
        );
    }
    if !(10..=60_000).contains(&raw.batch_interval_ms) {
        issues.push(
            "influxdb.batch_interval_ms",
            format!(
                "{} is out of range; use 10 to 60000 ms",
                raw.batch_interval_ms
            ),
        );
    }
    let queue_capacity = usize::try_from(raw.queue_capacity)
        .ok()
        .filter(|n| (100..=10_000_000).contains(n))
        .and_then(NonZeroUsize::new);
    if queue_capacity.is_none() {
        issues.push(
            "influxdb.queue_capacity",
            format!(
                "{} is out of range; use 100 to 10000000 points",
                raw.queue_capacity
            ),
        );
    }
    if raw.retry_min_ms == 0 || raw.retry_min_ms > raw.retry_max_ms {
        issues.push(
            "influxdb.retry_min_ms",
            "must be at least 1 and at most retry_max_ms",
        );
    }
    if raw.retry_max_ms > 600_000 {
        issues.push(
            "influxdb.retry_max_ms",
            format!(
                "{} is out of range; use at most 600000 ms",
                raw.retry_max_ms
            ),
        );
    }
    let max_attempts = NonZeroU32::new(raw.max_attempts).filter(|n| n.get() <= 100);
    if max_attempts.is_none() {
        issues.push(
            "influxdb.max_attempts",
            format!("{} is out of range; use 1 to 100", raw.max_attempts),
        );
    }
    if !(100..=300_000).contains(&raw.timeout_ms) {
        issues.push(
            "influxdb.timeout_ms",
            format!("{} is out of range; use 100 to 300000 ms", raw.timeout_ms),
        );
    }
    if issues.0.len() != before {
        return None;
    }
    Some(Influx {
        url: url?,
        org: raw.org.clone(),
        bucket: raw.bucket.clone(),
        token,
        measurement: raw.measurement.clone(),
        batch_size: batch_size?,
        batch_interval: Duration::from_millis(raw.batch_interval_ms),
        queue_capacity: queue_capacity?,
        retry: (
            Duration::from_millis(raw.retry_min_ms),
            Duration::from_millis(raw.retry_max_ms),
        ),
        max_attempts: max_attempts?,
        timeout: Duration::from_millis(raw.timeout_ms),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::PasswordSource;

    fn raw(text: &str) -> RawInflux {
        toml::from_str(text).unwrap()
    }

    fn keys(text: &str) -> Vec<String> {
        let mut issues = Issues::default();
        assert!(resolve_influx(&raw(text), &mut issues).is_none());
        issues.0.into_iter().map(|i| i.key).collect()
    }

    const MINIMAL: &str = "url = 'http://127.0.0.1:8428'\norg = 'plant'\nbucket = 'raw'\n";

    #[test]
    fn a_minimal_section_gets_the_documented_defaults() {
        let mut issues = Issues::default();
        let p = resolve_influx(&raw(MINIMAL), &mut issues).unwrap();
        assert!(issues.is_empty());
        assert_eq!(p.url.as_str(), "http://127.0.0.1:8428/");
        assert_eq!(p.measurement, "plantwatch");
        assert_eq!(p.batch_size.get(), 5000);
        assert_eq!(p.batch_interval, Duration::from_secs(1));
        assert_eq!(p.queue_capacity.get(), 100_000);
        assert_eq!(
            p.retry,
            (Duration::from_millis(500), Duration::from_secs(30))
        );
        assert_eq!(p.max_attempts.get(), 5);
        assert_eq!(p.timeout, Duration::from_secs(10));
        assert_eq!(p.token, None);
    }

    #[test]
    fn write_url_appends_the_endpoint_and_query() {
        let mut issues = Issues::default();
        let p = resolve_influx(&raw(MINIMAL), &mut issues).unwrap();
        assert_eq!(
            p.write_url().as_str(),
            "http://127.0.0.1:8428/api/v2/write?org=plant&bucket=raw&precision=ms"
        );
        let behind_proxy = MINIMAL.replace("8428'", "8428/influx'");
        let p = resolve_influx(&raw(&behind_proxy), &mut issues).unwrap();
        assert_eq!(
            p.write_url().as_str(),
            "http://127.0.0.1:8428/influx/api/v2/write?org=plant&bucket=raw&precision=ms"
        );
        let spaced = MINIMAL.replace("'plant'", "'my org&co'");
        let p = resolve_influx(&raw(&spaced), &mut issues).unwrap();
        assert!(
            p.write_url().as_str().contains("org=my+org%26co&"),
            "{}",
            p.write_url()
        );
    }

    #[test]
    fn bad_urls_are_reported_at_influxdb_url() {
        for url in [
            "127.0.0.1:8086",
            "ftp://host/",
            "http://user:pw@host:8086",
            "http://host:8086/?org=x",
            "not a url",
        ] {
            let text = MINIMAL.replace("http://127.0.0.1:8428", url);
            assert_eq!(keys(&text), ["influxdb.url"], "{url}");
        }
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let text = "url = 'http://h:1'\norg = ''\nbucket = ' '\n\
                    token_file = '/t'\ntoken_credential = 'c'\nmeasurement = '_x'\n\
                    batch_size = 0\nbatch_interval_ms = 1\nqueue_capacity = 5\n\
                    retry_min_ms = 10\nretry_max_ms = 5\nmax_attempts = 0\ntimeout_ms = 1\n";
        assert_eq!(
            keys(text),
            [
                "influxdb.org",
                "influxdb.bucket",
                "influxdb.token_credential",
                "influxdb.measurement",
                "influxdb.batch_size",
                "influxdb.batch_interval_ms",
                "influxdb.queue_capacity",
                "influxdb.retry_min_ms",
                "influxdb.max_attempts",
                "influxdb.timeout_ms",
            ]
        );
    }

    #[test]
    fn token_comes_from_a_file_or_a_credential() {
        let mut issues = Issues::default();
        let p = resolve_influx(
            &raw(&format!("{MINIMAL}token_credential = 'influx-token'\n")),
            &mut issues,
        )
        .unwrap();
        assert_eq!(
            p.token,
            Some(PasswordSource::Credential("influx-token".into()))
        );
        let p = resolve_influx(
            &raw(&format!(
                "{MINIMAL}token_file = '/etc/plantwatch/influx-token'\n"
            )),
            &mut issues,
        )
        .unwrap();
        assert_eq!(
            p.token,
            Some(PasswordSource::File("/etc/plantwatch/influx-token".into()))
        );
        assert_eq!(
            keys(&format!("{MINIMAL}token_credential = '../x'\n")),
            ["influxdb.token_credential"]
        );
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = toml::from_str::<RawInflux>(&format!("{MINIMAL}tokn_file = 'x'\n")).unwrap_err();
        assert!(err.to_string().contains("tokn_file"), "{err}");
    }
}
