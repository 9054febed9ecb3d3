//! The training loop: epochs of optimizer steps (each one GPU submission), evaluation
//! after every epoch (loss, top-1, top-5), a learning-rate schedule, a progress bar,
//! checkpoints that resume exactly, and a loss/accuracy chart at the end.
//!
//! Faults stop the run before they reach a checkpoint: labels are checked on the host
//! before each step, and every step counts the NaN/±Inf gradient elements on the GPU
//! and reads the counts back with the loss. A fault is an error naming the parameter,
//! the step and the last checkpoint (left as it was). With
//! [`TrainConfig::debug_nonfinite`] (or `WGTRAIN_DEBUG_NONFINITE=1`) the batch is re-run
//! node by node from a copy of the weights taken before the step, and the error also
//! names the first op whose output went non-finite.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use wgtrain_graph::device::Gpu;
use wgtrain_graph::session::VariableSnapshot;
use wgtrain_graph::{Feed, Mode, Optimizer, Schedule, Session, StepInfo, StepOutput, Training};
use wgtrain_parallel::ps::{ServerStats, Worker};
use wgtrain_parallel::{AsyncConfig, Communicator, ParameterServer, ReplicaStats};

use crate::checkpoint::{self, Position};
use crate::data::{Batch, Loader};
use crate::error::{ModelError, Result};
use crate::zoo::Model;

mod asynchronous;

/// How to train.
#[derive(Debug, Clone)]
pub struct TrainConfig {
    pub epochs: usize,
    pub schedule: Schedule,
    pub optimizer: Optimizer,
    pub clip_grad_norm: Option<f32>,
    /// Seeds the initial weights and dropout.
    pub seed: u64,
    /// Written after every epoch (and every `checkpoint_every` steps when non-zero).
    pub checkpoint: Option<PathBuf>,
    pub checkpoint_every: usize,
    /// Continue from `checkpoint` if it exists.
    pub resume: bool,
    /// Where to write the loss/accuracy chart (SVG).
    pub plot: Option<PathBuf>,
    /// Show a progress bar (only drawn on a terminal).
    pub progress: bool,
    /// Stop after this many optimizer steps in all (for quick runs and tests).
    pub max_steps: Option<u32>,
    /// On a NaN/Inf, re-run the batch node by node and name the first op whose output
    /// is non-finite. Costs a GPU copy of every variable before each step. Also on when
    /// the environment sets `WGTRAIN_DEBUG_NONFINITE=1`.
    pub debug_nonfinite: bool,
    /// Data-parallel runs ([`Trainer::distributed`]): the most bytes of gradients per
    /// all-reduce message (PyTorch DDP's 25 MiB by default).
    pub bucket_bytes: u64,
    /// Data-parallel runs: batch norm with the statistics of the global batch (PyTorch's
    /// `SyncBatchNorm`) instead of each replica's own.
    pub sync_bn: bool,
    /// No weight decay on batch-norm and bias parameters (the large-batch recipe).
    pub no_bn_decay: bool,
}

impl TrainConfig {
    /// `epochs` of SGD with momentum 0.9 at a constant `lr`, seed 0, nothing written.
    pub fn new(epochs: usize, lr: f32) -> Self {
        Self {
            epochs,
            schedule: Schedule::constant(lr),
            optimizer: Optimizer::sgd_momentum(0.9, 0.0, false),
            clip_grad_norm: None,
            seed: 0,
            checkpoint: None,
            checkpoint_every: 0,
            resume: false,
            plot: None,
            progress: false,
            max_steps: None,
            debug_nonfinite: false,
            bucket_bytes: wgtrain_parallel::DEFAULT_BUCKET_BYTES,
            sync_bn: false,
            no_bn_decay: false,
        }
    }
}

/// One replica's share of a data-parallel run, as [`Trainer::rank_stats`] reports it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RankStats {
    pub rank: usize,
    /// Images this replica trained on, and the seconds its steps took.
    pub images: f64,
    pub seconds: f64,
    /// Seconds exchanging gradients and metrics (copy-out, reduction, write-back).
    pub comm_s: f64,
    /// Of the gradient reduction time, the fraction hidden behind backward.
    pub overlapped: f64,
    /// Bytes of gradients this replica all-reduced.
    pub bytes: f64,
}

