//! Asynchronous SGD through a parameter server, with delay compensation (DC-ASGD, Zheng
//! et al., ICML 2017).
//!
//! Rank [`SERVER`] holds the weights; every other rank is a worker that computes
//! gradients on its own batches with its own [`Session`] and pushes them. The server
//! applies each push as it comes ([`PushOrder::Arrival`]) or in turn
//! ([`PushOrder::RoundRobin`], reproducible bit for bit) and answers with the weights the
//! worker is to go on from, which it also keeps as that worker's backup `w_bak(m)` (one
//! per worker, as the paper). The update is [`DcAsgd`] on the server's GPU:
//! plain ASGD, DC-ASGD-c or DC-ASGD-a ([`Compensation`]), with the training's SGD
//! momentum and weight decay on top.
//!
//! Staleness — the server steps between the weights a gradient was computed on and its
//! update — is recorded for every push. [`AsyncConfig::staleness`] adds a delay: the
//! server hands out the weights of `τ` steps before, as if the worker's push arrived `τ`
//! steps late, so that staleness is reproducible on any machine: with one worker every
//! push after the first `τ` is exactly `τ` stale; with `W` workers in round-robin order,
//! exactly `W − 1 + τ`.
//!
//! The protocol (point-to-point messages over any [`Communicator`], so the same code runs
//! as threads or under `mpirun`): the server first sends every worker the initial
//! weights; a worker answers each set of weights with a push, or with the end of its
//! share of the epoch, and the server answers that with the next weights or a stop. At
//! the end of an epoch the server waits for every worker (to evaluate and checkpoint a
//! consistent state), then lets them go on. A worker that fails or disappears stops the
//! server with an error naming its rank, and the others with it.

use std::time::Instant;

use wgtrain_graph::device::kernels::optimizer::DcAsgd;
use wgtrain_graph::device::{Dispatch, Gpu, PooledBuffer};
use wgtrain_graph::{GraphError, Optimizer, Session, StepOutput, Training};

use crate::ParallelError;
use crate::comm::{CommError, Communicator};

/// The parameter server's rank; workers are ranks `1..world_size`.
pub const SERVER: usize = 0;

const TO_SERVER: u32 = 0x5053_0001;
const TO_WORKER: u32 = 0x5053_0002;

/// Worker → server message kinds (the first element).
const PUSH: f32 = 1.0;
const EPOCH_END: f32 = 2.0;
/// Server → worker.
const WEIGHTS: f32 = 1.0;
const STOP: f32 = 0.0;

/// Floats before a push's gradients: kind, loss, top-1, top-5, has hit counts, samples.
const PUSH_HEADER: usize = 6;
/// Floats before the weights in a reply: kind, then the version as four 16-bit parts.
const REPLY_HEADER: usize = 5;

/// How the server corrects a stale gradient `g` computed on the worker's backup `w_bak`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Compensation {
    /// Plain asynchronous SGD: `g` as it is.
    None,
    /// DC-ASGD-c: `g + λ · g ⊙ g ⊙ (w − w_bak)`.
    Constant { lambda: f32 },
    /// DC-ASGD-a: `λ = λ0 / sqrt(ms + eps)` element-wise, with the mean square
    /// `ms ← m · ms + (1 − m) · g ⊙ g`.
    Adaptive { lambda0: f32, m: f32, eps: f32 },
}

impl Compensation {
    /// DC-ASGD-a with the paper's defaults: `λ0 = 2`, `m = 0.95`, `eps = 1e-7`.
    pub const ADAPTIVE: Compensation = Compensation::Adaptive {
        lambda0: 2.0,
        m: 0.95,
        eps: 1e-7,
    };

    /// `ASGD`, `DC-ASGD-c (λ 0.04)`, `DC-ASGD-a (λ0 2)`.
    pub fn describe(&self) -> String {
        match *self {
            Compensation::None => "ASGD".to_owned(),
            Compensation::Constant { lambda } => format!("DC-ASGD-c (lambda {lambda})"),
            Compensation::Adaptive { lambda0, m, eps } => {
                format!("DC-ASGD-a (lambda0 {lambda0}, m {m}, eps {eps})")
            }
        }
    }
}

/// In which order the server takes pushes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PushOrder {
    /// As they arrive: no worker waits for another (asynchronous SGD proper).
    Arrival,
    /// Worker 1, 2, …, W, 1, …: every run is bit-identical, and a slow worker holds the
    /// others up.
    RoundRobin,
}

