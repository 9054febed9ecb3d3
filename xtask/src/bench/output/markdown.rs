//! `--markdown PATH`: the run as a markdown section for `docs/benchmarks.md`.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};

use super::table::rate;
use crate::bench::record::Report;

/// The markdown text of `report`; `reference` names the compared report, if any.
pub fn render(report: &Report, reference: Option<&Report>) -> String {
    let mut s = String::new();
    let opt = |v: Option<f64>, unit: &str| v.map_or("-".to_owned(), |v| format!("{v:.1} {unit}"));
    let _ = writeln!(s, "| | |\n|---|---|");
    for (k, v) in [
        (
            "adapter",
            format!("{} ({})", report.adapter, report.device_type),
        ),
        ("driver", report.driver.clone()),
        ("backend", report.backend.clone()),
        ("date", report.date.clone()),
        ("commit", format!("`{}`", report.commit)),
        ("command", format!("`{}`", report.command)),
        ("timer", report.timer.clone()),
        ("peak FMA rate", opt(report.peak_gflops, "GFLOP/s")),
        ("copy bandwidth", opt(report.bandwidth_gbs, "GB/s")),
    ] {
        let _ = writeln!(s, "| {k} | {v} |");
    }
    for p in report.roofline.iter().filter(|p| p.name.ends_with("_end")) {
        let unit = if p.name.contains("fma") {
            "GFLOP/s"
        } else {
            "GB/s"
        };
        let _ = writeln!(
            s,
            "| {} (after the suites) | {:.1} {unit} |",
            p.name, p.rate
        );
    }
    if let Some(r) = reference {
        let _ = writeln!(
            s,
            "| reference | {} ({}), {}, `{}` |",
            r.adapter, r.backend, r.date, r.command
        );
    }
    s.push('\n');
    let compare = reference.is_some();
    s.push_str("| benchmark | median ms | min ms | max ms | rate | of ceiling |");
    if compare {
        s.push_str(" reference ms | ours / ref |");
    }
    s.push_str("\n|---|--:|--:|--:|--:|--:|");
    if compare {
        s.push_str("--:|--:|");
    }
    s.push('\n');
    for r in &report.results {
        let Some(median) = r.median_ms else {
            let why = r.error.as_deref().unwrap_or("not timed").replace('|', "/");
            let status = if r.skipped { "skipped" } else { "**failed**" };
            let _ = writeln!(s, "| `{}` | {status}: {why} |", r.name);
            continue;
        };
        let ms = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.3}"));
        let _ = write!(
            s,
            "| `{}` | {median:.3} | {} | {} | {} | {} |",
            r.name,
            ms(r.min_ms),
            ms(r.max_ms),
            rate(r).map_or("-".to_owned(), |(v, u)| format!("{v:.1} {u}")),
            r.fraction_of_peak
                .map_or("-".to_owned(), |f| format!("{:.1}%", 100.0 * f)),
        );
        if compare {
            let ratio = r
                .ratio_to_reference
                .map_or("-".to_owned(), |v| format!("{v:.2}"));
            let _ = write!(s, " {} | {ratio} |", ms(r.reference_median_ms));
        }
        s.push('\n');
    }
    steps_table(&mut s, report, reference);
    if !report.notes.is_empty() {
        s.push('\n');
    }
    for note in &report.notes {
        let _ = writeln!(s, "- {note}");
    }
    s
}

/// The training steps, next to the reference's step of the same model and batch.
fn steps_table(s: &mut String, report: &Report, reference: Option<&Report>) {
    if report.steps.is_empty() {
        return;
    }
    let f = |v: &serde_json::Value, k: &str| v.get(k).and_then(serde_json::Value::as_f64);
    s.push_str(
        "\n| training step | batch | input | median ms | images/s | dispatches | planned MiB |",
    );
    if reference.is_some() {
        s.push_str(" reference ms | reference images/s | ours / ref |");
    }
    s.push_str("\n|---|--:|--:|--:|--:|--:|--:|");
    if reference.is_some() {
        s.push_str("--:|--:|--:|");
    }
    s.push('\n');
    for st in &report.steps {
        let model = st.get("model").and_then(|v| v.as_str()).unwrap_or("?");
        let batch = f(st, "batch").unwrap_or(0.0);
        let median = f(st, "median_ms").unwrap_or(f64::NAN);
        let _ = write!(
            s,
            "| {model} | {batch} | {} | {median:.2} | {:.1} | {} | {:.1} |",
            st.get("input").and_then(|v| v.as_str()).unwrap_or("-"),
            f(st, "images_per_s").unwrap_or(f64::NAN),
            f(st, "dispatches").unwrap_or(0.0),
            f(st, "peak_bytes").unwrap_or(0.0) / (1024.0 * 1024.0),
        );
        if let Some(r) = reference {
            let theirs = r.steps.iter().find(|t| {
                t.get("model").and_then(|v| v.as_str()) == Some(model)
                    && f(t, "batch") == Some(batch)
            });
            match theirs.and_then(|t| Some((f(t, "median_ms")?, f(t, "images_per_s")?))) {
                Some((ms, ips)) => {
                    let _ = write!(s, " {ms:.2} | {ips:.1} | {:.2} |", median / ms);
                }
                None => s.push_str(" - | - | - |"),
            }
        }
        s.push('\n');
    }
}

/// Writes [`render`] to `path`.
pub fn write(path: &Path, report: &Report, reference: Option<&Report>) -> Result<()> {
    std::fs::write(path, render(report, reference))
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::record::{Kind, Record, sample_report as report};

    #[test]
    fn markdown_marks_failures_and_reference() {
        let mut r = report();
        r.notes
            .push("training-step figures: not available yet".to_owned());
        let mut bad = Record::new("conv_fwd_x", Kind::ConvFwd, String::new());
        bad.error = Some("failed validation | not timed".to_owned());
        r.results.push(bad);
        r.results[0].reference_median_ms = Some(50.0);
        r.results[0].ratio_to_reference = Some(3.06);
        let md = render(&r, Some(&report()));
        assert!(md.contains("| `matmul_1024x1024x1024` | 153.000 |"));
        assert!(md.contains("| 50.000 | 3.06 |"));
        assert!(md.contains("**failed**: failed validation / not timed"));
        assert!(md.contains("- training-step figures: not available yet"));
    }
}
