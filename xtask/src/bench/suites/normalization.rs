//! Normalisation figures (memory-bound): batch norm's training forward and backward on
//! ResNet-50's stem (112 × 112 × 64) and first stage (56 × 56 × 256) activations, and
//! AlexNet's (2012) LRN after conv1 (55 × 55 × 96), at the configured batch.
//!
//! Bytes (4 per element, x viewed as [M, C] with M = N·H·W): batch-norm training
//! forward reads x, gamma, beta, running mean and variance and writes y, the saved mean
//! and inverse std and the running statistics: 2·M·C + 8·C. Its backward reads x, dy,
//! gamma, saved mean and inverse std and writes dx, dgamma, dbeta: 3·M·C + 5·C. (The
//! kernels read x more than once: the model is the minimum traffic, so their GB/s is
//! what a one-pass kernel would need.) LRN forward reads x and writes y (2·M·C); its
//! backward reads x and dy and writes dx (3·M·C).

use anyhow::Result;
use wgtrain_device::Gpu;
use wgtrain_device::kernels::batchnorm::BatchNorm;
use wgtrain_device::kernels::lrn::Lrn;
use wgtrain_device::reference::{batchnorm as bn_ref, lrn as lrn_ref};

use super::memory_figure;
use crate::bench::data::{check, download, nan_buffer, random, random_in, run_once, upload_random};
use crate::bench::harness::{Bench, Part, Workload};

/// Buffers of the batch-norm per-channel parameters and statistics.
struct Channels {
    gamma: Vec<f32>,
    beta: Vec<f32>,
    running_mean: Vec<f32>,
    running_var: Vec<f32>,
}

fn channels(c: u32) -> Channels {
    let c = c as usize;
    Channels {
        gamma: random_in(c, 31, 0.5, 1.5),
        beta: random(c, 32),
        running_mean: random(c, 33),
        running_var: random_in(c, 34, 0.5, 2.0),
    }
}

fn validate_bn(gpu: &Gpu, p: &BatchNorm, backward: bool) -> Result<f64> {
    let (m, c) = (p.len(), p.c as u64);
    let x = random(m as usize, 35);
    let ch = channels(p.c);
    let want = bn_ref::train_forward(
        p,
        &x,
        &ch.gamma,
        &ch.beta,
        &ch.running_mean,
        &ch.running_var,
    );
    let up = |v: &[f32]| gpu.upload(v, "bench.bn");
    let (dx_in, gamma, beta) = (up(&x)?, up(&ch.gamma)?, up(&ch.beta)?);
    if !backward {
        let (rm, rv) = (up(&ch.running_mean)?, up(&ch.running_var)?);
        let (mean, invstd, y) = (
            nan_buffer(gpu, c)?,
            nan_buffer(gpu, c)?,
            nan_buffer(gpu, m)?,
        );
        let passes = p.prepare_train(gpu, &dx_in, &gamma, &beta, &rm, &rv, &mean, &invstd, &y)?;
        run_once(gpu, &passes.dispatches().iter().collect::<Vec<_>>())?;
        let mut err = check("batch norm y", &download(gpu, &y, m)?, &want.y)?;
        for (what, buf, want) in [
            ("batch norm mean", &mean, &want.mean),
            ("batch norm invstd", &invstd, &want.invstd),
            ("batch norm running mean", &rm, &want.running_mean),
            ("batch norm running var", &rv, &want.running_var),
        ] {
            err = err.max(check(what, &download(gpu, buf, c)?, want)?);
        }
        return Ok(err);
    }
    let dy = random(m as usize, 36);
    let grads = bn_ref::backward(p, &x, &dy, &ch.gamma, &want.mean, &want.invstd);
    let (d_dy, mean, invstd) = (up(&dy)?, up(&want.mean)?, up(&want.invstd)?);
    let (dgamma, dbeta, dx) = (
        nan_buffer(gpu, c)?,
        nan_buffer(gpu, c)?,
        nan_buffer(gpu, m)?,
    );
    let passes = p.prepare_backward(
        gpu, &dx_in, &d_dy, &gamma, &mean, &invstd, &dgamma, &dbeta, &dx,
    )?;
    run_once(gpu, &passes.dispatches().iter().collect::<Vec<_>>())?;
    let err = check("batch norm dx", &download(gpu, &dx, m)?, &grads.dx)?;
    let eg = check(
        "batch norm dgamma",
        &download(gpu, &dgamma, c)?,
        &grads.dgamma,
    )?;
    let eb = check("batch norm dbeta", &download(gpu, &dbeta, c)?, &grads.dbeta)?;
    Ok(err.max(eg).max(eb))
}

