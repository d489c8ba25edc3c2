//! The report as one CSV table that spreadsheets open directly: a `level` column says what a
//! row sums (`meter`, `group`, `kind`, `total`, `intensity`), and every energy row carries the
//! coefficient it was converted with.
//!
//! Comparisons use the same columns, so the header stays one:
//! - `benchmark`: `kind` is the grade (`advanced`, `access`, `limit`), `total` its value;
//! - `verdict`: `kind` is the best grade met (or `above limit`), `total` the measured value;
//! - `savings-baseline`, `savings-actual`, `savings`: a savings project's adjusted baseline,
//!   actual use and saving over the compared days in `total` (saving also in `kgce`);
//! - `event`: a counter wrap, reset, replacement or jump: `name` is the meter, `kind` the
//!   event, `total` the energy it left unattributed, `max_demand_at` when it happened.

use std::fmt::Write as _;

use super::{Report, num};

/// Column names, in order.
pub const HEADER: &str = "level,name,kind,unit,total,sharp,peak,flat,valley,kgce,kgce_per_unit,\
max_demand_kw,max_demand_at,measured,estimated,missing";

fn opt(v: Option<f64>) -> String {
    v.map(num).unwrap_or_default()
}

/// A field, quoted when it holds a comma, quote or line break.
fn field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// Renders `report`; times are local (`local` formats a UTC ms instant).
pub fn render(report: &Report, local: impl Fn(i64) -> String) -> String {
    let mut out = String::with_capacity(4096);
    let mut line = |cells: &[String]| {
        let _infallible = writeln!(out, "{}", cells.join(","));
    };
    line(&[HEADER.to_owned()]);
    let blank = String::new;
    for m in &report.meters {
        line(&[
            "meter".into(),
            field(&m.meter),
            m.kind.clone(),
            field(&m.unit),
            num(m.total),
            num(m.tou[0]),
            num(m.tou[1]),
            num(m.tou[2]),
            num(m.tou[3]),
            opt(m.kgce),
            m.kgce_per_unit.map(|f| format!("{f}")).unwrap_or_default(),
            opt(m.max_demand.map(|d| d.kw)),
            m.max_demand.map(|d| local(d.at_ms)).unwrap_or_default(),
            m.completeness.measured.to_string(),
            m.completeness.estimated.to_string(),
            m.completeness.missing.to_string(),
        ]);
    }
    for (level, rows) in [("group", &report.groups), ("kind", &report.kinds)] {
        for g in rows {
            line(&[
                level.into(),
                field(&g.group),
                g.kind.clone(),
                field(&g.unit),
                num(g.total),
                num(g.tou[0]),
                num(g.tou[1]),
                num(g.tou[2]),
                num(g.tou[3]),
                opt(g.kgce),
                blank(),
                blank(),
                blank(),
                blank(),
                blank(),
                blank(),
            ]);
        }
    }
    for i in &report.intensity {
        line(&[
            "intensity".into(),
            field(&format!("{}/{}", i.group, i.production)),
            "production".into(),
            field(&format!("kgce/{}", i.unit)),
            opt(i.kgce_per_unit),
            blank(),
            blank(),
            blank(),
            blank(),
            num(i.kgce),
            blank(),
            blank(),
            blank(),
            blank(),
            blank(),
            blank(),
        ]);
    }
    for i in &report.intensity {
        let name = field(&format!("{}/{}", i.group, i.production));
        let unit = field(&format!("kgce/{}", i.unit));
        for (grade, value) in [
            ("advanced", i.advanced),
            ("access", i.access),
            ("limit", i.limit),
        ] {
            if let Some(v) = value {
                let mut cells = vec![blank(); 16];
                cells[..5].clone_from_slice(&[
                    "benchmark".into(),
                    name.clone(),
                    grade.into(),
                    unit.clone(),
                    num(v),
                ]);
                line(&cells);
            }
        }
        if let (Some(v), Some(verdict)) = (i.kgce_per_unit, &i.verdict) {
            let mut cells = vec![blank(); 16];
            cells[..5].clone_from_slice(&[
                "verdict".into(),
                name.clone(),
                field(verdict),
                unit.clone(),
                num(v),
            ]);
            line(&cells);
        }
    }
    for sv in &report.savings {
        let rows = [
            ("savings-baseline", sv.baseline, None),
            ("savings-actual", Some(sv.actual), None),
            ("savings", sv.saving, sv.saving_kgce),
        ];
        for (level, total, kgce) in rows {
            let mut cells = vec![blank(); 16];
            cells[..5].clone_from_slice(&[
                level.into(),
                field(&sv.name),
                sv.kind.clone(),
                field(&sv.unit),
                opt(total),
            ]);
            cells[9] = opt(kgce);
            line(&cells);
        }
    }
    for e in &report.energy_events {
        let mut cells = vec![blank(); 16];
        cells[..5].clone_from_slice(&[
            "event".into(),
            field(&e.meter),
            e.kind.clone(),
            field(&e.unit),
            num(e.unattributed),
        ]);
        cells[12] = local(e.at_ms);
        line(&cells);
    }
    let c = &report.completeness;
    line(&[
        "total".into(),
        field(&report.span.label),
        "all".into(),
        "tce".into(),
        format!("{:.6}", report.total_tce),
        blank(),
        blank(),
        blank(),
        blank(),
        num(report.total_kgce),
        blank(),
        blank(),
        blank(),
        c.measured.to_string(),
        c.estimated.to_string(),
        c.missing.to_string(),
    ]);
    out
}
