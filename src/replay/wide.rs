//! Wide historian exports (`plantwatch replay --device NAME`): one row per poll of one
//! device, a header naming the columns.
//!
//! ```text
//! datetime;Current;Pressure;Volume Flow RateRMS;anomaly
//! 2026-10-01 08:00:00;2.15;0.38;122.5;0
//! ```
//!
//! * The separator is `;` if the header line has one, else `,`. With `;`, a decimal comma
//!   (`2,17`) is read as a decimal point.
//! * The first column is the timestamp (any name, the forms of the long input).
//! * Every other column is matched to a point of the device by name: exactly, or after
//!   lower-casing and turning every run of other characters than `a-z0-9` into `_`
//!   (`Volume Flow RateRMS` is `volume_flow_raterms`). A historian export usually carries
//!   columns that are no point (labels, quality flags, other devices): those are ignored and
//!   listed in the summary; a header that names no point at all is an error, as is a header
//!   that names one point twice.
//! * An empty cell is a point the device did not answer in that poll.
//! * A row with another number of columns than the header, an unreadable timestamp or a
//!   cell that is not a number is a bad row (its line is given; `--skip-bad-rows` counts it
//!   and goes on).
//!
//! Output is the long form, one row per mapped cell: `timestamp,device,point,value,score,alarms`.

use std::io::{BufRead, BufReader, Read, Write};

use super::{
    ReplayError, ReplayOptions, ReplaySummary, Stages, bytes, field, parse_ts, reject, timestamp,
    write_events, write_score_alarms,
};
use crate::decode::Precision;
use crate::model::{BadReason, Name, PointSample, Quality, SampleBatch, Timestamp, Value};

/// The separator of a wide export, from its header line: `;` if it has one, else `,`.
pub fn delimiter(header: &[u8]) -> u8 {
    if header.contains(&b';') { b';' } else { b',' }
}

/// A column name as a point name: lower case, every run of other characters than
/// `a-z0-9` turned into one `_`, none at either end.
pub fn normalise(column: &str) -> String {
    let mut out = String::with_capacity(column.len());
    for c in column.trim().chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('_') {
            out.push('_');
        }
    }
    while out.ends_with('_') {
        out.pop();
    }
    out
}

/// The point each column after the timestamp maps to (`None`: not a point, ignored), from
/// the header `record` and the device's point names.
///
/// # Errors
/// The message for a header that maps no column, or two columns to one point.
pub fn map_columns(
    record: &csv::ByteRecord,
    device: &str,
    points: &[Name],
) -> Result<(Vec<Option<usize>>, Vec<String>), String> {
    let mut map = Vec::with_capacity(record.len().saturating_sub(1));
    let mut unknown = Vec::new();
    let mut taken: Vec<Option<String>> = vec![None; points.len()];
    for i in 1..record.len() {
        let name = field(record, i);
        let found = points.iter().position(|p| p.as_str() == name).or_else(|| {
            let n = normalise(name);
            points.iter().position(|p| p.as_str() == n)
        });
        match found {
            Some(pi) => {
                if let Some(first) = &taken[pi] {
                    return Err(format!(
                        "columns `{first}` and `{name}` both name point `{}` of device `{device}`",
                        points[pi]
                    ));
                }
                taken[pi] = Some(name.to_owned());
                map.push(Some(pi));
            }
            None => {
                unknown.push(name.to_owned());
                map.push(None);
            }
        }
    }
    if map.iter().all(Option::is_none) {
        let names: Vec<&str> = points.iter().map(Name::as_str).collect();
        return Err(format!(
            "no column of the header names a point of device `{device}` (its points: {})",
            names.join(", ")
        ));
    }
    Ok((map, unknown))
}

/// A cell as a value: `None` for an empty cell, `Err` for one that is not a finite number.
fn cell(text: &str, decimal_comma: bool) -> Result<Option<f64>, &'static str> {
    if text.is_empty() {
        return Ok(None);
    }
    let parsed = if decimal_comma && text.contains(',') {
        text.replacen(',', ".", 1).parse::<f64>()
    } else {
        text.parse::<f64>()
    };
    match parsed {
        Ok(v) if v.is_finite() => Ok(Some(v)),
        Ok(_) => Err("is not a finite number"),
        Err(_) => match text {
            "true" | "TRUE" | "True" => Ok(Some(1.0)),
            "false" | "FALSE" | "False" => Ok(Some(0.0)),
            _ => Err("is not a number"),
        },
    }
}

