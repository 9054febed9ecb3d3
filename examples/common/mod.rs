//! What the training examples share. Cargo builds `examples/common/` into each example
//! that says `mod common;`, never as an example of its own.
//!
//! - [`TrainFlags`]: the flags every training run takes (`--data`, `--epochs`, …);
//! - [`data`]: `--data DIR` as CIFAR-10 binary, MNIST IDX or an image folder;
//! - [`run`]: builds the [`Trainer`], prints one line per epoch and a summary.

// Each example uses part of this module.
#![allow(dead_code)]

pub mod data;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::ValueEnum;
use wgtrain::graph::{Decay, Optimizer, Schedule};
use wgtrain::models::train::{EpochRecord, TrainConfig, Trainer};
use wgtrain::models::zoo::Model;
use wgtrain::models::{checkpoint, torch};
use wgtrain::parallel::{
    AsyncConfig, Communicator, Compensation, DeviceSpec, LocalComm, PushOrder,
};
use wgtrain::prelude::Gpu;

/// Flags every training example takes. Defaults that depend on the model or the adapter
/// are `None` here and printed when the run starts.
#[derive(Debug, clap::Args)]
pub struct TrainFlags {
    /// Train on this directory instead of the example's built-in data: CIFAR-10 binary
    /// (data_batch_1.bin … test_batch.bin), MNIST IDX files (train-*, t10k-*, raw or
    /// .gz), or an image folder (one sub-folder of JPEG/PNG images per class, or train/
    /// and val/ folders of those)
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Passes over the training set [default: per model and adapter, printed at start]
    #[arg(long, value_parser = at_least_one)]
    pub epochs: Option<usize>,
    /// Images per optimizer step [default: per model and adapter, printed at start]
    #[arg(long, value_parser = at_least_one)]
    pub batch_size: Option<usize>,
    /// Base learning rate [default: per model and optimizer, printed at start]
    #[arg(long, value_parser = positive_f32)]
    pub lr: Option<f32>,
    /// sgd (momentum 0.9) or adam [default: per model, printed at start]
    #[arg(long, value_enum)]
    pub optimizer: Option<OptimizerKind>,
    /// Train on at most this many images (the synthetic set's size; a cap on real data)
    #[arg(long, value_name = "N", value_parser = at_least_one)]
    pub train_samples: Option<usize>,
    /// Evaluate on at most this many held-out images (as --train-samples)
    #[arg(long, value_name = "N", value_parser = at_least_one)]
    pub eval_samples: Option<usize>,
    /// Save weights, optimizer state and position here (safetensors) after every epoch
    #[arg(long, value_name = "PATH")]
    pub checkpoint: Option<PathBuf>,
    /// Also save every N optimizer steps (0: only at the end of each epoch)
    #[arg(long, value_name = "N", default_value_t = 0, requires = "checkpoint")]
    pub checkpoint_every: usize,
    /// Continue from --checkpoint if it exists (exactly where it stopped)
    #[arg(long, requires = "checkpoint")]
    pub resume: bool,
    /// Write the loss and accuracy chart (SVG) here [default: per example, printed]
    #[arg(long, value_name = "PATH", conflicts_with = "no_plot")]
    pub plot: Option<PathBuf>,
    /// Do not write the chart
    #[arg(long)]
    pub no_plot: bool,
    /// Seeds the initial weights, dropout and the shuffle
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Start from these weights: a torchvision state_dict in safetensors, e.g. from
    /// `python tools/torchvision_weights.py export resnet18 FILE`; every name and shape
    /// must match the model
    #[arg(long, value_name = "PATH", conflicts_with = "resume")]
    pub init_weights: Option<PathBuf>,
    /// At the end, write the weights as a torchvision state_dict (safetensors) here,
    /// for `model.load_state_dict(safetensors.torch.load_file(PATH))` in PyTorch
    #[arg(long, value_name = "PATH")]
    pub save_weights: Option<PathBuf>,
    /// Stop after this many optimizer steps in all (the checkpoint is still written, so
    /// a run with --resume and without --max-steps goes on from there)
    #[arg(long, value_name = "N", value_parser = at_least_one_u32)]
    pub max_steps: Option<u32>,
    /// Data-parallel training on several devices in this process: a count (one device
    /// per GPU adapter) or a comma-separated list of adapter indices or names, which may
    /// repeat (0,0: two devices on adapter 0). Each takes batch-size/N images per step
    #[arg(long, value_name = "N|LIST", value_parser = parse_devices, conflicts_with = "distributed")]
    pub devices: Option<DeviceSpec>,
    /// Data-parallel training across processes started by `mpirun` (one replica per
    /// process; needs a build with `--features mpi`)
    #[arg(long)]
    pub distributed: bool,
    /// Data-parallel runs: the most MiB of gradients per all-reduce message
    #[arg(long, value_name = "MIB", default_value_t = 25.0, value_parser = positive_f32)]
    pub bucket_mb: f32,
    /// Data-parallel runs: batch norm with the statistics of the global batch
    /// (SyncBatchNorm) instead of each replica's own
    #[arg(long)]
    pub sync_bn: bool,
    /// Large-batch recipe (Goyal et al. 2017): `linear` scales the learning rate with the
    /// global batch, lr = base-lr x batch-size / 256
    #[arg(long, value_enum, value_name = "RULE")]
    pub lr_scaling: Option<LrScaling>,
    /// The learning rate for a batch of 256 that --lr-scaling scales [default: the
    /// model's learning rate]
    #[arg(long, value_name = "LR", value_parser = positive_f32, requires = "lr_scaling")]
    pub base_lr: Option<f32>,
    /// Gradual warmup over this many epochs, linearly from the base rate (with
    /// --lr-scaling) or from near 0 to the learning rate
    #[arg(long, value_name = "EPOCHS", default_value_t = 0.0)]
    pub warmup_epochs: f32,
    /// Start every residual block as the identity: the last batch norm's gamma = 0
    #[arg(long)]
    pub zero_init_residual: bool,
    /// No weight decay on batch-norm and bias parameters
    #[arg(long)]
    pub no_bn_decay: bool,
    /// Asynchronous SGD through a parameter server instead of synchronous data
    /// parallelism: with --devices, one worker per device and a server thread on the
    /// first; with --distributed, rank 0 serves and every other rank works. Each worker
    /// computes full --batch-size batches and pushes them as they are done
    #[arg(long = "async")]
    pub asynchronous: bool,
    /// Delay-compensated ASGD (DC-ASGD-c, Zheng et al. 2017): the server corrects each
    /// stale gradient by lambda x g x g x (w - the worker's backup); the lambda0 of
    /// --dc-adaptive [default there: 2]
    #[arg(long, value_name = "LAMBDA", requires = "asynchronous", value_parser = non_negative_f32)]
    pub dc_lambda: Option<f32>,
    /// DC-ASGD-a: lambda = lambda0 / sqrt(mean square of g + 1e-7), the mean square with
    /// momentum 0.95
    #[arg(long, requires = "asynchronous")]
    pub dc_adaptive: bool,
    /// Injected delay: workers get the weights of this many server steps before, as if
    /// each push arrived that late (staleness reproducible on any machine)
    #[arg(
        long,
        value_name = "STEPS",
        default_value_t = 0,
        requires = "asynchronous"
    )]
    pub staleness: usize,
    /// In which order the server takes pushes: as they arrive, or worker by worker in
    /// turn (runs are then bit-identical)
    #[arg(
        long,
        value_enum,
        value_name = "ORDER",
        default_value = "arrival",
        requires = "asynchronous"
    )]
    pub async_order: AsyncOrder,
}

