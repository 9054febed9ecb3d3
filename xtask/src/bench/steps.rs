//! Whole training steps — forward, loss, backward and an SGD-with-momentum update, one
//! GPU submission each — for the zoo models: images per second, dispatches per step,
//! and the plan's memory. And the time from process start to the first finished
//! training step, measured in a child process so that nothing is compiled yet.
//!
//! Each step is timed as a user sees it: feeds written, one submission, the loss read
//! back. Warm-up first (it compiles the plan), then `reps` steps: median, min, max.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use wgtrain_graph::{Feed, Mode, Optimizer, Session};
use wgtrain_models::zoo::{self, AlexNet, Model};

use super::options::Options;
use wgtrain_device::Gpu;

/// One model's training-step figure (the `steps` entries of the JSON report).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StepRecord {
    pub model: String,
    pub batch: usize,
    /// `[H, W, C]` of one image.
    pub input: String,
    pub images_per_s: f64,
    pub median_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    #[serde(default)]
    pub dispatches: usize,
    /// Planned bytes of inputs and intermediates (the plan's buffers).
    #[serde(default)]
    pub peak_bytes: u64,
    /// What one buffer per value would take.
    #[serde(default)]
    pub naive_bytes: u64,
    /// Parameters, statistics and optimizer state.
    #[serde(default)]
    pub persistent_bytes: u64,
}

