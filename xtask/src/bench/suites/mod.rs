//! The kernel suites, in the order a run prints them. Each builds its figures from
//! [`crate::bench::workloads`] and hands them to [`Bench::figure`].

pub mod conv;
pub mod dispatch;
pub mod matmul;
pub mod normalization;
pub mod pointwise;
pub mod pooling;

use anyhow::Result;
use wgtrain_device::Gpu;

use super::harness::{Bench, Figure, Workload};
use super::record::Kind;

/// A memory-bound figure: rated in GB/s against the copy bandwidth, with `bytes` from
/// the model "each input read once, each output written once".
pub fn memory_figure(
    bench: &mut Bench,
    name: String,
    shape: String,
    bytes: f64,
    validate: impl FnOnce(&Gpu) -> Result<f64>,
    prepare: impl FnOnce(&Gpu) -> Result<Workload>,
) {
    let key = format!("{name} (validation)");
    let fig = Figure {
        name,
        kind: Kind::Memory,
        shape,
        flops: None,
        bytes,
    };
    bench.figure(fig, key, validate, prepare);
}

/// Runs every suite.
pub fn run_all(bench: &mut Bench) {
    matmul::run(bench);
    conv::run(bench);
    pooling::run(bench);
    normalization::run(bench);
    pointwise::run(bench);
    dispatch::run(bench);
}
