//! Config loading and the table of broken configs.
//!
//! Every `tests/fixtures/configs/bad/*.toml` opens with one or more header lines
//! `# expect: <ConfigIssue.key> | <message fragment>`; loading the file must report exactly
//! those keys (no more, no fewer), each with a message containing its fragment. Every file in
//! `configs/` must resolve without issues.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use plantwatch::config::plan::{Function, Transport};
use plantwatch::config::{ConfigErrors, ConfigIssue, EnvOverrides, Plan, load_file, load_str};

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn load(name: &str, text: &str) -> Result<Plan, ConfigErrors> {
    load_str(name, text, &EnvOverrides::Off, Path::new("."), None)
}

fn ok(text: &str) -> Plan {
    match load("test.toml", text) {
        Ok(plan) => plan,
        Err(errors) => panic!("expected a valid config, got {errors}"),
    }
}

/// The point `name` of the plan's first device.
fn first_point<'a>(plan: &'a Plan, name: &str) -> &'a plantwatch::config::plan::Point {
    plan.devices[0]
        .points
        .iter()
        .find(|p| p.name.as_str() == name)
        .unwrap_or_else(|| panic!("no point {name}"))
}

/// One expected issue from a fixture header.
#[derive(Debug)]
struct Expect {
    key: String,
    fragment: String,
}

fn expectations(text: &str) -> Vec<Expect> {
    text.lines()
        .map_while(|l| l.strip_prefix('#'))
        .filter_map(|l| l.trim().strip_prefix("expect:"))
        .map(|l| {
            let (key, fragment) = l
                .split_once('|')
                .unwrap_or_else(|| panic!("`# expect: key | fragment` needs a `|`: {l}"));
            Expect {
                key: key.trim().to_owned(),
                fragment: fragment.trim().to_owned(),
            }
        })
        .collect()
}

/// Checks one fixture; returns what is wrong with it, if anything.
fn check_bad(name: &str, text: &str) -> Option<String> {
    let expected = expectations(text);
    if expected.is_empty() {
        return Some(format!("{name}: no `# expect:` header"));
    }
    let issues: Vec<ConfigIssue> = match load(name, text) {
        Ok(_) => return Some(format!("{name}: loaded without issues")),
        Err(errors) => errors.issues,
    };
    let mut problems = Vec::new();
    for e in &expected {
        let at_key: Vec<&ConfigIssue> = issues.iter().filter(|i| i.key == e.key).collect();
        if at_key.is_empty() {
            problems.push(format!("no issue at `{}`", e.key));
        } else if !at_key.iter().any(|i| i.message.contains(&e.fragment)) {
            problems.push(format!(
                "issue at `{}` lacks `{}`: {:?}",
                e.key,
                e.fragment,
                at_key.iter().map(|i| &i.message).collect::<Vec<_>>()
            ));
        }
    }
    for i in &issues {
        if !expected.iter().any(|e| e.key == i.key) {
            problems.push(format!("unexpected issue {i}"));
        }
    }
    (!problems.is_empty()).then(|| {
        let got: Vec<String> = issues.iter().map(ToString::to_string).collect();
        format!(
            "{name}:\n    {}\n  got:\n    {}",
            problems.join("\n    "),
            got.join("\n    ")
        )
    })
}

#[test]
fn every_bad_config_reports_its_exact_key_and_message() {
    let dir = manifest_dir().join("tests/fixtures/configs/bad");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 35,
        "expected at least 35 broken configs, found {}",
        files.len()
    );
    let failures: Vec<String> = files
        .iter()
        .filter_map(|path| {
            let name = path.file_name().unwrap().to_string_lossy();
            let text = std::fs::read_to_string(path).unwrap();
            check_bad(&name, &text)
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} broken configs misreported:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}

#[test]
fn a_config_with_many_errors_reports_all_of_them_at_once() {
    let path = manifest_dir().join("tests/fixtures/configs/bad/many_errors.toml");
    let text = std::fs::read_to_string(path).unwrap();
    let errors = load("many_errors.toml", &text).unwrap_err();
    assert!(errors.issues.len() >= 3, "{errors}");
    for key in [
        "gateway.timezone",
        "links[0].port",
        "links[1].baudrate",
        "devices[0].unit_id",
        "devices[0].points.ua.type",
        "devices[0].points.ub.register",
        "devices[1].link",
        "devices[2].profile",
        "devices[3].points.ia.scale",
    ] {
        assert!(
            errors.issues.iter().any(|i| i.key == key),
            "no issue at {key}: {errors}"
        );
    }
    assert_eq!(errors.issues.len(), 9, "{errors}");
    let shown = errors.to_string();
    assert!(shown.starts_with("many_errors.toml: "), "{shown}");
}