/// How to train asynchronously.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AsyncConfig {
    pub compensation: Compensation,
    /// Injected delay `τ`: workers get the weights of `τ` server steps before.
    pub staleness: usize,
    pub order: PushOrder,
}

impl Default for AsyncConfig {
    fn default() -> Self {
        Self {
            compensation: Compensation::None,
            staleness: 0,
            order: PushOrder::Arrival,
        }
    }
}

/// One push as the server applied it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PushRecord {
    /// The worker's rank.
    pub worker: usize,
    /// Server steps between the weights its gradient was computed on and this update.
    pub staleness: u64,
}

/// What the server did so far.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ServerStats {
    /// Every applied push, in order.
    pub pushes: Vec<PushRecord>,
    /// Seconds applying updates (upload, dispatch), serving weights (copy, read-back,
    /// send), and waiting for workers.
    pub update_s: f64,
    pub serve_s: f64,
    pub wait_s: f64,
}

impl ServerStats {
    /// Mean and largest staleness over the pushes.
    pub fn staleness(&self) -> (f64, u64) {
        let n = self.pushes.len().max(1) as f64;
        let sum: u64 = self.pushes.iter().map(|p| p.staleness).sum();
        let max = self.pushes.iter().map(|p| p.staleness).max().unwrap_or(0);
        (sum as f64 / n, max)
    }
}

/// What the server saw over one epoch.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EpochServed {
    /// Pushes applied, and their samples.
    pub pushes: usize,
    pub samples: usize,
    /// Σ loss · samples, and top-1 hits.
    pub loss_sum: f64,
    pub hits: u64,
    /// Each push's loss, in order.
    pub losses: Vec<f32>,
    /// The first worker's non-trainable state (batch-norm running statistics) at the end
    /// of its share, in [`state_names`] order.
    pub state: Vec<f32>,
    /// The step limit was reached: every worker has been told to stop.
    pub stopped: bool,
}

/// One trainable variable on the server.
struct ServerVar {
    name: String,
    len: usize,
    weights: PooledBuffer,
    grad: PooledBuffer,
    /// The mean square and velocity: the updates bind them (and the velocity is
    /// checkpointed as the momentum buffer).
    _ms: Option<PooledBuffer>,
    vel: Option<PooledBuffer>,
    /// Per worker: the weights it was last served.
    backups: Vec<PooledBuffer>,
    /// Versions `step − τ ..= step` at `version % (τ + 1)`, when `τ > 0`.
    history: Vec<PooledBuffer>,
    /// Per worker: the update with its backup.
    updates: Vec<Dispatch>,
    update: DcAsgd,
}

/// The parameter server: the weights, each worker's backup and the optimizer state, on
/// the server's GPU.
pub struct ParameterServer {
    gpu: std::sync::Arc<Gpu>,
    vars: Vec<ServerVar>,
    workers: usize,
    config: AsyncConfig,
    /// Updates applied.
    step: u64,
    /// Per worker (index rank − 1): the version it was last served.
    served: Vec<u64>,
    /// Workers not yet told to stop.
    running: Vec<bool>,
    readback: PooledBuffer,
    total: usize,
    stats: ServerStats,
    /// Round-robin: the worker served last.
    turn: usize,
    /// Per worker: the learning rate its update dispatches hold (their uniforms are
    /// rewritten only when the schedule changes it).
    lr_written: Vec<Option<f32>>,
}

fn collective(e: CommError) -> GraphError {
    GraphError::Collective(e.to_string())
}

fn device(e: wgtrain_graph::device::DeviceError) -> GraphError {
    GraphError::Device(e)
}

/// The SGD momentum buffer of parameter `name` in a session (checkpointed with it).
fn momentum_buffer(name: &str) -> String {
    format!("{name}.momentum_buffer")
}

/// The names of the trainable variables with gradients, in the order pushes carry them.
pub fn parameter_names(session: &Session, training: &Training) -> Vec<String> {
    training
        .gradients
        .iter(session.graph())
        .map(|(n, _)| n.to_owned())
        .collect()
}

/// The non-trainable state an epoch's end carries (batch-norm running statistics).
pub fn state_names(session: &Session) -> Vec<String> {
    session
        .graph()
        .variables()
        .iter()
        .filter(|v| !v.trainable && !v.optimizer_state)
        .map(|v| v.name.clone())
        .collect()
}

