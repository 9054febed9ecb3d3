//! The convergence studies of `docs/distributed.md`, reproducible with one command each:
//!
//! - `async`: sequential SGD, synchronous SGD on 4 replicas, and ASGD, DC-ASGD-c and
//!   DC-ASGD-a with 4 workers at staleness 4 and 16 (round-robin order, so each run is
//!   bit-identical and every push is exactly that stale), on the real MNIST digits
//!   (LeNet-5, the vendored set: 8,000 to train, 2,000 held out), over seeds, with the
//!   same number of gradient evaluations (epochs) for every method;
//! - `large-batch`: one model at a growing batch, with and without the large-batch
//!   recipe (linear learning-rate scaling and gradual warmup), LeNet-5 on MNIST or a
//!   CIFAR ResNet-20 on the synthetic shapes.
//!
//! Each prints a Markdown table of held-out top-1 accuracy and writes an SVG chart.
//!
//! ```text
//! cargo run --release --example convergence_studies -- async --seeds 0,1,2 --epochs 4
//! cargo run --release --example convergence_studies -- large-batch --model lenet
//! cargo run --release --example convergence_studies -- large-batch --model resnet20
//! ```

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use wgtrain::graph::{Optimizer, Schedule};
use wgtrain::models::data::idx::Mnist;
use wgtrain::models::data::synthetic::Synthetic;
use wgtrain::models::data::{Dataset, Loader, Subset};
use wgtrain::models::plot;
use wgtrain::models::train::{TrainConfig, Trainer};
use wgtrain::models::zoo::{self, Model};
use wgtrain::parallel::{AsyncConfig, Compensation, LocalComm, PushOrder};
use wgtrain::prelude::Gpu;

#[derive(Debug, Parser)]
struct Cli {
    #[command(subcommand)]
    study: Study,
}

#[derive(Debug, Subcommand)]
enum Study {
    /// Sequential vs synchronous vs asynchronous SGD (ASGD, DC-ASGD-c, DC-ASGD-a)
    Async(AsyncStudy),
    /// A batch sweep with and without linear scaling and warmup
    LargeBatch(LargeBatchStudy),
}

#[derive(Debug, clap::Args)]
struct AsyncStudy {
    /// Seeds (weights and shuffle)
    #[arg(long, default_value = "0,1,2", value_delimiter = ',')]
    seeds: Vec<u64>,
    #[arg(long, default_value_t = 4)]
    epochs: usize,
    /// Images per gradient (per worker, per replica)
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Learning rate of sequential SGD and of every server step
    #[arg(long, default_value_t = 0.02)]
    lr: f32,
    /// Momentum of every method (0: plain SGD, as the DC-ASGD paper's update)
    #[arg(long, default_value_t = 0.0)]
    momentum: f32,
    /// Staleness levels of the asynchronous runs (each at least workers − 1)
    #[arg(long, default_value = "4,16", value_delimiter = ',')]
    staleness: Vec<usize>,
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// DC-ASGD-c's lambda
    #[arg(long, default_value_t = 2.0)]
    lambda: f32,
    /// Where the chart goes
    #[arg(long, default_value = "docs/figures/async_vs_sync.svg")]
    chart: PathBuf,
}

