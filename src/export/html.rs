//! The report as one self-contained HTML5 file that an energy manager opens, prints (A4) and
//! sends: inline CSS, charts as inline SVG drawn here, no JavaScript, fonts, images or links
//! to fetch, so it reads the same offline, in a mail client and on paper.
//!
//! Invariants: every piece of text that comes from the configuration or the ledger (meter,
//! group and unit names) goes through [`escape`]; the output depends on the report and on
//! `local` only (no time of generation), so it can be checked against a fixed ledger. Each
//! chart is an `<svg data-chart="…">`: `daily` (kgce per day by kind, then `daily-<kind>` in
//! the kind's unit), `load-profile`, `tou`, `demand` and `benchmark`.

use std::fmt::Write as _;

use super::{Day, Intensity, Report, num};

/// `write!` into a `String`, which cannot fail.
macro_rules! w {
    ($out:expr, $($arg:tt)*) => {{
        let _infallible = write!($out, $($arg)*);
    }};
}

/// Text made safe for HTML element content and quoted attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Colours of sharp, peak, flat and valley (red to blue: dear to cheap), chosen to stay
/// distinct in greyscale print.
const TOU_COLOURS: [&str; 4] = ["#b2182b", "#ef8a62", "#67a9cf", "#2166ac"];

/// The periods as the tables and legends name them.
const TOU_LABELS: [&str; 4] = [
    "Sharp (尖峰)",
    "Peak (高峰)",
    "Flat (平段)",
    "Valley (低谷)",
];

/// Colours of the energy kinds, in the order of `Report::kinds`.
const KIND_COLOURS: [&str; 8] = [
    "#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666",
];

/// Beyond this many days the daily table is left out (the charts still show every day): a
/// year of rows would be ten printed pages.
const DAILY_TABLE_MAX_DAYS: usize = 62;