/// Replays a wide export of `device` (see the module docs); `out` already has its header.
#[allow(clippy::too_many_arguments)]
pub(super) fn replay<R: Read, W: Write, E: Write>(
    stages: &mut Stages<'_>,
    input: R,
    out: &mut W,
    events: &mut Option<E>,
    opts: &ReplayOptions,
    device: &str,
    precisions: &[Vec<Precision>],
    progress: &mut impl FnMut(u64),
) -> Result<ReplaySummary, ReplayError> {
    let row_error = |line: u64, message: String| ReplayError::Row {
        input: opts.input_name.clone(),
        line,
        message,
    };
    if opts.consumption {
        return Err(row_error(
            0,
            "--consumption reads the long forms only, not a wide export (--device)".into(),
        ));
    }
    let engine = stages.pipeline.engine();
    let di = engine
        .device_index(device)
        .ok_or_else(|| row_error(0, format!("--device: no device `{device}` in the config")))?;
    let spec = stages.spec;
    let dev = &spec.devices[di];
    let points: Vec<Name> = dev.points.iter().map(|p| p.name.clone()).collect();
    let tz = spec.timezone;
    let io = |what: &'static str| {
        move |source| ReplayError::Io {
            what: what.into(),
            source,
        }
    };

    let mut input = BufReader::with_capacity(1 << 16, input);
    let head = input.fill_buf().map_err(io("input"))?;
    let first_line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let sep = delimiter(first_line);
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(sep)
        .from_reader(input);
    let mut record = csv::ByteRecord::new();
    let read = |reader: &mut csv::Reader<_>, record: &mut csv::ByteRecord, line: u64| {
        reader
            .read_byte_record(record)
            .map_err(|e| row_error(line + 1, e.to_string()))
    };
    if !read(&mut reader, &mut record, 0)? {
        return Err(row_error(
            1,
            "empty input: a wide export needs a header row".into(),
        ));
    }
    if parse_ts(field(&record, 0), tz).is_some() {
        return Err(row_error(
            1,
            format!(
                "`{}` is a timestamp: a wide export (--device) starts with a header row \
                 `timestamp;point1;point2;…` naming the points of `{device}`",
                field(&record, 0)
            ),
        ));
    }
    let (map, unknown) = map_columns(&record, device, &points).map_err(|m| row_error(1, m))?;
    let names: Vec<Vec<u8>> = (0..record.len())
        .map(|i| bytes(&record, i).to_vec())
        .collect();
    let columns = record.len();
    let mut summary = ReplaySummary {
        unknown_columns: unknown,
        ..ReplaySummary::default()
    };
    let mut values: Vec<Option<f64>> = vec![None; columns];
    let mut batch: Option<SampleBatch> = None;
    let mut line = 1u64;
    let mut text = ryu::Buffer::new();
    loop {
        if !read(&mut reader, &mut record, line)? {
            break;
        }
        line = record.position().map_or(line + 1, |p| p.line());
        if record.len() != columns {
            reject(
                &mut summary,
                opts,
                line,
                format!("{} columns; the header has {columns}", record.len()),
            )?;
            continue;
        }
        let ts_text = field(&record, 0);
        let ts = match timestamp(ts_text, tz) {
            Ok(ts) => ts,
            Err(why) => {
                reject(&mut summary, opts, line, why)?;
                continue;
            }
        };
        let mut bad = None;
        for (col, target) in map.iter().enumerate() {
            let i = col + 1;
            values[i] = None;
            let Some(pi) = target else { continue };
            match cell(field(&record, i), sep == b';') {
                Ok(v) => values[i] = v.map(|v| precisions[di][*pi].apply(v)),
                Err(why) => {
                    bad = Some(format!(
                        "column `{}`: value `{}` {why}",
                        String::from_utf8_lossy(&names[i]),
                        field(&record, i)
                    ));
                    break;
                }
            }
        }
        if let Some(message) = bad {
            reject(&mut summary, opts, line, message)?;
            continue;
        }
        summary.rows += 1;
        if summary.rows % 1_000_000 == 0 {
            progress(summary.rows);
        }
        let mut b = batch.take().unwrap_or_else(|| SampleBatch {
            device: dev.name.clone(),
            tick: Timestamp(ts),
            samples: Vec::with_capacity(map.len()),
        });
        b.samples.clear();
        b.tick = Timestamp(ts);
        for (col, target) in map.iter().enumerate() {
            let Some(pi) = *target else { continue };
            let value = values[col + 1];
            b.samples.push(PointSample {
                point: points[pi].clone(),
                ts: Timestamp(ts),
                value: value.map(Value::F64),
                quality: if value.is_some() {
                    Quality::Good
                } else {
                    Quality::Bad(BadReason::CommLost)
                },
            });
        }
        batch = stages.run(b, di)?;
        write_events(stages, events, &mut summary)?;
        let engine = stages.pipeline.engine();
        for (col, target) in map.iter().enumerate() {
            let Some(pi) = *target else { continue };
            let i = col + 1;
            // Allocates only when an alarm is raised.
            let alarms: Vec<&str> = engine.raised_for(di, pi).collect();
            let written = (|| {
                out.write_all(bytes(&record, 0))?;
                out.write_all(b",")?;
                out.write_all(dev.name.as_str().as_bytes())?;
                out.write_all(b",")?;
                out.write_all(points[pi].as_str().as_bytes())?;
                out.write_all(b",")?;
                if let Some(v) = values[i] {
                    // The value as read, unless its register carries fewer digits or it was
                    // written with a decimal comma: then its shortest form.
                    let raw = bytes(&record, i);
                    let same = std::str::from_utf8(raw)
                        .ok()
                        .and_then(|t| t.parse::<f64>().ok())
                        .is_some_and(|r| r.to_bits() == v.to_bits());
                    if same {
                        out.write_all(raw)?;
                    } else {
                        out.write_all(text.format_finite(v).as_bytes())?;
                    }
                }
                write_score_alarms(out, engine.score(di, pi), &alarms)
            })();
            written.map_err(io("output"))?;
        }
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(fields: &[&str]) -> csv::ByteRecord {
        let mut r = csv::ByteRecord::new();
        for f in fields {
            r.push_field(f.as_bytes());
        }
        r
    }

    fn names(points: &[&str]) -> Vec<Name> {
        points.iter().map(|p| Name::new(p).unwrap()).collect()
    }

    #[test]
    fn the_separator_is_a_semicolon_when_the_header_has_one() {
        assert_eq!(delimiter(b"datetime;Current;Pressure"), b';');
        assert_eq!(delimiter(b"ts,current,pressure"), b',');
    }

    #[test]
    fn columns_map_to_points_by_name_or_normalised_name_and_the_rest_are_listed() {
        let points = names(&["current", "volume_flow_raterms", "pressure"]);
        let (map, unknown) = map_columns(
            &header(&[
                "datetime",
                "Current",
                "anomaly",
                "Volume Flow RateRMS",
                "pressure",
            ]),
            "pump",
            &points,
        )
        .unwrap();
        assert_eq!(map, [Some(0), None, Some(1), Some(2)]);
        assert_eq!(unknown, ["anomaly"]);
    }

    #[test]
    fn a_header_without_points_or_with_a_point_twice_is_refused_naming_them() {
        let points = names(&["current"]);
        let err = map_columns(&header(&["t", "a", "b"]), "pump", &points).unwrap_err();
        assert!(
            err.contains("device `pump`") && err.contains("current"),
            "{err}"
        );
        let err = map_columns(&header(&["t", "current", "Current"]), "pump", &points).unwrap_err();
        assert!(err.contains("`current` and `Current`"), "{err}");
    }

    #[test]
    fn cells_read_numbers_decimal_commas_and_booleans_and_name_what_is_wrong() {
        assert_eq!(cell("2,5", true), Ok(Some(2.5)));
        assert_eq!(cell("2.5", true), Ok(Some(2.5)));
        assert_eq!(cell("", false), Ok(None));
        assert_eq!(cell("true", false), Ok(Some(1.0)));
        assert_eq!(cell("NaN", false), Err("is not a finite number"));
        assert_eq!(cell("2,5", false), Err("is not a number"));
        assert_eq!(normalise("  Volume Flow RateRMS "), "volume_flow_raterms");
        assert_eq!(normalise("Temp. (°C)"), "temp_c");
    }
}
