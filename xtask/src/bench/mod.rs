//! `cargo xtask bench`: the adapter's roofline first (peak FMA rate, copy bandwidth;
//! measured again at the end, with a warning when the machine's load moved them),
//! then every kernel figure — validated against the CPU reference at a small size of
//! the same configuration, then timed (timestamp queries when the adapter has them,
//! else queue waits around a batch of repeats; median, min, max of at least 5 runs
//! after warm-up) — and the outputs: the stdout table, `--json`, `--markdown`, `--plot`,
//! and the side-by-side `--compare` with a reference such as PyTorch's.
//!
//! Modules: [`options`] (flags and resolved sizes), [`timing`], [`roofline`],
//! [`workloads`] (the layer shapes and names), [`harness`] (the per-figure loop),
//! [`suites`] (one per kernel family), [`output`] (formats), [`record`] (the JSON shape).

pub mod data;
pub mod harness;
pub mod options;
pub mod output;
pub mod record;
pub mod roofline;
pub mod steps;
pub mod suites;
pub mod timing;
pub mod workloads;

use anyhow::{Result, bail};
use wgtrain_device::Gpu;

use harness::Bench;
use options::{Options, Sizes};
use output::table;
use record::Report;
use roofline::Roofline;
use timing::Timer;

/// A warning when a ceiling measured after the suites differs from the one measured
/// before by more than 20%: the machine's load changed, and the fractions with it.
fn roofline_drift(start: &Roofline, end: &Roofline) -> Option<String> {
    let fma = end.peak_gflops / start.peak_gflops;
    let copy = end.bandwidth_gbs / start.bandwidth_gbs;
    let off = |r: f64| !(0.8..=1.25).contains(&r);
    (off(fma) || off(copy)).then(|| {
        format!(
            "warning: the ceilings moved during the run (FMA peak {:.1} -> {:.1} GFLOP/s, copy \
             {:.1} -> {:.1} GB/s): the machine's load changed, figures are noisy",
            start.peak_gflops, end.peak_gflops, start.bandwidth_gbs, end.bandwidth_gbs
        )
    })
}

/// Runs the benchmark: roofline, suites, roofline again, outputs. Fails (after writing
/// the outputs) when any figure failed its validation or could not run.
pub fn run(opts: Options) -> Result<()> {
    let gpu = Gpu::new()?;
    let sizes = Sizes::resolve(&opts, gpu.is_cpu());
    let reference = opts
        .compare
        .as_deref()
        .map(output::json::read)
        .transpose()?;
    let timer = Timer::new(&gpu, opts.timer, sizes.reps, sizes.target_ms)?;
    if opts.list {
        let unmeasured = Roofline {
            peak_gflops: 1.0,
            bandwidth_gbs: 1.0,
            probes: Vec::new(),
        };
        suites::run_all(&mut Bench::new(&gpu, &opts, sizes, timer, unmeasured, None));
        return Ok(());
    }
    println!("{}", gpu.describe());
    println!(
        "timer:    {} ({} timed runs of ~{} ms per figure); batch {}, FC batch {}\n",
        timer.clock(),
        sizes.reps,
        sizes.target_ms,
        sizes.batch,
        sizes.fc_batch
    );
    table::print_header(reference.is_some());
    let roof = roofline::measure(&gpu, &timer)?;
    table::print_probe(&roof.probes[0], "GFLOP/s");
    table::print_probe(&roof.probes[1], "GB/s");
    let times = reference.as_ref().map(output::json::reference_times);
    let mut bench = Bench::new(&gpu, &opts, sizes.clone(), timer, roof.clone(), times);
    suites::run_all(&mut bench);

    let steps = steps::run(&gpu, &opts, sizes.reps)?;
    if let Some(r) = &reference {
        steps::print_comparison(&steps, r);
    }
    let mut notes = Vec::new();
    if opts.filters.is_empty()
        || opts
            .filters
            .iter()
            .any(|f| "step_first".contains(f.as_str()))
    {
        let (cold, cached) = steps::time_to_first_step()?;
        println!(
            "\ntime from process start to LeNet's first finished training step (batch 64): \
             {cold:.0} ms with an empty autotuning cache, {cached:.0} ms with the cache it left"
        );
        notes.push(format!(
            "time to first training step (LeNet, batch 64, new process): {cold:.0} ms with an \
             empty autotuning cache, {cached:.0} ms with a filled one"
        ));
    }
    // The ceilings again: a shared machine's load may have changed meanwhile.
    let end = roofline::measure(&gpu, &bench.timer)?;
    notes.extend(roofline_drift(&roof, &end));
    let mut probes = roof.probes.clone();
    for (mut p, unit) in end.probes.into_iter().zip(["GFLOP/s", "GB/s"]) {
        p.name.push_str("_end");
        table::print_probe(&p, unit);
        probes.push(p);
    }
    for note in &notes {
        println!("\n{note}");
    }
    if reference.is_some() {
        table::print_comparison_summary(&bench.records);
    }
    let mut report = build_report(&gpu, &opts, &sizes, &roof, bench, probes, notes);
    report.steps = steps
        .iter()
        .map(serde_json::to_value)
        .collect::<Result<_, _>>()?;
    write_outputs(&opts, &report, reference.as_ref())?;
    check_failures(&report)
}

/// The report of a finished run.
fn build_report(
    gpu: &Gpu,
    opts: &Options,
    sizes: &Sizes,
    roof: &Roofline,
    bench: Bench,
    probes: Vec<record::Probe>,
    notes: Vec<String>,
) -> Report {
    let info = gpu.info();
    Report {
        adapter: info.name.clone(),
        backend: format!("{:?}", info.backend),
        date: output::utc_now(),
        commit: output::git_commit(),
        peak_gflops: Some(roof.peak_gflops),
        bandwidth_gbs: Some(roof.bandwidth_gbs),
        timer: bench.timer.clock().to_owned(),
        results: bench.records,
        steps: Vec::new(),
        driver: format!("{} {}", info.driver, info.driver_info),
        device_type: format!("{:?}", info.device_type),
        command: opts.command(),
        batch: Some(sizes.batch),
        fc_batch: Some(sizes.fc_batch),
        roofline: probes,
        notes,
    }
}

/// Writes `--json`, `--markdown` and `--plot`.
fn write_outputs(opts: &Options, report: &Report, reference: Option<&Report>) -> Result<()> {
    if let Some(path) = &opts.json {
        output::json::write(path, report)?;
        println!("wrote {}", path.display());
    }
    if let Some(path) = &opts.markdown {
        output::markdown::write(path, report, reference)?;
        println!("wrote {}", path.display());
    }
    if let Some(path) = &opts.plot {
        output::svg::write(path, report)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// Lists the skipped figures, and fails when any figure failed.
fn check_failures(report: &Report) -> Result<()> {
    let names = |skipped: bool| -> Vec<&str> {
        report
            .results
            .iter()
            .filter(|r| r.median_ms.is_none() && r.skipped == skipped)
            .map(|r| r.name.as_str())
            .collect()
    };
    let skipped = names(true);
    if !skipped.is_empty() {
        println!(
            "{} figure(s) skipped, past this adapter's limits: {}",
            skipped.len(),
            skipped.join(", ")
        );
    }
    let failed = names(false);
    if !failed.is_empty() {
        bail!("{} figure(s) failed: {}", failed.len(), failed.join(", "));
    }
    Ok(())
}
