//! `--plot PATH`: a roofline chart as hand-written SVG. Log-log: arithmetic intensity
//! (FLOP per byte of the "inputs read once, outputs written once" model) across,
//! GFLOP/s up; the run's two ceilings as lines (copy bandwidth × intensity, then the
//! peak FMA rate), each compute figure as a point (hover for its name). Memory-bound
//! figures have no flop count and appear only in the table.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result, ensure};

use crate::bench::record::{Kind, Report};

const W: f64 = 960.0;
const H: f64 = 620.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 190.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 70.0;
/// Points are labelled with their names when there are at most this many.
const MAX_LABELS: usize = 30;

const KINDS: [(Kind, &str); 4] = [
    (Kind::Matmul, "#1f77b4"),
    (Kind::ConvFwd, "#2ca02c"),
    (Kind::ConvBwdData, "#ff7f0e"),
    (Kind::ConvBwdFilter, "#d62728"),
];

/// A log-log mapping from data to pixels.
struct Axes {
    x: (f64, f64),
    y: (f64, f64),
}

impl Axes {
    fn px(&self, x: f64) -> f64 {
        let t = (x.log10() - self.x.0.log10()) / (self.x.1.log10() - self.x.0.log10());
        LEFT + t * (W - LEFT - RIGHT)
    }

    fn py(&self, y: f64) -> f64 {
        let t = (y.log10() - self.y.0.log10()) / (self.y.1.log10() - self.y.0.log10());
        H - BOTTOM - t * (H - TOP - BOTTOM)
    }
}

fn decade_below(v: f64) -> f64 {
    10f64.powf(v.log10().floor())
}

fn decade_above(v: f64) -> f64 {
    10f64.powf(v.log10().ceil())
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A number for an axis label: 0.01, 1, 1000, 1e+05.
fn tick(v: f64) -> String {
    if (1e-3..1e5).contains(&v) {
        format!("{}", (v * 1e3).round() / 1e3)
    } else {
        format!("{v:e}")
    }
}

/// The SVG text of the roofline chart of `report`.
pub fn render(report: &Report) -> Result<String> {
    let (Some(peak), Some(bw)) = (report.peak_gflops, report.bandwidth_gbs) else {
        anyhow::bail!("the roofline chart needs both ceilings");
    };
    let points: Vec<(f64, f64, &str, Kind, f64)> = report
        .results
        .iter()
        .filter_map(|r| {
            let f = r.fraction_of_peak.unwrap_or(0.0);
            Some((r.intensity?, r.gflops?, r.name.as_str(), r.kind, f))
        })
        .filter(|p| p.0 > 0.0 && p.1 > 0.0)
        .collect();
    ensure!(peak > 0.0 && bw > 0.0, "the ceilings must be positive");
    let ridge = peak / bw;
    let xs = points.iter().map(|p| p.0).chain([ridge]);
    let ys = points.iter().map(|p| p.1).chain([peak]);
    let (x_min, x_max) = xs.fold((f64::MAX, 0f64), |(a, b), x| (a.min(x), b.max(x)));
    let y_min = ys.fold(f64::MAX, f64::min);
    let ax = Axes {
        x: (decade_below(x_min / 2.0), decade_above(x_max * 2.0)),
        y: (
            decade_below((y_min / 2.0).max(peak * 1e-4)),
            decade_above(peak * 2.0),
        ),
    };
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="24" text-anchor="middle" font-size="15">Roofline: {} ({}), {}</text>
<defs><clipPath id="plot"><rect x="{LEFT}" y="{TOP}" width="{}" height="{}"/></clipPath></defs>"#,
        (LEFT + W - RIGHT) / 2.0,
        escape(&report.adapter),
        escape(&report.backend),
        escape(&report.date),
        W - LEFT - RIGHT,
        H - TOP - BOTTOM,
    );
    grid(&mut s, &ax);
    ceilings(&mut s, &ax, peak, bw);
    let label = points.len() <= MAX_LABELS;
    for (x, y, name, kind, f) in &points {
        let color = KINDS.iter().find(|k| k.0 == *kind).map_or("#555", |k| k.1);
        let (cx, cy) = (ax.px(*x), ax.py(*y));
        let _ = writeln!(
            s,
            r#"<circle cx="{cx:.1}" cy="{cy:.1}" r="4" fill="{color}" fill-opacity="0.75"><title>{} : {x:.2} FLOP/B, {y:.1} GFLOP/s, {:.1}% of peak</title></circle>"#,
            escape(name),
            100.0 * f
        );
        if label {
            let _ = writeln!(
                s,
                r##"<text x="{:.1}" y="{:.1}" font-size="9" fill="#333">{}</text>"##,
                cx + 6.0,
                cy + 3.0,
                escape(name)
            );
        }
    }
    legend(&mut s);
    s.push_str("</svg>\n");
    Ok(s)
}

