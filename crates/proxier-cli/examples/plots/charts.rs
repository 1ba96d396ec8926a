//! The charts of docs/performance.md, drawn from the benchmark results in `docs/perf/*.csv`. Each CSV
//! row is `series,x,y`; lines starting with `#` say where the numbers come from.

use std::path::Path;

use super::svg::{Axis, Chart, Series};

/// An axis as (label, logarithmic).
type AxisSpec = (&'static str, bool);

/// The charts: (SVG file name under docs/img, CSV file name under docs/perf, title, x axis, y axis).
const CHARTS: &[(&str, &str, &str, AxisSpec, AxisSpec)] = &[
    (
        "cold-load.svg",
        "cold-load.csv",
        "Cold load of every Service (N × 10 endpoints), log–log",
        ("Services", true),
        ("seconds", true),
    ),
    (
        "one-change.svg",
        "one-change.csv",
        "One endpoint change, end to end (median), log–log",
        ("Services", true),
        ("milliseconds", true),
    ),
    (
        "churn.svg",
        "churn.csv",
        "Endpoint churn: each change's end-to-end latency, in order",
        ("change", false),
        ("milliseconds", false),
    ),
];

/// Parses one CSV into series, in the order their labels first appear.
pub fn read_series(name: &str, text: &str) -> Result<Vec<Series>, String> {
    let mut series: Vec<Series> = Vec::new();
    let rows = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty() && !l.starts_with('#')).skip(1);
    for (index, line) in rows {
        let fields: Vec<&str> = line.rsplitn(3, ',').collect();
        let [y, x, label] = fields[..] else {
            return Err(format!("{name}:{}: expected SERIES,X,Y", index + 1));
        };
        let number = |t: &str| t.trim().parse::<f64>().map_err(|e| format!("{name}:{}: {t:?}: {e}", index + 1));
        let point = (number(x)?, number(y)?);
        match series.iter_mut().find(|s| s.label == label) {
            Some(found) => found.points.push(point),
            None => series.push(Series { label: label.to_owned(), points: vec![point] }),
        }
    }
    if series.is_empty() {
        return Err(format!("{name}: no data rows"));
    }
    Ok(series)
}

/// Every chart as (file name, SVG text), from the CSVs in `data`.
pub fn render_all(data: &Path) -> Result<Vec<(&'static str, String)>, String> {
    CHARTS
        .iter()
        .map(|&(svg, csv, title, (x, x_log), (y, y_log))| {
            let path = data.join(csv);
            let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            let chart = Chart {
                title: title.to_owned(),
                x: Axis { label: x.to_owned(), log: x_log },
                y: Axis { label: y.to_owned(), log: y_log },
                series: read_series(csv, &text)?,
            };
            Ok((svg, chart.to_svg()))
        })
        .collect()
}
