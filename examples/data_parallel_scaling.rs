//! Measures synchronous data parallelism on this machine: a CIFAR ResNet (or an MLP) at a
//! fixed batch per replica, on 1, 2 and 4 replicas (threads, one device each, on the
//! adapters `--devices` names), and prints a Markdown table of where a step's time goes:
//! forward and backward, copying gradient buckets out, the all-reduce (and the part of it
//! not hidden behind backward), writing them back, the optimizer update, and the bytes
//! each replica moves.
//!
//! ```text
//! cargo run --release --example data_parallel_scaling -- --adapter 0 --replicas 1,2,4
//! ```

mod common;

use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Parser;
use wgtrain::graph::{Feed, Optimizer, Rng, Session};
use wgtrain::models::zoo::{self, Model};
use wgtrain::parallel::{Communicator, DeviceSpec, LocalComm, ReplicaStats, train_step};

/// Time a data-parallel step on 1, 2, 4… replicas.
#[derive(Debug, Parser)]
struct Cli {
    /// Adapter every replica opens a device on (index or name), as WGTRAIN_ADAPTER
    #[arg(long, default_value = "0")]
    adapter: String,
    /// Replica counts to measure, comma-separated
    #[arg(long, default_value = "1,2,4", value_delimiter = ',')]
    replicas: Vec<usize>,
    /// Images per replica per step
    #[arg(long, default_value_t = 16)]
    batch: usize,
    /// CIFAR ResNet depth (6n+2), or 0 for a 3072-512-512-10 MLP
    #[arg(long, default_value_t = 20)]
    depth: usize,
    /// Timed steps (after 2 untimed ones)
    #[arg(long, default_value_t = 8)]
    steps: usize,
    /// Gradient bucket size in MiB
    #[arg(long, default_value_t = 25.0)]
    bucket_mb: f64,
    /// Synchronised batch norm (two more host reductions per batch norm)
    #[arg(long)]
    sync_bn: bool,
}

fn build(depth: usize, batch: usize, sync_bn: bool) -> Result<Model> {
    let model = match depth {
        0 => zoo::mlp([32, 32, 3], &[512, 512], 10, batch)?,
        d => zoo::cifar_resnet(d, 10, batch)?,
    };
    Ok(if sync_bn {
        model.with_sync_batch_norm()?
    } else {
        model
    })
}

fn main() -> std::process::ExitCode {
    common::exit_on_error(run(Cli::parse()))
}

fn run(cli: Cli) -> Result<()> {
    if cli.replicas.contains(&0) || cli.batch == 0 || cli.steps == 0 {
        bail!("--replicas, --batch and --steps must be at least 1");
    }
    let probe = build(cli.depth, cli.batch, cli.sync_bn)?;
    let params: usize = probe.graph.parameter_count();
    println!(
        "model {}{} ({} parameters, {:.2} MiB of gradients), {} images per replica per step, \
         buckets of {} MiB, {} timed steps",
        probe.name,
        if cli.sync_bn {
            " with synchronised batch norm"
        } else {
            ""
        },
        common::thousands(params),
        params as f64 * 4.0 / 1048576.0,
        cli.batch,
        cli.bucket_mb,
        cli.steps
    );
    println!();
    println!(
        "| replicas | step ms | compute ms | copy-out ms | all-reduce ms | exposed ms | \
         write-back ms | update ms | metrics ms | MiB/step/replica | overlapped | img/s (all) | vs 1 |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut base = None;
    for &k in &cli.replicas {
        let spec = DeviceSpec::List(vec![cli.adapter.clone(); k]);
        let gpus = spec.open()?;
        let stats = measure(&cli, gpus)?;
        let n = cli.steps as f64;
        let ms = |s: f64| 1e3 * s / n;
        let rate = (k * cli.batch) as f64 / (stats.step_s / n);
        let per_replica = *base.get_or_insert(rate);
        println!(
            "| {k} | {:.1} | {:.1} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.0}% | {:.0} | {:.2}x |",
            ms(stats.step_s),
            ms(stats.compute_s()),
            ms(stats.sync.copy_out_s),
            ms(stats.sync.reduce_s),
            ms(stats.sync.exposed_s),
            ms(stats.sync.copy_in_s),
            ms(stats.sync.update_s),
            ms(stats.metrics_s),
            stats.sync.bytes as f64 / n / 1048576.0,
            100.0 * stats.sync.overlapped(),
            rate,
            rate / per_replica
        );
    }
    Ok(())
}

/// Rank 0's totals over the timed steps.
fn measure(cli: &Cli, gpus: Vec<Arc<wgtrain::prelude::Gpu>>) -> Result<ReplicaStats> {
    let k = gpus.len();
    let comms = LocalComm::group(k);
    let results: Vec<Result<ReplicaStats>> = std::thread::scope(|scope| {
        let handles: Vec<_> = gpus
            .into_iter()
            .zip(comms)
            .map(|(gpu, comm)| {
                scope.spawn(move || -> Result<ReplicaStats> {
                    let mut model = build(cli.depth, cli.batch, cli.sync_bn)?;
                    let bucket = (cli.bucket_mb * 1048576.0) as u64;
                    let training = model.graph.minimize_synced(
                        model.loss,
                        Optimizer::sgd_momentum(0.9, 5e-4, false),
                        None,
                        bucket,
                    )?;
                    let mut session = Session::new(gpu, model.graph.clone(), 0)?;
                    wgtrain::parallel::broadcast_variables(&session, &comm, 0)?;
                    let [h, w, c] = model.input;
                    let mut rng = Rng::stream(comm.rank() as u64, 1);
                    let x: Vec<f32> = (0..cli.batch * h * w * c)
                        .map(|_| (rng.next_u64() % 1000) as f32 / 1000.0)
                        .collect();
                    let y: Vec<u32> = (0..cli.batch).map(|i| (i % 10) as u32).collect();
                    let feeds = [
                        Feed::f32("images", &[cli.batch, h, w, c], &x),
                        Feed::u32("labels", &[cli.batch], &y),
                    ];
                    let mut total = ReplicaStats::default();
                    for step in 0..cli.steps + 2 {
                        let (_, stats) = train_step(
                            &mut session,
                            &training,
                            &comm,
                            &feeds,
                            0.01,
                            1.0 / k as f32,
                        )?;
                        if step >= 2 {
                            total.add(&stats);
                        }
                    }
                    Ok(total)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| bail!("a replica panicked")))
            .collect()
    });
    results.into_iter().next().context("no replica")?
}
