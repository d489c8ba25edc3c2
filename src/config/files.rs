//! What `plantwatch check` verifies beyond the text: every file the config names exists and
//! can be read by the user running the check (under systemd's `ExecStartPre`, the service
//! user), and TLS material parses as the daemon will use it. Run as root, where every file is
//! readable, it also asks whether the service's account (`plantwatch`, as the unit runs it)
//! may read each file, through its mode bits and those of every directory above it, and warns
//! where not: the unit's own `ExecStartPre=` check runs as that account and fails on it.
//!
//! This is the one part of `config` that does I/O; [`super::resolve`] stays pure, and the
//! daemon reads the same files again when a sink starts.

use std::os::unix::fs::MetadataExt as _;
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
    /// The service's account, whose access is checked when `check` runs as root.
    pub account: Option<Account>,
}

impl FileCheck {
    /// Warns that the service's account cannot read `path`, if it cannot. A warning, not an
    /// error: root's view of other accounts is advice, and the service's own check decides.
    fn service_can_read(&mut self, key: &str, path: &Path) {
        if let Some(why) = self.account.as_ref().and_then(|a| unreadable_by(path, a)) {
            self.warnings.push(format!("{key}: {why}"));
        }
    }
}

/// The account the service runs as: the unit's `User=` and `Group=`.
pub const SERVICE_USER: &str = "plantwatch";

/// The unit's `SupplementaryGroups=`: the serial ports' group.
const SERVICE_SUPPLEMENTARY_GROUP: &str = "dialout";

/// A local account, as the kernel checks file access for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// Its name, for messages.
    pub name: String,
    /// Its user id.
    pub uid: u32,
    /// Its primary group and the supplementary groups it has.
    pub gids: Vec<u32>,
}

/// The service's account from the texts of `/etc/passwd` and `/etc/group`: its primary
/// group, the groups that list it, and the unit's supplementary group. `None` when there is
/// no such user (the package is not installed).
pub fn service_account(passwd: &str, group: &str) -> Option<Account> {
    let fields = |line: &str| line.split(':').map(str::to_owned).collect::<Vec<_>>();
    let user = passwd
        .lines()
        .map(fields)
        .find(|f| f.len() >= 4 && f[0] == SERVICE_USER)?;
    let uid = user[2].parse().ok()?;
    let mut gids = vec![user[3].parse().ok()?];
    for g in group.lines().map(fields).filter(|f| f.len() >= 4) {
        let member = g[3].split(',').any(|m| m == SERVICE_USER);
        if (member || g[0] == SERVICE_SUPPLEMENTARY_GROUP)
            && let Ok(gid) = g[2].parse()
            && !gids.contains(&gid)
        {
            gids.push(gid);
        }
    }
    Some(Account {
        name: SERVICE_USER.to_owned(),
        uid,
        gids,
    })
}

/// Why `account` cannot read `path` (or reach it through its directories), if it cannot.
pub fn unreadable_by(path: &Path, account: &Account) -> Option<String> {
    let real = std::fs::canonicalize(path).ok()?;
    let allows = |meta: &std::fs::Metadata, bit: u32| {
        let mode = meta.mode();
        let shift = if meta.uid() == account.uid {
            6
        } else if account.gids.contains(&meta.gid()) {
            3
        } else {
            0
        };
        account.uid == 0 || mode >> shift & bit != 0
    };
    for dir in real.ancestors().skip(1) {
        let meta = std::fs::metadata(dir).ok()?;
        if !allows(&meta, 0o1) {
            return Some(format!(
                "the service user `{}` cannot reach {}: the directory {} is mode {:o}, owner uid {} gid {}",
                account.name,
                path.display(),
                dir.display(),
                meta.mode() & 0o7777,
                meta.uid(),
                meta.gid()
            ));
        }
    }
    let meta = std::fs::metadata(&real).ok()?;
    (!allows(&meta, 0o4)).then(|| {
        format!(
            "the service user `{}` cannot read {}: mode {:o}, owner uid {} gid {} (e.g. `chgrp {} {}` and `chmod g+r` it)",
            account.name,
            path.display(),
            meta.mode() & 0o7777,
            meta.uid(),
            meta.gid(),
            account.name,
            path.display()
        )
    })
}

/// Checks every file `plan` names.
pub fn check_files(plan: &Plan) -> FileCheck {
    let account = if rustix::process::geteuid().is_root() {
        let read = |p| std::fs::read_to_string(p).unwrap_or_default();
        service_account(&read("/etc/passwd"), &read("/etc/group"))
    } else {
        None
    };
    let mut out = FileCheck {
        account,
        ..FileCheck::default()
    };
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
        Ok(_) => {
            if let PasswordSource::File(path) = source {
                out.service_can_read(&key, path);
            }
        }
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
    out.service_can_read(key, path);
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
    out.service_can_read(key, path);
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

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n\
        plantwatch:x:998:997:plantwatch edge daemon:/var/lib/plantwatch:/usr/sbin/nologin\n";
    const GROUP: &str =
        "root:x:0:\ndialout:x:20:\nplantwatch:x:997:\nssl-cert:x:110:plantwatch,www\n";

    #[test]
    fn the_service_account_has_its_primary_listed_and_supplementary_groups() {
        let account = service_account(PASSWD, GROUP).expect("plantwatch is in passwd");
        assert_eq!(account.uid, 998);
        assert_eq!(account.gids, [997, 20, 110]);
        assert_eq!(service_account("root:x:0:0::/root:/bin/sh\n", GROUP), None);
    }

    #[test]
    fn mode_bits_of_the_file_and_every_directory_decide() {
        let dir = tempfile::tempdir().unwrap();
        let meta = std::fs::metadata(dir.path()).unwrap();
        // A stranger to the test's files: neither their owner nor in their group.
        let stranger = Account {
            name: "plantwatch".into(),
            uid: meta.uid() + 4242,
            gids: vec![meta.gid() + 4242],
        };
        let member = Account {
            gids: vec![meta.gid()],
            ..stranger.clone()
        };
        let set = |p: &Path, mode| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        let sub = dir.path().join("tls");
        std::fs::create_dir(&sub).unwrap();
        set(dir.path(), 0o755);
        let file = sub.join("ca.pem");
        std::fs::write(&file, "x").unwrap();

        set(&sub, 0o755);
        set(&file, 0o644);
        assert_eq!(unreadable_by(&file, &stranger), None);
        set(&file, 0o640);
        let why = unreadable_by(&file, &stranger).expect("others may not read 0640");
        assert!(
            why.contains("cannot read") && why.contains("mode 640"),
            "{why}"
        );
        assert_eq!(unreadable_by(&file, &member), None, "the group may");
        set(&sub, 0o750);
        set(&file, 0o644);
        let why = unreadable_by(&file, &stranger).expect("the directory stops it");
        assert!(why.contains("cannot reach") && why.contains("tls"), "{why}");
        set(&sub, 0o755);
    }
}
