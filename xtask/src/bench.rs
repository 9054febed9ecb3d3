//! The benchmark harness: roofline probes, then kernels validated and timed.
//!
//! Timing: queue waits around a batch of repeats (one submission of `batch` dispatches,
//! then `poll(wait)`), after a warm-up submission that also absorbs pipeline creation.
//! Each figure is the median of `reps` such batches, with min and max.

use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use wgtrain_device::kernels::matmul::Matmul;
use wgtrain_device::kernels::probe::{Copy, FmaPeak};
use wgtrain_device::reference::{self, max_relative_error};
use wgtrain_device::{Dispatch, Gpu};

/// Command-line options of `cargo xtask bench`.
pub struct Options {
    pub quick: bool,
    pub filter: Option<String>,
    pub reps: usize,
}

impl Options {
    pub fn parse(args: &[String]) -> Result<Self> {
        let mut opts = Options {
            quick: false,
            filter: None,
            reps: 7,
        };
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            match arg.as_str() {
                "--quick" => opts.quick = true,
                "--filter" => {
                    opts.filter = Some(it.next().context("--filter needs a value")?.clone())
                }
                "--reps" => {
                    let v = it.next().context("--reps needs a value")?;
                    opts.reps = v
                        .parse()
                        .with_context(|| format!("--reps {v:?} is not a number"))?;
                    ensure!(
                        opts.reps >= 5,
                        "--reps must be at least 5 (got {})",
                        opts.reps
                    );
                }
                other => bail!("unknown option {other:?} (see cargo xtask --help)"),
            }
        }
        Ok(opts)
    }

    fn wants(&self, name: &str) -> bool {
        self.filter
            .as_ref()
            .is_none_or(|f| name.contains(f.as_str()))
    }
}

/// Median, min and max of a set of timings, in milliseconds.
struct Timing {
    median: f64,
    min: f64,
    max: f64,
}

/// Times `dispatches` recorded `batch` times in one submission, `reps` times.
fn time(gpu: &Gpu, dispatches: &[&Dispatch], batch: usize, reps: usize) -> Result<Timing> {
    let submit = || -> Result<f64> {
        let start = Instant::now();
        let mut enc = gpu.encoder("bench");
        wgtrain_device::encode_all(
            &mut enc,
            "bench",
            (0..batch).flat_map(|_| dispatches.iter().copied()),
        );
        gpu.submit(enc);
        gpu.sync()?;
        Ok(start.elapsed().as_secs_f64() * 1e3 / batch as f64)
    };
    submit()?; // warm-up: pipeline compilation, first-touch of memory
    let mut ms: Vec<f64> = (0..reps).map(|_| submit()).collect::<Result<_>>()?;
    ms.sort_by(f64::total_cmp);
    Ok(Timing {
        median: ms[ms.len() / 2],
        min: ms[0],
        max: ms[ms.len() - 1],
    })
}

/// Picks a repeat count so one batch takes roughly `target_ms`.
fn batch_for(gpu: &Gpu, d: &Dispatch, target_ms: f64) -> Result<usize> {
    let one = time(gpu, &[d], 1, 1)?.median.max(1e-3);
    Ok(((target_ms / one).ceil() as usize).clamp(1, 1000))
}

fn row(name: &str, t: &Timing, rate: f64, unit: &str, ceiling: f64) {
    println!(
        "{name:<34} {:>9.3} {:>9.3} {:>9.3} {rate:>10.1} {unit:<7} {:>6.1}%",
        t.median,
        t.min,
        t.max,
        100.0 * rate / ceiling
    );
}

/// Peak FMA rate in GFLOP/s.
fn fma_peak(gpu: &Gpu, reps: usize) -> Result<(Timing, f64)> {
    let probe = FmaPeak {
        invocations: 64 * 1024,
        iters: 2048,
    };
    let out = gpu
        .pool()
        .acquire(probe.invocations as u64 * 16, "bench.fma_out")?;
    let d = probe.prepare(gpu, &out)?;
    let t = time(gpu, &[&d], 1, reps)?;
    let gflops = probe.flops() / (t.median * 1e6);
    Ok((t, gflops))
}

