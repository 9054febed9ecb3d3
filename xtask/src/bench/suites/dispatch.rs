//! Dispatch overhead: wall-clock µs per dispatch of a trivial kernel (ReLU over 64
//! elements, one workgroup), recorded
//!
//! - `dispatch_one_submit`: 1000 dispatches in one compute pass, one submission, one wait;
//! - `dispatch_submit_each`: 1000 submissions of one dispatch each, then one wait;
//! - `dispatch_submit_wait_each`: 100 times submit one dispatch and wait for it.
//!
//! Host-side costs are the point here, so these are always wall-clock (GPU timestamps
//! would leave them out). `median_ms` etc. are per dispatch.

use std::time::Instant;

use anyhow::Result;
use wgtrain_device::kernels::elementwise::Relu;
use wgtrain_device::reference::elementwise as ew_ref;
use wgtrain_device::{Dispatch, Gpu};

use crate::bench::data::{check, download, nan_buffer, narrow, random, run_once, widen};
use crate::bench::harness::Bench;
use crate::bench::record::{Kind, Record};
use crate::bench::timing::wall_stats;

const COUNT: u32 = 64;

fn validate(gpu: &Gpu, relu: &Relu) -> Result<f64> {
    let x = random(COUNT as usize, 91);
    let dx = gpu.upload(&x, "bench.x")?;
    let y = nan_buffer(gpu, COUNT as u64)?;
    let d = relu.prepare(gpu, &dx, &y)?;
    run_once(gpu, &[&d])?;
    let want = narrow(&ew_ref::relu(relu, &widen(&x)));
    check("trivial ReLU", &download(gpu, &y, COUNT as u64)?, &want)
}

/// One way of issuing dispatches: returns ms per dispatch of one trial.
type Issue = fn(&Gpu, &Dispatch) -> Result<f64>;

fn one_submit(gpu: &Gpu, d: &Dispatch) -> Result<f64> {
    const N: usize = 1000;
    let start = Instant::now();
    let mut enc = gpu.encoder("bench.dispatch");
    wgtrain_device::encode_all(&mut enc, "bench.dispatch", std::iter::repeat_n(d, N));
    gpu.submit(enc);
    gpu.sync()?;
    Ok(start.elapsed().as_secs_f64() * 1e3 / N as f64)
}

fn submit_each(gpu: &Gpu, d: &Dispatch) -> Result<f64> {
    const N: usize = 1000;
    let start = Instant::now();
    for _ in 0..N {
        let mut enc = gpu.encoder("bench.dispatch");
        d.encode(&mut enc);
        gpu.submit(enc);
    }
    gpu.sync()?;
    Ok(start.elapsed().as_secs_f64() * 1e3 / N as f64)
}

fn submit_wait_each(gpu: &Gpu, d: &Dispatch) -> Result<f64> {
    const N: usize = 100;
    let start = Instant::now();
    for _ in 0..N {
        let mut enc = gpu.encoder("bench.dispatch");
        d.encode(&mut enc);
        gpu.submit(enc);
        gpu.sync()?;
    }
    Ok(start.elapsed().as_secs_f64() * 1e3 / N as f64)
}

fn figure(bench: &mut Bench, name: &str, shape: &str, issue: Issue) {
    if !bench.wants(name) {
        return;
    }
    if bench.opts.list {
        println!("{name:<52} {shape}");
        return;
    }
    let gpu = bench.gpu;
    let relu = Relu { count: COUNT };
    let mut rec = Record::new(name, Kind::Dispatch, shape.to_owned());
    let timed = validate(gpu, &relu).and_then(|err| {
        rec.validated = true;
        rec.validation_error = Some(err);
        let x = gpu.upload(&random(COUNT as usize, 92), "bench.x")?;
        let y = gpu.pool().acquire(COUNT as u64 * 4, "bench.y")?;
        let d = relu.prepare(gpu, &x, &y)?;
        wall_stats(bench.timer.reps(), || issue(gpu, &d))
    });
    match timed {
        Ok(t) => {
            (rec.median_ms, rec.min_ms, rec.max_ms) = (Some(t.median), Some(t.min), Some(t.max));
            rec.wall_median_ms = Some(t.median);
            rec.timer = Some("wall".to_owned());
            rec.reps = Some(bench.timer.reps());
        }
        Err(e) if rec.validated => rec.error = Some(format!("{e:#}")),
        Err(e) => rec.error = Some(format!("failed validation, not timed: {e:#}")),
    }
    bench.push(rec);
}

pub fn run(bench: &mut Bench) {
    let what = "ReLU over 64 elements (one workgroup)";
    figure(
        bench,
        "dispatch_one_submit",
        &format!("{what}: 1000 dispatches, one pass, one submission, one wait"),
        one_submit,
    );
    figure(
        bench,
        "dispatch_submit_each",
        &format!("{what}: 1000 submissions of one dispatch, one wait"),
        submit_each,
    );
    figure(
        bench,
        "dispatch_submit_wait_each",
        &format!("{what}: submit one dispatch and wait, 100 times"),
        submit_wait_each,
    );
}