/// `--async-order`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AsyncOrder {
    Arrival,
    RoundRobin,
}

impl TrainFlags {
    /// The asynchronous training these flags ask for, if any.
    pub fn async_config(&self) -> Result<Option<AsyncConfig>> {
        if !self.asynchronous {
            return Ok(None);
        }
        if self.devices.is_none() && !self.distributed {
            bail!(
                "--async needs workers: --devices N (or a list such as 0,0) in this process, or \
                 --distributed under mpirun"
            );
        }
        if self.sync_bn {
            bail!("--sync-bn is for synchronous data parallelism, not --async");
        }
        let compensation = match (self.dc_adaptive, self.dc_lambda) {
            (true, lambda0) => Compensation::Adaptive {
                lambda0: lambda0.unwrap_or(2.0),
                m: 0.95,
                eps: 1e-7,
            },
            (false, Some(lambda)) => Compensation::Constant { lambda },
            (false, None) => Compensation::None,
        };
        Ok(Some(AsyncConfig {
            compensation,
            staleness: self.staleness,
            order: match self.async_order {
                AsyncOrder::Arrival => PushOrder::Arrival,
                AsyncOrder::RoundRobin => PushOrder::RoundRobin,
            },
        }))
    }
}

/// How the learning rate follows the global batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LrScaling {
    /// lr = base-lr x batch-size / 256
    Linear,
}

fn parse_devices(s: &str) -> Result<DeviceSpec, String> {
    DeviceSpec::parse(s).map_err(|e| e.to_string())
}