/// Decade grid lines, tick labels and axis titles.
fn grid(s: &mut String, ax: &Axes) {
    let (x0, x1, y0, y1) = (LEFT, W - RIGHT, TOP, H - BOTTOM);
    let mut v = ax.x.0;
    while v <= ax.x.1 * 1.0001 {
        let x = ax.px(v);
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{y0}" x2="{x:.1}" y2="{y1}" stroke="#ddd"/><text x="{x:.1}" y="{}" text-anchor="middle">{}</text>"##,
            y1 + 16.0,
            tick(v)
        );
        v *= 10.0;
    }
    let mut v = ax.y.0;
    while v <= ax.y.1 * 1.0001 {
        let y = ax.py(v);
        let _ = writeln!(
            s,
            r##"<line x1="{x0}" y1="{y:.1}" x2="{x1}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            x0 - 6.0,
            y + 4.0,
            tick(v)
        );
        v *= 10.0;
    }
    let _ = writeln!(
        s,
        r##"<rect x="{x0}" y="{y0}" width="{}" height="{}" fill="none" stroke="#444"/>
<text x="{}" y="{}" text-anchor="middle">arithmetic intensity (FLOP per byte: inputs read once, outputs written once)</text>
<text x="20" y="{}" text-anchor="middle" transform="rotate(-90 20 {})">GFLOP/s</text>"##,
        x1 - x0,
        y1 - y0,
        (x0 + x1) / 2.0,
        H - 24.0,
        (y0 + y1) / 2.0,
        (y0 + y1) / 2.0,
    );
}

/// The bandwidth slope up to the ridge point, then the flat FMA peak, both labelled.
fn ceilings(s: &mut String, ax: &Axes, peak: f64, bw: f64) {
    let ridge = peak / bw;
    let start = ax.x.0.max(ax.y.0 / bw);
    let (ax0, ay0) = (ax.px(start), ax.py(bw * start));
    let (rx, ry) = (ax.px(ridge), ax.py(peak));
    let ex = ax.px(ax.x.1);
    let _ = writeln!(
        s,
        r##"<polyline clip-path="url(#plot)" points="{ax0:.1},{ay0:.1} {rx:.1},{ry:.1} {ex:.1},{ry:.1}" fill="none" stroke="#000" stroke-width="2"/>"##
    );
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="end">peak FMA rate {peak:.1} GFLOP/s</text>"#,
        ex - 6.0,
        ry - 6.0
    );
    // Label the slope half-way between its start and the ridge, rotated along it.
    let (mx, my) = ((ax0 + rx) / 2.0, (ay0 + ry) / 2.0);
    let angle = (ry - ay0).atan2(rx - ax0).to_degrees();
    let _ = writeln!(
        s,
        r#"<text x="{mx:.1}" y="{:.1}" text-anchor="middle" transform="rotate({angle:.1} {mx:.1} {my:.1})">copy bandwidth {bw:.1} GB/s</text>"#,
        my - 6.0
    );
}

fn legend(s: &mut String) {
    let x = W - RIGHT + 16.0;
    for (i, (kind, color)) in KINDS.iter().enumerate() {
        let y = TOP + 10.0 + 20.0 * i as f64;
        let _ = writeln!(
            s,
            r#"<circle cx="{x}" cy="{y}" r="5" fill="{color}"/><text x="{}" y="{}">{}</text>"#,
            x + 12.0,
            y + 4.0,
            kind.as_str()
        );
    }
    let _ = writeln!(
        s,
        r##"<text x="{x}" y="{}" font-size="10" fill="#555">memory-bound figures:</text><text x="{x}" y="{}" font-size="10" fill="#555">see the table (GB/s)</text>"##,
        TOP + 100.0,
        TOP + 114.0
    );
}

/// Writes [`render`] to `path`.
pub fn write(path: &Path, report: &Report) -> Result<()> {
    std::fs::write(path, render(report)?).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::record::sample_report as report;

    #[test]
    fn chart_has_ceilings_and_compute_points_only() {
        let svg = render(&report()).unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("peak FMA rate 80.0 GFLOP/s"));
        assert!(svg.contains("copy bandwidth 7.5 GB/s"));
        assert_eq!(svg.matches("<circle cx").count(), 1 + KINDS.len());
        assert!(svg.contains("matmul_1024x1024x1024") && !svg.contains("relu_fwd"));
        assert!(svg.contains("&lt;test&gt; &amp; co"));
        let ax = Axes {
            x: (0.1, 1000.0),
            y: (1.0, 100.0),
        };
        assert!((ax.px(0.1) - LEFT).abs() < 1e-9 && (ax.py(1.0) - (H - BOTTOM)).abs() < 1e-9);
        assert_eq!(
            (tick(0.01), tick(1000.0)),
            ("0.01".to_owned(), "1000".to_owned())
        );
    }
}