fn prepare_bn(gpu: &Gpu, p: &BatchNorm, backward: bool) -> Result<Workload> {
    let (m, c) = (p.len(), p.c as u64);
    let ch = channels(p.c);
    let up = |v: &[f32]| gpu.upload(v, "bench.bn");
    let x = upload_random(gpu, m, 37)?;
    let (gamma, beta) = (up(&ch.gamma)?, up(&ch.beta)?);
    let (rm, rv) = (up(&ch.running_mean)?, up(&ch.running_var)?);
    let (mean, invstd) = (
        gpu.pool().acquire(c * 4, "m")?,
        gpu.pool().acquire(c * 4, "s")?,
    );
    let y = gpu.pool().acquire(m * 4, "bench.y")?;
    let fwd = p.prepare_train(gpu, &x, &gamma, &beta, &rm, &rv, &mean, &invstd, &y)?;
    if !backward {
        let bufs = vec![x, gamma, beta, rm, rv, mean, invstd, y];
        return Ok(Workload::new(vec![Part::BatchNorm(fwd)], bufs));
    }
    // The saved statistics the backward reads come from one forward run.
    run_once(gpu, &fwd.dispatches().iter().collect::<Vec<_>>())?;
    let dy = upload_random(gpu, m, 38)?;
    let (dgamma, dbeta) = (
        gpu.pool().acquire(c * 4, "g")?,
        gpu.pool().acquire(c * 4, "b")?,
    );
    let dx = gpu.pool().acquire(m * 4, "bench.dx")?;
    let bwd = p.prepare_backward(gpu, &x, &dy, &gamma, &mean, &invstd, &dgamma, &dbeta, &dx)?;
    let bufs = vec![
        x, gamma, beta, rm, rv, mean, invstd, y, dy, dgamma, dbeta, dx,
    ];
    Ok(Workload::new(vec![Part::BatchNorm(bwd)], bufs))
}

fn batch_norm(bench: &mut Bench, n: u32, h: u32, c: u32) {
    let p = BatchNorm::new(n * h * h, c);
    let small = BatchNorm::new((n * h * h).min(2 * 13 * 13), c);
    let (mc, c64) = (p.len() as f64, c as f64);
    let shape = format!(
        "batch statistics over x[{n},{h},{h},{c}] (M = {}, C = {c})",
        p.m
    );
    let figures = [
        ("train_fwd", false, 4.0 * (2.0 * mc + 8.0 * c64)),
        ("bwd", true, 4.0 * (3.0 * mc + 5.0 * c64)),
    ];
    for (pass, backward, bytes) in figures {
        memory_figure(
            bench,
            format!("batchnorm_{pass}_resnet50_{h}x{h}x{c}_n{n}"),
            shape.clone(),
            bytes,
            |gpu| validate_bn(gpu, &small, backward),
            |gpu| prepare_bn(gpu, &p, backward),
        );
    }
}

fn validate_lrn(gpu: &Gpu, p: &Lrn, backward: bool) -> Result<f64> {
    let len = p.len();
    let x = random(len as usize, 41);
    let dx_in = gpu.upload(&x, "bench.x")?;
    let out = nan_buffer(gpu, len)?;
    let (d, want, _dy) = if backward {
        let dy = random(len as usize, 42);
        let d_dy = gpu.upload(&dy, "bench.dy")?;
        let d = p.prepare_backward(gpu, &dx_in, &d_dy, &out)?;
        (d, lrn_ref::lrn_backward(p, &x, &dy), Some(d_dy))
    } else {
        let d = p.prepare_forward(gpu, &dx_in, &out)?;
        (d, lrn_ref::lrn_forward(p, &x), None)
    };
    run_once(gpu, &[&d])?;
    check("LRN", &download(gpu, &out, len)?, &want)
}

fn prepare_lrn(gpu: &Gpu, p: &Lrn, backward: bool) -> Result<Workload> {
    let len = p.len();
    let x = upload_random(gpu, len, 43)?;
    let out = gpu.pool().acquire(len * 4, "bench.lrn_out")?;
    if backward {
        let dy = upload_random(gpu, len, 44)?;
        let d = p.prepare_backward(gpu, &x, &dy, &out)?;
        return Ok(Workload::one(d, vec![x, dy, out]));
    }
    let d = p.prepare_forward(gpu, &x, &out)?;
    Ok(Workload::one(d, vec![x, out]))
}

fn lrn(bench: &mut Bench, n: u32, h: u32, c: u32) {
    let p = Lrn::alexnet(n * h * h, c);
    let small = Lrn::alexnet((n * h * h).min(200), c);
    let len = p.len() as f64;
    let shape = format!(
        "across channels, size {} alpha {} beta {} k {}: x[{n},{h},{h},{c}]",
        p.size, p.alpha, p.beta, p.k
    );
    for (pass, backward, bytes) in [("fwd", false, 8.0 * len), ("bwd", true, 12.0 * len)] {
        memory_figure(
            bench,
            format!("lrn_{pass}_alexnet2012_conv1_n{n}"),
            shape.clone(),
            bytes,
            |gpu| validate_lrn(gpu, &small, backward),
            |gpu| prepare_lrn(gpu, &p, backward),
        );
    }
}

pub fn run(bench: &mut Bench) {
    let n = bench.sizes.batch;
    batch_norm(bench, n, 112, 64);
    batch_norm(bench, n, 56, 256);
    lrn(bench, n, 55, 96);
}