/// The optimizers the examples offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OptimizerKind {
    /// SGD with momentum 0.9 (and the model's weight decay)
    Sgd,
    /// Adam, PyTorch's defaults
    Adam,
}

fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".to_owned()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("{e} (expected a whole number)")),
    }
}

fn at_least_one_u32(s: &str) -> Result<u32, String> {
    let n = at_least_one(s)?;
    u32::try_from(n).map_err(|_| format!("must be at most {}", u32::MAX))
}

fn non_negative_f32(s: &str) -> Result<f32, String> {
    match s.parse::<f32>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("expected a number of 0 or more, got {s:?}")),
    }
}

fn positive_f32(s: &str) -> Result<f32, String> {
    match s.parse::<f32>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        Ok(v) => Err(format!("must be a positive number, got {v}")),
        Err(e) => Err(e.to_string()),
    }
}

impl TrainFlags {
    /// The chart's path: `--plot`, else `default` in the current directory, or none.
    pub fn plot_path(&self, default: &str) -> Option<PathBuf> {
        match (&self.plot, self.no_plot) {
            (_, true) => None,
            (Some(p), false) => Some(p.clone()),
            (None, false) => Some(PathBuf::from(default)),
        }
    }

    /// Fails now, before the GPU is opened or any data loaded, if `--data` is missing or
    /// the checkpoint or the chart could not be written later.
    pub fn check_paths(&self, plot: Option<&Path>) -> Result<()> {
        if let Some(dir) = &self.data {
            data::check_dir(dir)?;
        }
        if let Some(path) = &self.checkpoint {
            if !(self.resume && path.is_file()) {
                checkpoint::check_writable(path)?;
            }
        }
        if let Some(path) = &self.init_weights {
            if !path.is_file() {
                bail!("--init-weights {}: no such file", path.display());
            }
        }
        if let Some(path) = &self.save_weights {
            checkpoint::check_writable(path).context("--save-weights")?;
        }
        if let Some(path) = plot {
            let dir = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            if !dir.is_dir() {
                bail!(
                    "--plot {}: directory {} does not exist",
                    path.display(),
                    dir.display()
                );
            }
        }
        Ok(())
    }

    /// `--optimizer` (else `default`), with `weight_decay` for SGD, and `--lr` (else the
    /// default for that optimizer from `lrs`: `(sgd, adam)`).
    pub fn optimizer(
        &self,
        default: OptimizerKind,
        weight_decay: f32,
        lrs: (f32, f32),
    ) -> (Optimizer, f32) {
        match self.optimizer.unwrap_or(default) {
            OptimizerKind::Sgd => (
                Optimizer::sgd_momentum(0.9, weight_decay, false),
                self.lr.unwrap_or(lrs.0),
            ),
            OptimizerKind::Adam => (Optimizer::adam(), self.lr.unwrap_or(lrs.1)),
        }
    }
}

