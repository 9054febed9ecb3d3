//! Inverted dropout: [`Dropout`] (`y = x · keep / (1 − p)` in training, the identity in
//! evaluation) and its backward [`DropoutBackward`], wrapping the counter-based kernel
//! of `wgtrain_device::kernels::dropout`.
//!
//! ## Design
//!
//! The mask is a hash of `(seed, element index)`, so nothing is stored between the
//! forward and the backward: both regenerate it from the same seed. The seed lives in the
//! dispatch's uniform and is rewritten before every run ([`Op::update`]) from the run's
//! [`StepInfo::seed`] mixed with the op's `salt` ([`layer_seed`]), so a new step draws a
//! new mask without recompiling, two dropout layers never share a mask, and the forward
//! and backward of one layer in one run always agree (they carry the same salt and see
//! the same step seed).

use wgtrain_device::kernels::dropout::Dropout as Kernel;
use wgtrain_device::{Dispatch, Gpu};

use crate::error::{GraphError, Result};
use crate::graph::{Graph, NodeId};
use crate::op::{LowerCtx, Mode, Op, StepInfo, expect};
use crate::ops::{one, u32_of};
use crate::tensor::{DType, TensorType, Value};

/// The kernel seed of the layer salted `salt` in a run seeded `step_seed`: MurmurHash3's
/// finaliser of `step_seed ^ salt · φ`. For a fixed step seed it is a bijection of the
/// salt, so distinct salts always get distinct seeds.
pub fn layer_seed(step_seed: u32, salt: u32) -> u32 {
    let mut h = step_seed ^ salt.wrapping_mul(0x9E37_79B9);
    h ^= h >> 16;
    h = h.wrapping_mul(0x85EB_CA6B);
    h ^= h >> 13;
    h = h.wrapping_mul(0xC2B2_AE35);
    h ^ (h >> 16)
}

/// Dropout with drop probability `p` in `[0, 1)`. `salt` tells this layer's mask apart
/// from every other dropout layer's: give each layer its own ([`Graph::dropout`] uses
/// the node's index).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Dropout {
    pub p: f32,
    pub salt: u32,
}

/// Checks `x` and `p`; returns the element count.
fn check(x: &TensorType, p: f32) -> Result<u32, String> {
    expect(x.dtype == DType::F32 && !x.is_empty(), || {
        format!("expected a non-empty f32 tensor, got {x}")
    })?;
    expect((0.0..1.0).contains(&p), || {
        format!("drop probability p must be in [0, 1), got {p} (input {x})")
    })?;
    u32_of(x.len(), "elements")
}

/// The one dispatch of a training forward or backward, with seed 0 until the first
/// [`Op::update`] writes the run's seed.
fn lower_train(ctx: &LowerCtx<'_>, p: f32, backward: bool) -> Result<Vec<Dispatch>> {
    if ctx.mode == Mode::Eval {
        return Ok(Vec::new()); // the planner aliases the output: never reached
    }
    let count = check(&ctx.inputs[0], p).map_err(GraphError::Invalid)?;
    let k = Kernel::new(count, p, 0);
    let (src, dst) = (ctx.in_bufs[0], ctx.out_bufs[0]);
    one(if backward {
        k.prepare_backward(ctx.gpu, src, dst)
    } else {
        k.prepare_forward(ctx.gpu, src, dst)
    })
}

/// Writes this run's layer seed into the dispatch's uniform.
fn reseed(
    gpu: &Gpu,
    dispatches: &[Dispatch],
    input: &TensorType,
    (p, salt): (f32, u32),
    step: &StepInfo,
) -> Result<()> {
    let Some(uniform) = dispatches.first().and_then(Dispatch::uniform) else {
        return Ok(());
    };
    let kernel = Kernel::new(input.len() as u32, p, layer_seed(step.seed, salt));
    gpu.queue()
        .write_buffer(uniform, 0, &kernel.uniform_bytes());
    Ok(())
}

impl Op for Dropout {
    fn name(&self) -> &'static str {
        "dropout"
    }

    fn infer(&self, inputs: &[&TensorType]) -> Result<Vec<TensorType>, String> {
        check(inputs[0], self.p)?;
        Ok(vec![inputs[0].clone()])
    }

    fn backward(
        &self,
        g: &mut Graph,
        _: NodeId,
        grads: &[Option<Value>],
    ) -> Result<Vec<Option<Value>>> {
        let Some(dy) = grads[0] else {
            return Ok(vec![None]);
        };
        let op = DropoutBackward {
            p: self.p,
            salt: self.salt,
        };
        Ok(vec![Some(g.apply1(op, &[dy])?)])
    }

    fn lower(&self, ctx: &LowerCtx<'_>) -> Result<Vec<Dispatch>> {
        lower_train(ctx, self.p, false)
    }

    fn alias(&self, mode: Mode) -> bool {
        mode == Mode::Eval
    }

    fn update(
        &self,
        gpu: &Gpu,
        dispatches: &[Dispatch],
        inputs: &[TensorType],
        step: &StepInfo,
    ) -> Result<()> {
        reseed(gpu, dispatches, &inputs[0], (self.p, self.salt), step)
    }
}

/// Backward of [`Dropout`]: `dx = dy · keep / (1 − p)` with the forward's mask (same `p`
/// and `salt`, hence the same seed in the same run).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DropoutBackward {
    pub p: f32,
    pub salt: u32,
}

impl Op for DropoutBackward {
    fn name(&self) -> &'static str {
        "dropout_backward"
    }

    fn infer(&self, inputs: &[&TensorType]) -> Result<Vec<TensorType>, String> {
        check(inputs[0], self.p)?;
        Ok(vec![inputs[0].clone()])
    }

    fn lower(&self, ctx: &LowerCtx<'_>) -> Result<Vec<Dispatch>> {
        lower_train(ctx, self.p, true)
    }

    fn alias(&self, mode: Mode) -> bool {
        mode == Mode::Eval
    }

    fn update(
        &self,
        gpu: &Gpu,
        dispatches: &[Dispatch],
        inputs: &[TensorType],
        step: &StepInfo,
    ) -> Result<()> {
        reseed(gpu, dispatches, &inputs[0], (self.p, self.salt), step)
    }
}

impl Graph {
    /// Dropout of `x` with drop probability `p`, salted with its node index so that every
    /// dropout layer of this graph draws its own mask (and a graph built the same way
    /// draws the same masks for the same seed).
    pub fn dropout(&mut self, x: Value, p: f32) -> Result<Value> {
        let salt = self.len() as u32;
        self.apply1(Dropout { p, salt }, &[x])
    }
}
