//! What `plantwatch check` verifies beyond the text: every file the config names exists and
//! can be read by the user running the check (under systemd's `ExecStartPre`, the service
//! user), and TLS material parses as the daemon will use it.
//!
//! This is the one part of `config` that does I/O; [`super::resolve`] stays pure, and the
//! daemon reads the same files again when a sink starts.

use std::path::Path;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::daemon::PasswordSource;
use super::issue::ConfigIssue;
use super::plan::Plan;

/// The outcome of [`check_files`].
#[derive(Debug, Default)]
pub struct FileCheck {
    /// Files that are missing, unreadable or do not parse, each at the key that names it.
    pub issues: Vec<ConfigIssue>,
    /// What could not be checked here, or is worth a look (systemd credentials outside the
    /// service, a state directory that does not exist yet).
    pub warnings: Vec<String>,
}

/// Checks every file `plan` names.
pub fn check_files(plan: &Plan) -> FileCheck {
    let mut out = FileCheck::default();
    let in_service = std::env::var_os("CREDENTIALS_DIRECTORY").is_some();
    for (i, m) in plan.mqtt.iter().enumerate() {
        let section = if plan.mqtt.len() == 1 {
            "mqtt".to_owned()
        } else {
            format!("mqtt[{i}]")
        };
        if let Some(p) = &m.password {
            secret(&mut out, &section, "password", p, in_service);
        }
        if let Some(tls) = &m.tls {
            let ca = certificates(&mut out, &format!("{section}.tls.ca_file"), &tls.ca_file);
            if let Some(ca) = ca {
                trust_anchors(
                    &mut out,
                    &format!("{section}.tls.ca_file"),
                    &tls.ca_file,
                    ca,
                );
            }
            if let Some((cert, key)) = &tls.client_auth {
                let certs =
                    certificates(&mut out, &format!("{section}.tls.client_cert_file"), cert);
                let key_at = format!("{section}.tls.client_key_file");
                if let (Some(certs), Some(k)) = (certs, private_key(&mut out, &key_at, key)) {
                    let provider = rustls::crypto::ring::default_provider();
                    if let Err(err) = rustls::sign::CertifiedKey::from_der(certs, k, &provider) {
                        out.issues.push(ConfigIssue::new(
                            key_at,
                            format!(
                                "{} does not go with {}: {err}",
                                key.display(),
                                cert.display()
                            ),
                        ));
                    }
                }
            }
        }
    }
    if let Some(token) = plan.influx.as_ref().and_then(|i| i.token.as_ref()) {
        secret(&mut out, "influxdb", "token", token, in_service);
    }
    for (i, w) in plan.webhooks.iter().enumerate() {
        if let Some(s) = &w.secret {
            secret(&mut out, &format!("webhooks[{i}]"), "secret", s, in_service);
        }
    }
    if let Some(https) = plan.energy_platform.as_ref().and_then(|p| p.https.as_ref()) {
        let key = "energy_platform.https";
        if let Some(ca) = &https.ca_file
            && let Some(certs) = certificates(&mut out, &format!("{key}.ca_file"), ca)
        {
            trust_anchors(&mut out, &format!("{key}.ca_file"), ca, certs);
        }
        secret(&mut out, key, "password", &https.password, in_service);
    }
    let state_dir = plan
        .store
        .path
        .parent()
        .filter(|d| !d.as_os_str().is_empty());
    if let Some(dir) = state_dir.filter(|d| !d.is_dir()) {
        out.warnings.push(format!(
            "store.path: the directory {} does not exist; systemd creates it for the service \
             (StateDirectory=), anywhere else create it before `plantwatch run`",
            dir.display()
        ));
    }
    out
}

/// A secret named by `{section}.{what}_file` or `{section}.{what}_credential`.
fn secret(
    out: &mut FileCheck,
    section: &str,
    what: &str,
    source: &PasswordSource,
    in_service: bool,
) {
    let key = match source {
        PasswordSource::File(_) => format!("{section}.{what}_file"),
        PasswordSource::Credential(name) if !in_service => {
            out.warnings.push(format!(
                "{section}.{what}_credential: `{name}` is a systemd credential; it is checked \
                 when the service starts (no $CREDENTIALS_DIRECTORY here)"
            ));
            return;
        }
        PasswordSource::Credential(_) => format!("{section}.{what}_credential"),
    };
    match source.read_first_line() {
        Ok(line) if line.trim().is_empty() => out.issues.push(ConfigIssue::new(
            key,
            format!("the first line of {} is empty", source_shown(source)),
        )),
        Ok(_) => {}
        Err((at, why)) => out
            .issues
            .push(ConfigIssue::new(key, format!("cannot read {at}: {why}"))),
    }
}

fn source_shown(source: &PasswordSource) -> String {
    match source {
        PasswordSource::File(p) => p.display().to_string(),
        PasswordSource::Credential(name) => format!("credential `{name}`"),
    }
}

/// The PEM certificates in `path`, or `None` after recording why there are none.
fn certificates(
    out: &mut FileCheck,
    key: &str,
    path: &Path,
) -> Option<Vec<CertificateDer<'static>>> {
    if let Err(err) = std::fs::File::open(path) {
        out.issues.push(ConfigIssue::new(
            key,
            format!("cannot read {}: {err}", path.display()),
        ));
        return None;
    }
    let certs: Result<Vec<_>, _> = match CertificateDer::pem_file_iter(path) {
        Ok(iter) => iter.collect(),
        Err(err) => Err(err),
    };
    match certs {
        Ok(certs) if !certs.is_empty() => Some(certs),
        Ok(_) => {
            out.issues.push(ConfigIssue::new(
                key,
                format!(
                    "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
                    path.display()
                ),
            ));
            None
        }
        Err(err) => {
            out.issues.push(ConfigIssue::new(
                key,
                format!("{} is not a PEM certificate file: {err}", path.display()),
            ));
            None
        }
    }
}

/// Checks that every certificate of a CA file parses as an X.509 trust anchor.
fn trust_anchors(out: &mut FileCheck, key: &str, path: &Path, certs: Vec<CertificateDer<'_>>) {
    let mut roots = rustls::RootCertStore::empty();
    for (i, cert) in certs.into_iter().enumerate() {
        if let Err(err) = roots.add(cert) {
            out.issues.push(ConfigIssue::new(
                key,
                format!(
                    "certificate {} in {} does not parse: {err}",
                    i + 1,
                    path.display()
                ),
            ));
        }
    }
}

/// The unencrypted PEM private key in `path`, or `None` after recording why not.
fn private_key(out: &mut FileCheck, key: &str, path: &Path) -> Option<PrivateKeyDer<'static>> {
    if let Err(err) = std::fs::File::open(path) {
        out.issues.push(ConfigIssue::new(
            key,
            format!("cannot read {}: {err}", path.display()),
        ));
        return None;
    }
    match PrivateKeyDer::from_pem_file(path) {
        Ok(k) => Some(k),
        Err(err) => {
            out.issues.push(ConfigIssue::new(
                key,
                format!(
                    "{} holds no unencrypted PEM private key: {err}",
                    path.display()
                ),
            ));
            None
        }
    }
}
