//! The two sides of asynchronous training ([`Trainer::asynchronous`]): the parameter
//! server's epochs (serve pushes, then evaluate, record and checkpoint) and a worker's
//! (gradients on its share of the batches, pushed one by one).

use std::time::Instant;

use wgtrain_parallel::ps::Worker;
use wgtrain_parallel::{Communicator, ParameterServer};

use super::{EpochRecord, Role, Trainer, check_labels, feeds};
use crate::checkpoint::Position;
use crate::data::Loader;
use crate::error::{ModelError, Result};

impl Trainer {
    /// Fits as this rank's part of an asynchronous run: the role and the communicator
    /// are taken out of `self` for the run (so that the rest of `self` stays free to
    /// borrow) and put back after it, whatever the outcome.
    pub(super) fn fit_async(
        &mut self,
        train: &Loader,
        eval: Option<&Loader>,
        on_epoch: impl FnMut(&EpochRecord),
    ) -> Result<()> {
        let mut role = std::mem::replace(&mut self.role, Role::Replica);
        let comm = self.comm.take();
        let result = match (&mut role, comm.as_deref()) {
            (_, None) => Err(ModelError::Config(
                "asynchronous training without a communicator".to_owned(),
            )),
            (Role::Server(server), Some(c)) => self.fit_server(server, c, train, eval, on_epoch),
            (Role::Worker(worker), Some(c)) => self.fit_worker(worker, c, train),
            (Role::Replica, Some(_)) => Ok(()),
        };
        self.role = role;
        self.comm = comm;
        result
    }

    /// Rank 0 of an asynchronous run: serves the workers' pushes epoch by epoch,
    /// evaluating and checkpointing the server's weights after each.
    fn fit_server(
        &mut self,
        server: &mut ParameterServer,
        comm: &dyn Communicator,
        train: &Loader,
        eval: Option<&Loader>,
        mut on_epoch: impl FnMut(&EpochRecord),
    ) -> Result<()> {
        let schedule = self.config.schedule;
        let max_steps = self.config.max_steps.map(u64::from);
        let mut first = true;
        loop {
            if (self.position.epoch as usize) >= self.config.epochs || self.done() {
                server.release(comm, false)?; // stops every worker still waiting
                break;
            }
            match first {
                true => server.start(comm)?,
                false => server.release(comm, true)?,
            }
            first = false;
            let epoch = self.position.epoch;
            let start = Instant::now();
            let lr = |step: u64| schedule.lr(step.min(u32::MAX as u64) as u32);
            let served = server.serve_epoch(comm, &lr, max_steps)?;
            let seconds = start.elapsed().as_secs_f32();
            self.position.steps = server.step().min(u32::MAX as u64) as u32;
            self.position.batch = served.pushes;
            self.losses.extend_from_slice(&served.losses);
            self.images += served.samples;
            self.comm_stats.step_s += seconds as f64;
            server.write_into(&self.session)?;
            if !served.state.is_empty() {
                Worker::write_state(&self.session, &served.state)?;
            }
            let ev = match eval {
                Some(loader) => Some(self.evaluate(loader)?),
                None => None,
            };
            let n = served.samples.max(1) as f64;
            self.records.push(EpochRecord {
                epoch: epoch as usize,
                train_loss: (served.loss_sum / n) as f32,
                train_top1: (served.hits as f64 / n) as f32,
                eval_loss: ev.map(|e| e.loss),
                eval_top1: ev.map(|e| e.top1),
                eval_top5: ev.map(|e| e.top5),
                images_per_s: served.samples as f32 / seconds.max(1e-9),
                seconds,
            });
            on_epoch(&self.records[self.records.len() - 1]);
            if !served.stopped {
                self.position = Position {
                    epoch: epoch + 1,
                    batch: 0,
                    ..self.position
                };
            }
            self.save_checkpoint()?;
        }
        let stats = server.stats();
        self.comm_stats.metrics_s = stats.wait_s;
        self.write_plot(train.batches_per_epoch())
    }

    /// A worker of an asynchronous run: pulls, computes gradients on its batches, pushes,
    /// until the server says stop.
    fn fit_worker(
        &mut self,
        worker: &mut Worker,
        comm: &dyn Communicator,
        train: &Loader,
    ) -> Result<()> {
        let (rank, world) = (comm.rank(), comm.world_size());
        let mine = train.clone().interleaved(rank - 1, world - 1)?;
        if !worker.receive(comm, &self.session)? {
            return Ok(());
        }
        let mut epoch = self.position.epoch;
        loop {
            for batch in mine.epoch(epoch, 0) {
                let batch = batch?;
                let at = || format!("epoch {epoch}, worker batch {}", self.position.batch);
                check_labels(&batch.labels, self.classes, at)?;
                let start = Instant::now();
                let (out, mut grads) =
                    self.session.gradient_step(&self.training, &feeds(&batch))?;
                if out.nonfinite_grads > 0 || !out.loss.is_finite() {
                    return Err(self.fault(&out, &batch, epoch, 0.0));
                }
                if let Some(max) = self.config.clip_grad_norm {
                    clip_global_norm(&mut grads, max);
                }
                let waited = worker.wait_s;
                worker.push(comm, &out, &grads, batch.labels.len())?;
                let go_on = worker.receive(comm, &self.session)?;
                self.comm_stats.step_s += start.elapsed().as_secs_f64();
                self.comm_stats.metrics_s += worker.wait_s - waited;
                self.comm_stats.sync.bytes = worker.bytes;
                self.images += batch.labels.len();
                self.position.steps += 1;
                self.position.batch += 1;
                self.losses.push(out.loss);
                if !go_on {
                    return Ok(());
                }
            }
            worker.end_epoch(comm, &self.session)?;
            if !worker.receive(comm, &self.session)? {
                return Ok(());
            }
            epoch += 1;
            self.position = Position {
                epoch,
                batch: 0,
                ..self.position
            };
        }
    }
}

/// Scales `grads` so that their global L2 norm is at most `max` (as
/// `torch.nn.utils.clip_grad_norm_`, with its 1e-6 in the denominator).
fn clip_global_norm(grads: &mut [Vec<f32>], max: f32) {
    let norm = grads
        .iter()
        .flatten()
        .map(|&g| g as f64 * g as f64)
        .sum::<f64>()
        .sqrt();
    let scale = max as f64 / (norm + 1e-6);
    if scale < 1.0 {
        for g in grads.iter_mut().flatten() {
            *g = (*g as f64 * scale) as f32;
        }
    }
}