/// One epoch's figures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EpochRecord {
    pub epoch: usize,
    pub train_loss: f32,
    pub train_top1: f32,
    pub eval_loss: Option<f32>,
    pub eval_top1: Option<f32>,
    pub eval_top5: Option<f32>,
    pub images_per_s: f32,
    pub seconds: f32,
}

/// Loss and top-1 / top-5 accuracy over a dataset.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evaluation {
    pub loss: f32,
    pub top1: f32,
    pub top5: f32,
}

/// A model, its session and training state.
pub struct Trainer {
    session: Session,
    training: Training,
    model: String,
    classes: usize,
    config: TrainConfig,
    position: Position,
    /// Optimizer step of the checkpoint on disk (written or resumed from), if any.
    checkpointed: Option<u32>,
    /// Variables before the current step, kept when debugging non-finite values.
    snapshot: Option<VariableSnapshot>,
    on_step: Option<StepHook>,
    /// Loss of every optimizer step taken by this trainer (resumed runs start empty).
    pub losses: Vec<f32>,
    pub records: Vec<EpochRecord>,
    /// The other replicas of a data-parallel run.
    comm: Option<Box<dyn Communicator>>,
    /// Where this replica's steps went, and the images they trained on.
    comm_stats: ReplicaStats,
    images: usize,
    /// The run stopped on a fault every replica saw at the same step (the loss and the
    /// gradients are global): no replica needs to be told.
    stopped_together: bool,
    /// What this rank does with `comm`.
    role: Role,
}

/// A rank's part in training with others.
enum Role {
    /// Alone, or a replica of synchronous data parallelism.
    Replica,
    /// The parameter server of asynchronous training (rank 0).
    Server(Box<ParameterServer>),
    /// A worker of asynchronous training.
    Worker(Box<Worker>),
}

/// Called after every optimizer step with its number and loss.
type StepHook = Box<dyn FnMut(u32, f32) + Send>;

fn feeds<'a>(batch: &'a Batch) -> [Feed<'a>; 2] {
    [
        Feed::f32("images", &batch.shape, &batch.images),
        Feed::u32("labels", &batch.shape[..1], &batch.labels),
    ]
}

impl Trainer {
    /// Attaches the optimizer to `model`, initialises its weights, checks that the
    /// checkpoint path is writable (before any training), and resumes if asked.
    pub fn new(gpu: Arc<Gpu>, model: Model, config: TrainConfig) -> Result<Self> {
        Self::build(gpu, model, config, None, None)
    }

    /// One replica of synchronous data-parallel training with the others of `comm`:
    /// gradients are averaged over the global batch in buckets of
    /// [`TrainConfig::bucket_bytes`] while backward runs, every replica applies the same
    /// update, and each reads its own shard of every batch ([`Loader::sharded`]; pass
    /// [`fit`](Self::fit) the global loader). Rank 0 loads the checkpoint (any world
    /// size wrote it) and its weights are broadcast; rank 0 alone writes checkpoints,
    /// the chart and progress. Batch norm keeps per-replica statistics (rank 0's running
    /// statistics are broadcast before evaluation) unless [`TrainConfig::sync_bn`].
    pub fn distributed(
        gpu: Arc<Gpu>,
        model: Model,
        config: TrainConfig,
        comm: Box<dyn Communicator>,
    ) -> Result<Self> {
        Self::build(gpu, model, config, Some(comm), None)
    }

    /// One rank of asynchronous training through a parameter server (Zheng et al.
    /// 2017's DC-ASGD, or plain ASGD): rank 0 is the server — it holds the weights,
    /// applies every worker's push on its GPU with [`AsyncConfig::compensation`], the
    /// schedule's learning rate and the optimizer's momentum and weight decay (SGD), and
    /// evaluates, prints and checkpoints (at the end of each epoch) — and every other
    /// rank is a worker that computes gradients on full batches of its own
    /// ([`Loader::interleaved`]: together the workers read each sample of an epoch
    /// once). Pass [`fit`](Self::fit) the same loader on every rank. A worker that fails
    /// stops the server and the others with an error naming its rank.
    pub fn asynchronous(
        gpu: Arc<Gpu>,
        model: Model,
        config: TrainConfig,
        comm: Box<dyn Communicator>,
        asynchronous: AsyncConfig,
    ) -> Result<Self> {
        Self::build(gpu, model, config, Some(comm), Some(asynchronous))
    }

