//! The table on stdout, printed row by row as figures finish.

use crate::bench::record::{Kind, Probe, Record};

const NAME: usize = 52;

/// The column headers (with the reference's columns under `--compare`).
pub fn print_header(compare: bool) {
    print!(
        "{:<NAME$} {:>10} {:>10} {:>10} {:>18} {:>8}",
        "benchmark", "median ms", "min ms", "max ms", "rate", "of ceil"
    );
    if compare {
        print!(" {:>10} {:>8}", "ref ms", "ours/ref");
    }
    println!();
}

/// A roofline probe's row: its rate is its own ceiling.
pub fn print_probe(p: &Probe, unit: &str) {
    println!(
        "{:<NAME$} {:>10.3} {:>10.3} {:>10.3} {:>10.1} {unit:<7} {:>7.1}%",
        p.name, p.median_ms, p.min_ms, p.max_ms, p.rate, 100.0
    );
}

/// The rate and its unit as printed: GFLOP/s, GB/s, or µs per dispatch.
pub fn rate(r: &Record) -> Option<(f64, &'static str)> {
    match (r.gflops, r.gbs) {
        (Some(g), _) => Some((g, "GFLOP/s")),
        (None, Some(b)) => Some((b, "GB/s")),
        _ if r.kind == Kind::Dispatch => r.median_ms.map(|ms| (ms * 1e3, "µs/disp")),
        _ => None,
    }
}

/// One figure's row, or its error.
pub fn print_row(r: &Record, compare: bool) {
    let Some(median) = r.median_ms else {
        let why = r.error.as_deref().unwrap_or("not timed");
        let status = if r.skipped { "SKIPPED" } else { "FAILED" };
        println!("{:<NAME$} {status}: {why}", r.name);
        return;
    };
    let (min, max) = (r.min_ms.unwrap_or(median), r.max_ms.unwrap_or(median));
    print!("{:<NAME$} {median:>10.3} {min:>10.3} {max:>10.3}", r.name);
    match rate(r) {
        Some((v, unit)) => print!(" {v:>10.1} {unit:<7}"),
        None => print!(" {:>18}", ""),
    }
    match r.fraction_of_peak {
        Some(f) => print!(" {:>7.1}%", 100.0 * f),
        None => print!(" {:>8}", ""),
    }
    if compare {
        match (r.reference_median_ms, r.ratio_to_reference) {
            (Some(t), Some(ratio)) => print!(" {t:>10.3} {ratio:>8.2}"),
            _ => print!(" {:>10} {:>8}", "-", "-"),
        }
    }
    println!();
}

/// A summary of the comparison: geometric mean of ours / theirs per kind.
pub fn print_comparison_summary(records: &[Record]) {
    let mut kinds: Vec<Kind> = Vec::new();
    for r in records {
        if r.ratio_to_reference.is_some() && !kinds.contains(&r.kind) {
            kinds.push(r.kind);
        }
    }
    if kinds.is_empty() {
        println!("\n--compare: no benchmark name in common with the reference");
        return;
    }
    println!("\nours / reference time, geometric mean per kind (lower is better):");
    for kind in kinds {
        let ratios: Vec<f64> = records
            .iter()
            .filter(|r| r.kind == kind)
            .filter_map(|r| r.ratio_to_reference)
            .collect();
        let geo = (ratios.iter().map(|r| r.ln()).sum::<f64>() / ratios.len() as f64).exp();
        println!(
            "  {:<16} {geo:>8.2}  ({} figures)",
            kind.as_str(),
            ratios.len()
        );
    }
}