const STYLE: &str = "\
@page { size: A4; margin: 14mm 12mm; }
* { box-sizing: border-box; }
html { background: #fff; }
body { margin: 0 auto; max-width: 190mm; padding: 8mm 0; color: #111; background: #fff;
  font: 10pt/1.4 \"Noto Sans CJK SC\", \"Source Han Sans SC\", \"Microsoft YaHei\", \"PingFang SC\",
  \"WenQuanYi Micro Hei\", \"DejaVu Sans\", Arial, sans-serif;
  -webkit-print-color-adjust: exact; print-color-adjust: exact; }
h1 { font-size: 17pt; margin: 0 0 2mm; }
h2 { font-size: 12.5pt; margin: 7mm 0 2mm; border-bottom: 1.5px solid #333; padding-bottom: 1mm; }
h3 { font-size: 10.5pt; margin: 4mm 0 1mm; }
p { margin: 1mm 0; }
.sub { color: #444; }
.note { border: 1px dashed #888; padding: 2mm 3mm; color: #333; }
table { border-collapse: collapse; width: 100%; font-size: 8.5pt; margin: 1mm 0 3mm; }
caption { text-align: left; font-size: 8.5pt; color: #444; padding-bottom: 1mm; }
th, td { border-bottom: 1px solid #ccc; padding: 1px 5px; text-align: right; vertical-align: top; }
th { border-bottom: 1.5px solid #333; font-weight: 600; }
th.l, td.l { text-align: left; }
td { font-variant-numeric: tabular-nums; }
figure { margin: 1mm 0 3mm; }
svg { display: block; width: 100%; height: auto; font-size: 11px; }
section, figure, table { break-inside: avoid; page-break-inside: avoid; }
h2, h3 { break-after: avoid; page-break-after: avoid; }
footer { margin-top: 6mm; font-size: 8pt; color: #444; border-top: 1px solid #ccc; padding-top: 2mm; }
@media print { body { max-width: none; padding: 0; } }
";

/// Renders `report`; times are local (`local` formats a UTC ms instant).
pub fn render(report: &Report, local: impl Fn(i64) -> String) -> String {
    let mut out = String::with_capacity(64 * 1024);
    let label = escape(&report.span.label);
    w!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>Energy report (能源报告) {label}</title>\n<style>\n{STYLE}</style>\n</head>\n<body>\n"
    );
    w!(
        out,
        "<header>\n<h1>Energy report (能源报告) {label}</h1>\n<p class=\"sub\">{} to {} ({}), \
         tariff {}</p>\n</header>\n",
        escape(&local(report.span.from_ms)),
        escape(&local(report.span.to_ms)),
        escape(&report.span.timezone),
        escape(&report.tariff),
    );
    summary(&mut out, report, &local);
    daily_section(&mut out, report);
    load_profile_section(&mut out, report);
    tou_section(&mut out, report);
    demand_section(&mut out, report, &local);
    benchmark_section(&mut out, report);
    tables(&mut out, report, &local);
    coefficients(&mut out, report);
    w!(
        out,
        "<footer>plantwatch energy report {label}. Totals are sums of the ledger's interval \
         deltas, estimated intervals included; maximum demand is the highest average power of \
         one interval. Standard coal per the coefficients above.</footer>\n</body>\n</html>\n"
    );
    out
}

fn pct(v: f64) -> String {
    format!("{v:.1} %")
}

/// The measured share of `c`, never rounded up to "100.0 %" while an interval is short.
fn measured_pct(c: &super::Completeness) -> String {
    format!("{} %", c.measured_percent_text())
}

fn opt_num(v: Option<f64>) -> String {
    v.map(num).unwrap_or_else(|| "–".into())
}

fn summary(out: &mut String, r: &Report, local: &impl Fn(i64) -> String) {
    let c = &r.completeness;
    out.push_str("<section>\n<h2>Summary (概览)</h2>\n<table class=\"summary\">\n");
    let mut row = |k: &str, v: String| {
        w!(
            out,
            "<tr><th class=\"l\">{k}</th><td class=\"l\">{v}</td></tr>\n"
        )
    };
    row(
        "Total standard coal (综合能耗)",
        format!(
            "{} kgce = {} tce",
            num(r.total_kgce),
            format_args!("{:.6}", r.total_tce)
        ),
    );
    row(
        "Site maximum demand (最大需量)",
        r.max_demand.map_or_else(
            || "–".into(),
            |d| format!("{} kW at {}", num(d.kw), escape(&local(d.at_ms))),
        ),
    );
    row(
        "Data completeness (数据完整率)",
        format!(
            "{} of {} intervals measured ({}), {} estimated, {} missing{}",
            c.measured,
            c.expected,
            measured_pct(c),
            c.estimated,
            c.missing,
            match c.events {
                0 => String::new(),
                1 => "; 1 counter event (listed under the completeness table)".into(),
                n => format!("; {n} counter events (listed under the completeness table)"),
            }
        ),
    );
    row(
        "Coefficients (折标系数)",
        format!(
            "{}; electricity on the {} basis",
            escape(&r.coefficients_source),
            basis(&r.electricity_basis)
        ),
    );
    out.push_str("</table>\n</section>\n");
}

fn basis(b: &str) -> String {
    match b {
        "equivalent" => "equivalent (当量值)".into(),
        "equal_value" => "equal-value (等价值)".into(),
        other => escape(other),
    }
}

// ---- charts -------------------------------------------------------------------------------

/// The plot area of a chart, in SVG user units.
#[derive(Debug, Clone, Copy)]
struct Frame {
    w: f64,
    h: f64,
    left: f64,
    right: f64,
    top: f64,
    bottom: f64,
}

impl Frame {
    const fn new(h: f64) -> Self {
        Self {
            w: 720.0,
            h,
            left: 58.0,
            right: 12.0,
            top: 28.0,
            bottom: 30.0,
        }
    }
    fn x0(&self) -> f64 {
        self.left
    }
    fn x1(&self) -> f64 {
        self.w - self.right
    }
    fn y0(&self) -> f64 {
        self.h - self.bottom
    }
    fn y1(&self) -> f64 {
        self.top
    }
    fn pw(&self) -> f64 {
        self.x1() - self.x0()
    }
    fn ph(&self) -> f64 {
        self.y0() - self.y1()
    }
    /// The y of `v` on a 0..`max` axis.
    fn y(&self, v: f64, max: f64) -> f64 {
        self.y0() - (v / max).clamp(0.0, 1.0) * self.ph()
    }
}

/// The smallest of 1, 2, 2.5, 5 × 10ⁿ at or above `v`, so that five ticks fall on round
/// numbers.
fn nice_max(v: f64) -> f64 {
    if !(v.is_finite() && v > 0.0) {
        return 1.0;
    }
    let exp = 10_f64.powf(v.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .into_iter()
        .map(|m| m * exp)
        .find(|m| *m >= v * (1.0 - 1e-12))
        .unwrap_or(10.0 * exp)
}

/// A tick value without trailing zeros (`2.5`, `100`, `0.05`), thousands set apart by a
/// narrow space from 10 000 on (axis labels only: tables print numbers as the CSV does).
fn tick(v: f64) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        return "0".into();
    }
    if v.abs() < 10_000.0 || s.contains('.') {
        return s.to_owned();
    }
    let (sign, digits) = s.split_at(usize::from(s.starts_with('-')));
    let mut out = String::from(sign);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push('\u{202f}');
        }
        out.push(c);
    }
    out
}

fn svg_open(out: &mut String, chart: &str, f: &Frame, title: &str) {
    w!(
        out,
        "<figure><svg data-chart=\"{}\" viewBox=\"0 0 {} {}\" role=\"img\" \
         preserveAspectRatio=\"xMidYMid meet\"><title>{}</title>\n",
        escape(chart),
        f.w,
        f.h,
        escape(title)
    );
}

fn svg_close(out: &mut String) {
    out.push_str("</svg></figure>\n");
}

/// Horizontal grid lines with labels on a 0..`max` axis, and the unit above it.
fn y_axis(out: &mut String, f: &Frame, max: f64, unit: &str) {
    for i in 0..=5 {
        let v = max * f64::from(i) / 5.0;
        let y = f.y(v, max);
        let stroke = if i == 0 { "#333" } else { "#ddd" };
        w!(
            out,
            "<line x1=\"{:.1}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"{stroke}\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n",
            f.x0(),
            f.x1(),
            f.x0() - 4.0,
            y + 3.5,
            tick(v)
        );
    }
    w!(
        out,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n",
        f.x0() - 4.0,
        f.y1() - 12.0,
        escape(unit)
    );
}

/// Date labels under `n` day columns: at most about 16, on whole steps.
fn day_labels(out: &mut String, f: &Frame, days: &[Day]) {
    let n = days.len();
    let step = n.div_ceil(16).max(1);
    let col = f.pw() / n.max(1) as f64;
    for (i, d) in days.iter().enumerate().step_by(step) {
        let x = f.x0() + (i as f64 + 0.5) * col;
        // MM-DD is enough under a chart whose period is in the heading.
        let short = d.date.get(5..).unwrap_or(&d.date);
        w!(
            out,
            "<text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\n",
            f.y0() + 14.0,
            escape(short)
        );
    }
}

/// A legend along the top right: (colour, label) swatches.
fn legend(out: &mut String, f: &Frame, items: &[(&str, String)]) {
    // Laid out from the right so long labels never run off the chart.
    let mut x = f.x1();
    for (colour, label) in items.iter().rev() {
        let width = 16.0 + 6.5 * label.chars().count() as f64;
        x -= width;
        w!(
            out,
            "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"10\" height=\"10\" fill=\"{colour}\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\">{}</text>\n",
            f.y1() - 22.0,
            x + 13.0,
            f.y1() - 13.0,
            escape(label)
        );
        x -= 8.0;
    }
}

fn no_data(out: &mut String, f: &Frame, what: &str) {
    w!(
        out,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#666\">{}</text>\n",
        f.x0() + f.pw() / 2.0,
        f.y1() + f.ph() / 2.0,
        escape(what)
    );
}

/// Vertical bars per day, stacked by series (`values[series][day]`).
fn day_bars(out: &mut String, f: &Frame, days: &[Day], series: &[(&str, Vec<f64>)], unit: &str) {
    let totals: Vec<f64> = (0..days.len())
        .map(|d| series.iter().map(|(_, v)| v[d].max(0.0)).sum())
        .collect();
    let max = nice_max(totals.iter().copied().fold(0.0, f64::max));
    y_axis(out, f, max, unit);
    let col = f.pw() / days.len().max(1) as f64;
    let bar = (col * 0.8).max(0.5);
    for d in 0..days.len() {
        let x = f.x0() + d as f64 * col + (col - bar) / 2.0;
        let mut base = 0.0;
        for (colour, values) in series {
            let v = values[d].max(0.0);
            if v <= 0.0 {
                continue;
            }
            let (top, bottom) = (f.y(base + v, max), f.y(base, max));
            w!(
                out,
                "<rect x=\"{x:.2}\" y=\"{top:.2}\" width=\"{bar:.2}\" height=\"{:.2}\" \
                 fill=\"{colour}\"><title>{} {}</title></rect>\n",
                (bottom - top).max(0.3),
                escape(&days[d].date),
                num(v)
            );
            base += v;
        }
    }
    day_labels(out, f, days);
}

fn kind_colour(i: usize) -> &'static str {
    KIND_COLOURS[i % KIND_COLOURS.len()]
}

fn daily_section(out: &mut String, r: &Report) {
    out.push_str("<section>\n<h2>Daily consumption (每日能耗)</h2>\n");
    if r.days.is_empty() {
        out.push_str("<p class=\"note\">The period has no days.</p>\n</section>\n");
        return;
    }
    let kinds: Vec<(&str, &str)> = r
        .kinds
        .iter()
        .map(|k| (k.kind.as_str(), k.unit.as_str()))
        .collect();
    let f = Frame::new(250.0);
    out.push_str("<h3>Standard coal per day by energy kind (kgce)</h3>\n");
    svg_open(
        out,
        "daily",
        &f,
        "Standard coal per day by energy kind, kgce",
    );
    let series: Vec<(&str, Vec<f64>)> = kinds
        .iter()
        .enumerate()
        .map(|(i, (kind, _))| {
            let factor = coefficient(r, kind).unwrap_or(0.0);
            let values = r
                .days
                .iter()
                .map(|d| d.energy.get(*kind).copied().unwrap_or(0.0) * factor)
                .collect();
            (kind_colour(i), values)
        })
        .collect();
    if kinds.is_empty() {
        no_data(out, &f, "No energy meters configured");
    } else {
        day_bars(out, &f, &r.days, &series, "kgce");
        let items: Vec<(&str, String)> = kinds
            .iter()
            .enumerate()
            .map(|(i, (kind, _))| (kind_colour(i), (*kind).to_owned()))
            .collect();
        legend(out, &f, &items);
    }
    svg_close(out);
    for (i, (kind, unit)) in kinds.iter().enumerate() {
        let f = Frame::new(190.0);
        w!(
            out,
            "<h3>{} per day ({})</h3>\n",
            escape(kind),
            escape(unit)
        );
        let values = r
            .days
            .iter()
            .map(|d| d.energy.get(*kind).copied().unwrap_or(0.0))
            .collect();
        svg_open(
            out,
            &format!("daily-{kind}"),
            &f,
            &format!("{kind} per day, {unit}"),
        );
        day_bars(out, &f, &r.days, &[(kind_colour(i), values)], unit);
        svg_close(out);
    }
    out.push_str("</section>\n");
}

/// The coefficient the report used for `kind`, from its meters.
fn coefficient(r: &Report, kind: &str) -> Option<f64> {
    r.meters
        .iter()
        .find(|m| m.kind == kind)
        .and_then(|m| m.kgce_per_unit)
}

/// A polyline through `points` (x, y or a gap), with a dot on each point that has no
/// neighbour (a line needs two) or on every point when there are few.
fn line(out: &mut String, points: &[Option<(f64, f64)>], colour: &str, dashed: bool) {
    let dots = points.len() <= 100;
    let mut d = String::new();
    let mut pen_down = false;
    for p in points {
        match p {
            Some((x, y)) => {
                w!(d, "{}{x:.1},{y:.1} ", if pen_down { "L" } else { "M" });
                pen_down = true;
            }
            None => pen_down = false,
        }
    }
    if !d.is_empty() {
        let dash = if dashed {
            " stroke-dasharray=\"4 3\""
        } else {
            ""
        };
        w!(
            out,
            "<path d=\"{}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.8\"{dash}/>\n",
            d.trim_end()
        );
    }
    for (i, p) in points.iter().enumerate() {
        let Some((x, y)) = p else { continue };
        let alone = i.checked_sub(1).and_then(|j| points[j]).is_none()
            && points.get(i + 1).copied().flatten().is_none();
        if dots || alone {
            w!(
                out,
                "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"2.2\" fill=\"{colour}\"/>\n"
            );
        }
    }
}

fn load_profile_section(out: &mut String, r: &Report) {
    let p = &r.load_profile;
    let f = Frame::new(230.0);
    out.push_str(
        "<section>\n<h2>Load profile (日负荷曲线)</h2>\n<p class=\"sub\">Average electric power \
         of the site per time of day, over the days with data (kW).</p>\n",
    );
    svg_open(
        out,
        "load-profile",
        &f,
        "Average electric power per time of day, kW",
    );
    let max = nice_max(p.kw.iter().flatten().copied().fold(0.0, f64::max));
    y_axis(out, &f, max, "kW");
    for h in (0..=24).step_by(3) {
        let x = f.x0() + f64::from(h) / 24.0 * f.pw();
        // The last label ends at the axis' end rather than running past the chart.
        let anchor = if h == 24 { "end" } else { "middle" };
        w!(
            out,
            "<line x1=\"{x:.1}\" y1=\"{:.1}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#333\"/>\
             <text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"{anchor}\">{h:02}:00</text>\n",
            f.y0(),
            f.y0() + 4.0,
            f.y0() + 16.0
        );
    }
    if p.kw.iter().all(Option::is_none) {
        no_data(out, &f, "No electricity data");
    } else {
        let n = p.kw.len() as f64;
        let points: Vec<Option<(f64, f64)>> =
            p.kw.iter()
                .enumerate()
                .map(|(i, v)| v.map(|v| (f.x0() + (i as f64 + 0.5) / n * f.pw(), f.y(v, max))))
                .collect();
        line(out, &points, KIND_COLOURS[0], false);
    }
    svg_close(out);
    out.push_str("</section>\n");
}

fn tou_section(out: &mut String, r: &Report) {
    out.push_str("<section>\n<h2>Time-of-use split (峰谷分时)</h2>\n");
    let rows = r.kinds.len().max(1) as f64;
    let mut f = Frame::new(28.0 + rows * 30.0 + 12.0);
    f.left = 150.0;
    f.bottom = 12.0;
    svg_open(
        out,
        "tou",
        &f,
        "Share of each energy kind by time-of-use period",
    );
    let items: Vec<(&str, String)> = TOU_COLOURS
        .iter()
        .zip(TOU_LABELS)
        .map(|(c, l)| (*c, l.to_owned()))
        .collect();
    legend(out, &f, &items);
    if r.kinds.is_empty() {
        no_data(out, &f, "No energy meters configured");
    }
    for (i, k) in r.kinds.iter().enumerate() {
        let y = f.y1() + i as f64 * 30.0 + 4.0;
        w!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{} ({})</text>\n",
            f.x0() - 6.0,
            y + 15.0,
            escape(&k.kind),
            escape(&k.unit)
        );
        let sum: f64 = k.tou.iter().map(|v| v.max(0.0)).sum();
        if sum <= 0.0 {
            w!(
                out,
                "<rect x=\"{:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"22\" fill=\"none\" \
                 stroke=\"#999\"/><text x=\"{:.1}\" y=\"{:.1}\" fill=\"#666\">no consumption</text>\n",
                f.x0(),
                f.pw(),
                f.x0() + 6.0,
                y + 15.0
            );
            continue;
        }
        let mut x = f.x0();
        for (p, v) in k.tou.iter().enumerate() {
            let share = v.max(0.0) / sum;
            let wdt = share * f.pw();
            if wdt <= 0.0 {
                continue;
            }
            w!(
                out,
                "<rect x=\"{x:.2}\" y=\"{y:.1}\" width=\"{wdt:.2}\" height=\"22\" fill=\"{}\">\
                 <title>{} {} {}</title></rect>\n",
                TOU_COLOURS[p],
                TOU_LABELS[p],
                num(*v),
                escape(&k.unit)
            );
            if wdt >= 40.0 {
                w!(
                    out,
                    "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#fff\">{}</text>\n",
                    x + wdt / 2.0,
                    y + 15.0,
                    pct(share * 100.0)
                );
            }
            x += wdt;
        }
    }
    svg_close(out);
    out.push_str(
        "<table>\n<tr><th class=\"l\">Energy kind</th><th>Unit</th><th>Sharp (尖峰)</th>\
         <th>Peak (高峰)</th><th>Flat (平段)</th><th>Valley (低谷)</th><th>Total</th></tr>\n",
    );
    for k in &r.kinds {
        let sum: f64 = k.tou.iter().sum();
        w!(
            out,
            "<tr><td class=\"l\">{}</td><td>{}</td>",
            escape(&k.kind),
            escape(&k.unit)
        );
        for v in k.tou {
            let share = if sum > 0.0 { v / sum * 100.0 } else { 0.0 };
            w!(out, "<td>{} ({})</td>", num(v), pct(share));
        }
        w!(out, "<td>{}</td></tr>\n", num(k.total));
    }
    out.push_str("</table>\n</section>\n");
}

fn demand_section(out: &mut String, r: &Report, local: &impl Fn(i64) -> String) {
    out.push_str(
        "<section>\n<h2>Daily maximum demand (每日最大需量)</h2>\n<p class=\"sub\">The highest \
         average power of one interval each day, kW: the site (electricity meters summed per \
         interval)",
    );
    let electric: Vec<_> = r
        .meters
        .iter()
        .filter(|m| !m.daily_max_kw.is_empty())
        .collect();
    // One line per meter stays readable for a handful of meters only.
    let per_meter = (2..=6).contains(&electric.len());
    if per_meter {
        out.push_str(" and each electricity meter (dashed)");
    }
    out.push_str(".</p>\n");
    let f = Frame::new(230.0);
    svg_open(out, "demand", &f, "Daily maximum demand, kW");
    let site: Vec<Option<f64>> = r.days.iter().map(|d| d.max_demand.map(|m| m.kw)).collect();
    let mut all = site.iter().flatten().copied().collect::<Vec<_>>();
    if per_meter {
        all.extend(
            electric
                .iter()
                .flat_map(|m| m.daily_max_kw.iter().flatten()),
        );
    }
    let max = nice_max(all.iter().copied().fold(0.0, f64::max));
    y_axis(out, &f, max, "kW");
    if all.is_empty() {
        no_data(out, &f, "No electricity data");
    } else {
        let col = f.pw() / r.days.len().max(1) as f64;
        let points = |values: &[Option<f64>]| -> Vec<Option<(f64, f64)>> {
            values
                .iter()
                .enumerate()
                .map(|(i, v)| v.map(|v| (f.x0() + (i as f64 + 0.5) * col, f.y(v, max))))
                .collect()
        };
        let mut items = vec![(KIND_COLOURS[0], "site".to_owned())];
        if per_meter {
            for (i, m) in electric.iter().enumerate() {
                let colour = kind_colour(i + 1);
                line(out, &points(&m.daily_max_kw), colour, true);
                items.push((colour, m.meter.clone()));
            }
        }
        line(out, &points(&site), KIND_COLOURS[0], false);
        legend(out, &f, &items);
    }
    day_labels(out, &f, &r.days);
    svg_close(out);
    if let Some(d) = r.max_demand {
        w!(
            out,
            "<p>Site maximum over the period: <b>{} kW</b> at {}.</p>\n",
            num(d.kw),
            escape(&local(d.at_ms))
        );
    }
    out.push_str("</section>\n");
}

fn benchmark_section(out: &mut String, r: &Report) {
    out.push_str(
        "<section>\n<h2>Energy per unit of product and benchmarks (单位产品能耗与对标)</h2>\n",
    );
    if r.intensity.is_empty() {
        out.push_str(
            "<p class=\"note\">No production counters configured: energy per unit of product \
             needs a <code>[[production]]</code> counter with the groups whose energy it is \
             the product of.</p>\n</section>\n",
        );
        return;
    }
    let benchmarked = r
        .intensity
        .iter()
        .any(|i| i.advanced.is_some() || i.access.is_some() || i.limit.is_some());
    if !benchmarked {
        out.push_str(
            "<p class=\"note\" data-placeholder=\"benchmarks\">No benchmark values configured \
             (未配置对标值): the chart shows energy per unit of product only. Advanced (先进值), \
             access (准入值) and limit (限定值) values from the applicable energy consumption \
             quota standard will be drawn as markers once configured.</p>\n",
        );
    }
    let mut f = Frame::new(28.0 + r.intensity.len() as f64 * 38.0 + 8.0);
    f.left = 190.0;
    f.right = 110.0;
    f.bottom = 8.0;
    svg_open(
        out,
        "benchmark",
        &f,
        "Energy per unit of product, kgce per unit",
    );
    let marks = [
        ("#1a9850", "advanced"),
        ("#fdae61", "access"),
        ("#d73027", "limit"),
    ];
    if benchmarked {
        let items: Vec<(&str, String)> = marks.iter().map(|(c, l)| (*c, (*l).to_owned())).collect();
        legend(out, &f, &items);
    }
    for (row, i) in r.intensity.iter().enumerate() {
        benchmark_row(out, &f, row, i, &marks);
    }
    svg_close(out);
    out.push_str("</section>\n");
}

/// One bullet-chart row: each row has its own scale, since units of product differ.
fn benchmark_row(
    out: &mut String,
    f: &Frame,
    row: usize,
    i: &Intensity,
    marks: &[(&str, &str); 3],
) {
    let y = f.y1() + row as f64 * 38.0 + 4.0;
    w!(
        out,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{} / {}</text>\n",
        f.x0() - 6.0,
        y + 15.0,
        escape(&i.group),
        escape(&i.production)
    );
    let bounds = [i.advanced, i.access, i.limit];
    let max = nice_max(
        bounds
            .iter()
            .flatten()
            .copied()
            .chain(i.kgce_per_unit)
            .fold(0.0, f64::max)
            * 1.1,
    );
    w!(
        out,
        "<rect x=\"{:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"22\" fill=\"#f2f2f2\"/>\n",
        f.x0(),
        f.pw()
    );
    let unit = format!("kgce/{}", i.unit);
    // The row's own scale, under the bar's ends.
    for (x, v, anchor) in [(f.x0(), 0.0, "start"), (f.x1(), max, "end")] {
        w!(
            out,
            "<text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"{anchor}\" font-size=\"9\" \
             fill=\"#666\">{}</text>\n",
            y + 31.0,
            tick(v)
        );
    }
    match i.kgce_per_unit {
        Some(v) => {
            let wdt = (v / max).clamp(0.0, 1.0) * f.pw();
            w!(
                out,
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{wdt:.2}\" height=\"12\" fill=\"#333\"/>\n",
                f.x0(),
                y + 5.0
            );
            let verdict = i
                .verdict
                .as_deref()
                .map(|v| format!(" ({})", escape(v)))
                .unwrap_or_default();
            w!(
                out,
                "<text x=\"{:.1}\" y=\"{:.1}\">{} {}{verdict}</text>\n",
                f.x1() + 6.0,
                y + 15.0,
                num(v),
                escape(&unit)
            );
        }
        None => w!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\" fill=\"#666\">no output</text>\n",
            f.x0() + 6.0,
            y + 15.0
        ),
    }
    for ((colour, name), bound) in marks.iter().zip(bounds) {
        let Some(b) = bound else { continue };
        let x = f.x0() + (b / max).clamp(0.0, 1.0) * f.pw();
        w!(
            out,
            "<line x1=\"{x:.1}\" y1=\"{:.1}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"{colour}\" \
             stroke-width=\"3\"><title>{name} {}</title></line>\n",
            y,
            y + 22.0,
            num(b)
        );
    }
}

// ---- tables -------------------------------------------------------------------------------

fn tou_cells(out: &mut String, tou: &[f64; 4]) {
    for v in tou {
        w!(out, "<td>{}</td>", num(*v));
    }
}

fn tables(out: &mut String, r: &Report, local: &impl Fn(i64) -> String) {
    out.push_str(
        "<section>\n<h2>Energy by kind (分品种能耗)</h2>\n<table>\n<tr><th class=\"l\">Energy \
         kind</th><th>Unit</th><th>Total</th><th>Sharp (尖峰)</th><th>Peak (高峰)</th>\
         <th>Flat (平段)</th><th>Valley (低谷)</th><th>kgce</th><th>Share of kgce</th></tr>\n",
    );
    for k in &r.kinds {
        let kgce = k.kgce.unwrap_or(0.0);
        let share = if r.total_kgce > 0.0 {
            kgce / r.total_kgce * 100.0
        } else {
            0.0
        };
        w!(
            out,
            "<tr><td class=\"l\">{}</td><td>{}</td><td>{}</td>",
            escape(&k.kind),
            escape(&k.unit),
            num(k.total)
        );
        tou_cells(out, &k.tou);
        w!(
            out,
            "<td>{}</td><td>{}</td></tr>\n",
            opt_num(k.kgce),
            pct(share)
        );
    }
    w!(
        out,
        "<tr><th class=\"l\">Total (合计)</th><th></th><th></th><th></th><th></th><th></th>\
         <th></th><th>{}</th><th>{} tce</th></tr>\n</table>\n</section>\n",
        num(r.total_kgce),
        format_args!("{:.6}", r.total_tce)
    );

    out.push_str(
        "<section>\n<h2>Groups (分组能耗)</h2>\n<table>\n<tr><th class=\"l\">Group</th>\
         <th class=\"l\">Kind</th><th>Unit</th><th>Total</th><th>Sharp</th><th>Peak</th>\
         <th>Flat</th><th>Valley</th><th>kgce</th></tr>\n",
    );
    for g in &r.groups {
        w!(
            out,
            "<tr><td class=\"l\">{}</td><td class=\"l\">{}</td><td>{}</td><td>{}</td>",
            escape(&g.group),
            escape(&g.kind),
            escape(&g.unit),
            num(g.total)
        );
        tou_cells(out, &g.tou);
        w!(out, "<td>{}</td></tr>\n", opt_num(g.kgce));
    }
    out.push_str("</table>\n</section>\n");

    out.push_str(
        "<section>\n<h2>Meters (计量器具)</h2>\n<table>\n<tr><th class=\"l\">Meter</th>\
         <th class=\"l\">Kind</th><th>Unit</th><th class=\"l\">Groups</th><th>Total</th>\
         <th>Sharp</th><th>Peak</th><th>Flat</th><th>Valley</th><th>kgce</th></tr>\n",
    );
    for m in &r.meters {
        w!(
            out,
            "<tr><td class=\"l\">{}</td><td class=\"l\">{}</td><td>{}</td><td class=\"l\">{}</td>\
             <td>{}</td>",
            escape(&m.meter),
            escape(&m.kind),
            escape(&m.unit),
            escape(&m.groups.join(", ")),
            num(m.total)
        );
        tou_cells(out, &m.tou);
        w!(out, "<td>{}</td></tr>\n", opt_num(m.kgce));
    }
    out.push_str("</table>\n");
    out.push_str(
        "<h3>Maximum demand and data completeness (最大需量与数据完整性)</h3>\n<table>\n<tr>\
         <th class=\"l\">Meter</th><th>Max demand, kW</th><th class=\"l\">At</th>\
         <th>Expected</th><th>Measured</th><th>Estimated</th><th>Missing</th>\
         <th>Measured share</th></tr>\n",
    );
    for m in &r.meters {
        demand_row(
            out,
            "td",
            &escape(&m.meter),
            m.max_demand,
            &m.completeness,
            local,
        );
    }
    demand_row(
        out,
        "th",
        "All energy meters",
        r.max_demand,
        &r.completeness,
        local,
    );
    out.push_str("</table>\n");
    events_table(out, r, local);
    out.push_str("</section>\n");

    if !r.intensity.is_empty() {
        out.push_str(
            "<section>\n<h2>Energy per unit of product (单位产品能耗)</h2>\n<table>\n<tr>\
             <th class=\"l\">Group</th><th class=\"l\">Production counter</th><th>Output</th>\
             <th>Unit</th><th>kgce</th><th>kgce per unit</th><th>Advanced (先进值)</th>\
             <th>Access (准入值)</th><th>Limit (限定值)</th><th class=\"l\">Verdict</th>\
             <th class=\"l\">Standard</th></tr>\n",
        );
        for i in &r.intensity {
            w!(
                out,
                "<tr><td class=\"l\">{}</td><td class=\"l\">{}</td><td>{}</td><td>{}</td>\
                 <td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"l\">{}</td>\
                 <td class=\"l\">{}</td></tr>\n",
                escape(&i.group),
                escape(&i.production),
                num(i.output),
                escape(&i.unit),
                num(i.kgce),
                opt_num(i.kgce_per_unit),
                opt_num(i.advanced),
                opt_num(i.access),
                opt_num(i.limit),
                i.verdict.as_deref().map_or_else(|| "–".into(), escape),
                i.standard.as_deref().map_or_else(|| "–".into(), escape)
            );
        }
        out.push_str("</table>\n</section>\n");
    }
    savings_table(out, r);
    daily_table(out, r, local);
}

/// One row of the demand and completeness table, in `cell` (`td`, or `th` for the total).
fn demand_row(
    out: &mut String,
    cell: &str,
    label: &str,
    demand: Option<super::Demand>,
    c: &super::Completeness,
    local: &impl Fn(i64) -> String,
) {
    w!(
        out,
        "<tr><{cell} class=\"l\">{label}</{cell}><{cell}>{}</{cell}><{cell} class=\"l\">{}</{cell}>\
         <{cell}>{}</{cell}><{cell}>{}</{cell}><{cell}>{}</{cell}><{cell}>{}</{cell}><{cell}>{}</{cell}></tr>\n",
        opt_num(demand.map(|d| d.kw)),
        demand
            .map(|d| escape(&local(d.at_ms)))
            .unwrap_or_else(|| "–".into()),
        c.expected,
        c.measured,
        c.estimated,
        c.missing,
        measured_pct(c)
    );
}

/// Counter wraps, resets, replacements and jumps: why an interval is short or estimated, and
/// the energy no interval holds.
fn events_table(out: &mut String, r: &Report, local: &impl Fn(i64) -> String) {
    if r.energy_events.is_empty() {
        return;
    }
    out.push_str(
        "<h3>Counter events (计量异常事件)</h3>\n<table>\n<tr><th class=\"l\">Meter</th>\
         <th class=\"l\">Event</th><th class=\"l\">At</th><th>Booked</th>\
         <th>Unattributed (at least)</th><th>Unit</th><th class=\"l\">What happened</th></tr>\n",
    );
    for e in &r.energy_events {
        w!(
            out,
            "<tr><td class=\"l\">{}</td><td class=\"l\">{}</td><td class=\"l\">{}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td class=\"l\">{}</td></tr>\n",
            escape(&e.meter),
            escape(&e.kind),
            escape(&local(e.at_ms)),
            num(e.booked),
            num(e.unattributed),
            escape(&e.unit),
            escape(&e.description)
        );
    }
    out.push_str("</table>\n");
}

/// Energy-performance-contract savings: the model, its fit and the saving.
fn savings_table(out: &mut String, r: &Report) {
    if r.savings.is_empty() {
        return;
    }
    out.push_str(
        "<section>\n<h2>Savings against the baseline (节能量)</h2>\n<p class=\"sub\">Adjusted \
         baseline: what the compared days would have used under the baseline period's model \
         (IPMVP; acceptable with at least 12 baseline days, R² ≥ 0.75 and CV(RMSE) ≤ 25 %).</p>\n\
         <table>\n<tr><th class=\"l\">Project</th><th class=\"l\">Target</th>\
         <th class=\"l\">Model</th><th>Baseline days</th><th>R²</th><th>CV(RMSE) %</th>\
         <th>Days compared</th><th>Unit</th><th>Baseline</th><th>Actual</th><th>Saving</th>\
         <th>Saving %</th><th>Saving kgce</th><th class=\"l\">Notes</th></tr>\n",
    );
    for sv in &r.savings {
        let model = match (&sv.production, sv.fit, sv.mean_daily) {
            (Some(p), Some(f), _) => format!(
                "{} + {} × {} (per day)",
                num(f.intercept),
                num(f.slope),
                escape(p)
            ),
            (None, _, Some(m)) => format!("mean {} per day", num(m)),
            _ => "–".into(),
        };
        w!(
            out,
            "<tr><td class=\"l\">{}</td><td class=\"l\">{}, {}</td><td class=\"l\">{model}<br>\
             {} to {}</td><td>{}</td><td>{}</td><td>{}</td><td>{} of {}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"l\">{}</td></tr>\n",
            escape(&sv.name),
            escape(&sv.target),
            escape(&sv.kind),
            escape(&sv.baseline_from),
            escape(&sv.baseline_to),
            sv.baseline_days,
            sv.fit
                .map_or_else(|| "–".into(), |f| format!("{:.3}", f.r2)),
            sv.cv_rmse_percent
                .map_or_else(|| "–".into(), |c| format!("{c:.1}")),
            sv.days,
            sv.days + sv.days_excluded,
            escape(&sv.unit),
            opt_num(sv.baseline),
            num(sv.actual),
            opt_num(sv.saving),
            sv.saving_percent
                .map_or_else(|| "–".into(), |p| format!("{p:.1}")),
            opt_num(sv.saving_kgce),
            if sv.note.is_empty() {
                "acceptable".into()
            } else {
                escape(&sv.note)
            }
        );
    }
    out.push_str("</table>\n</section>\n");
}

fn daily_table(out: &mut String, r: &Report, local: &impl Fn(i64) -> String) {
    out.push_str("<section>\n<h2>By day (逐日明细)</h2>\n");
    if r.days.len() > DAILY_TABLE_MAX_DAYS {
        w!(
            out,
            "<p class=\"note\">{} days: the daily table is left out above {} days (the charts \
             show every day; <code>--format json</code> has the figures).</p>\n</section>\n",
            r.days.len(),
            DAILY_TABLE_MAX_DAYS
        );
        return;
    }
    out.push_str("<table>\n<tr><th class=\"l\">Date</th>");
    for k in &r.kinds {
        w!(out, "<th>{}, {}</th>", escape(&k.kind), escape(&k.unit));
    }
    out.push_str("<th>kgce</th><th>Max demand, kW</th><th class=\"l\">At</th></tr>\n");
    for d in &r.days {
        w!(out, "<tr><td class=\"l\">{}</td>", escape(&d.date));
        for k in &r.kinds {
            w!(
                out,
                "<td>{}</td>",
                num(d.energy.get(&k.kind).copied().unwrap_or(0.0))
            );
        }
        w!(
            out,
            "<td>{}</td><td>{}</td><td class=\"l\">{}</td></tr>\n",
            num(d.kgce),
            opt_num(d.max_demand.map(|m| m.kw)),
            d.max_demand
                .map(|m| escape(&local(m.at_ms)))
                .unwrap_or_else(|| "–".into())
        );
    }
    out.push_str("</table>\n</section>\n");
}

fn coefficients(out: &mut String, r: &Report) {
    out.push_str(
        "<section>\n<h2>Coefficients used (折标系数)</h2>\n<table class=\"coefficients\">\n",
    );
    w!(
        out,
        "<caption>Source: {}. Electricity on the {} basis.</caption>\n",
        escape(&r.coefficients_source),
        basis(&r.electricity_basis)
    );
    out.push_str(
        "<tr><th class=\"l\">Energy kind</th><th>Unit</th><th>kgce per unit</th>\
         <th class=\"l\">Basis</th></tr>\n",
    );
    for k in &r.kinds {
        let factor = coefficient(r, &k.kind);
        let basis_cell = if k.kind == "electricity" {
            basis(&r.electricity_basis)
        } else {
            String::new()
        };
        w!(
            out,
            "<tr><td class=\"l\">{}</td><td>{}</td><td>{}</td><td class=\"l\">{}</td></tr>\n",
            escape(&k.kind),
            escape(&k.unit),
            // The coefficient as configured, unrounded, as the CSV prints it.
            factor.map_or_else(|| "–".into(), |f| format!("{f}")),
            basis_cell
        );
    }
    out.push_str("</table>\n</section>\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::energy::{Counts, Energy, Meter};
    use crate::export::spec::ReportSpec;
    use crate::export::{Builder, Span};
    use crate::process::coal::EnergyKind;
    use crate::process::counter::{IntervalQuality, MeterParams};

    /// 2026-10-01 00:00 in Asia/Shanghai.
    const OCT1: i64 = 1_790_784_000_000;
    const Q: i64 = 900_000;

    fn report(production: bool) -> Report {
        let meter = |name: &str, counts| Meter {
            name: name.into(),
            device: 0,
            point: 0,
            counts,
            params: MeterParams::default(),
            groups: vec!["press & weld".into()],
            demand: None,
        };
        let mut meters = vec![meter("a", Counts::Energy(EnergyKind::Electricity))];
        if production {
            meters.push(meter("out", Counts::Product("pcs".into())));
        }
        let energy = ReportSpec {
            meters,
            ..Energy::default().report_spec()
        };
        let span = Span {
            label: "2026-10-01..2026-10-02".into(),
            from_ms: OCT1,
            to_ms: OCT1 + 2 * 86_400_000,
            timezone: "Asia/Shanghai".into(),
        };
        let mut b = Builder::new(span, &energy);
        let good = IntervalQuality::Good;
        b.add("a", (OCT1, OCT1 + Q), 100.0, good, [0.0, 0.0, 0.0, 100.0]);
        b.add("out", (OCT1, OCT1 + Q), 10.0, good, [0.0; 4]);
        b.finish()
    }

    #[test]
    fn benchmark_values_become_markers_and_a_verdict_instead_of_the_placeholder() {
        let mut r = report(true);
        let html = render(&r, |ms| ms.to_string());
        assert!(html.contains("No benchmark values configured"));
        assert!(html.contains("<svg data-chart=\"benchmark\""));
        let i = &mut r.intensity[0];
        // 100 kWh × 0.1229 / 10 pcs = 1.229 kgce/pcs: between access and limit.
        (i.advanced, i.access, i.limit) = (Some(1.0), Some(1.2), Some(1.5));
        i.verdict = i
            .kgce_per_unit
            .and_then(|v| crate::export::verdict(v, i.advanced, i.access, i.limit))
            .map(str::to_owned);
        let html = render(&r, |ms| ms.to_string());
        assert!(!html.contains("No benchmark values configured"));
        assert!(html.contains("<title>limit 1.500</title>"), "{html}");
        assert!(html.contains("1.229 kgce/pcs (limit)"));
        assert!(html.contains("press &amp; weld / out"));
    }

    #[test]
    fn without_production_the_benchmark_section_says_what_is_missing() {
        let html = render(&report(false), |ms| ms.to_string());
        assert!(html.contains("No production counters configured"));
        assert!(!html.contains("data-chart=\"benchmark\""));
        // The other charts are still there, and nothing is fetched or run.
        for chart in ["daily", "load-profile", "tou", "demand"] {
            assert!(
                html.contains(&format!("<svg data-chart=\"{chart}\"")),
                "{chart}"
            );
        }
        assert!(!html.contains("<script") && !html.contains("http"));
    }

    #[test]
    fn escape_covers_markup_and_both_quotes() {
        assert_eq!(
            escape(r#"R&D <lab> "a" 'b'"#),
            "R&amp;D &lt;lab&gt; &quot;a&quot; &#39;b&#39;"
        );
        assert_eq!(escape("kWh m³ 峰谷"), "kWh m³ 峰谷");
    }

    #[test]
    fn axis_maxima_are_round_numbers_at_or_above_the_data() {
        assert!((nice_max(120.0) - 200.0).abs() < 1e-9);
        assert!((nice_max(100.0) - 100.0).abs() < 1e-9);
        assert!((nice_max(0.3) - 0.5).abs() < 1e-9);
        assert!((nice_max(21.0) - 25.0).abs() < 1e-9);
        assert!((nice_max(0.0) - 1.0).abs() < 1e-9);
        assert!((nice_max(f64::NAN) - 1.0).abs() < 1e-9);
        assert_eq!(tick(2.5), "2.5");
        assert_eq!(tick(100.0), "100");
        assert_eq!(tick(0.0), "0");
        assert_eq!(tick(5000.0), "5000");
        assert_eq!(tick(200_000.0), "200\u{202f}000");
        assert_eq!(tick(-12_500_000.0), "-12\u{202f}500\u{202f}000");
    }

    #[test]
    fn a_gap_breaks_the_line_and_a_lone_point_gets_a_dot() {
        let mut out = String::new();
        let pts: Vec<Option<(f64, f64)>> = vec![Some((0.0, 1.0)), Some((1.0, 2.0)), None]
            .into_iter()
            .chain(std::iter::repeat_n(None, 200))
            .chain([Some((5.0, 5.0))])
            .collect();
        line(&mut out, &pts, "#000", false);
        assert!(out.contains("M0.0,1.0 L1.0,2.0 M5.0,5.0"), "{out}");
        assert_eq!(out.matches("<circle").count(), 1, "{out}");
    }
}