#[test]
fn a_toml_syntax_error_names_the_line() {
    let errors = load("syntax.toml", "[gateway]\nsite = \"a\"\nid = gw1\n").unwrap_err();
    assert_eq!(errors.issues.len(), 1, "{errors}");
    assert_eq!(errors.issues[0].key, "syntax.toml");
    assert!(errors.issues[0].message.contains("line 3"), "{errors}");
}

#[test]
fn every_shipped_config_resolves() {
    let dir = manifest_dir().join("configs");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    assert!(
        files.iter().any(|p| p.ends_with("plantwatch.toml")),
        "configs/plantwatch.toml is missing"
    );
    for path in &files {
        if let Err(errors) = load_file(path, &EnvOverrides::Off, None) {
            panic!("{errors}");
        }
    }
}

#[test]
fn the_reference_config_uses_every_link_kind_and_built_in_profile() {
    let path = manifest_dir().join("configs/plantwatch.toml");
    let plan = load_file(&path, &EnvOverrides::Off, None).unwrap();
    let kinds: Vec<&str> = plan.links.iter().map(|l| l.transport.kind()).collect();
    for kind in ["tcp", "rtu", "rtu_over_tcp"] {
        assert!(kinds.contains(&kind), "no {kind} link in {kinds:?}");
    }
    let profiles: Vec<&str> = plan
        .devices
        .iter()
        .filter_map(|d| d.profile.as_deref())
        .collect();
    for p in [
        "chint-dtsu666",
        "eastron-sdm630",
        "acrel-adl400",
        "generic-plc",
    ] {
        assert!(profiles.contains(&p), "no device uses {p}");
    }
    assert!(
        plan.devices.iter().any(|d| d.profile.is_none()),
        "no device with inline points only"
    );
}

const MINIMAL: &str = r#"
[gateway]
site = "plant1"
id = "gw1"

[[links]]
name = "bus"
kind = "tcp"
host = "127.0.0.1"

[[devices]]
name = "m1"
link = "bus"

[devices.points.ua]
address = 0
"#;

#[test]
fn an_env_override_changes_the_site() {
    let env = EnvOverrides::Map(HashMap::from([(
        "PLANTWATCH__GATEWAY__SITE".to_owned(),
        "plant-two".to_owned(),
    )]));
    let plan = load_str("t.toml", MINIMAL, &env, Path::new("."), None).unwrap();
    assert_eq!(plan.gateway.site.as_str(), "plant-two");
    assert_eq!(ok(MINIMAL).gateway.site.as_str(), "plant1");
}

#[test]
fn an_invalid_env_override_is_reported_at_its_key() {
    let env = EnvOverrides::Map(HashMap::from([(
        "PLANTWATCH__GATEWAY__SITE".to_owned(),
        "Plant Two".to_owned(),
    )]));
    let errors = load_str("t.toml", MINIMAL, &env, Path::new("."), None).unwrap_err();
    assert_eq!(errors.issues.len(), 1, "{errors}");
    assert_eq!(errors.issues[0].key, "gateway.site");
}

fn with_host(host: &str) -> String {
    MINIMAL.replace("\"127.0.0.1\"", &format!("{host:?}"))
}

#[test]
fn ipv6_literals_and_host_names_are_accepted() {
    for host in [
        "::1",
        "[fe80::1]",
        "2001:db8::17",
        "plc-01.plant.local",
        "meter1",
    ] {
        let plan = ok(&with_host(host));
        let Transport::Tcp(endpoint) = &plan.links[0].transport else {
            panic!("not tcp");
        };
        assert_eq!(endpoint.host, host.trim_matches(['[', ']']));
        assert_eq!(endpoint.port, 502);
    }
}

