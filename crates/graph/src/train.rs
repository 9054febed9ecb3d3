//! Training and evaluation conveniences on [`Session`]: one optimizer step, gradients
//! without an update (for checks), and evaluation with batch statistics off.

use crate::error::Result;
use crate::op::{Mode, StepInfo};
use crate::ops::optim::Training;
use crate::session::{Feed, Fetched, Session};
use crate::tensor::Value;

/// Named tensors: `(parameter name, values)`.
pub type NamedTensors = Vec<(String, Vec<f32>)>;

/// What one training or evaluation step reports.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepOutput {
    /// Mean loss over the batch.
    pub loss: f32,
    /// Top-1 and top-5 hits in the batch, when the loss counts them.
    pub correct: Option<[u32; 2]>,
    /// NaN and ±Inf elements over all gradients of a training step (0 in evaluation).
    pub nonfinite_grads: u64,
    /// The slot of the first gradient with a non-finite element (in the order of
    /// [`Training::gradient_name`]), if any.
    pub first_nonfinite_grad: Option<usize>,
}

impl Session {
    /// One optimizer step at learning rate `lr`: forward, backward and every update, in
    /// one submission. Returns the loss (and hit counts) of this batch before the update,
    /// and how many gradient elements were NaN or ±Inf (counted on the GPU in the same
    /// submission; the update has then already written them into the parameters).
    pub fn train_step(
        &mut self,
        training: &Training,
        feeds: &[Feed<'_>],
        lr: f32,
    ) -> Result<StepOutput> {
        let step = self.next_optimizer_step();
        let fetch = training.step_fetch();
        let out = self.run(
            Mode::Train,
            feeds,
            &fetch,
            &training.updates,
            StepInfo { step, lr, seed: 0 },
        )?;
        Ok(training.step_output(&out))
    }

    /// The loss (and hit counts) in evaluation mode: running batch-norm statistics,
    /// no dropout, no update.
    pub fn evaluate(&mut self, training: &Training, feeds: &[Feed<'_>]) -> Result<StepOutput> {
        let fetch: Vec<Value> = std::iter::once(training.loss)
            .chain(training.correct)
            .collect();
        let out = self.run(
            Mode::Eval,
            feeds,
            &fetch,
            &[],
            StepInfo {
                step: 1,
                lr: 0.0,
                seed: 0,
            },
        )?;
        Ok(StepOutput {
            loss: out.scalar(training.loss),
            correct: training.correct.map(|c| {
                let v = out.u32(c);
                [v[0], v[1]]
            }),
            nonfinite_grads: 0,
            first_nonfinite_grad: None,
        })
    }

    /// A training step's forward and backward without the update: what an asynchronous
    /// worker pushes to its parameter server. Counts as an optimizer step (dropout draws
    /// fresh masks, as in [`train_step`](Self::train_step)) and updates batch-norm
    /// running statistics. Returns the loss, hit counts and non-finite count (counted on
    /// the host) and every gradient, in the order of [`Gradients::iter`](crate::Gradients::iter).
    pub fn gradient_step(
        &mut self,
        training: &Training,
        feeds: &[Feed<'_>],
    ) -> Result<(StepOutput, Vec<Vec<f32>>)> {
        let step = self.next_optimizer_step();
        let (out, grads) = self.forward_backward(training, feeds, step)?;
        let counts: Vec<u64> = grads
            .iter()
            .map(|g| g.iter().filter(|x| !x.is_finite()).count() as u64)
            .collect();
        let output = StepOutput {
            loss: out.scalar(training.loss),
            correct: training.correct.map(|c| {
                let v = out.u32(c);
                [v[0], v[1]]
            }),
            nonfinite_grads: counts.iter().sum(),
            first_nonfinite_grad: counts.iter().position(|&c| c > 0),
        };
        Ok((output, grads))
    }

    /// The loss and every parameter gradient in training mode, without updating
    /// anything: `(loss, [(parameter name, gradient)])`.
    pub fn gradients(
        &mut self,
        training: &Training,
        feeds: &[Feed<'_>],
    ) -> Result<(f32, NamedTensors)> {
        let (out, grads) = self.forward_backward(training, feeds, 1)?;
        let names = training
            .gradients
            .iter(self.graph())
            .map(|(n, _)| n.to_owned());
        Ok((out.scalar(training.loss), names.zip(grads).collect()))
    }

    /// Forward and backward of optimizer step `step` without the updates: the fetched
    /// loss and hit counts, and every gradient in [`Gradients::iter`](crate::Gradients::iter)
    /// order.
    fn forward_backward(
        &mut self,
        training: &Training,
        feeds: &[Feed<'_>],
        step: u32,
    ) -> Result<(Fetched, Vec<Vec<f32>>)> {
        let grads: Vec<Value> = training.gradients.by_variable.iter().map(|g| g.1).collect();
        let fetch: Vec<Value> = std::iter::once(training.loss)
            .chain(training.correct)
            .chain(grads.iter().copied())
            .collect();
        let info = StepInfo {
            step,
            lr: 0.0,
            seed: 0,
        };
        let out = self.run(Mode::Train, feeds, &fetch, &[], info)?;
        let grads = grads.iter().map(|&v| out.f32(v)).collect();
        Ok((out, grads))
    }
}

impl Training {
    /// What a training step's fetched values (see [`Training::step_fetch`]) report.
    pub(crate) fn step_output(&self, out: &Fetched) -> StepOutput {
        let counts = out.u32(self.nonfinite);
        StepOutput {
            loss: out.scalar(self.loss),
            correct: self.correct.map(|c| {
                let v = out.u32(c);
                [v[0], v[1]]
            }),
            nonfinite_grads: counts.iter().map(|&c| c as u64).sum(),
            first_nonfinite_grad: counts.iter().position(|&c| c > 0),
        }
    }
}
