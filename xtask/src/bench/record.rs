//! What a run produces: one [`Record`] per figure and the [`Report`] around them, in the
//! JSON shape shared with `bench/pytorch_reference.py` (which writes the same fields
//! that it can fill, and the same names).

use serde::{Deserialize, Serialize};

/// What a figure measures (the JSON `kind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Matmul,
    ConvFwd,
    ConvBwdData,
    ConvBwdFilter,
    Memory,
    Dispatch,
    Step,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Matmul => "matmul",
            Kind::ConvFwd => "conv_fwd",
            Kind::ConvBwdData => "conv_bwd_data",
            Kind::ConvBwdFilter => "conv_bwd_filter",
            Kind::Memory => "memory",
            Kind::Dispatch => "dispatch",
            Kind::Step => "step",
        }
    }

    /// Compute-bound kinds are rated in GFLOP/s, the others in GB/s (or µs).
    pub fn is_compute(self) -> bool {
        matches!(
            self,
            Kind::Matmul | Kind::ConvFwd | Kind::ConvBwdData | Kind::ConvBwdFilter
        )
    }
}

/// One benchmark figure. The first nine fields are the JSON shape; the rest are
/// extras (absent fields read as `None` from a reference JSON).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Record {
    pub name: String,
    pub kind: Kind,
    pub median_ms: Option<f64>,
    pub min_ms: Option<f64>,
    pub max_ms: Option<f64>,
    pub gflops: Option<f64>,
    pub gbs: Option<f64>,
    /// Achieved rate over the run's own ceiling (FMA peak or copy bandwidth).
    pub fraction_of_peak: Option<f64>,
    pub validated: bool,
    /// The workload, in words (sizes, layout, options).
    #[serde(default)]
    pub shape: String,
    /// Floating-point operations per repeat (an FMA is two).
    #[serde(default)]
    pub flops: Option<f64>,
    /// Bytes per repeat under the model: each input read once, each output written once.
    #[serde(default)]
    pub bytes: Option<f64>,
    /// `flops / bytes`.
    #[serde(default)]
    pub intensity: Option<f64>,
    /// Largest relative error of the validation run against the CPU reference.
    #[serde(default)]
    pub validation_error: Option<f64>,
    /// `timestamp`, `queue` or `wall` (dispatch overhead).
    #[serde(default)]
    pub timer: Option<String>,
    /// Repeats recorded per timed run.
    #[serde(default)]
    pub batch: Option<usize>,
    /// Timed runs (the median is over these).
    #[serde(default)]
    pub reps: Option<usize>,
    /// Median wall-clock ms per repeat (differs from `median_ms` with timestamp timing).
    #[serde(default)]
    pub wall_median_ms: Option<f64>,
    /// Wall ms of the preparation: random inputs generated and uploaded, pipelines
    /// created (or found in the cache, when an earlier figure used the same variant).
    #[serde(default)]
    pub prepare_ms: Option<f64>,
    /// Wall ms of the first run, cold.
    #[serde(default)]
    pub first_run_ms: Option<f64>,
    /// Why the figure has no timing (a failed validation or preparation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Not run because a tensor exceeds this adapter's limits (not counted as a failure).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skipped: bool,
    /// With `--compare`: the reference's median for the same name, and ours / theirs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference_median_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ratio_to_reference: Option<f64>,
}

impl Record {
    /// A record with only its identity filled in.
    pub fn new(name: &str, kind: Kind, shape: String) -> Self {
        Record {
            name: name.to_owned(),
            kind,
            median_ms: None,
            min_ms: None,
            max_ms: None,
            gflops: None,
            gbs: None,
            fraction_of_peak: None,
            validated: false,
            shape,
            flops: None,
            bytes: None,
            intensity: None,
            validation_error: None,
            timer: None,
            batch: None,
            reps: None,
            wall_median_ms: None,
            prepare_ms: None,
            first_run_ms: None,
            error: None,
            skipped: false,
            reference_median_ms: None,
            ratio_to_reference: None,
        }
    }
}

/// A ceiling measured by a probe, with its timing.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Probe {
    pub name: String,
    pub median_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    /// GFLOP/s for the FMA probe, GB/s for the copy probe.
    pub rate: f64,
}

/// A whole run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    pub adapter: String,
    pub backend: String,
    pub date: String,
    pub commit: String,
    pub peak_gflops: Option<f64>,
    pub bandwidth_gbs: Option<f64>,
    pub results: Vec<Record>,
    /// Whole training steps: empty until the graph crate exists.
    #[serde(default)]
    pub steps: Vec<serde_json::Value>,
    #[serde(default)]
    pub driver: String,
    #[serde(default)]
    pub device_type: String,
    #[serde(default)]
    pub command: String,
    #[serde(default)]
    pub timer: String,
    #[serde(default)]
    pub batch: Option<u32>,
    #[serde(default)]
    pub fc_batch: Option<u32>,
    #[serde(default)]
    pub roofline: Vec<Probe>,
    /// Notes a reader needs (e.g. what is not measured yet).
    #[serde(default)]
    pub notes: Vec<String>,
}

/// A two-figure report for the output tests.
#[cfg(test)]
pub fn sample_report() -> Report {
    let mut mm = Record::new("matmul_1024x1024x1024", Kind::Matmul, String::new());
    (mm.intensity, mm.gflops, mm.fraction_of_peak) = (Some(170.7), Some(14.0), Some(0.18));
    mm.median_ms = Some(153.0);
    let mut relu = Record::new("relu_fwd_16777216", Kind::Memory, String::new());
    (relu.gbs, relu.median_ms) = (Some(3.0), Some(40.0));
    Report {
        adapter: "llvmpipe <test> & co".to_owned(),
        backend: "Vulkan".to_owned(),
        date: "2026-01-01 00:00 UTC".to_owned(),
        commit: "abc".to_owned(),
        peak_gflops: Some(80.0),
        bandwidth_gbs: Some(7.5),
        results: vec![mm, relu],
        steps: Vec::new(),
        driver: String::new(),
        device_type: "Cpu".to_owned(),
        command: "cargo xtask bench".to_owned(),
        timer: "timestamp".to_owned(),
        batch: Some(1),
        fc_batch: Some(16),
        roofline: Vec::new(),
        notes: Vec::new(),
    }
}
