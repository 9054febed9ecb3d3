//! The adapter's own ceilings, measured first in every run by the probe shaders of
//! `wgtrain_device::kernels::probe`: peak FMA rate (independent `fma` chains in
//! registers, no memory traffic) and copy bandwidth (a large buffer-to-buffer copy,
//! bytes read + written).

use anyhow::Result;
use wgtrain_device::Gpu;
use wgtrain_device::kernels::probe::{Copy, FmaPeak};

use super::record::Probe;
use super::timing::{Measured, Timer};

/// The two ceilings every figure is compared with.
#[derive(Clone, Debug)]
pub struct Roofline {
    pub peak_gflops: f64,
    pub bandwidth_gbs: f64,
    pub probes: Vec<Probe>,
}

fn probe(name: &str, m: &Measured, rate: f64) -> Probe {
    Probe {
        name: name.to_owned(),
        median_ms: m.time.median,
        min_ms: m.time.min,
        max_ms: m.time.max,
        rate,
    }
}

/// Measures both ceilings.
pub fn measure(gpu: &Gpu, timer: &Timer) -> Result<Roofline> {
    // Enough invocations to fill a large GPU (an H100 holds ~270k resident threads);
    // on a CPU adapter fewer keep the probe short.
    let fma = FmaPeak {
        invocations: if gpu.is_cpu() { 64 * 1024 } else { 1024 * 1024 },
        iters: 2048,
    };
    let out = gpu
        .pool()
        .acquire(fma.invocations as u64 * 16, "bench.fma_out")?;
    let d = fma.prepare(gpu, &out)?;
    let m = timer.measure(gpu, &[&d])?;
    let peak_gflops = fma.flops() / (m.time.median * 1e6);
    let fma_probe = probe("roofline_fma_peak", &m, peak_gflops);

    // 64 MiB each way: past the last-level cache of CPUs and GPUs alike, and under the
    // 128 MiB storage-binding limit of many adapters.
    let bytes = (64u64 << 20).min(gpu.pool().max_buffer_bytes());
    let copy = Copy {
        vec4s: (bytes / 16) as u32,
    };
    let src = gpu.pool().acquire(bytes, "bench.copy_src")?;
    let dst = gpu.pool().acquire(bytes, "bench.copy_dst")?;
    let d = copy.prepare(gpu, &src, &dst)?;
    let m = timer.measure(gpu, &[&d])?;
    let bandwidth_gbs = copy.bytes() / (m.time.median * 1e6);
    let copy_probe = probe("roofline_copy_bandwidth", &m, bandwidth_gbs);
    Ok(Roofline {
        peak_gflops,
        bandwidth_gbs,
        probes: vec![fma_probe, copy_probe],
    })
}