    /// [`build_inner`](Self::build_inner); a replica that fails tells the others (MPI:
    /// ends the job), so that none waits for it in a collective.
    fn build(
        gpu: Arc<Gpu>,
        model: Model,
        config: TrainConfig,
        comm: Option<Box<dyn Communicator>>,
        asynchronous: Option<AsyncConfig>,
    ) -> Result<Self> {
        let mut slot = comm;
        let built = Self::build_inner(gpu, model, config, &mut slot, asynchronous);
        if let (Err(e), Some(comm)) = (&built, &slot) {
            comm.abort(&format!("setting up training: {e}"));
        }
        built
    }

    fn build_inner(
        gpu: Arc<Gpu>,
        model: Model,
        mut config: TrainConfig,
        comm_slot: &mut Option<Box<dyn Communicator>>,
        asynchronous: Option<AsyncConfig>,
    ) -> Result<Self> {
        if asynchronous.is_some() {
            check_async_config(&config, comm_slot.as_deref())?;
        }
        let model = match config.sync_bn {
            true => model.with_sync_batch_norm()?,
            false => model,
        };
        config.debug_nonfinite |= std::env::var("WGTRAIN_DEBUG_NONFINITE").is_ok_and(|v| v == "1");
        // (An asynchronous worker's step has no update to re-run from a snapshot.)
        config.debug_nonfinite &= asynchronous.is_none();
        let Model {
            name,
            mut graph,
            loss,
            classes,
            ..
        } = model;
        let comm = comm_slot.as_deref();
        if config.no_bn_decay {
            graph.no_decay_on_norms_and_biases();
        }
        let training = match comm {
            Some(_) if asynchronous.is_none() => graph.minimize_synced(
                loss,
                config.optimizer,
                config.clip_grad_norm,
                config.bucket_bytes,
            )?,
            _ => graph.minimize_with(loss, config.optimizer, config.clip_grad_norm)?,
        };
        let mut session = Session::new(gpu, graph, config.seed)?;
        let root = comm.is_none_or(|c| c.rank() == 0);
        // Rank 0 decides (its file system holds the checkpoint); the others follow.
        let decided = if root {
            match &config.checkpoint {
                Some(path) if config.resume && path.exists() => {
                    checkpoint::load(path, &session, &name).map(Some)
                }
                Some(path) => checkpoint::check_writable(path).map(|()| None),
                None if config.resume => Err(ModelError::Config(
                    "--resume needs a checkpoint path".to_owned(),
                )),
                None => Ok(None),
            }
        } else {
            Ok(None)
        };
        let resumed = match comm {
            Some(c) => agree(c, decided)?,
            None => decided?,
        };
        let mut position = resumed.unwrap_or(Position {
            epoch: 0,
            batch: 0,
            steps: 0,
        });
        let role = match (comm, asynchronous) {
            (Some(c), None) => {
                wgtrain_parallel::broadcast_variables(&session, c, 0)?;
                Role::Replica
            }
            (None, _) => Role::Replica,
            (Some(c), Some(a)) => {
                // Asynchronous runs resume at the start of an epoch.
                position.batch = 0;
                match c.rank() {
                    0 => {
                        let mut server = ParameterServer::new(
                            &session,
                            &training,
                            c.world_size() - 1,
                            config.optimizer,
                            a,
                        )?;
                        server.set_step(position.steps as u64);
                        Role::Server(Box::new(server))
                    }
                    _ => Role::Worker(Box::new(Worker::new(&session, &training)?)),
                }
            }
        };
        session.set_optimizer_steps(position.steps);
        Ok(Self {
            session,
            training,
            model: name,
            classes,
            config,
            position,
            checkpointed: resumed.map(|p| p.steps),
            snapshot: None,
            on_step: None,
            losses: Vec::new(),
            records: Vec::new(),
            comm: comm_slot.take(),
            comm_stats: ReplicaStats::default(),
            images: 0,
            stopped_together: false,
            role,
        })
    }

    /// Tells the other replicas that this one stops with `reason`, so that none waits
    /// for it in a collective (in-process replicas fail at once naming this rank; under
    /// MPI the job ends). Without a communicator, nothing.
    pub fn abort(&self, reason: &str) {
        if let Some(comm) = &self.comm {
            comm.abort(reason);
        }
    }

