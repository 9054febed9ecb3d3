//! Convolution figures: forward, backward-data and backward-filter of every distinct
//! convolution of AlexNet (torchvision's and the 2012 paper's) and ResNet-50, at the
//! configured batch, NHWC activations and KRSC weights, no bias or ReLU.
//!
//! Napkin math: flops = 2·N·P·Q·K·R·S·(C / groups) for each of the three passes; bytes
//! = 4·(x + w + y) elements (each pass reads two of the three tensors once and writes
//! the third once).

use anyhow::Result;
use wgtrain_device::Gpu;
use wgtrain_device::kernels::conv2d::Conv2d;
use wgtrain_device::reference::conv2d as reference;

use crate::bench::data::{check, download, nan_buffer, random, run_once, upload_random};
use crate::bench::harness::{Bench, Figure, Workload};
use crate::bench::record::Kind;
use crate::bench::workloads::{ConvLayer, alexnet_convs, resnet50_convs};

/// The three passes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pass {
    Forward,
    BackwardData,
    BackwardFilter,
}

impl Pass {
    fn kind(self) -> Kind {
        match self {
            Pass::Forward => Kind::ConvFwd,
            Pass::BackwardData => Kind::ConvBwdData,
            Pass::BackwardFilter => Kind::ConvBwdFilter,
        }
    }
}

/// Element counts of (first input, second input, output) of a pass.
fn tensors(p: &Conv2d, pass: Pass) -> (u64, u64, u64) {
    match pass {
        Pass::Forward => (p.x_elems(), p.w_elems(), p.y_elems()),
        Pass::BackwardData => (p.y_elems(), p.w_elems(), p.x_elems()),
        Pass::BackwardFilter => (p.x_elems(), p.y_elems(), p.w_elems()),
    }
}

/// Prepares `pass` of `p` reading `a` and `b` (in [`tensors`] order), writing `out`.
fn dispatch(
    gpu: &Gpu,
    p: &Conv2d,
    pass: Pass,
    a: &wgpu::Buffer,
    b: &wgpu::Buffer,
    out: &wgpu::Buffer,
) -> Result<wgtrain_device::Dispatch> {
    Ok(match pass {
        Pass::Forward => p.prepare(gpu, a, b, None, out)?,
        Pass::BackwardData => p.prepare_backward_data(gpu, a, b, out, false)?,
        Pass::BackwardFilter => p.prepare_backward_filter(gpu, a, b, out, false)?,
    })
}

/// The same layer (channels, filter, stride, padding, groups) on a small image: a few
/// output pixels, including the padded border, at most two images.
fn small(layer: &ConvLayer, batch: u32) -> Conv2d {
    let h = layer.h.min(layer.r + 2 * layer.stride);
    layer.conv(batch.min(2), h)
}

fn validate(gpu: &Gpu, p: &Conv2d, pass: Pass) -> Result<f64> {
    let (ea, eb, eo) = tensors(p, pass);
    let (a, b) = (random(ea as usize, 11), random(eb as usize, 12));
    let (da, db) = (gpu.upload(&a, "bench.a")?, gpu.upload(&b, "bench.b")?);
    let out = nan_buffer(gpu, eo)?;
    let d = dispatch(gpu, p, pass, &da, &db, &out)?;
    run_once(gpu, &[&d])?;
    let want = match pass {
        Pass::Forward => reference::forward(p, &a, &b, None),
        Pass::BackwardData => reference::backward_data(p, &a, &b),
        Pass::BackwardFilter => reference::backward_filter(p, &a, &b),
    };
    check(&format!("{pass:?} {p:?}"), &download(gpu, &out, eo)?, &want)
}

fn prepare(gpu: &Gpu, p: &Conv2d, pass: Pass) -> Result<Workload> {
    let (ea, eb, eo) = tensors(p, pass);
    let a = upload_random(gpu, ea, 13)?;
    let b = upload_random(gpu, eb, 14)?;
    let out = gpu.pool().acquire(eo * 4, "bench.conv_out")?;
    let d = dispatch(gpu, p, pass, &a, &b, &out)?;
    Ok(Workload::one(d, vec![a, b, out]))
}

fn layer_figures(bench: &mut Bench, layer: &ConvLayer) {
    let batch = bench.sizes.batch;
    let full = layer.conv(batch, layer.h);
    let s = small(layer, batch);
    for pass in [Pass::Forward, Pass::BackwardData, Pass::BackwardFilter] {
        let (ea, eb, eo) = tensors(&full, pass);
        let fig = Figure {
            name: layer.name(pass.kind().as_str(), batch),
            kind: pass.kind(),
            shape: layer.describe(batch),
            flops: Some(2.0 * full.macs() as f64),
            bytes: 4.0 * (ea + eb + eo) as f64,
        };
        bench.figure(
            fig,
            format!("{pass:?} {s:?}"),
            |gpu| validate(gpu, &s, pass),
            |gpu| prepare(gpu, &full, pass),
        );
    }
}

pub fn run(bench: &mut Bench) {
    for layer in alexnet_convs().iter().chain(&resnet50_convs()) {
        layer_figures(bench, layer);
    }
}