#[test]
fn invalid_hosts_are_rejected() {
    for host in [
        "",
        "plc_01",
        "-plc",
        "10.0.0.256",
        "1.2.3",
        "a..b",
        "fe80::zz",
    ] {
        let errors = load("t.toml", &with_host(host)).unwrap_err();
        assert_eq!(errors.issues.len(), 1, "{host}: {errors}");
        assert_eq!(errors.issues[0].key, "links[0].host", "{host}");
    }
}

const METER: &str = r#"
[gateway]
site = "plant1"
id = "gw1"

[[links]]
name = "rs485"
kind = "rtu"
path = "/dev/ttyUSB0"

[[devices]]
name = "meter"
link = "rs485"
"#;

#[test]
fn an_inline_point_overrides_scale_and_keeps_the_profile_address() {
    let base = ok(&format!("{METER}profile = \"chint-dtsu666\"\n"));
    let plan = ok(&format!(
        "{METER}profile = \"chint-dtsu666\"\n[devices.points.ua]\nscale = 1.0\n"
    ));
    let before = first_point(&base, "ua");
    let after = first_point(&plan, "ua");
    assert_eq!(after.address, 0x2006);
    assert_eq!(after.address, before.address);
    assert_eq!(after.function, Function::Holding);
    assert_eq!(after.codec.data_type, before.codec.data_type);
    assert!((before.codec.scale - 0.1).abs() < 1e-12);
    assert!((after.codec.scale - 1.0).abs() < 1e-12);
    assert_eq!(plan.devices[0].points.len(), base.devices[0].points.len());
}

/// A device's on-change keys are for its on-change points: a point that chose every poll
/// itself does not use them, and that is no error (the docs tell a device to set
/// `min_interval_ms = 0`, whatever its points do).
#[test]
fn a_point_that_chose_every_poll_ignores_its_devices_on_change_keys() {
    use plantwatch::config::plan::ReportMode;
    let plan = ok(&format!(
        "{METER}report = \"on_change\"\nmin_interval_ms = 0\ndeadband = 1.0\n\
         [devices.points.a]\naddress = 0\n\
         [devices.points.b]\naddress = 1\nreport = \"every_poll\"\n"
    ));
    assert_eq!(first_point(&plan, "a").report.mode, ReportMode::OnChange);
    assert_eq!(first_point(&plan, "b").report.mode, ReportMode::EveryPoll);
}

/// The reporting keys written over a profile's point are the point's, not dropped: the
/// override docs/payload.md tells a metered gateway to write.
#[test]
fn an_inline_point_overrides_a_profile_points_reporting() {
    use plantwatch::process::report::DEFAULT_MIN_INTERVAL;
    let plan = ok(&format!(
        "[[mqtt]]\nname = \"s\"\nhost = \"127.0.0.1\"\nformat = \"json_compact\"\n\
         {METER}profile = \"chint-dtsu666\"\n\
         [devices.points.ua]\nmin_interval_ms = 0\nmax_silence_ms = 60000\ndeadband = 0.5\n"
    ));
    let report = |n: &str| first_point(&plan, n).report;
    let ua = report("ua");
    assert_eq!(ua.min_interval, std::time::Duration::ZERO, "{ua:?}");
    assert_eq!(ua.max_silence, std::time::Duration::from_secs(60));
    assert!((ua.deadband - 0.5).abs() < 1e-12, "{ua:?}");
    let ub = report("ub");
    assert_eq!(ub.min_interval, DEFAULT_MIN_INTERVAL, "{ub:?}");
}

#[test]
fn an_inline_point_extends_a_profile() {
    let plan = ok(&format!(
        "{METER}profile = \"eastron-sdm630\"\n[devices.points.thd_ua]\nregister = 30235\ntype = \"f32\"\n"
    ));
    let points = &plan.devices[0].points;
    let extra = points.last().unwrap();
    assert_eq!(extra.name.as_str(), "thd_ua");
    assert_eq!(extra.function, Function::Input);
    assert_eq!(extra.address, 234);
}

#[test]
fn an_inline_register_moves_a_profile_point_to_its_own_table() {
    // generic-plc's `ready` is a discrete input; a Modicon register replaces its table too.
    let plan = ok(&format!(
        "{METER}profile = \"generic-plc\"\n\
         [devices.points.ready]\nregister = 40101\ntype = \"bit\"\nbit = 2\n"
    ));
    let ready = first_point(&plan, "ready");
    assert_eq!(ready.function, Function::Holding);
    assert_eq!(ready.address, 100);
    assert_eq!(ready.codec.bit, 2);
}

