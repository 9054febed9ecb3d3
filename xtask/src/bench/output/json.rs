//! `--json PATH` (the report) and `--compare PATH` (a reference report, read back).

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, Result};

use crate::bench::record::Report;

/// Writes `report` as pretty-printed JSON.
pub fn write(path: &Path, report: &Report) -> Result<()> {
    let text = serde_json::to_string_pretty(report).context("serialising the report")?;
    std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
}

/// Reads a report (ours or `bench/pytorch_reference.py`'s).
pub fn read(path: &Path) -> Result<Report> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not a benchmark report (see bench/README.md for the shape)",
            path.display()
        )
    })
}

/// The reference's median ms by benchmark name (figures without a time are left out).
pub fn reference_times(report: &Report) -> HashMap<String, f64> {
    report
        .results
        .iter()
        .filter_map(|r| r.median_ms.map(|ms| (r.name.clone(), ms)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_issue_shape() {
        let text = r#"{"adapter": "cpu", "backend": "torch", "date": "2025-01-01",
            "commit": "abc", "peak_gflops": 80.1, "bandwidth_gbs": 20.3,
            "results": [{"name": "matmul_1024x1024x1024", "kind": "matmul",
              "median_ms": 40.2, "min_ms": 39.8, "max_ms": 41.0, "gflops": 53.4,
              "gbs": null, "fraction_of_peak": 0.67, "validated": true}],
            "steps": []}"#;
        let report: Report = serde_json::from_str(text).unwrap();
        let times = reference_times(&report);
        assert_eq!(times["matmul_1024x1024x1024"], 40.2);
        let again: Report = serde_json::from_str(&serde_json::to_string(&report).unwrap()).unwrap();
        assert_eq!(again.results[0].gflops, Some(53.4));
    }
}
