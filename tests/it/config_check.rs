//! `plantwatch check` as the whole truth (issue 18): drop-ins merged in order, `--explain`,
//! errors naming the drop-in or environment variable, and every file the config names checked.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::harness::bin;

const MAIN: &str = r#"
[gateway]
site = "plant1"
id = "gw1"

[[links]]
name = "bus"
kind = "tcp"
host = "127.0.0.1"

[[devices]]
name = "meter-1"
link = "bus"
unit_id = 1

[devices.points.ua]
address = 0
"#;

/// Runs `plantwatch check -c CONFIG ARGS…` with `env` added; (exit code, stdout, stderr).
fn check(config: &Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(bin())
        .arg("check")
        .arg("-c")
        .arg(config)
        .args(args)
        .envs(env.iter().copied())
        .env_remove("CREDENTIALS_DIRECTORY")
        .stdin(Stdio::null())
        .output()
        .expect("run plantwatch");
    crate::harness::finished(&out)
}

/// A config directory: `plantwatch.toml` holding `main` plus a state path inside the directory,
/// and the given `conf.d/` drop-ins.
fn fleet(main: &str, drop_ins: &[(&str, &str)]) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plantwatch.toml");
    let state = dir.path().join("state.db");
    std::fs::write(
        &path,
        format!(
            "{main}\n[store]\npath = {:?}\n",
            state.display().to_string()
        ),
    )
    .unwrap();
    if !drop_ins.is_empty() {
        std::fs::create_dir(dir.path().join("conf.d")).unwrap();
    }
    for (name, text) in drop_ins {
        std::fs::write(dir.path().join("conf.d").join(name), text).unwrap();
    }
    (dir, path)
}

#[test]
fn issue_18_drop_ins_merge_in_lexical_order_and_by_name() {
    // Written out of order: 20 must still apply after 10.
    let (_dir, path) = fleet(
        MAIN,
        &[
            (
                "20-gateway.toml",
                "[gateway]\nid = \"gw7\"\n[[devices]]\nname = \"meter-1\"\nunit_id = 7\n",
            ),
            (
                "10-fleet.toml",
                "[gateway]\nid = \"fleet\"\n[[devices]]\nname = \"meter-1\"\npoll_interval_ms = 2000\n\
                 [[devices]]\nname = \"meter-2\"\nlink = \"bus\"\nunit_id = 2\n\
                 [devices.points.ub]\naddress = 1\n",
            ),
            ("disabled.toml.off", "this is not TOML and is not read"),
        ],
    );
    let (code, out, err) = check(&path, &[], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("id=gw7"), "the later drop-in wins: {out}");
    let row = |name: &str| {
        out.lines()
            .find(|l| l.starts_with(name) && l.contains("bus"))
            .unwrap_or_else(|| panic!("no device row {name}: {out}"))
            .split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    // DEVICE LINK UNIT PROFILE POLL_MS …: meter-1 extended by both drop-ins, meter-2 appended.
    assert_eq!(row("meter-1")[2..5], ["7", "-", "2000"], "{out}");
    assert_eq!(row("meter-2")[2], "2", "{out}");
    assert!(
        out.contains("conf.d/10-fleet.toml, ") && out.contains("conf.d/20-gateway.toml"),
        "the drop-ins are listed in order: {out}"
    );
}

#[test]
fn issue_18_explain_names_the_file_of_each_key_and_what_it_overrode() {
    let (_dir, path) = fleet(
        MAIN,
        &[
            ("10-fleet.toml", "[gateway]\nid = \"fleet\"\n"),
            (
                "20-gw.toml",
                "[[links]]\nname = \"bus\"\nhost = \"10.0.0.5\"\n",
            ),
        ],
    );
    let (code, out, err) = check(&path, &["--explain", "links.bus.host", "--quiet"], &[]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "links.bus.host is links[0].host", "{out}");
    assert!(
        lines[1].starts_with("links[0].host = \"10.0.0.5\"  from ")
            && lines[1].ends_with("conf.d/20-gw.toml"),
        "{out}"
    );
    assert!(
        lines[2].contains("overrides \"127.0.0.1\"") && lines[2].ends_with("plantwatch.toml"),
        "{out}"
    );

    let (code, out, _) = check(
        &path,
        &["--explain", "gateway.id", "-q"],
        &[("PLANTWATCH__GATEWAY__ID", "gw9")],
    );
    assert_eq!(code, 0);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0], "gateway.id = \"gw9\"  from PLANTWATCH__GATEWAY__ID",
        "the environment applies last: {out}"
    );
    assert!(lines[1].ends_with("conf.d/10-fleet.toml"), "{out}");
    assert!(lines[2].ends_with("plantwatch.toml"), "{out}");

    let (_, out, _) = check(
        &path,
        &["--explain", "devices.meter-1.timeout_ms", "-q"],
        &[],
    );
    assert!(out.contains("its default applies"), "{out}");
    let (_, out, _) = check(&path, &["--explain", "devices.meter-9.host", "-q"], &[]);
    assert!(out.contains("no entry named `meter-9`"), "{out}");
}