#[test]
fn exclude_points_removes_a_profile_point() {
    let all = ok(&format!("{METER}profile = \"eastron-sdm630\"\n"));
    let plan = ok(&format!(
        "{METER}profile = \"eastron-sdm630\"\nexclude_points = [\"ep_total\", \"freq\"]\n"
    ));
    let names: Vec<&str> = plan.devices[0]
        .points
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    assert!(!names.contains(&"ep_total"), "{names:?}");
    assert!(!names.contains(&"freq"), "{names:?}");
    assert!(names.contains(&"ua"), "{names:?}");
    assert_eq!(names.len() + 2, all.devices[0].points.len());
}

#[test]
fn ratio_pt_ct_multiplies_scale_by_both_ratios() {
    let plan = ok(&format!(
        "{METER}profile = \"acrel-adl400\"\npt_ratio = 10.0\nct_ratio = 40\n"
    ));
    let point = |n: &str| first_point(&plan, n);
    // ep_total: scale 0.01 × PT 10 × CT 40.
    assert!((point("ep_total").codec.scale - 4.0).abs() < 1e-9);
    // p: scale 0.001 × 400.
    assert!((point("p").codec.scale - 0.4).abs() < 1e-9);
    // ua has no ratio.
    assert!((point("ua").codec.scale - 0.1).abs() < 1e-12);
}

#[test]
fn ratio_pt_and_ct_apply_one_ratio_each() {
    let plan = ok(&format!(
        "{METER}pt_ratio = 100\nct_ratio = 5\n\
         [devices.points.u]\naddress = 0\nscale = 0.1\nratio = \"pt\"\n\
         [devices.points.i]\naddress = 1\nscale = 0.01\nratio = \"ct\"\n"
    ));
    let points = &plan.devices[0].points;
    assert!((points[0].codec.scale - 10.0).abs() < 1e-9);
    assert!((points[1].codec.scale - 0.05).abs() < 1e-9);
}

#[test]
fn modicon_registers_map_to_table_and_zero_based_address() {
    let plan = ok(&format!(
        "{METER}\
         [devices.points.h5]\nregister = 40001\n\
         [devices.points.i6]\nregister = 300001\n\
         [devices.points.c]\nregister = 1\n\
         [devices.points.d]\nregister = 10002\n\
         [devices.points.h_last]\nregister = 465536\n\
         [devices.points.a]\nfunction = \"input\"\naddress = 0\n\
         [devices.points.same]\nfunction = \"holding\"\nregister = 40010\n"
    ));
    let got: Vec<(&str, Function, u16)> = plan.devices[0]
        .points
        .iter()
        .map(|p| (p.name.as_str(), p.function, p.address))
        .collect();
    assert_eq!(
        got,
        vec![
            ("h5", Function::Holding, 0),
            ("i6", Function::Input, 0),
            ("c", Function::Coil, 0),
            ("d", Function::DiscreteInput, 1),
            ("h_last", Function::Holding, 65535),
            ("a", Function::Input, 0),
            ("same", Function::Holding, 9),
        ]
    );
}

#[test]
fn defaults_fill_in_what_the_file_leaves_out() {
    let plan = ok(MINIMAL);
    let d = &plan.devices[0];
    assert_eq!(d.unit_id, 1);
    assert_eq!(d.poll_interval.as_millis(), 1000);
    assert_eq!(d.timeout.as_millis(), 500);
    assert_eq!(d.limits.max_registers, 125);
    assert_eq!(plan.gateway.timezone, chrono_tz::Asia::Shanghai);
    assert_eq!(d.points[0].function, Function::Holding);
}

#[test]
#[ignore = "prints every fixture's issues"]
fn dump_bad_configs() {
    let dir = manifest_dir().join("tests/fixtures/configs/bad");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for path in files {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let text = std::fs::read_to_string(&path).unwrap();
        match load(&name, &text) {
            Ok(_) => println!("{name}: OK"),
            Err(e) => println!("{e}"),
        }
    }
}

const MY_PROFILE: &str = r#"
[profile]
name = "my-meter"
manufacturer = "ACME"
model = "M1"
description = "test meter"
source = "test"