    /// Whether the last [`fit`](Self::fit) stopped on a fault every replica met at the
    /// same step (a NaN/Inf loss or gradient), so that no replica needs aborting.
    pub fn stopped_together(&self) -> bool {
        self.stopped_together
    }

    /// This replica's rank (0 without a communicator).
    pub fn rank(&self) -> usize {
        self.comm.as_ref().map_or(0, |c| c.rank())
    }

    /// Number of replicas (1 without a communicator).
    pub fn world_size(&self) -> usize {
        self.comm.as_ref().map_or(1, |c| c.world_size())
    }

    fn is_root(&self) -> bool {
        self.rank() == 0
    }

    /// The communicator of synchronous data parallelism (none when alone or
    /// asynchronous).
    fn sync_comm(&self) -> Option<&dyn Communicator> {
        match self.role {
            Role::Replica => self.comm.as_deref(),
            _ => None,
        }
    }

    /// The parameter server's record (pushes and their staleness, where its time went):
    /// rank 0 of an asynchronous run.
    pub fn server_stats(&self) -> Option<&ServerStats> {
        match &self.role {
            Role::Server(server) => Some(server.stats()),
            _ => None,
        }
    }

    /// Whether this trainer is part of an asynchronous run.
    pub fn is_asynchronous(&self) -> bool {
        !matches!(self.role, Role::Replica)
    }

    /// Where this replica's training steps went so far (gradient exchange, overlap).
    pub fn replica_stats(&self) -> ReplicaStats {
        self.comm_stats
    }

    /// Every replica's images, step time and communication time, gathered on every rank
    /// (a collective: all ranks call it).
    pub fn rank_stats(&self) -> Result<Vec<RankStats>> {
        const FIELDS: usize = 5;
        let world = self.world_size();
        let s = &self.comm_stats;
        let mut table = vec![0.0f32; world * FIELDS];
        let comm_s = s.sync.copy_out_s + s.sync.reduce_s + s.sync.copy_in_s + s.metrics_s;
        table[self.rank() * FIELDS..][..FIELDS].copy_from_slice(&[
            self.images as f32,
            s.step_s as f32,
            comm_s as f32,
            s.sync.overlapped() as f32,
            s.sync.bytes as f32,
        ]);
        if let Some(c) = &self.comm {
            c.all_reduce_sum(&mut table).map_err(collective)?;
        }
        Ok(table
            .chunks(FIELDS)
            .enumerate()
            .map(|(rank, f)| RankStats {
                rank,
                images: f[0] as f64,
                seconds: f[1] as f64,
                comm_s: f[2] as f64,
                overlapped: f[3] as f64,
                bytes: f[4] as f64,
            })
            .collect())
    }

    /// `loader` as this replica reads it: its shard in a data-parallel run.
    fn local_loader(&self, loader: &Loader) -> Result<Loader> {
        match self.world_size() {
            1 => Ok(loader.clone()),
            world => loader.clone().sharded(self.rank(), world),
        }
    }

    /// Calls `hook(step, loss)` after every successful optimizer step, before that step's
    /// checkpoint (if any) is written: e.g. to log losses as they come.
    pub fn on_step(&mut self, hook: impl FnMut(u32, f32) + Send + 'static) {
        self.on_step = Some(Box::new(hook));
    }

    pub fn session(&self) -> &Session {
        &self.session
    }

    /// Where training stands.
    pub fn position(&self) -> Position {
        self.position
    }

    fn done(&self) -> bool {
        self.config
            .max_steps
            .is_some_and(|m| self.position.steps >= m)
    }

    /// Trains until `config.epochs` (or `max_steps`), evaluating on `eval` after each
    /// epoch. Returns the per-epoch records.
    pub fn fit(&mut self, train: &Loader, eval: Option<&Loader>) -> Result<&[EpochRecord]> {
        self.fit_with(train, eval, |_| {})
    }

    /// [`fit`](Self::fit), handing each epoch's record to `on_epoch` as soon as it is
    /// evaluated (before its checkpoint is written), e.g. to print a line per epoch.
    pub fn fit_with(
        &mut self,
        train: &Loader,
        eval: Option<&Loader>,
        on_epoch: impl FnMut(&EpochRecord),
    ) -> Result<&[EpochRecord]> {
        if let Err(e) = self.fit_inner(train, eval, on_epoch) {
            if !self.stopped_together {
                self.abort(&e.to_string());
            }
            return Err(e);
        }
        Ok(&self.records)
    }