/// Runs an example's `main`, printing an error as one line (with its causes after
/// colons) rather than as a debug dump, and exiting with status 1.
pub fn exit_on_error(result: Result<()>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Opens the adapter wgtrain picks (or `WGTRAIN_ADAPTER`).
pub fn open_gpu() -> Result<Arc<Gpu>> {
    let gpu = Gpu::new().context(
        "opening a GPU (`cargo run --release --example devices` lists the adapters; \
         without a GPU install Mesa's lavapipe: apt-get install mesa-vulkan-drivers)",
    )?;
    Ok(Arc::new(gpu))
}

/// One line naming the adapter.
pub fn adapter_line(gpu: &Gpu) -> String {
    let i = gpu.info();
    format!("{} ({:?}, {:?})", i.name, i.device_type, i.backend)
}

/// Prints `key` and `value` as one aligned line of the run's header.
pub fn say(key: &str, value: impl std::fmt::Display) {
    if !is_first_process() {
        return;
    }
    let key = if key.is_empty() {
        String::new()
    } else {
        format!("{key}:")
    };
    println!("{key:<12}{value}");
}

/// Prints `lines` under one key, aligned like [`say`].
pub fn say_lines(key: &str, lines: &[String]) {
    for (i, line) in lines.iter().enumerate() {
        say(if i == 0 { key } else { "" }, line);
    }
}

/// False in the processes of an `mpirun` launch but rank 0 (known before MPI starts, from
/// the launcher's environment), so that only one prints the run's header.
pub fn is_first_process() -> bool {
    ["OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK"]
        .iter()
        .filter_map(|v| std::env::var(v).ok())
        .all(|r| r.trim() == "0")
}

/// `n` and its noun, singular or plural: "1 batch", "256 batches".
pub fn count(n: usize, one: &str, many: &str) -> String {
    match n {
        1 => format!("1 {one}"),
        n => format!("{} {many}", thousands(n)),
    }
}

/// `n` with thousands separators: 61,100,840.
pub fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The model's largest variable: its name and size in bytes.
pub fn largest_variable(model: &Model) -> (String, u64) {
    model
        .graph
        .variables()
        .iter()
        .map(|v| (v.name.clone(), v.ty.bytes()))
        .max_by_key(|&(_, bytes)| bytes)
        .unwrap_or_default()
}

/// Fails with a clear message when one of the model's tensors is larger than the
/// adapter can bind to a shader (128 MiB on lavapipe).
pub fn check_fits(gpu: &Gpu, model: &Model, advice: &str) -> Result<()> {
    let (name, bytes) = largest_variable(model);
    let limit = gpu.limits().max_storage_buffer_binding_size;
    if bytes > limit {
        bail!(
            "{}: {name} takes {:.0} MB, over this adapter's {} MiB storage-binding limit; \
             {advice}",
            model.name,
            bytes as f64 / 1e6,
            limit >> 20
        );
    }
    Ok(())
}

/// Cosine decay from `lr` to zero over `epochs` of `batches` steps.
pub fn cosine(lr: f32, epochs: usize, batches: usize) -> Schedule {
    Schedule {
        base_lr: lr,
        warmup: 0,
        warmup_from: 0.0,
        decay: Decay::Cosine {
            total: (epochs * batches) as u32,
            min_lr: 0.0,
        },
    }
}

/// A readable name for an optimizer and schedule.
pub fn describe_optimizer(optimizer: Optimizer, schedule: Schedule) -> String {
    let opt = match optimizer {
        Optimizer::Sgd {
            momentum,
            weight_decay,
            nesterov,
            ..
        } => {
            let mut s = "SGD".to_owned();
            if momentum != 0.0 {
                s += &format!(" momentum {momentum}");
            }
            if nesterov {
                s += " (Nesterov)";
            }
            if weight_decay != 0.0 {
                s += &format!(", weight decay {weight_decay}");
            }
            s
        }
        Optimizer::Adam {
            weight_decay: 0.0, ..
        } => "Adam".to_owned(),
        Optimizer::Adam { weight_decay, .. } => format!("Adam, weight decay {weight_decay}"),
    };
    let lr = match schedule.decay {
        Decay::None => format!("lr {} (constant)", schedule.base_lr),
        Decay::Cosine { .. } => format!("lr {} (cosine decay to 0)", schedule.base_lr),
        Decay::Step { every, gamma } => {
            format!("lr {} (x{gamma} every {every} steps)", schedule.base_lr)
        }
    };
    format!("{opt}, {lr}")
}

/// Prints where the checkpoint and the chart go.
pub fn say_outputs(flags: &TrainFlags, plot: Option<&Path>) {
    let checkpoint = match (&flags.checkpoint, flags.resume) {
        (None, _) => "none (--checkpoint PATH saves one after every epoch)".to_owned(),
        (Some(p), false) => format!("{} after every epoch", p.display()),
        (Some(p), true) => format!("{} (resuming from it if it exists)", p.display()),
    };
    say("checkpoint", checkpoint);
    let plot = match plot {
        Some(p) => format!("{} at the end (--plot PATH, --no-plot)", p.display()),
        None => "none".to_owned(),
    };
    say("chart", plot);
}

/// Everything [`run`] needs besides the model, the flags and the data.
pub struct RunConfig {
    pub epochs: usize,
    pub optimizer: Optimizer,
    pub schedule: Schedule,
    pub plot: Option<PathBuf>,
    pub classes: usize,
}

/// Trains `model` on `train`, evaluating on `eval` after every epoch, printing one line
/// per epoch and a summary. Returns the last held-out top-1 accuracy.
pub fn run(
    gpu: Arc<Gpu>,
    model: Model,
    flags: &TrainFlags,
    run: RunConfig,
    train: &wgtrain::models::data::Loader,
    eval: &wgtrain::models::data::Loader,
) -> Result<Option<f32>> {
    let mut model = model;
    if flags.zero_init_residual {
        let names = model.zero_init_residual()?;
        if names.is_empty() {
            bail!(
                "--zero-init-residual: {} has no residual blocks",
                model.name
            );
        }
        say(
            "recipe",
            format!(
                "{} residual blocks start as the identity (last batch-norm gamma = 0)",
                names.len()
            ),
        );
    }
    if flags.no_bn_decay {
        say(
            "recipe",
            "no weight decay on batch-norm and bias parameters",
        );
    }
    let schedule = recipe_schedule(flags, run.schedule, train)?;
    let name = model.name.clone();
    let config = TrainConfig {
        epochs: run.epochs,
        schedule,
        optimizer: run.optimizer,
        clip_grad_norm: None,
        seed: flags.seed,
        checkpoint: flags.checkpoint.clone(),
        checkpoint_every: flags.checkpoint_every,
        resume: flags.resume,
        plot: run.plot.clone(),
        progress: std::io::stderr().is_terminal(),
        max_steps: flags.max_steps,
        debug_nonfinite: false,
        bucket_bytes: (flags.bucket_mb as f64 * 1048576.0) as u64,
        sync_bn: flags.sync_bn,
        no_bn_decay: flags.no_bn_decay,
    };
    let asynchronous = flags.async_config()?;
    let replicas = if flags.distributed {
        Replicas::Mpi
    } else {
        match &flags.devices {
            Some(spec) if spec.len() > 1 || asynchronous.is_some() => Replicas::Local(spec.open()?),
            Some(spec) => Replicas::One(spec.open()?.remove(0)),
            None => Replicas::One(gpu),
        }
    };
    let world = match &replicas {
        Replicas::One(_) => 1,
        Replicas::Local(gpus) => gpus.len(),
        Replicas::Mpi => 0, // known once MPI is up
    };
    let batch = train.batch_size();
    if let (Some(a), Replicas::Local(gpus)) = (&asynchronous, &replicas) {
        say_async(a, gpus.len(), batch);
        say(
            "workers",
            format!(
                "{}; the parameter server shares {}",
                gpus.iter()
                    .map(|g| g.info().name.clone())
                    .collect::<Vec<_>>()
                    .join(", "),
                gpus[0].info().name
            ),
        );
        return run_async_local(
            gpus.clone(),
            model,
            config,
            *a,
            (&name, flags, &run),
            train,
            eval,
        );
    }
    if asynchronous.is_none() && world > 1 && batch % world != 0 {
        bail!(
            "--batch-size {batch} is not a multiple of the {world} devices: each replica takes \
             an equal share of every batch"
        );
    }
    match replicas {
        Replicas::One(gpu) => {
            let trainer = Trainer::new(gpu, model, config).context("setting up training")?;
            run_trainer(trainer, &name, flags, &run, train, eval)
        }
        Replicas::Local(gpus) => {
            say(
                "replicas",
                format!(
                    "{} devices in this process, {} images each per step: {}",
                    gpus.len(),
                    batch / gpus.len(),
                    gpus.iter()
                        .map(|g| g.info().name.clone())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            );
            let comms = LocalComm::group(gpus.len());
            in_threads(gpus, comms, |gpu, comm| {
                let trainer = Trainer::distributed(gpu, model.clone(), config.clone(), comm)
                    .context("setting up training")?;
                run_trainer(trainer, &name, flags, &run, train, eval)
            })
        }
        Replicas::Mpi => run_mpi(model, config, &name, flags, &run, train, eval),
    }
}

/// One line on the asynchronous set-up.
fn say_async(a: &AsyncConfig, workers: usize, batch: usize) {
    let delay = match a.staleness {
        0 => String::new(),
        t => format!(", weights served {t} steps late"),
    };
    let order = match a.order {
        PushOrder::Arrival => "pushes applied as they arrive",
        PushOrder::RoundRobin => "pushes applied worker by worker in turn",
    };
    say(
        "asynchronous",
        format!(
            "{} with {}, {batch} images per push; {order}{delay}",
            a.compensation.describe(),
            count(workers, "worker", "workers")
        ),
    );
}

/// Asynchronous training in this process: a parameter-server thread (rank 0, on the
/// first device) and one worker thread per device.
fn run_async_local(
    gpus: Vec<Arc<Gpu>>,
    model: Model,
    config: TrainConfig,
    asynchronous: AsyncConfig,
    (name, flags, run): (&str, &TrainFlags, &RunConfig),
    train: &wgtrain::models::data::Loader,
    eval: &wgtrain::models::data::Loader,
) -> Result<Option<f32>> {
    let comms = LocalComm::group(gpus.len() + 1);
    let devices: Vec<Arc<Gpu>> = std::iter::once(gpus[0].clone()).chain(gpus).collect();
    in_threads(devices, comms, |gpu, comm| {
        let trainer = Trainer::asynchronous(gpu, model.clone(), config.clone(), comm, asynchronous)
            .context("setting up training")?;
        run_trainer(trainer, name, flags, run, train, eval)
    })
}

/// Runs `rank(device, communicator)` for every rank on a thread of its own; rank 0's
/// result, or the error that started a failure.
pub fn in_threads<T: Send + Default>(
    devices: Vec<Arc<Gpu>>,
    comms: Vec<LocalComm>,
    rank: impl Fn(Arc<Gpu>, Box<dyn Communicator>) -> Result<T> + Sync,
) -> Result<T> {
    let results: Vec<Result<T>> = std::thread::scope(|scope| {
        let handles: Vec<_> = devices
            .into_iter()
            .zip(comms)
            .map(|(gpu, comm)| {
                let rank = &rank;
                scope.spawn(move || rank(gpu, Box::new(comm)))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a training thread panicked")))
            })
            .collect()
    });
    first_cause(results)
}

/// The example's schedule with the large-batch recipe's flags applied: linear scaling
/// with the global batch, and gradual warmup.
fn recipe_schedule(
    flags: &TrainFlags,
    mut schedule: Schedule,
    train: &wgtrain::models::data::Loader,
) -> Result<Schedule> {
    if !(flags.warmup_epochs.is_finite() && flags.warmup_epochs >= 0.0) {
        bail!(
            "--warmup-epochs must be 0 or more, got {}",
            flags.warmup_epochs
        );
    }
    let batch = train.batch_size();
    let base = flags.base_lr.unwrap_or(schedule.base_lr);
    if flags.lr_scaling == Some(LrScaling::Linear) {
        schedule.base_lr = base * batch as f32 / 256.0;
        say(
            "recipe",
            format!(
                "linear scaling: lr {base} x {batch}/256 = {}",
                schedule.base_lr
            ),
        );
    }
    if flags.warmup_epochs > 0.0 {
        let steps = (flags.warmup_epochs * train.batches_per_epoch() as f32).ceil() as u32;
        schedule.warmup = steps.max(1);
        schedule.warmup_from = match flags.lr_scaling {
            Some(_) => base.min(schedule.base_lr),
            None => 0.0,
        };
        if let Decay::Cosine { total, .. } = &mut schedule.decay {
            *total = (*total).max(schedule.warmup + 1);
        }
        say(
            "recipe",
            format!(
                "warmup over {} steps ({} epochs) from {} to {}",
                schedule.warmup,
                flags.warmup_epochs,
                schedule.lr(0),
                schedule.base_lr
            ),
        );
    }
    Ok(schedule)
}

/// Where the replicas run.
enum Replicas {
    One(Arc<Gpu>),
    Local(Vec<Arc<Gpu>>),
    Mpi,
}

/// Rank 0's result, or the error that started a failure: the first rank whose error is
/// not about another rank having stopped.
fn first_cause<T: Default>(results: Vec<Result<T>>) -> Result<T> {
    if results.iter().all(Result::is_ok) {
        return results.into_iter().next().unwrap_or(Ok(T::default()));
    }
    let mut errors: Vec<(usize, anyhow::Error)> = results
        .into_iter()
        .enumerate()
        .filter_map(|(rank, r)| r.err().map(|e| (rank, e)))
        .collect();
    let cause = errors
        .iter()
        .position(|(_, e)| !format!("{e:#}").contains(" stopped ("))
        .unwrap_or(0);
    let (rank, error) = errors.swap_remove(cause);
    Err(error.context(format!("replica {rank}")))
}

#[cfg(feature = "mpi")]
fn run_mpi(
    model: Model,
    config: TrainConfig,
    name: &str,
    flags: &TrainFlags,
    run: &RunConfig,
    train: &wgtrain::models::data::Loader,
    eval: &wgtrain::models::data::Loader,
) -> Result<Option<f32>> {
    use wgtrain::parallel::{Communicator, MpiComm};
    if !MpiComm::launched_by_mpirun() {
        bail!(
            "--distributed: this process was not started by mpirun (e.g. `mpirun -np 2 <this command>`)"
        );
    }
    let comm = MpiComm::init()?;
    let (rank, world) = (comm.rank(), comm.world_size());
    // Any failure before training ends the job: the others would wait for this rank.
    let fail = |comm: &MpiComm, e: anyhow::Error| -> anyhow::Error {
        comm.abort(&format!("{e:#}"));
        e
    };
    let batch = train.batch_size();
    let asynchronous = flags.async_config().map_err(|e| fail(&comm, e))?;
    if asynchronous.is_none() && batch % world != 0 {
        let e =
            anyhow::anyhow!("--batch-size {batch} is not a multiple of the {world} MPI processes");
        return Err(fail(&comm, e));
    }
    // One GPU per process: the local rank's GPU when this node has several.
    let local = std::env::var("OMPI_COMM_WORLD_LOCAL_RANK")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    let gpu = match std::env::var("WGTRAIN_ADAPTER") {
        Ok(_) => open_gpu(),
        Err(_) => DeviceSpec::for_local_rank(local)
            .map_err(anyhow::Error::from)
            .and_then(|choice| Ok(Arc::new(Gpu::with_adapter(Some(&choice))?))),
    };
    let gpu = gpu.map_err(|e| fail(&comm, e))?;
    if let Some(a) = asynchronous {
        if rank == 0 {
            say_async(&a, world.saturating_sub(1), batch);
            say(
                "workers",
                format!(
                    "MPI ranks 1 to {}; rank 0 is the parameter server",
                    world - 1
                ),
            );
        }
        let trainer = Trainer::asynchronous(gpu, model, config, Box::new(comm), a)
            .context("setting up training")?;
        return run_trainer(trainer, name, flags, run, train, eval)
            .with_context(|| format!("MPI rank {rank}"));
    }
    if rank == 0 {
        say(
            "replicas",
            format!(
                "{world} MPI processes, {} images each per step",
                batch / world
            ),
        );
    }
    let trainer =
        Trainer::distributed(gpu, model, config, Box::new(comm)).context("setting up training")?;
    run_trainer(trainer, name, flags, run, train, eval).with_context(|| format!("MPI rank {rank}"))
}

#[cfg(not(feature = "mpi"))]
fn run_mpi(
    _: Model,
    _: TrainConfig,
    _: &str,
    _: &TrainFlags,
    _: &RunConfig,
    _: &wgtrain::models::data::Loader,
    _: &wgtrain::models::data::Loader,
) -> Result<Option<f32>> {
    bail!("{}", wgtrain::parallel::NO_MPI)
}

/// Trains with `trainer` (one replica of a data-parallel run, or the only one); rank 0
/// prints the epochs, writes the weights and the summary. A replica that fails tells the
/// others, so that none waits for it.
fn run_trainer(
    mut trainer: Trainer,
    name: &str,
    flags: &TrainFlags,
    run: &RunConfig,
    train: &wgtrain::models::data::Loader,
    eval: &wgtrain::models::data::Loader,
) -> Result<Option<f32>> {
    let result = train_and_report(&mut trainer, name, flags, run, train, eval);
    if let (Err(e), false) = (&result, trainer.stopped_together()) {
        trainer.abort(&format!("{e:#}"));
    }
    result
}

fn train_and_report(
    trainer: &mut Trainer,
    name: &str,
    flags: &TrainFlags,
    run: &RunConfig,
    train: &wgtrain::models::data::Loader,
    eval: &wgtrain::models::data::Loader,
) -> Result<Option<f32>> {
    let root = trainer.rank() == 0;
    let checkpoint = flags.checkpoint.as_deref();
    let resuming = flags.resume && checkpoint.is_some_and(Path::is_file);
    if let (true, false, Some(path), true) = (flags.resume, resuming, checkpoint, root) {
        say(
            "resume",
            format!(
                "no checkpoint at {} yet: starting from scratch",
                path.display()
            ),
        );
    }
    if let Some(path) = &flags.init_weights {
        let loaded = torch::load_state_dict(path, trainer.session())
            .context("--init-weights (a torchvision state_dict for this model)")?;
        if root {
            say(
                "weights",
                format!("{} tensors from {}", loaded.tensors, path.display()),
            );
        }
    }
    if let (true, Some(path), true) = (resuming, checkpoint, root) {
        let p = trainer.position();
        say(
            "resume",
            format!(
                "from {}: epoch {}, batch {} of {}, step {}",
                path.display(),
                p.epoch + 1,
                p.batch,
                train.batches_per_epoch(),
                p.steps
            ),
        );
    }
    if root {
        println!();
    }
    let start = Instant::now();
    let (epochs, images) = (run.epochs, train.dataset().len());
    let records = trainer
        .fit_with(train, Some(eval), |r| print_epoch(r, epochs, images))
        .with_context(|| format!("training {name}"))?;
    let last = records.last().copied();
    let seconds = start.elapsed().as_secs_f32();
    let ranks = match trainer.world_size() {
        1 => Vec::new(),
        _ => trainer.rank_stats()?,
    };
    if !root {
        return Ok(last.and_then(|r| r.eval_top1));
    }
    if let Some(path) = &flags.save_weights {
        torch::save_state_dict(path, trainer.session()).context("--save-weights")?;
        say(
            "weights",
            format!("state_dict written to {}", path.display()),
        );
    }
    if let Some(stats) = trainer.server_stats() {
        let (mean, max) = stats.staleness();
        say(
            "server",
            format!(
                "{} pushes; staleness mean {mean:.2}, max {max}; {:.2} s applying updates, \
                 {:.2} s serving weights, {:.2} s waiting for workers",
                thousands(stats.pushes.len()),
                stats.update_s,
                stats.serve_s,
                stats.wait_s
            ),
        );
    }
    for r in ranks.iter().filter(|_| trainer.is_asynchronous()).skip(1) {
        say(
            &format!("worker {}", r.rank),
            format!(
                "{:.0} img/s ({} images in {:.1} s); {:.2} s ({:.1}%) pushing and waiting for \
                 weights, {:.1} MiB pushed",
                r.images / r.seconds.max(1e-9),
                thousands(r.images as usize),
                r.seconds,
                r.comm_s,
                100.0 * r.comm_s / r.seconds.max(1e-9),
                r.bytes / 1048576.0
            ),
        );
    }
    for r in ranks.iter().filter(|_| !trainer.is_asynchronous()) {
        say(
            &format!("rank {}", r.rank),
            format!(
                "{:.0} img/s ({} images in {:.1} s of steps); gradient exchange {:.2} s \
                 ({:.1}% of its steps, {:.1} MiB), {:.0}% of the reduction overlapped with \
                 backward",
                r.images / r.seconds.max(1e-9),
                thousands(r.images as usize),
                r.seconds,
                r.comm_s,
                100.0 * r.comm_s / r.seconds.max(1e-9),
                r.bytes / 1048576.0,
                100.0 * r.overlapped
            ),
        );
    }
    print_summary(trainer, flags, run, name, last, seconds, train);
    Ok(last.and_then(|r| r.eval_top1))
}

/// One line per epoch; `images` is the training set's size, to mark an epoch cut short
/// by `--max-steps` or resumed part-way.
fn print_epoch(r: &EpochRecord, epochs: usize, images: usize) {
    let pct = |v: Option<f32>| v.map_or("-".to_owned(), |v| format!("{:.1}%", 100.0 * v));
    let seen = (r.images_per_s * r.seconds).round() as usize;
    let part = match seen < images {
        true => format!(
            "  (part: {} of {} images)",
            thousands(seen),
            thousands(images)
        ),
        false => String::new(),
    };
    println!(
        "epoch {:>2}/{epochs}  train loss {:.4} acc {:>5.1}%  held-out loss {} top-1 {:>6} \
         top-5 {:>6}  {:.0} img/s  {:.1} s{part}",
        r.epoch + 1,
        r.train_loss,
        100.0 * r.train_top1,
        r.eval_loss.map_or("-".to_owned(), |l| format!("{l:.4}")),
        pct(r.eval_top1),
        pct(r.eval_top5),
        r.images_per_s,
        r.seconds
    );
}

fn print_summary(
    trainer: &Trainer,
    flags: &TrainFlags,
    run: &RunConfig,
    name: &str,
    last: Option<EpochRecord>,
    seconds: f32,
    train: &wgtrain::models::data::Loader,
) {
    let p = trainer.position();
    if flags.max_steps.is_some_and(|m| p.steps >= m) && (p.epoch as usize) < run.epochs {
        let resume = match &flags.checkpoint {
            Some(c) => format!(
                "; go on with --checkpoint {} --resume (without --max-steps)",
                c.display()
            ),
            None => String::new(),
        };
        println!(
            "stopped at --max-steps {} (epoch {}, batch {} of {}){resume}",
            p.steps,
            p.epoch + 1,
            p.batch,
            train.batches_per_epoch()
        );
    }
    let steps = count(p.steps as usize, "step", "steps");
    let mut line = format!("done: {name}, {steps} in all, {seconds:.1} s this run");
    match last.and_then(|r| r.eval_top1.zip(r.eval_top5)) {
        Some((top1, top5)) => {
            line += &format!(
                "; held-out top-1 {:.2}%, top-5 {:.2}% (chance {:.1}%)",
                100.0 * top1,
                100.0 * top5,
                100.0 / run.classes as f32
            );
        }
        None => line += "; no epoch left to train",
    }
    if let Some(path) = &run.plot {
        line += &format!("; chart {}", data::tidy(path.clone()).display());
    }
    if let Some(path) = &flags.checkpoint {
        line += &format!("; checkpoint {}", path.display());
    }
    println!("{line}");
}