impl ParameterServer {
    /// A server for `workers` workers, starting from `session`'s weights, updating with
    /// `optimizer`'s momentum and weight decay (SGD only: the paper's server is SGD).
    pub fn new(
        session: &Session,
        training: &Training,
        workers: usize,
        optimizer: Optimizer,
        config: AsyncConfig,
    ) -> Result<Self, ParallelError> {
        let Optimizer::Sgd {
            momentum,
            dampening,
            weight_decay,
            nesterov,
        } = optimizer
        else {
            return Err(ParallelError::Config(
                "asynchronous training updates with SGD on the parameter server (as DC-ASGD); \
                 Adam is not supported there: use --optimizer sgd"
                    .to_owned(),
            ));
        };
        if dampening != 0.0 {
            return Err(ParallelError::Config(
                "the parameter server's momentum has no dampening".to_owned(),
            ));
        }
        if workers == 0 {
            return Err(ParallelError::Config(
                "asynchronous training needs at least one worker besides the parameter server \
                 (rank 0): 2 ranks or more"
                    .to_owned(),
            ));
        }
        let (lambda, adaptive) = match config.compensation {
            Compensation::None => (0.0, None),
            Compensation::Constant { lambda } => (lambda, None),
            Compensation::Adaptive { lambda0, m, eps } => (lambda0, Some((m, eps))),
        };
        let gpu = session.gpu().clone();
        let graph = session.graph();
        let mut vars = Vec::new();
        let mut total = 0usize;
        for name in parameter_names(session, training) {
            let data = session.read_variable(&name)?;
            let len = data.len();
            let no_decay = graph.variable_named(&name).is_some_and(|v| v.no_decay);
            let label = |what: &str| format!("ps.{name}.{what}");
            let upload = |what: &str, d: &[f32]| gpu.upload(d, &label(what)).map_err(device);
            let zeros = vec![0.0f32; len];
            let update = DcAsgd {
                adaptive,
                momentum,
                nesterov,
                weight_decay: if no_decay { 0.0 } else { weight_decay },
                ..DcAsgd::new(len as u32, 1.0, lambda)
            };
            let weights = upload("weights", &data)?;
            let grad = upload("grad", &zeros)?;
            let ms = match adaptive {
                Some(_) => Some(upload("ms", &zeros)?),
                None => None,
            };
            // The velocity is the session's momentum buffer (`torch.optim.SGD`'s, the
            // same recurrence): zeros in a fresh session, the saved one when resumed.
            let vel = match momentum > 0.0 {
                true => {
                    let saved = momentum_buffer(&name);
                    let start = match graph.variable_named(&saved) {
                        Some(_) => session.read_variable(&saved)?,
                        None => zeros.clone(),
                    };
                    Some(upload("velocity", &start)?)
                }
                false => None,
            };
            let backups = (0..workers)
                .map(|_| upload("backup", &data))
                .collect::<Result<Vec<_>, _>>()?;
            let history = match config.staleness {
                0 => Vec::new(),
                t => (0..=t)
                    .map(|_| upload("history", &data))
                    .collect::<Result<Vec<_>, _>>()?,
            };
            let updates = backups
                .iter()
                .map(|b| {
                    update
                        .prepare(&gpu, &weights, &grad, b, ms.as_deref(), vel.as_deref())
                        .map_err(device)
                })
                .collect::<Result<Vec<_>, _>>()?;
            total += len;
            vars.push(ServerVar {
                name,
                len,
                weights,
                grad,
                _ms: ms,
                vel,
                backups,
                history,
                updates,
                update,
            });
        }
        // All the weights side by side, to read back in one copy.
        let readback = gpu
            .pool()
            .acquire((total.max(1) * 4) as u64, "ps.weights.all")
            .map_err(|e| {
                ParallelError::Config(format!(
                    "the parameter server sends all weights as one message: {e}"
                ))
            })?;
        gpu.sync().map_err(device)?;
        Ok(Self {
            gpu,
            vars,
            workers,
            config,
            step: 0,
            served: vec![0; workers],
            running: vec![true; workers],
            readback,
            total,
            stats: ServerStats::default(),
            turn: workers - 1,
            lr_written: vec![None; workers],
        })
    }

    /// Updates applied so far.
    pub fn step(&self) -> u64 {
        self.step
    }

    /// Starts counting from `step` (a resumed run), so that the schedule goes on.
    pub fn set_step(&mut self, step: u64) {
        self.step = step;
        self.served.fill(step);
    }

    pub fn stats(&self) -> &ServerStats {
        &self.stats
    }