#[derive(Debug, clap::Args)]
struct LargeBatchStudy {
    #[arg(long, value_enum, default_value = "lenet")]
    model: StudyModel,
    #[arg(long, default_value = "64,256,1024,2048", value_delimiter = ',')]
    batches: Vec<usize>,
    #[arg(long, default_value_t = 10)]
    epochs: usize,
    /// The learning rate at the smallest batch (the base the recipe scales)
    #[arg(long, default_value_t = 0.05)]
    base_lr: f32,
    /// Warmup of the recipe, in epochs
    #[arg(long, default_value_t = 2.0)]
    warmup_epochs: f32,
    /// Synthetic set size (resnet20 only): train; a quarter more is held out
    #[arg(long, default_value_t = 4096)]
    samples: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[arg(long)]
    chart: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum StudyModel {
    Lenet,
    Resnet20,
}

fn main() -> std::process::ExitCode {
    common::exit_on_error(match Cli::parse().study {
        Study::Async(study) => async_study(study),
        Study::LargeBatch(study) => large_batch(study),
    })
}

fn gpu() -> Result<Arc<Gpu>> {
    common::open_gpu()
}

/// The vendored MNIST split: 8,000 to train, 2,000 held out, pixels in [0, 1].
fn mnist() -> Result<(Arc<dyn Dataset>, Arc<dyn Dataset>)> {
    let set = Arc::new(
        Mnist::vendored_test_set()
            .context("loading the vendored data/mnist")?
            .unit_range(),
    );
    Ok((
        Arc::new(Subset::new(set.clone(), 0, 8_000)),
        Arc::new(Subset::new(set, 8_000, 2_000)),
    ))
}

/// One method of the asynchronous study.
#[derive(Clone, Copy)]
enum Method {
    Sequential,
    Synchronous,
    Asynchronous(Compensation, usize),
}

impl Method {
    fn name(&self, workers: usize, batch: usize) -> String {
        match *self {
            Method::Sequential => "sequential SGD".to_owned(),
            Method::Synchronous => format!("SSGD {workers} x {batch}"),
            Method::Asynchronous(c, s) => {
                let what = match c {
                    Compensation::None => "ASGD",
                    Compensation::Constant { .. } => "DC-ASGD-c",
                    Compensation::Adaptive { .. } => "DC-ASGD-a",
                };
                format!("{what}, staleness {s}")
            }
        }
    }
}

fn async_study(s: AsyncStudy) -> Result<()> {
    if s.workers == 0 || s.seeds.is_empty() || s.epochs == 0 {
        bail!("--workers, --seeds and --epochs must not be empty or 0");
    }
    if let Some(&bad) = s.staleness.iter().find(|&&t| t + 1 < s.workers) {
        bail!(
            "staleness {bad} is below the {} that {} workers in turn have by themselves",
            s.workers - 1,
            s.workers
        );
    }
    let (train, eval) = mnist()?;
    let optimizer = match s.momentum {
        0.0 => Optimizer::sgd(),
        m => Optimizer::sgd_momentum(m, 0.0, false),
    };
    let mut methods = vec![Method::Sequential, Method::Synchronous];
    for &t in &s.staleness {
        for c in [
            Compensation::None,
            Compensation::Constant { lambda: s.lambda },
            Compensation::ADAPTIVE,
        ] {
            methods.push(Method::Asynchronous(c, t));
        }
    }
    println!(
        "LeNet-5 on the vendored MNIST digits (8,000 train, 2,000 held out), {} epochs, batch \
         {} per gradient, lr {} ({}), seeds {:?}; {} workers or replicas; DC-ASGD-c lambda {}, \
         DC-ASGD-a lambda0 2, m 0.95; SSGD takes {} x {} per step at lr {} (linear scaling)\n",
        s.epochs,
        s.batch,
        s.lr,
        match s.momentum {
            0.0 => "plain SGD".to_owned(),
            m => format!("momentum {m}"),
        },
        s.seeds,
        s.workers,
        s.lambda,
        s.workers,
        s.batch,
        s.lr * s.workers as f32
    );
    let mut rows = Vec::new();
    for method in &methods {
        let mut per_seed = Vec::new();
        let start = Instant::now();
        for &seed in &s.seeds {
            let loader = Loader::new(train.clone(), s.batch)?.shuffled(seed);
            let held = Loader::new(eval.clone(), 500)?;
            let config = TrainConfig {
                optimizer,
                seed,
                ..TrainConfig::new(s.epochs, s.lr)
            };
            let curve = match *method {
                Method::Sequential => {
                    let model = zoo::lenet5(10, s.batch)?;
                    let mut t = Trainer::new(gpu()?, model, config)?;
                    t.fit(&loader, Some(&held))?;
                    top1s(&t)
                }
                Method::Synchronous => {
                    let global = Loader::new(train.clone(), s.batch * s.workers)?.shuffled(seed);
                    let config = TrainConfig {
                        schedule: Schedule::constant(s.lr * s.workers as f32),
                        ..config
                    };
                    let devices = (0..s.workers).map(|_| gpu()).collect::<Result<_>>()?;
                    common::in_threads(devices, LocalComm::group(s.workers), |gpu, comm| {
                        let model = zoo::lenet5(10, s.batch)?;
                        let mut t = Trainer::distributed(gpu, model, config.clone(), comm)?;
                        t.fit(&global, Some(&held))?;
                        Ok(top1s(&t))
                    })?
                }
                Method::Asynchronous(compensation, staleness) => {
                    let ac = AsyncConfig {
                        compensation,
                        staleness: staleness + 1 - s.workers,
                        order: PushOrder::RoundRobin,
                    };
                    // The server shares worker 1's device, as `--devices … --async` does.
                    let shared = gpu()?;
                    let mut devices = vec![shared.clone(), shared];
                    for _ in 1..s.workers {
                        devices.push(gpu()?);
                    }
                    let comms = LocalComm::group(s.workers + 1);
                    common::in_threads(devices, comms, |device, comm| {
                        let model = zoo::lenet5(10, s.batch)?;
                        let mut t = Trainer::asynchronous(device, model, config.clone(), comm, ac)?;
                        t.fit(&loader, Some(&held))?;
                        if let Some(stats) = t.server_stats() {
                            let (mean, max) = stats.staleness();
                            let steady = stats.pushes.iter().skip(s.workers * 2);
                            if steady.clone().any(|p| p.staleness != staleness as u64)
                                && max as usize != staleness
                            {
                                bail!("staleness mean {mean} max {max}, asked for {staleness}");
                            }
                        }
                        Ok(top1s(&t))
                    })?
                }
            };
            per_seed.push(curve);
        }
        let name = method.name(s.workers, s.batch);
        let mean_curve: Vec<f32> = (0..s.epochs)
            .map(|e| per_seed.iter().map(|c| c[e]).sum::<f32>() / per_seed.len() as f32)
            .collect();
        let finals: Vec<f32> = per_seed.iter().map(|c| c[s.epochs - 1]).collect();
        eprintln!(
            "{name}: final {:?} ({:.0} s)",
            finals
                .iter()
                .map(|f| format!("{:.2}", 100.0 * f))
                .collect::<Vec<_>>(),
            start.elapsed().as_secs_f32()
        );
        rows.push((name, mean_curve, finals));
    }
    print_table(&rows, s.epochs);
    let series: Vec<(String, Vec<(f32, f32)>)> = rows
        .iter()
        .map(|(name, curve, _)| {
            let points = curve
                .iter()
                .enumerate()
                .map(|(e, a)| ((e + 1) as f32, 100.0 * a))
                .collect();
            (name.clone(), points)
        })
        .collect();
    let low = rows
        .iter()
        .flat_map(|r| r.1.iter())
        .fold(100.0f32, |m, a| m.min(100.0 * a));
    write_chart(
        &s.chart,
        &format!(
            "LeNet-5 / MNIST: held-out top-1, mean of {} seeds",
            s.seeds.len()
        ),
        ("epoch", "top-1 %"),
        ((low - 2.0).max(0.0).floor(), 100.0),
        &series,
    )
}

/// Held-out top-1 after each epoch (rank 0's records).
fn top1s(t: &Trainer) -> Vec<f32> {
    t.records.iter().filter_map(|r| r.eval_top1).collect()
}

fn print_table(rows: &[(String, Vec<f32>, Vec<f32>)], epochs: usize) {
    let mut head = "| method |".to_owned();
    let mut rule = "|---|".to_owned();
    for e in 1..=epochs {
        head += &format!(" epoch {e} |");
        rule += "---:|";
    }
    head += " final, per seed |";
    rule += "---|";
    println!("{head}\n{rule}");
    for (name, curve, finals) in rows {
        let mut line = format!("| {name} |");
        for a in curve {
            line += &format!(" {:.2} |", 100.0 * a);
        }
        line += &format!(
            " {} |",
            finals
                .iter()
                .map(|f| format!("{:.2}", 100.0 * f))
                .collect::<Vec<_>>()
                .join(", ")
        );
        println!("{line}");
    }
}

fn write_chart(
    path: &std::path::Path,
    title: &str,
    axes: (&str, &str),
    range: (f32, f32),
    series: &[(String, Vec<(f32, f32)>)],
) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    plot::curves(path, title, axes, range, series)?;
    println!("\nchart: {}", path.display());
    Ok(())
}