    fn fit_inner(
        &mut self,
        train: &Loader,
        eval: Option<&Loader>,
        mut on_epoch: impl FnMut(&EpochRecord),
    ) -> Result<()> {
        if !matches!(self.role, Role::Replica) {
            return self.fit_async(train, eval, on_epoch);
        }
        let global = train;
        let train = &self.local_loader(global)?;
        while (self.position.epoch as usize) < self.config.epochs && !self.done() {
            let epoch = self.position.epoch;
            let record = self.train_epoch(train, epoch)?;
            let ev = match eval {
                Some(loader) => Some(self.evaluate(loader)?),
                None => None,
            };
            self.records.push(EpochRecord {
                eval_loss: ev.map(|e| e.loss),
                eval_top1: ev.map(|e| e.top1),
                eval_top5: ev.map(|e| e.top5),
                ..record
            });
            if self.is_root() {
                on_epoch(&self.records[self.records.len() - 1]);
            }
            if self.position.batch >= train.batches_per_epoch() {
                self.position = Position {
                    epoch: epoch + 1,
                    batch: 0,
                    ..self.position
                };
            }
            self.save_checkpoint()?;
        }
        let _ = global;
        self.write_plot(train.batches_per_epoch())
    }

    /// The loss and accuracy chart (rank 0), with `steps_per_epoch` between evaluations.
    fn write_plot(&self, steps_per_epoch: usize) -> Result<()> {
        if let (Some(path), true) = (&self.config.plot, self.is_root()) {
            let acc: Vec<(usize, f32)> = self
                .records
                .iter()
                .enumerate()
                .filter_map(|(i, r)| {
                    let at = (i + 1) * steps_per_epoch;
                    r.eval_top1.map(|a| (at.min(self.losses.len()), a))
                })
                .collect();
            crate::plot::loss_and_accuracy(path, &self.model, &self.losses, &acc)?;
        }
        Ok(())
    }

    fn train_epoch(&mut self, train: &Loader, epoch: u64) -> Result<EpochRecord> {
        let total = train.batches_per_epoch();
        let bar = self.progress_bar(total, epoch);
        bar.set_position(self.position.batch as u64);
        let start = Instant::now();
        let (mut loss_sum, mut hits, mut seen) = (0.0f64, 0u64, 0usize);
        for batch in train.epoch(epoch, self.position.batch) {
            let batch = batch?;
            let at = || format!("epoch {epoch}, batch {}", self.position.batch);
            check_labels(&batch.labels, self.classes, at)?;
            let lr = self.config.schedule.lr(self.position.steps);
            if self.config.debug_nonfinite {
                self.snapshot = Some(self.session.snapshot_variables(self.snapshot.take())?);
            }
            let out = match &self.comm {
                Some(comm) => {
                    let (out, stats) = wgtrain_parallel::train_step(
                        &mut self.session,
                        &self.training,
                        comm.as_ref(),
                        &feeds(&batch),
                        lr,
                        batch.share(),
                    )?;
                    self.comm_stats.add(&stats);
                    out
                }
                None => self
                    .session
                    .train_step(&self.training, &feeds(&batch), lr)?,
            };
            self.images += batch.labels.len();
            if out.nonfinite_grads > 0 || !out.loss.is_finite() {
                // The loss and the reduced gradients are the same on every replica, so all
                // stop here together.
                self.stopped_together = true;
                return Err(self.fault(&out, &batch, epoch, lr));
            }
            self.position.steps += 1;
            self.position.batch += 1;
            self.losses.push(out.loss);
            if let Some(hook) = &mut self.on_step {
                hook(self.position.steps, out.loss);
            }
            let n = batch.global;
            loss_sum += out.loss as f64 * n as f64;
            hits += out.correct.map_or(0, |c| c[0] as u64);
            seen += n;
            let rate = seen as f64 / start.elapsed().as_secs_f64().max(1e-9);
            bar.set_message(format!(
                "loss {:.4}  acc {:.1}%  {rate:.0} img/s  lr {lr:.3e}",
                loss_sum / seen as f64,
                100.0 * hits as f64 / seen as f64
            ));
            bar.inc(1);
            let every = self.config.checkpoint_every;
            if every > 0 && self.position.steps as usize % every == 0 {
                self.save_checkpoint()?;
            }
            if self.done() {
                break;
            }
        }
        bar.finish_and_clear();
        let seconds = start.elapsed().as_secs_f32();
        Ok(EpochRecord {
            epoch: epoch as usize,
            train_loss: (loss_sum / seen.max(1) as f64) as f32,
            train_top1: hits as f32 / seen.max(1) as f32,
            eval_loss: None,
            eval_top1: None,
            eval_top5: None,
            images_per_s: seen as f32 / seconds.max(1e-9),
            seconds,
        })
    }