    pub fn config(&self) -> &AsyncConfig {
        &self.config
    }

    /// Copies the current weights, and the velocity into the session's momentum
    /// buffers, into `session` (to evaluate or checkpoint them).
    pub fn write_into(&self, session: &Session) -> Result<(), GraphError> {
        for v in &self.vars {
            let data = self.gpu.download::<f32>(&v.weights, v.len)?;
            session.write_variable(&v.name, &data)?;
            let saved = momentum_buffer(&v.name);
            if let (Some(vel), Some(_)) = (&v.vel, session.graph().variable_named(&saved)) {
                let data = self.gpu.download::<f32>(vel, v.len)?;
                session.write_variable(&saved, &data)?;
            }
        }
        Ok(())
    }

    /// Sends every running worker the weights to start from.
    pub fn start(&mut self, comm: &dyn Communicator) -> Result<(), GraphError> {
        self.check_world(comm)?;
        for w in 0..self.workers {
            self.serve(comm, w)?;
        }
        Ok(())
    }

    fn check_world(&self, comm: &dyn Communicator) -> Result<(), GraphError> {
        if comm.rank() != SERVER || comm.world_size() != self.workers + 1 {
            return Err(GraphError::Collective(format!(
                "the parameter server must be rank {SERVER} of {} ranks, got rank {} of {}",
                self.workers + 1,
                comm.rank(),
                comm.world_size()
            )));
        }
        Ok(())
    }

    /// Applies pushes until every running worker has ended its share of the epoch, or
    /// until `max_steps` updates (then every worker is told to stop). `lr(step)` is the
    /// learning rate of update `step` (from 0). Workers that ended the epoch wait for
    /// [`release`](Self::release).
    pub fn serve_epoch(
        &mut self,
        comm: &dyn Communicator,
        lr: &dyn Fn(u64) -> f32,
        max_steps: Option<u64>,
    ) -> Result<EpochServed, GraphError> {
        let mut out = EpochServed::default();
        // Workers still inside the epoch (indices, rank − 1).
        let mut inside: Vec<bool> = self.running.clone();
        let limit = |step: u64| max_steps.is_some_and(|m| step >= m);
        if limit(self.step) {
            out.stopped = true;
        }
        while inside.iter().any(|&b| b) {
            let waiting = Instant::now();
            let (rank, msg) = match self.config.order {
                PushOrder::RoundRobin => {
                    let next = (1..=self.workers)
                        .map(|k| (self.turn + k) % self.workers)
                        .find(|&w| inside[w])
                        .expect("a worker is inside the epoch");
                    self.turn = next;
                    comm.recv(Some(next + 1), TO_SERVER).map_err(collective)?
                }
                PushOrder::Arrival => {
                    let from: Vec<usize> = (0..self.workers)
                        .filter(|&w| inside[w])
                        .map(|w| w + 1)
                        .collect();
                    comm.recv_any_of(&from, TO_SERVER).map_err(collective)?
                }
            };
            self.stats.wait_s += waiting.elapsed().as_secs_f64();
            let w = rank - 1;
            match msg.first().copied() {
                Some(PUSH) if !out.stopped => {
                    self.apply(rank, &msg, lr(self.step))?;
                    let (loss, samples) = (msg[1], msg[5] as usize);
                    out.pushes += 1;
                    out.samples += samples;
                    out.loss_sum += loss as f64 * samples as f64;
                    out.hits += msg[2] as u64;
                    out.losses.push(loss);
                    if limit(self.step) {
                        out.stopped = true;
                    }
                    if out.stopped {
                        self.stop(comm, w)?;
                        inside[w] = false;
                    } else {
                        self.serve(comm, w)?;
                    }
                }
                Some(PUSH) => {
                    // Past the step limit: dropped, and the worker stopped.
                    self.stop(comm, w)?;
                    inside[w] = false;
                }
                Some(EPOCH_END) => {
                    if w == self.first_running() {
                        out.state = msg[1..].to_vec();
                    }
                    inside[w] = false;
                    if out.stopped {
                        self.stop(comm, w)?;
                    }
                }
                _ => {
                    return Err(GraphError::Collective(format!(
                        "the parameter server got a malformed message ({} floats) from rank \
                         {rank}",
                        msg.len()
                    )));
                }
            }
        }
        Ok(out)
    }

    fn first_running(&self) -> usize {
        self.running.iter().position(|&r| r).unwrap_or(0)
    }

