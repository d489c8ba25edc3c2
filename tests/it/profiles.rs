//! Built-in profiles decode known register frames into known engineering values
//! (hand-computed from the manufacturers' register maps, docs/platform.md §5).

use plantwatch::config::Profiles;
use plantwatch::config::plan::{Device, Function};
use plantwatch::decode::decode;
use plantwatch::model::Value;

use crate::harness::plan;

fn device(profile: &str, extra: &str) -> Device {
    let p = plan(&format!(
        "[gateway]\nsite = \"s\"\nid = \"g\"\n[[links]]\nname = \"l\"\nkind = \"tcp\"\nhost = \"127.0.0.1\"\n\
         [[devices]]\nname = \"d\"\nlink = \"l\"\nprofile = \"{profile}\"\n{extra}"
    ));
    p.devices[0].clone()
}

fn decoded(d: &Device, point: &str, words: &[u16]) -> (Function, u16, Value) {
    let p = d.points.iter().find(|p| p.name.as_str() == point).unwrap();
    (p.function, p.address, decode(words, &p.codec).unwrap())
}

fn approx(v: &Value, expected: f64) -> bool {
    let got = v.as_f64().unwrap();
    (got - expected).abs() < 1e-4 * expected.abs().max(1.0)
}

#[test]
fn every_built_in_profile_loads_with_a_source() {
    let profiles = Profiles::built_in().unwrap();
    for name in [
        "chint-dtsu666",
        "eastron-sdm630",
        "acrel-adl400",
        "generic-plc",
    ] {
        let p = profiles
            .get(name)
            .unwrap_or_else(|| panic!("{name} is built in"));
        assert!(!p.meta.source.is_empty(), "{name} names its source");
        assert!(!p.points.is_empty());
    }
}

#[test]
fn dtsu666_floats_are_scaled_tenths_of_a_volt() {
    let d = device("chint-dtsu666", "");
    // 2314.0f32 = 0x4510A000: the meter sends 0.1 V units.
    let (f, a, v) = decoded(&d, "ua", &[0x4510, 0xA000]);
    assert_eq!((f, a), (Function::Holding, 0x2006));
    assert!(approx(&v, 231.4), "{v}");
    // 2000.0f32 in 0.001 A is 2 A.
    let (_, a, v) = decoded(&d, "ia", &[0x44FA, 0x0000]);
    assert_eq!(a, 0x200C);
    assert!(approx(&v, 2.0), "{v}");
    let (_, a, v) = decoded(&d, "ep_import", &[0x4640, 0xE6AE]);
    assert_eq!(a, 0x401E);
    assert!(approx(&v, 12345.67), "{v}");
}

#[test]
fn sdm630_reads_unscaled_input_registers() {
    let d = device("eastron-sdm630", "");
    // 229.8f32 = 0x4365CCCD.
    let (f, a, v) = decoded(&d, "ua", &[0x4365, 0xCCCD]);
    assert_eq!((f, a), (Function::Input, 0));
    assert!(approx(&v, 229.8), "{v}");
    let (_, a, _) = decoded(&d, "ep_import", &[0, 0]);
    assert_eq!(a, 0x0048);
}

#[test]
fn adl400_energy_is_hundredths_times_pt_and_ct() {
    let d = device("acrel-adl400", "pt_ratio = 10.0\nct_ratio = 40.0\n");
    // 123456 counts × 0.01 kWh × PT 10 × CT 40 = 493 824 kWh.
    let (f, a, v) = decoded(&d, "ep_total", &[0x0001, 0xE240]);
    assert_eq!((f, a), (Function::Holding, 0));
    assert!(approx(&v, 493_824.0), "{v}");
    // Voltages are one word in 0.1 V and not multiplied.
    let (_, a, v) = decoded(&d, "ua", &[2305]);
    assert_eq!(a, 97);
    assert!(approx(&v, 230.5), "{v}");
}

#[test]
fn generic_plc_status_bits_and_signed_temperatures() {
    let d = device("generic-plc", "");
    let (_, a, v) = decoded(&d, "motor_temp", &[0xFF9C]); // -100 × 0.1
    assert_eq!(a, 0);
    assert!(approx(&v, -10.0), "{v}");
    let (_, a, v) = decoded(&d, "run_state", &[0b01]);
    assert_eq!((a, v), (4, Value::Bool(true)));
    let (_, _, v) = decoded(&d, "fault", &[0b01]);
    assert_eq!(v, Value::Bool(false));
    let (_, a, v) = decoded(&d, "running_hours", &[0x0001, 0x0000]);
    assert_eq!((a, v), (6, Value::I64(65_536)));
}

#[test]
fn meters_of_one_profile_share_its_point_table_until_one_overrides_a_point() {
    let meter = |name: &str| {
        format!("[[devices]]\nname = \"{name}\"\nlink = \"l\"\nprofile = \"chint-dtsu666\"\n")
    };
    let p = plan(&format!(
        "[gateway]\nsite = \"s\"\nid = \"g\"\n[[links]]\nname = \"l\"\nkind = \"tcp\"\nhost = \"127.0.0.1\"\n\
         {}{}{}[devices.points.ua]\nscale = 1.0\n",
        meter("a"),
        meter("b"),
        meter("h")
    ));
    let [a, b, h] = [0, 1, 2].map(|i| &p.devices[i]);
    assert!(std::sync::Arc::ptr_eq(&a.points, &b.points));
    assert!(!std::sync::Arc::ptr_eq(&a.points, &h.points));
    let bits = 2314.0f32.to_bits();
    let words = [(bits >> 16) as u16, bits as u16];
    assert!(approx(&decoded(b, "ua", &words).2, 231.4));
    assert!(approx(&decoded(h, "ua", &words).2, 2314.0));
}