/// A timed model: its name, batch, and how to build it for a batch.
type Workload = (&'static str, usize, Box<dyn Fn(usize) -> Result<Model>>);

/// The models timed, sized for the adapter: CPU adapters get reduced inputs.
fn workloads(cpu: bool, quick: bool) -> Vec<Workload> {
    let mut w: Vec<Workload> = vec![
        (
            "mlp",
            64,
            Box::new(|b| Ok(zoo::mlp([28, 28, 1], &[128], 10, b)?)),
        ),
        ("lenet", 64, Box::new(|b| Ok(zoo::lenet5(10, b)?))),
    ];
    if cpu {
        w.push((
            "alexnet",
            16,
            Box::new(|b| Ok(zoo::alexnet(AlexNet::Cifar, 10, 32, b)?)),
        ));
        w.push(("resnet18", 8, Box::new(|b| Ok(zoo::resnet(18, 10, 64, b)?))));
        if !quick {
            w.push(("resnet50", 4, Box::new(|b| Ok(zoo::resnet(50, 10, 64, b)?))));
        }
    } else {
        w.push((
            "alexnet",
            32,
            Box::new(|b| Ok(zoo::alexnet(AlexNet::Paper, 1000, 224, b)?)),
        ));
        w.push((
            "resnet18",
            32,
            Box::new(|b| Ok(zoo::resnet(18, 1000, 224, b)?)),
        ));
        w.push((
            "resnet50",
            32,
            Box::new(|b| Ok(zoo::resnet(50, 1000, 224, b)?)),
        ));
    }
    w
}

/// A deterministic batch for `model`.
fn batch_data(model: &Model, batch: usize) -> (Vec<f32>, Vec<u32>, Vec<usize>) {
    let [h, w, c] = model.input;
    let images = (0..batch * h * w * c)
        .map(|i| ((i * 7919) % 255) as f32 / 127.5 - 1.0)
        .collect();
    let labels = (0..batch).map(|i| (i % model.classes) as u32).collect();
    (images, labels, vec![batch, h, w, c])
}

/// Times `reps` training steps of one model.
pub fn time_model(
    gpu: &Arc<Gpu>,
    name: &str,
    model: Model,
    batch: usize,
    reps: usize,
) -> Result<StepRecord> {
    let (images, labels, shape) = batch_data(&model, batch);
    let input = format!("{:?}", model.input);
    let Model {
        mut graph, loss, ..
    } = model;
    let training = graph.minimize(loss, Optimizer::sgd_momentum(0.9, 1e-4, false))?;
    let mut session = Session::new(gpu.clone(), graph, 1)?;
    let feeds = [
        Feed::f32("images", &shape, &images),
        Feed::u32("labels", &shape[..1], &labels),
    ];
    let types: Vec<(&str, wgtrain_graph::TensorType)> = feeds
        .iter()
        .map(|f| {
            (
                f.name,
                wgtrain_graph::TensorType {
                    shape: f.shape.clone(),
                    dtype: dtype(f),
                },
            )
        })
        .collect();
    let fetch = training.step_fetch();
    let report = session.plan_report(Mode::Train, &types, &fetch, &training.updates)?;
    let first = session.train_step(&training, &feeds, 0.01)?;
    anyhow::ensure!(
        first.loss.is_finite(),
        "{name}: the warm-up step's loss is {}",
        first.loss
    );
    if std::env::var_os("WGTRAIN_PROFILE_STEP").is_some() {
        let step = wgtrain_graph::StepInfo {
            step: 2,
            lr: 0.01,
            seed: 1,
        };
        // The first profile compiles; the second is timed.
        session.profile(Mode::Train, &feeds, &fetch, &training.updates, step)?;
        let rows = session.profile(Mode::Train, &feeds, &fetch, &training.updates, step)?;
        for (op, layer, d, ms) in rows {
            eprintln!("PROFILE {name:10} {op:24} {layer:28} {d:3} {ms:8.3}");
        }
    }
    let mut ms = Vec::with_capacity(reps);
    for _ in 0..reps {
        let start = Instant::now();
        session.train_step(&training, &feeds, 0.01)?;
        ms.push(start.elapsed().as_secs_f64() * 1e3);
    }
    ms.sort_by(f64::total_cmp);
    let median = ms[ms.len() / 2];
    Ok(StepRecord {
        model: name.to_owned(),
        batch,
        input,
        images_per_s: batch as f64 / (median / 1e3),
        median_ms: median,
        min_ms: ms[0],
        max_ms: ms[ms.len() - 1],
        dispatches: report.dispatches,
        peak_bytes: report.planned_bytes,
        naive_bytes: report.naive_bytes,
        persistent_bytes: report.persistent_bytes,
    })
}

fn dtype(f: &Feed<'_>) -> wgtrain_graph::DType {
    match f.data {
        wgtrain_graph::FeedData::F32(_) => wgtrain_graph::DType::F32,
        wgtrain_graph::FeedData::U32(_) => wgtrain_graph::DType::U32,
    }
}

/// Runs the step figures the filters select and prints them.
pub fn run(gpu: &Gpu, opts: &Options, reps: usize) -> Result<Vec<StepRecord>> {
    let wants = |name: &str| {
        opts.filters.is_empty() || opts.filters.iter().any(|f| name.contains(f.as_str()))
    };
    // Sessions share the adapter through an Arc; this one is the bench's own.
    let gpu = Arc::new(Gpu::with_adapter(Some(&gpu.info().name))?);
    let mut out = Vec::new();
    println!(
        "\n{:<10} {:>6} {:>14} {:>10} {:>10} {:>10} {:>11} {:>12}",
        "step", "batch", "input", "median ms", "min ms", "images/s", "dispatches", "planned MiB"
    );
    for (name, batch, build) in workloads(gpu.is_cpu(), opts.quick) {
        let label = format!("step_{name}");
        if !wants(&label) {
            continue;
        }
        let record = time_model(&gpu, name, build(batch)?, batch, reps)
            .with_context(|| format!("training step of {name}"))?;
        println!(
            "{:<10} {:>6} {:>14} {:>10.2} {:>10.2} {:>10.1} {:>11} {:>12.1}",
            record.model,
            record.batch,
            record.input,
            record.median_ms,
            record.min_ms,
            record.images_per_s,
            record.dispatches,
            record.peak_bytes as f64 / (1024.0 * 1024.0)
        );
        out.push(record);
    }
    Ok(out)
}

/// The child process's task: from process start to LeNet's first finished training
/// step at batch 64, printed as `first_step_ms <ms>`.
pub fn first_step(process_start: Instant) -> Result<()> {
    let gpu = Arc::new(Gpu::new()?);
    let record = {
        let model = zoo::lenet5(10, 64)?;
        let (images, labels, shape) = batch_data(&model, 64);
        let Model {
            mut graph, loss, ..
        } = model;
        let training = graph.minimize(loss, Optimizer::sgd_momentum(0.9, 0.0, false))?;
        let mut session = Session::new(gpu, graph, 1)?;
        let feeds = [
            Feed::f32("images", &shape, &images),
            Feed::u32("labels", &shape[..1], &labels),
        ];
        session.train_step(&training, &feeds, 0.01)?
    };
    anyhow::ensure!(record.loss.is_finite(), "first step loss {}", record.loss);
    println!(
        "first_step_ms {:.1}",
        process_start.elapsed().as_secs_f64() * 1e3
    );
    Ok(())
}

/// Runs [`first_step`] in a fresh child process with an empty autotuning cache (every
/// kernel tuned from scratch, as on a new machine), then again in another one that finds
/// the first one's cache: `(cold ms, cached ms)`.
pub fn time_to_first_step() -> Result<(f64, f64)> {
    let dir = std::env::temp_dir().join(format!("wgtrain-first-step-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cold = first_step_child(&dir)?;
    let cached = first_step_child(&dir)?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok((cold, cached))
}

/// One [`first_step`] child with `cache` as its autotuning cache directory.
fn first_step_child(cache: &std::path::Path) -> Result<f64> {
    let exe = std::env::current_exe()?;
    let out = std::process::Command::new(exe)
        .arg("first-step")
        .env("WGTRAIN_CACHE_DIR", cache)
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(
        out.status.success(),
        "first-step child failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .find_map(|l| {
            l.strip_prefix("first_step_ms ")
                .and_then(|v| v.trim().parse().ok())
        })
        .with_context(|| format!("first-step child printed no time: {text}"))
}

/// Prints each step next to the reference's step of the same model and batch.
pub fn print_comparison(ours: &[StepRecord], reference: &super::record::Report) {
    for st in ours {
        let theirs = reference.steps.iter().find_map(|t| {
            let t: StepRecord = serde_json::from_value(t.clone()).ok()?;
            (t.model == st.model && t.batch == st.batch).then_some(t)
        });
        if let Some(t) = theirs {
            println!(
                "step {:<9} ours {:9.2} ms, reference {:9.2} ms: ours / reference {:.2}",
                st.model,
                st.median_ms,
                t.median_ms,
                st.median_ms / t.median_ms
            );
        }
    }
}