fn large_batch(study: LargeBatchStudy) -> Result<()> {
    let LargeBatchStudy {
        model: which,
        batches,
        epochs,
        base_lr,
        warmup_epochs,
        samples,
        seed,
        chart,
    } = study;
    if batches.is_empty() || batches.contains(&0) || epochs == 0 {
        bail!("--batches must be sizes of 1 or more, --epochs at least 1");
    }
    let small = *batches.iter().min().expect("not empty");
    let (train, eval): (Arc<dyn Dataset>, Arc<dyn Dataset>) = match which {
        StudyModel::Lenet => mnist()?,
        StudyModel::Resnet20 => (
            Arc::new(Synthetic::new(samples, 32, 10, 1)),
            Arc::new(Synthetic::new(samples / 4, 32, 10, 2)),
        ),
    };
    let build = |batch: usize| -> Result<Model> {
        Ok(match which {
            StudyModel::Lenet => zoo::lenet5(10, batch)?,
            StudyModel::Resnet20 => zoo::cifar_resnet(20, 10, batch)?,
        })
    };
    let title = match which {
        StudyModel::Lenet => "LeNet-5 / MNIST (8,000 train, 2,000 held out)",
        StudyModel::Resnet20 => "CIFAR ResNet-20 / synthetic shapes",
    };
    println!(
        "{title}: {epochs} epochs, SGD momentum 0.9, seed {seed}; without the recipe lr {base_lr} \
         at every batch; with it lr {base_lr} x batch/{small}, warmed up from {base_lr} over \
         {warmup_epochs} epochs\n"
    );
    println!("| batch | steps/epoch | lr without | top-1 without | lr with | top-1 with |");
    println!("|---:|---:|---:|---:|---:|---:|");
    let mut without = Vec::new();
    let mut with = Vec::new();
    for &batch in &batches {
        let loader = Loader::new(train.clone(), batch)?.shuffled(seed);
        let held = Loader::new(eval.clone(), 500)?;
        let steps = loader.batches_per_epoch();
        let run = |schedule: Schedule| -> Result<f32> {
            let config = TrainConfig {
                schedule,
                seed,
                optimizer: Optimizer::sgd_momentum(0.9, 5e-4, false),
                ..TrainConfig::new(epochs, base_lr)
            };
            let mut t = Trainer::new(gpu()?, build(batch)?, config)?;
            t.fit(&loader, Some(&held))?;
            Ok(t.records.last().and_then(|r| r.eval_top1).unwrap_or(0.0))
        };
        let plain = run(Schedule::constant(base_lr))?;
        let scaled = base_lr * batch as f32 / small as f32;
        let warmup = ((warmup_epochs * steps as f32).ceil() as u32).max(1);
        let recipe = run(Schedule {
            warmup: if batch == small { 0 } else { warmup },
            warmup_from: base_lr,
            ..Schedule::constant(scaled)
        })?;
        println!(
            "| {batch} | {steps} | {base_lr} | {:.2} | {scaled} | {:.2} |",
            100.0 * plain,
            100.0 * recipe
        );
        without.push((batch as f32, 100.0 * plain));
        with.push((batch as f32, 100.0 * recipe));
    }
    let chart = chart.unwrap_or_else(|| {
        PathBuf::from(match which {
            StudyModel::Lenet => "docs/figures/large_batch_lenet.svg",
            StudyModel::Resnet20 => "docs/figures/large_batch_resnet20.svg",
        })
    });
    let log2 = |v: Vec<(f32, f32)>| -> Vec<(f32, f32)> {
        v.into_iter().map(|(b, a)| (b.log2(), a)).collect()
    };
    write_chart(
        &chart,
        &format!("{title}: held-out top-1 after {epochs} epochs"),
        ("log2(batch)", "top-1 %"),
        (0.0, 100.0),
        &[
            ("constant lr".to_owned(), log2(without)),
            ("linear scaling + warmup".to_owned(), log2(with)),
        ],
    )
}