    fn progress_bar(&self, total: usize, epoch: u64) -> ProgressBar {
        if !self.config.progress || !self.is_root() {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(total as u64);
        let style =
            ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {msg} eta {eta}")
                .map(|s| s.progress_chars("=> "))
                .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_prefix(format!("{}/{}", epoch + 1, self.config.epochs));
        bar
    }

    /// Loss and accuracy over every batch of `loader`, in evaluation mode. In a
    /// data-parallel run every replica evaluates its shard with rank 0's batch-norm
    /// statistics, and the figures are those of all shards together.
    pub fn evaluate(&mut self, loader: &Loader) -> Result<Evaluation> {
        let comm = self.sync_comm();
        if let Some(comm) = comm {
            wgtrain_parallel::broadcast_state(&self.session, comm, 0)?;
        }
        let loader = &match comm.map_or(1, |c| c.world_size()) {
            1 => loader.clone(),
            world => loader.clone().sharded_for_evaluation(self.rank(), world)?,
        };
        let mut sums = [0.0f32; 4]; // loss · count, top-1, top-5, count
        for (i, batch) in loader.epoch(0, 0).enumerate() {
            let batch = batch?;
            if batch.labels.is_empty() {
                continue; // this rank's share of a batch smaller than the world
            }
            check_labels(&batch.labels, self.classes, || {
                format!("evaluation batch {i}")
            })?;
            let out = self.session.evaluate(&self.training, &feeds(&batch))?;
            let count = batch.labels.len();
            sums[0] += out.loss * count as f32;
            if let Some([a, b]) = out.correct {
                sums[1] += a as f32;
                sums[2] += b as f32;
            }
            sums[3] += count as f32;
        }
        if let Some(comm) = self.sync_comm() {
            comm.all_reduce_sum(&mut sums).map_err(collective)?;
        }
        let n = sums[3].max(1.0);
        Ok(Evaluation {
            loss: sums[0] / n,
            top1: sums[1] / n,
            top5: sums[2] / n,
        })
    }

    /// The error for a step whose gradients or loss went non-finite. The step's update
    /// has already run, so the weights in memory are spoiled (restored from the
    /// snapshot when debugging); the checkpoint on disk is the last good state.
    fn fault(&mut self, out: &StepOutput, batch: &Batch, epoch: u64, lr: f32) -> ModelError {
        let step = self.position.steps + 1;
        let at = format!(
            "at step {step} (epoch {epoch}, batch {})",
            self.position.batch
        );
        let graph = self.session.graph();
        let mut message = match out.first_nonfinite_grad {
            Some(slot) => format!(
                "gradient of {} became NaN/Inf {at} ({} non-finite gradient elements in all, \
                 loss {}); stopping; {}",
                self.training.gradient_name(graph, slot).unwrap_or("?"),
                out.nonfinite_grads,
                out.loss,
                self.checkpoint_state()
            ),
            None => format!(
                "loss became {} {at}; stopping; {}",
                out.loss,
                self.checkpoint_state()
            ),
        };
        if self.config.debug_nonfinite {
            message += "; ";
            message += &self.diagnose(batch, lr, step);
        }
        ModelError::Config(message)
    }

    fn checkpoint_state(&self) -> String {
        match (&self.config.checkpoint, self.checkpointed) {
            (Some(path), Some(step)) => {
                format!("last checkpoint {} (step {step}) is intact", path.display())
            }
            (Some(path), None) => format!("no checkpoint written to {} yet", path.display()),
            (None, _) => "no checkpoint is configured".to_owned(),
        }
    }

    /// Re-runs `batch` node by node from the weights before step `step` and names the
    /// first node whose output is non-finite; leaves the weights as they were before it.
    fn diagnose(&mut self, batch: &Batch, lr: f32, step: u32) -> String {
        let Some(snapshot) = self.snapshot.take() else {
            return "no copy of the weights before the step to re-run from".to_owned();
        };
        self.session.restore_variables(&snapshot);
        let fetch = [self.training.loss, self.training.nonfinite];
        let info = StepInfo { step, lr, seed: 0 };
        let found = self
            .session
            .first_nonfinite_node(Mode::Train, &feeds(batch), &fetch, info);
        // The re-run updated batch-norm statistics again: put everything back.
        self.session.restore_variables(&snapshot);
        self.snapshot = Some(snapshot);
        match found {
            Ok(Some(node)) => format!("first non-finite output: {node}"),
            Ok(None) => "re-running the batch node by node gave finite outputs everywhere (the \
                         fault did not repeat)"
                .to_owned(),
            Err(e) => format!("re-running the batch node by node failed: {e}"),
        }
    }

    fn save_checkpoint(&mut self) -> Result<()> {
        if !self.is_root() {
            self.checkpointed = Some(self.position.steps);
            return Ok(());
        }
        if let Some(path) = &self.config.checkpoint {
            checkpoint::save(path, &self.session, &self.model, self.position)?;
            self.checkpointed = Some(self.position.steps);
        }
        Ok(())
    }
}

/// What asynchronous training cannot do, refused before anything starts.
fn check_async_config(config: &TrainConfig, comm: Option<&dyn Communicator>) -> Result<()> {
    let world = comm.map_or(1, |c| c.world_size());
    let refuse = |m: String| Err(ModelError::Config(m));
    if world < 2 {
        return refuse(format!(
            "asynchronous training needs a parameter server (rank 0) and at least one worker: \
             2 ranks or more, got {world}"
        ));
    }
    if config.sync_bn {
        return refuse(
            "--sync-bn is for synchronous data parallelism; asynchronous workers \
                       keep their own batch-norm statistics"
                .to_owned(),
        );
    }
    if config.checkpoint_every > 0 {
        return refuse(
            "asynchronous training checkpoints at the end of each epoch only \
                       (--checkpoint-every is not supported)"
                .to_owned(),
        );
    }
    Ok(())
}

/// Fails if a label is not below `classes` (the loss kernels would read past the logits).
fn check_labels(labels: &[u32], classes: usize, at: impl FnOnce() -> String) -> Result<()> {
    match labels.iter().position(|&l| l as usize >= classes) {
        Some(i) => Err(ModelError::Config(format!(
            "label {} at batch position {i} ({}) is out of range for a model with {classes} \
             classes",
            labels[i],
            at()
        ))),
        None => Ok(()),
    }
}

fn collective(e: wgtrain_parallel::CommError) -> ModelError {
    ModelError::Graph(wgtrain_graph::GraphError::Collective(e.to_string()))
}

/// Hands rank 0's decision (resume from a position, start afresh, or an error) to every
/// rank, so that no rank waits for a broadcast rank 0 will never send.
fn agree(comm: &dyn Communicator, decided: Result<Option<Position>>) -> Result<Option<Position>> {
    let mut bytes = match (&decided, comm.rank()) {
        (_, r) if r != 0 => Vec::new(),
        (Ok(None), _) => vec![0u8],
        (Ok(Some(p)), _) => {
            let mut b = vec![1u8];
            b.extend_from_slice(&p.epoch.to_le_bytes());
            b.extend_from_slice(&(p.batch as u64).to_le_bytes());
            b.extend_from_slice(&(p.steps as u64).to_le_bytes());
            b
        }
        (Err(e), _) => {
            let mut b = vec![2u8];
            b.extend_from_slice(e.to_string().as_bytes());
            b
        }
    };
    comm.broadcast_bytes(&mut bytes, 0).map_err(collective)?;
    if comm.rank() == 0 {
        return decided;
    }
    let word =
        |i: usize| u64::from_le_bytes(bytes[1 + 8 * i..9 + 8 * i].try_into().unwrap_or_default());
    match bytes.first() {
        Some(0) => Ok(None),
        Some(1) if bytes.len() == 25 => Ok(Some(Position {
            epoch: word(0),
            batch: word(1) as usize,
            steps: word(2) as u32,
        })),
        Some(2) => Err(ModelError::Config(format!(
            "rank 0 could not set up training: {}",
            String::from_utf8_lossy(&bytes[1..])
        ))),
        _ => Err(ModelError::Config(
            "rank 0 sent a malformed set-up message".to_owned(),
        )),
    }
}