/// Copy bandwidth in GB/s (bytes read + written).
fn bandwidth(gpu: &Gpu, reps: usize) -> Result<(Timing, f64)> {
    let max = gpu.pool().max_buffer_bytes().min(256 << 20);
    let bytes = (64u64 << 20).min(max);
    let copy = Copy {
        vec4s: (bytes / 16) as u32,
    };
    let src = gpu.pool().acquire(bytes, "bench.copy_src")?;
    let dst = gpu.pool().acquire(bytes, "bench.copy_dst")?;
    let d = copy.prepare(gpu, &src, &dst)?;
    let t = time(gpu, &[&d], 1, reps)?;
    let gbs = copy.bytes() / (t.median * 1e6);
    Ok((t, gbs))
}

fn random(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Runs `p` once at its own size (small) and compares with the CPU reference.
fn validate_matmul(gpu: &Gpu, p: &Matmul) -> Result<f64> {
    let (ea, eb, ec) = p.footprint();
    let (a, b) = (random(ea as usize, 1), random(eb as usize, 2));
    let zeros = vec![0.0; ec as usize];
    let (da, db) = (gpu.upload(&a, "validate.a")?, gpu.upload(&b, "validate.b")?);
    let dc = gpu.upload(&zeros, "validate.c")?;
    let d = p.prepare(gpu, &da, &db, None, &dc)?;
    let mut enc = gpu.encoder("validate");
    d.encode(&mut enc);
    gpu.submit(enc);
    let got: Vec<f32> = gpu.download(&dc, ec as usize)?;
    let want = reference::matmul::matmul(p, &a, &b, None, &zeros);
    let err = max_relative_error(&got, &want);
    ensure!(
        err < 1e-3,
        "matmul {p:?} failed validation: max relative error {err:.2e}"
    );
    Ok(err)
}

fn bench_matmul(gpu: &Gpu, opts: &Options, peak: f64) -> Result<()> {
    let max = if opts.quick {
        1024
    } else if gpu.is_cpu() {
        2048
    } else {
        4096
    };
    let mut sizes: Vec<u32> = [256u32, 512, 1024, 2048, 4096]
        .into_iter()
        .filter(|&s| s <= max)
        .collect();
    sizes.dedup();
    for (ta, tb) in [(false, false), (false, true), (true, false)] {
        // Validate this transpose combination once, at an awkward small size.
        let mut small = Matmul::new(67, 45, 33);
        (small.trans_a, small.trans_b) = (ta, tb);
        validate_matmul(gpu, &small)?;
        for &s in &sizes {
            let suffix = match (ta, tb) {
                (false, false) => "",
                (false, true) => "_nt",
                _ => "_tn",
            };
            let name = format!("matmul_{s}x{s}x{s}{suffix}");
            if !opts.wants(&name) {
                continue;
            }
            let mut p = Matmul::new(s, s, s);
            (p.trans_a, p.trans_b) = (ta, tb);
            let bytes = s as u64 * s as u64 * 4;
            let a = gpu.pool().acquire(bytes, "bench.a")?;
            let b = gpu.pool().acquire(bytes, "bench.b")?;
            let c = gpu.pool().acquire(bytes, "bench.c")?;
            let d = p.prepare(gpu, &a, &b, None, &c)?;
            let batch = batch_for(gpu, &d, 200.0)?;
            let t = time(gpu, &[&d], batch, opts.reps)?;
            row(
                &name,
                &t,
                2.0 * p.macs() as f64 / (t.median * 1e6),
                "GFLOP/s",
                peak,
            );
        }
    }
    Ok(())
}

/// Runs the whole benchmark and prints the table.
pub fn run(opts: Options) -> Result<()> {
    let gpu = Gpu::new()?;
    println!("{}\n", gpu.describe());
    println!(
        "{:<34} {:>9} {:>9} {:>9} {:>18} {:>7}",
        "benchmark", "median ms", "min ms", "max ms", "rate", "of peak"
    );
    let (t, peak) = fma_peak(&gpu, opts.reps)?;
    row("roofline_fma_peak", &t, peak, "GFLOP/s", peak);
    let (t, bw) = bandwidth(&gpu, opts.reps)?;
    row("roofline_copy_bandwidth", &t, bw, "GB/s", bw);
    bench_matmul(&gpu, &opts, peak)?;
    Ok(())
}