#[test]
fn issue_18_errors_name_the_drop_in_or_environment_variable_that_set_the_key() {
    let (_dir, path) = fleet(
        MAIN,
        &[(
            "30-gw.toml",
            "[[devices]]\nname = \"meter-1\"\nunit_id = 300\n",
        )],
    );
    let (code, _, err) = check(&path, &["-q"], &[]);
    assert_eq!(code, 78, "{err}");
    assert!(
        err.contains("devices[0].unit_id: 300 is out of range")
            && err.contains("(set in drop-in ")
            && err.contains("conf.d/30-gw.toml)"),
        "{err}"
    );

    // A missing file named in a drop-in: the drop-in is named too.
    let (_dir, path) = fleet(
        MAIN,
        &[(
            "50-mqtt.toml",
            "[mqtt]\nhost = \"127.0.0.1\"\nusername = \"gw\"\npassword_file = \"/nonexistent/pw\"\n",
        )],
    );
    let (code, _, err) = check(&path, &["-q"], &[]);
    assert_eq!(code, 78, "{err}");
    assert!(
        err.contains("mqtt.password_file: cannot read /nonexistent/pw")
            && err.contains("conf.d/50-mqtt.toml)"),
        "{err}"
    );

    let (_dir, path) = fleet(MAIN, &[("40-broken.toml", "[gateway\n")]);
    let (code, _, err) = check(&path, &["-q"], &[]);
    assert_eq!(code, 78);
    assert!(
        err.contains("conf.d/40-broken.toml: not valid TOML at line 1"),
        "{err}"
    );

    let (_dir, path) = fleet(MAIN, &[]);
    for (value, says) in [
        ("abc", "found string \"abc\""),
        ("70000", "70000 is out of range"),
        ("true", "`true` is not a number"),
    ] {
        let (code, _, err) = check(&path, &["-q"], &[("PLANTWATCH__LINKS__BUS__PORT", value)]);
        assert_eq!(code, 78, "{value}: {err}");
        assert!(
            err.contains("links[0].port: ")
                && err.contains(says)
                && err.contains("(set by environment variable PLANTWATCH__LINKS__BUS__PORT)"),
            "{value}: {err}"
        );
    }
    let (code, _, err) = check(&path, &["-q"], &[("PLANTWATCH__DEVICES__NOPE__HOST", "x")]);
    assert_eq!(code, 78);
    assert!(
        err.contains("PLANTWATCH__DEVICES__NOPE__HOST: `devices` has no entry named `nope`"),
        "{err}"
    );
    // Text keys take number-like variables: the environment has no other way to write them.
    let (code, _, err) = check(&path, &["-q"], &[("PLANTWATCH__GATEWAY__ID", "123")]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn issue_18_check_reports_every_missing_file_at_once_naming_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let missing = |name: &str| dir.path().join(name).display().to_string();
    let text = format!(
        "{MAIN}\n[mqtt]\nhost = \"127.0.0.1\"\nusername = \"gw\"\npassword_file = {:?}\n\
         [mqtt.tls]\nca_file = {:?}\nclient_cert_file = {:?}\nclient_key_file = {:?}\n\
         [influxdb]\nurl = \"http://127.0.0.1:8086\"\norg = \"o\"\nbucket = \"b\"\ntoken_file = {:?}\n\
         [[webhooks]]\nname = \"chat\"\nformat = \"dingtalk\"\nurl = \"https://example.com/x\"\n\
         secret_file = {:?}\n\
         [commands]\n[[commands.keys]]\nid = \"scada\"\nrole = \"operate\"\nhmac_secret_file = {:?}\n",
        missing("mqtt-password"),
        missing("ca.pem"),
        missing("gw.pem"),
        missing("gw.key"),
        missing("influx-token"),
        missing("dingtalk-secret"),
        missing("scada.secret"),
    );
    let (_fleet, path) = fleet(&text, &[]);
    let (code, out, err) = check(&path, &[], &[]);
    assert_eq!(code, 78, "{out}{err}");
    assert!(!out.contains("valid"), "{out}");
    for key in [
        "mqtt.password_file",
        "mqtt.tls.ca_file",
        "mqtt.tls.client_cert_file",
        "mqtt.tls.client_key_file",
        "influxdb.token_file",
        "webhooks[0].secret_file",
        "commands.keys[0]",
    ] {
        assert!(
            err.lines()
                .any(|l| l.trim_start().starts_with(&format!("{key}: "))
                    && (l.contains("No such file") || l.contains("cannot read"))),
            "{key} not reported: {err}"
        );
    }
}

#[test]
fn issue_18_check_parses_certificates_and_matches_the_client_key() {
    let dir = tempfile::tempdir().unwrap();
    let ca = rcgen::generate_simple_self_signed(vec!["broker".to_owned()]).unwrap();
    let client = rcgen::generate_simple_self_signed(vec!["gw".to_owned()]).unwrap();
    let write = |name: &str, text: String| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let ca_file = write("ca.pem", ca.cert.pem());
    let cert_file = write("gw.pem", client.cert.pem());
    let key_file = write("gw.key", client.signing_key.serialize_pem());
    let other_key = write("other.key", ca.signing_key.serialize_pem());
    let password = write("password", "s3cret\n".to_owned());
    let garbage = write(
        "garbage.pem",
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n"
            .to_owned(),
    );
    let config = |ca: &str, key: &str| {
        format!(
            "{MAIN}\n[mqtt]\nhost = \"broker\"\nusername = \"gw\"\npassword_file = {password:?}\n\
             [mqtt.tls]\nca_file = {ca:?}\nclient_cert_file = {cert_file:?}\nclient_key_file = {key:?}\n"
        )
    };

    let (_good, path) = fleet(&config(&ca_file, &key_file), &[]);
    let (code, out, err) = check(&path, &[], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.lines().any(|l| l.starts_with("mqtt ")
            && l.contains("broker:8883")
            && l.contains("mutual")
            && l.contains("password")),
        "the sink is summarised as it will run: {out}"
    );

    let (_bad, path) = fleet(&config(&garbage, &other_key), &[]);
    let (code, _, err) = check(&path, &["-q"], &[]);
    assert_eq!(code, 78, "{err}");
    assert!(
        err.contains("mqtt.tls.ca_file: certificate 1 in") && err.contains("does not parse"),
        "{err}"
    );
    assert!(
        err.contains("mqtt.tls.client_key_file: ") && err.contains("does not go with"),
        "{err}"
    );
}

#[test]
fn config_reference_lists_every_key_the_code_accepts() {
    let path = crate::harness::repo().join("docs/config-reference.md");
    let generated = plantwatch::config::reference::reference();
    if std::env::var_os("PLANTWATCH_BLESS").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let written = std::fs::read_to_string(&path).unwrap_or_default();
    // Name what is missing first: a key in the code that the reference does not list.
    let mut table = "";
    let mut missing = Vec::new();
    for line in generated.lines() {
        if line.starts_with("## ") {
            table = line;
        } else if line.starts_with("- `") {
            let section = written
                .split("\n## ")
                .find(|s| table.ends_with(s.lines().next().unwrap_or("-")));
            if !section.is_some_and(|s| s.lines().any(|l| l == line)) {
                missing.push(format!("{table} {line}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "docs/config-reference.md lacks keys the code accepts (regenerate with \
         PLANTWATCH_BLESS=1 cargo test --test it config_reference):\n{}",
        missing.join("\n")
    );
    assert_eq!(
        written, generated,
        "docs/config-reference.md differs from the code; regenerate with PLANTWATCH_BLESS=1 \
         cargo test --test it config_reference"
    );
}

/// Whether `text` writes `key` as a key (`key =`, also commented out or inside an inline
/// table) or as a table (`[a.key]`, `[[a.key]]`).
fn writes_key(text: &str, key: &str) -> bool {
    text.match_indices(key).any(|(at, _)| {
        let before = text[..at].chars().next_back().unwrap_or('\n');
        let after = text[at + key.len()..].trim_start_matches(' ');
        (matches!(before, '\n' | ' ' | '#' | '{' | ',') && after.starts_with('='))
            || (matches!(before, '.' | '[') && after.starts_with(']'))
    })
}

#[test]
fn issue_18_the_reference_config_shows_every_key_of_the_reference() {
    let reference = plantwatch::config::reference::reference();
    let config =
        std::fs::read_to_string(crate::harness::repo().join("configs/plantwatch.toml")).unwrap();
    let mut table = "";
    let mut missing = Vec::new();
    for line in reference.lines() {
        if let Some(heading) = line.strip_prefix("## ") {
            table = heading;
        } else if let Some(key) = line.strip_prefix("- `").and_then(|k| k.strip_suffix('`')) {
            // Profile files have their own examples in configs/profiles/.
            if !table.contains("profile file") && !writes_key(&config, key) {
                missing.push(format!("{table} {key}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "configs/plantwatch.toml does not show these keys:\n{}",
        missing.join("\n")
    );
}
