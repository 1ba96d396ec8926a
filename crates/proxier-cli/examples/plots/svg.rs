//! Line charts as SVG, written by hand: a few hundred bytes of markup per chart do not need a plotting
//! crate. The output is deterministic (fixed decimals, series in the order given), so a regenerated
//! chart differs from the committed one only when the data does.

use std::fmt::Write;

/// One line of a chart.
#[derive(Debug, Clone)]
pub struct Series {
    pub label: String,
    /// (x, y) points, in x order.
    pub points: Vec<(f64, f64)>,
}

/// An axis: its label and whether it is logarithmic (base 10).
#[derive(Debug, Clone)]
pub struct Axis {
    pub label: String,
    pub log: bool,
}

/// A chart: its title, axes and lines.
#[derive(Debug, Clone)]
pub struct Chart {
    pub title: String,
    pub x: Axis,
    pub y: Axis,
    pub series: Vec<Series>,
}

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 400.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 24.0;
const TOP: f64 = 48.0;
const BOTTOM: f64 = 96.0;
/// Colour-blind-safe (Okabe–Ito) colours, one per series.
const COLORS: [&str; 6] = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9"];

impl Axis {
    fn map(&self, value: f64) -> f64 {
        if self.log { value.max(f64::MIN_POSITIVE).log10() } else { value }
    }

    /// The range shown: whole decades on a log axis, 0 to a round number above the data otherwise.
    fn range(&self, values: impl Iterator<Item = f64>) -> (f64, f64) {
        let (mut low, mut high) = (f64::INFINITY, f64::NEG_INFINITY);
        for value in values {
            low = low.min(value);
            high = high.max(value);
        }
        if !low.is_finite() {
            return (0.0, 1.0);
        }
        if self.log {
            let (low, high) = (self.map(low).floor(), self.map(high).ceil());
            (low, if high > low { high } else { low + 1.0 })
        } else {
            (0.0, nice_ceiling(high))
        }
    }

    /// Tick values in data units within the mapped range.
    fn ticks(&self, (low, high): (f64, f64)) -> Vec<f64> {
        if self.log {
            (low as i32..=high as i32).map(|e| 10f64.powi(e)).collect()
        } else {
            let step = high / 5.0;
            (0..=5).map(|i| step * f64::from(i)).collect()
        }
    }
}

/// The smallest of 1, 2, 2.5, 5 × 10^k at or above `value`.
fn nice_ceiling(value: f64) -> f64 {
    if value <= 0.0 {
        return 1.0;
    }
    let magnitude = 10f64.powi(value.log10().floor() as i32);
    [1.0, 2.0, 2.5, 5.0, 10.0].iter().map(|m| m * magnitude).find(|&c| c >= value).unwrap_or(10.0 * magnitude)
}

/// A tick label: thousands as `k`, no trailing zeros.
fn label(value: f64) -> String {
    if value >= 1000.0 && value % 1000.0 == 0.0 {
        return format!("{}k", value / 1000.0);
    }
    let text = format!("{value:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

impl Chart {
    /// The chart as an SVG document.
    pub fn to_svg(&self) -> String {
        let points = || self.series.iter().flat_map(|s| s.points.iter());
        let x_range = self.x.range(points().map(|p| p.0));
        let y_range = self.y.range(points().map(|p| p.1));
        let (plot_w, plot_h) = (WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM);
        let px = |x: f64| LEFT + (self.x.map(x) - x_range.0) / (x_range.1 - x_range.0) * plot_w;
        let py = |y: f64| TOP + plot_h - (self.y.map(y) - y_range.0) / (y_range.1 - y_range.0) * plot_h;
        let mut svg = String::new();
        let _ = writeln!(
            svg,
            r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="24" text-anchor="middle" font-size="15" font-weight="bold">{}</text>"#,
            WIDTH / 2.0,
            escape(&self.title)
        );
        for tick in self.x.ticks(x_range) {
            let x = px(tick);
            let _ = writeln!(
                svg,
                r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
                TOP + plot_h,
                TOP + plot_h + 16.0,
                label(tick)
            );
        }
        for tick in self.y.ticks(y_range) {
            let y = py(tick);
            let _ = writeln!(
                svg,
                r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
                LEFT + plot_w,
                LEFT - 6.0,
                y + 4.0,
                label(tick)
            );
        }
        let _ = writeln!(
            svg,
            r##"<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="dimgray"/>"##
        );
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            LEFT + plot_w / 2.0,
            TOP + plot_h + 36.0,
            escape(&self.x.label)
        );
        let _ = writeln!(
            svg,
            r#"<text transform="translate(18 {:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
            TOP + plot_h / 2.0,
            escape(&self.y.label)
        );
        for (i, series) in self.series.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            let path: Vec<String> = series.points.iter().map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y))).collect();
            let _ = writeln!(
                svg,
                r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"/>"#,
                path.join(" ")
            );
            // Markers only where points are few enough to read one by one.
            if series.points.len() <= 12 {
                for &(x, y) in &series.points {
                    let _ = writeln!(svg, r#"<circle cx="{:.1}" cy="{:.1}" r="3.5" fill="{color}"/>"#, px(x), py(y));
                }
            }
            // One legend line per series (labels are long), under the x axis label.
            let legend_y = HEIGHT - 42.0 + 16.0 * i as f64;
            let legend_x = LEFT;
            let _ = writeln!(
                svg,
                r#"<rect x="{legend_x:.1}" y="{:.1}" width="14" height="4" fill="{color}"/><text x="{:.1}" y="{legend_y:.1}">{}</text>"#,
                legend_y - 6.0,
                legend_x + 20.0,
                escape(&series.label)
            );
        }
        svg.push_str("</svg>\n");
        svg
    }
}