    /// After an epoch: lets the workers go on into the next one (with the current
    /// weights), or tells them to stop.
    pub fn release(&mut self, comm: &dyn Communicator, go_on: bool) -> Result<(), GraphError> {
        for w in 0..self.workers {
            if !self.running[w] {
                continue;
            }
            match go_on {
                true => self.serve(comm, w)?,
                false => self.stop(comm, w)?,
            }
        }
        Ok(())
    }

    fn stop(&mut self, comm: &dyn Communicator, w: usize) -> Result<(), GraphError> {
        self.running[w] = false;
        comm.send(w + 1, TO_WORKER, &[STOP, 0.0, 0.0, 0.0, 0.0])
            .map_err(collective)
    }

    /// Applies worker `rank`'s push at learning rate `lr`.
    fn apply(&mut self, rank: usize, msg: &[f32], lr: f32) -> Result<(), GraphError> {
        let start = Instant::now();
        let w = rank - 1;
        let grads = &msg[PUSH_HEADER..];
        if grads.len() != self.total {
            return Err(GraphError::Collective(format!(
                "rank {rank} pushed {} gradient values, the server's model has {} (do all \
                 ranks build the same model?)",
                grads.len(),
                self.total
            )));
        }
        self.stats.pushes.push(PushRecord {
            worker: rank,
            staleness: self.step - self.served[w],
        });
        let mut encoder = self.gpu.encoder("ps.update");
        let mut offset = 0;
        let new_lr = self.lr_written[w] != Some(lr);
        for v in &self.vars {
            self.gpu.write(&v.grad, &grads[offset..offset + v.len]);
            offset += v.len;
            if new_lr {
                v.update.write_lr(&self.gpu, &v.updates[w], lr)?;
            }
            v.updates[w].encode(&mut encoder);
        }
        self.lr_written[w] = Some(lr);
        self.step += 1;
        if let Some(slot) = self.history_slot(self.step) {
            for v in &self.vars {
                encoder.copy_buffer_to_buffer(&v.weights, 0, &v.history[slot], 0, v.len as u64 * 4);
            }
        }
        self.gpu.submit(encoder);
        self.stats.update_s += start.elapsed().as_secs_f64();
        Ok(())
    }

    fn history_slot(&self, version: u64) -> Option<usize> {
        let t = self.config.staleness as u64;
        (t > 0).then(|| (version % (t + 1)) as usize)
    }

    /// Sends worker `w` the weights it is to go on from — those of `τ` steps before —
    /// and keeps them as its backup.
    fn serve(&mut self, comm: &dyn Communicator, w: usize) -> Result<(), GraphError> {
        let start = Instant::now();
        let version = self.step.saturating_sub(self.config.staleness as u64);
        let slot = self.history_slot(version);
        let mut encoder = self.gpu.encoder("ps.serve");
        let mut offset = 0u64;
        for v in &self.vars {
            let source = match slot {
                Some(s) => &v.history[s],
                None => &v.weights,
            };
            let bytes = v.len as u64 * 4;
            encoder.copy_buffer_to_buffer(source, 0, &v.backups[w], 0, bytes);
            encoder.copy_buffer_to_buffer(source, 0, &self.readback, offset, bytes);
            offset += bytes;
        }
        self.gpu.submit(encoder);
        let mut message = Vec::with_capacity(REPLY_HEADER + self.total);
        message.push(WEIGHTS);
        message.extend(split_u64(version));
        if self.total > 0 {
            message.extend(self.gpu.download::<f32>(&self.readback, self.total)?);
        }
        self.served[w] = version;
        comm.send(w + 1, TO_WORKER, &message).map_err(collective)?;
        self.stats.serve_s += start.elapsed().as_secs_f64();
        Ok(())
    }
}

/// A u64 as four f32 holding 16 bits each (exact).
fn split_u64(v: u64) -> [f32; 4] {
    [0, 16, 32, 48].map(|s| ((v >> s) & 0xffff) as f32)
}

fn join_u64(p: &[f32]) -> u64 {
    p.iter()
        .zip([0, 16, 32, 48])
        .map(|(&x, s)| (x as u64) << s)
        .sum()
}

/// What the server answered a worker.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// Go on from these weights (in [`parameter_names`] order), version `version`.
    Weights { version: u64, weights: Vec<f32> },
    /// Training is over (the step limit, the last epoch, or the server stopped).
    Stop,
}

/// A worker's side of the protocol.
pub struct Worker {
    names: Vec<String>,
    lens: Vec<usize>,
    state: Vec<String>,
    /// Seconds waiting for the server's replies, and bytes pushed.
    pub wait_s: f64,
    pub bytes: u64,
}