[defaults]
function = "input"
type = "f32"

[points.ua]
address = 0
unit = "V"
"#;

#[test]
fn profiles_dir_adds_profiles_relative_to_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("profiles.d")).unwrap();
    std::fs::write(dir.path().join("profiles.d/my-meter.toml"), MY_PROFILE).unwrap();
    let config = MINIMAL
        .replace(
            "id = \"gw1\"",
            "id = \"gw1\"\nprofiles_dir = \"profiles.d\"",
        )
        .replace("link = \"bus\"", "link = \"bus\"\nprofile = \"my-meter\"")
        .replace("[devices.points.ua]\naddress = 0\n", "");
    let path = dir.path().join("plantwatch.toml");
    std::fs::write(&path, config).unwrap();
    let plan = load_file(&path, &EnvOverrides::Off, None).unwrap();
    let ua = &plan.devices[0].points[0];
    assert_eq!((ua.function, ua.address), (Function::Input, 0));
}

#[test]
fn a_broken_profile_in_profiles_dir_is_reported_by_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let broken = MY_PROFILE.replace("address = 0", "adress = 0");
    std::fs::write(dir.path().join("my-meter.toml"), broken).unwrap();
    let errors = load_str(
        "t.toml",
        MINIMAL,
        &EnvOverrides::Off,
        Path::new("."),
        Some(dir.path()),
    )
    .unwrap_err();
    assert_eq!(errors.issues.len(), 1, "{errors}");
    let issue = &errors.issues[0];
    assert!(
        issue.key.ends_with("my-meter.toml: points.ua.adress"),
        "{errors}"
    );
    assert!(
        issue.message.contains("did you mean `address`?"),
        "{errors}"
    );
}

#[test]
fn the_reference_config_uploads_the_incomer_with_its_kind_coefficient() {
    let path = manifest_dir().join("configs/plantwatch.toml");
    let plan = load_file(&path, &EnvOverrides::Off, None).unwrap();
    let platform = plan
        .energy_platform
        .expect("[energy_platform] in the reference config");
    assert_eq!(platform.spec.enterprise_code.as_str(), "91420100MA4K2N7Q8G");
    assert_eq!(platform.spec.timezone, chrono_tz::Asia::Shanghai);
    assert!((platform.spec.max_estimated_share - 0.1).abs() < 1e-12);
    let item = &platform.spec.items[0];
    assert_eq!(plan.energy.meters[item.meter_index].name, "incomer");
    assert_eq!((item.scope.as_str(), item.input_type.as_str()), ("1", "1"));
    assert!((item.convert_ratio - 0.1229).abs() < 1e-12);
    assert_eq!(item.decimals, 2);
    assert_eq!(item.stat_types.len(), 3);
}

#[test]
fn a_config_without_energy_platform_builds_no_records() {
    assert!(ok(MINIMAL).energy_platform.is_none());
}

#[test]
fn insecure_settings_are_warnings_without_strict_security_and_local_hosts_are_not() {
    let text = |webhook: &str, broker: &str| {
        format!(
            "[gateway]\nsite = \"s\"\nid = \"g\"\n[mqtt]\nhost = \"{broker}\"\nusername = \"u\"\n\
             password_credential = \"mqtt\"\n[[links]]\nname = \"l\"\nkind = \"tcp\"\nhost = \"127.0.0.1\"\n\
             [[devices]]\nname = \"d\"\nlink = \"l\"\nprofile = \"generic-plc\"\n\
             [[webhooks]]\nname = \"chat\"\nformat = \"generic\"\nurl = \"{webhook}\"\n"
        )
    };
    let plan = ok(&text(
        "http://alarms.example.com/hook",
        "broker.example.com",
    ));
    let keys: Vec<&str> = plan.warnings.iter().map(|w| w.key.as_str()).collect();
    assert_eq!(
        keys,
        ["webhooks[0].url", "mqtt.password_credential"],
        "{:?}",
        plan.warnings
    );
    let plan = ok(&text("http://192.168.1.20:8080/hook", "10.0.0.5"));
    assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);
    let plan = ok(&text("https://alarms.example.com/hook", "127.0.0.1"));
    assert!(plan.warnings.is_empty(), "{:?}", plan.warnings);
}

