//! Pooling figures (memory-bound): AlexNet's 3 × 3 stride-2 max pooling after conv1,
//! ResNet-50's stem max pooling (3 × 3, stride 2, pad 1) and its global average pooling,
//! forward and backward, at the configured batch.
//!
//! Bytes (4 per element): max forward reads x and writes y and argmax (u32); max
//! backward reads dy and argmax and writes dx; global average reads x (dy) and writes
//! y (dx).

use anyhow::Result;
use wgtrain_device::Gpu;
use wgtrain_device::kernels::pool::{GlobalAvgPool, Pool2d};
use wgtrain_device::reference::pool as reference;

use super::memory_figure;
use crate::bench::data::{
    check, check_exact, download, nan_buffer, random, run_once, upload_random,
};
use crate::bench::harness::{Bench, Workload};

/// The same pooling (window, stride, padding, channels) on a 13 × 13 image (or smaller).
fn small_pool(p: &Pool2d) -> Pool2d {
    let h = p.h.min(13);
    let mut s = *p;
    (s.n, s.h, s.w) = (p.n.min(2), h, h);
    s
}

fn validate_max(gpu: &Gpu, p: &Pool2d, backward: bool) -> Result<f64> {
    let (lx, ly) = (p.input_len(), p.output_len());
    let x = random(lx as usize, 21);
    let (want_y, want_arg) = reference::pool2d_forward(p, &x);
    if !backward {
        let dx_in = gpu.upload(&x, "bench.x")?;
        let (y, arg) = (nan_buffer(gpu, ly)?, nan_buffer(gpu, ly)?);
        let d = p.prepare_forward(gpu, &dx_in, &y, Some(&arg))?;
        run_once(gpu, &[&d])?;
        let e = check("max pool forward", &download(gpu, &y, ly)?, &want_y)?;
        let got_arg: Vec<u32> = gpu.download(&arg, ly as usize)?;
        check_exact("max pool argmax", &got_arg, &want_arg)?;
        return Ok(e);
    }
    let dy = random(ly as usize, 22);
    let want = reference::pool2d_backward(p, &dy, Some(&want_arg));
    let (d_dy, d_arg) = (
        gpu.upload(&dy, "bench.dy")?,
        gpu.upload(&want_arg, "bench.arg")?,
    );
    let dx = nan_buffer(gpu, lx)?;
    let d = p.prepare_backward(gpu, &d_dy, Some(&d_arg), &dx)?;
    run_once(gpu, &[&d])?;
    check("max pool backward", &download(gpu, &dx, lx)?, &want)
}

/// Full size; the backward's argmax comes from one forward run on random x.
fn prepare_max(gpu: &Gpu, p: &Pool2d, backward: bool) -> Result<Workload> {
    let (lx, ly) = (p.input_len(), p.output_len());
    let x = upload_random(gpu, lx, 23)?;
    let y = gpu.pool().acquire(ly * 4, "bench.y")?;
    let arg = gpu.pool().acquire(ly * 4, "bench.argmax")?;
    let fwd = p.prepare_forward(gpu, &x, &y, Some(&arg))?;
    if !backward {
        return Ok(Workload::one(fwd, vec![x, y, arg]));
    }
    run_once(gpu, &[&fwd])?;
    let dy = upload_random(gpu, ly, 24)?;
    let dx = gpu.pool().acquire(lx * 4, "bench.dx")?;
    let d = p.prepare_backward(gpu, &dy, Some(&arg), &dx)?;
    Ok(Workload::one(d, vec![x, y, arg, dy, dx]))
}

fn max_pool(bench: &mut Bench, model: &str, p: Pool2d) {
    let (lx, ly) = (p.input_len() as f64, p.output_len() as f64);
    let shape = format!(
        "max {}x{} stride {} pad {}: x[{},{},{},{}] -> y[{},{},{},{}] + argmax",
        p.r,
        p.s,
        p.stride_h,
        p.pad_h,
        p.n,
        p.h,
        p.w,
        p.c,
        p.n,
        p.out_h(),
        p.out_w(),
        p.c
    );
    let s = small_pool(&p);
    for (pass, backward) in [("fwd", false), ("bwd", true)] {
        memory_figure(
            bench,
            format!("maxpool_{pass}_{model}_n{}", p.n),
            shape.clone(),
            4.0 * (lx + 2.0 * ly),
            |gpu| validate_max(gpu, &s, backward),
            |gpu| prepare_max(gpu, &p, backward),
        );
    }
}

fn validate_global(gpu: &Gpu, g: &GlobalAvgPool, backward: bool) -> Result<f64> {
    let (lx, ly) = (g.input_len(), g.output_len());
    let (len_in, len_out) = if backward { (ly, lx) } else { (lx, ly) };
    let input = random(len_in as usize, 25);
    let d_in = gpu.upload(&input, "bench.in")?;
    let out = nan_buffer(gpu, len_out)?;
    let (d, want) = if backward {
        let d = g.prepare_backward(gpu, &d_in, &out)?;
        (d, reference::global_avg_pool_backward(g, &input))
    } else {
        let d = g.prepare_forward(gpu, &d_in, &out)?;
        (d, reference::global_avg_pool_forward(g, &input))
    };
    run_once(gpu, &[&d])?;
    check("global average pool", &download(gpu, &out, len_out)?, &want)
}

fn prepare_global(gpu: &Gpu, g: &GlobalAvgPool, backward: bool) -> Result<Workload> {
    let (lx, ly) = (g.input_len(), g.output_len());
    let (len_in, len_out) = if backward { (ly, lx) } else { (lx, ly) };
    let input = upload_random(gpu, len_in, 26)?;
    let out = gpu.pool().acquire(len_out * 4, "bench.out")?;
    let d = if backward {
        g.prepare_backward(gpu, &input, &out)?
    } else {
        g.prepare_forward(gpu, &input, &out)?
    };
    Ok(Workload::one(d, vec![input, out]))
}

fn global_avg_pool(bench: &mut Bench, model: &str, g: GlobalAvgPool) {
    let shape = format!(
        "global average: x[{},{},{},{}] -> y[{},{}]",
        g.n, g.h, g.w, g.c, g.n, g.c
    );
    let small = GlobalAvgPool::new(g.n.min(2), g.h, g.w, g.c);
    let bytes = 4.0 * (g.input_len() + g.output_len()) as f64;
    for (pass, backward) in [("fwd", false), ("bwd", true)] {
        memory_figure(
            bench,
            format!("avgpool_{pass}_{model}_n{}", g.n),
            shape.clone(),
            bytes,
            |gpu| validate_global(gpu, &small, backward),
            |gpu| prepare_global(gpu, &g, backward),
        );
    }
}

pub fn run(bench: &mut Bench) {
    let n = bench.sizes.batch;
    max_pool(bench, "alexnet_pool1", Pool2d::max(n, 55, 55, 64, 3, 2, 0));
    max_pool(
        bench,
        "resnet50_stem",
        Pool2d::max(n, 112, 112, 64, 3, 2, 1),
    );
    global_avg_pool(bench, "resnet50_global", GlobalAvgPool::new(n, 7, 7, 2048));
}