impl Worker {
    /// The worker of `session` (built from the same model as the server's).
    pub fn new(session: &Session, training: &Training) -> Result<Self, GraphError> {
        let names = parameter_names(session, training);
        let graph = session.graph();
        let lens = names
            .iter()
            .map(|n| graph.variable_named(n).map_or(0, |v| v.ty.len()))
            .collect();
        Ok(Self {
            names,
            lens,
            state: state_names(session),
            wait_s: 0.0,
            bytes: 0,
        })
    }

    /// Waits for the server's weights and writes them into `session`. `Ok(false)`: stop.
    pub fn receive(
        &mut self,
        comm: &dyn Communicator,
        session: &Session,
    ) -> Result<bool, GraphError> {
        let start = Instant::now();
        let (_, msg) = comm.recv(Some(SERVER), TO_WORKER).map_err(collective)?;
        self.wait_s += start.elapsed().as_secs_f64();
        match decode_reply(&msg)? {
            Reply::Stop => Ok(false),
            Reply::Weights { weights, .. } => {
                let want: usize = self.lens.iter().sum();
                if weights.len() != want {
                    return Err(GraphError::Collective(format!(
                        "the parameter server sent {} weights, this worker's model has {want}",
                        weights.len()
                    )));
                }
                let mut offset = 0;
                for (name, &len) in self.names.iter().zip(&self.lens) {
                    session.write_variable(name, &weights[offset..offset + len])?;
                    offset += len;
                }
                Ok(true)
            }
        }
    }

    /// Pushes one step's gradients (from [`Session::gradient_step`]) and its figures over
    /// `samples` images.
    pub fn push(
        &mut self,
        comm: &dyn Communicator,
        out: &StepOutput,
        grads: &[Vec<f32>],
        samples: usize,
    ) -> Result<(), GraphError> {
        let total: usize = grads.iter().map(Vec::len).sum();
        let mut msg = Vec::with_capacity(PUSH_HEADER + total);
        let [top1, top5] = out.correct.unwrap_or([0, 0]);
        msg.extend_from_slice(&[
            PUSH,
            out.loss,
            top1 as f32,
            top5 as f32,
            out.correct.is_some() as u8 as f32,
            samples as f32,
        ]);
        for g in grads {
            msg.extend_from_slice(g);
        }
        self.bytes += total as u64 * 4;
        let start = Instant::now();
        comm.send(SERVER, TO_SERVER, &msg).map_err(collective)?;
        self.wait_s += start.elapsed().as_secs_f64();
        Ok(())
    }

    /// Ends this worker's share of the epoch, sending its non-trainable state.
    pub fn end_epoch(
        &mut self,
        comm: &dyn Communicator,
        session: &Session,
    ) -> Result<(), GraphError> {
        let mut msg = vec![EPOCH_END];
        for name in &self.state {
            msg.extend(session.read_variable(name)?);
        }
        comm.send(SERVER, TO_SERVER, &msg).map_err(collective)
    }

    /// Writes an epoch's state (from [`EpochServed::state`]) into the server's `session`.
    pub fn write_state(session: &Session, state: &[f32]) -> Result<(), GraphError> {
        let mut offset = 0;
        for name in state_names(session) {
            let len = session
                .graph()
                .variable_named(&name)
                .map_or(0, |v| v.ty.len());
            let Some(part) = state.get(offset..offset + len) else {
                return Err(GraphError::Collective(format!(
                    "a worker's state ({} floats) is too short for {name}",
                    state.len()
                )));
            };
            session.write_variable(&name, part)?;
            offset += len;
        }
        Ok(())
    }
}

fn decode_reply(msg: &[f32]) -> Result<Reply, GraphError> {
    match msg.first().copied() {
        Some(STOP) => Ok(Reply::Stop),
        Some(WEIGHTS) if msg.len() >= REPLY_HEADER => Ok(Reply::Weights {
            version: join_u64(&msg[1..REPLY_HEADER]),
            weights: msg[REPLY_HEADER..].to_vec(),
        }),
        _ => Err(GraphError::Collective(format!(
            "a malformed reply from the parameter server ({} floats)",
            msg.len()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_survive_the_trip_through_f32() {
        for v in [0u64, 1, 65535, 65536, 1 << 40, u64::MAX] {
            assert_eq!(join_u64(&split_u64(v)), v);
        }
    }
}