/// Issue 19: a gateway whose JSON sinks are all compact reports on change by default, with a
/// deadband of half a step of each point's resolution or three deviations of its own scatter,
/// whichever is wider, at most 5 minutes of silence, and at most a message per 5 seconds from a
/// device whose readings keep moving.
#[test]
fn a_compact_only_gateway_reports_on_change_by_default() {
    use plantwatch::config::plan::ReportMode;
    use plantwatch::process::report::DEFAULT_MIN_INTERVAL;
    let points = "[devices.points.u]\naddress = 0\nscale = 0.1\n\
                  [devices.points.f]\naddress = 1\ntype = \"f32\"\n\
                  [devices.points.n]\naddress = 3\n\
                  [devices.points.kept]\naddress = 4\nreport = \"every_poll\"\n\
                  [devices.points.w]\naddress = 5\nreport = \"on_change\"\ndeadband = 0.5\n";
    let sinks = |formats: &[&str]| {
        formats
            .iter()
            .enumerate()
            .map(|(i, f)| {
                format!("[[mqtt]]\nname = \"s{i}\"\nhost = \"127.0.0.1\"\nformat = \"{f}\"\n")
            })
            .collect::<String>()
    };
    let compact_with = |rest: &str| ok(&format!("{}{METER}{rest}", sinks(&["json_compact"])));
    let compact = compact_with(points);
    let report = |plan: &Plan, n: &str| first_point(plan, n).report;
    let u = report(&compact, "u");
    assert_eq!(u.mode, ReportMode::OnChange);
    assert!((u.deadband - 0.05).abs() < 1e-12, "{u:?}");
    assert_eq!(u.max_silence, std::time::Duration::from_secs(300));
    assert!(
        (u.noise - plantwatch::process::report::DEFAULT_NOISE).abs() < 1e-12,
        "{u:?}"
    );
    // A device that keeps moving sends at most one message per interval, whatever its
    // deadbands, unless the point says otherwise.
    assert_eq!(u.min_interval, DEFAULT_MIN_INTERVAL);
    assert_eq!(report(&compact, "w").min_interval, DEFAULT_MIN_INTERVAL);
    let at_once = compact_with(&format!("{points}min_interval_ms = 0\n"));
    assert_eq!(
        report(&at_once, "w").min_interval,
        std::time::Duration::ZERO
    );
    assert_eq!(report(&at_once, "u").min_interval, DEFAULT_MIN_INTERVAL);
    // A short silence is not outlasted by the default interval: it waits at most half of it.
    let short =
        compact_with("[devices.points.u]\naddress = 0\nscale = 0.1\nmax_silence_ms = 4000\n");
    assert_eq!(
        report(&short, "u").min_interval,
        std::time::Duration::from_secs(2)
    );
    // A deadband written out is taken as written, with no scatter term.
    let w = report(&compact, "w");
    assert_eq!(w.mode, ReportMode::OnChange);
    assert!(
        (w.deadband - 0.5).abs() < 1e-12 && w.noise.abs() < 1e-12,
        "{w:?}"
    );
    assert!(report(&compact, "kept").noise.abs() < 1e-12);
    // An f32 and an unscaled integer have no step: any change is reported.
    assert_eq!(report(&compact, "f").mode, ReportMode::OnChange);
    assert!(report(&compact, "f").deadband.abs() < 1e-12);
    assert_eq!(report(&compact, "n").mode, ReportMode::OnChange);
    assert_eq!(report(&compact, "kept").mode, ReportMode::EveryPoll);
    // `kept` opens a message every poll, so the others' interval saves nothing: `check` says so.
    let warned: Vec<String> = compact.warnings.iter().map(ToString::to_string).collect();
    assert!(
        warned
            .iter()
            .any(|w| w.starts_with("devices[0]:") && w.contains("point `kept` reports every poll")),
        "{warned:?}"
    );
    // A v1 sink beside it (both get the same reports) keeps every poll.
    let mixed = ok(&format!(
        "{}{METER}{points}",
        sinks(&["json_compact", "json"])
    ));
    assert_eq!(report(&mixed, "u").mode, ReportMode::EveryPoll);
    // On change beside a v1 sink sends a move at once unless told otherwise.
    assert_eq!(report(&mixed, "w").min_interval, std::time::Duration::ZERO);
}
