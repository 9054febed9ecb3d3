//! The [`Op`] trait: what every graph operation declares — its output types (shape
//! inference), its backward in terms of other ops, and its lowering to device kernels.
//!
//! ## Design
//!
//! Ops hold attributes (stride, transposes, momentum...), never batch sizes: shapes come
//! from the inputs at compile time, so a graph compiles for any batch. One file per
//! family in `ops/` implements the trait; the planner and executor only see the trait.

use std::fmt::Debug;

use wgtrain_device::{Dispatch, Gpu, wgpu};

use crate::error::Result;
use crate::graph::{Graph, NodeId};
use crate::tensor::{TensorType, Value};

/// Training or evaluation: batch norm uses batch or running statistics, dropout is
/// active or the identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    Train,
    Eval,
}

/// What changes from one run of a plan to the next without recompiling.
#[derive(Clone, Copy, Debug)]
pub struct StepInfo {
    /// 1-based optimizer step (the Adam bias corrections use it).
    pub step: u32,
    /// Learning rate for this step.
    pub lr: f32,
    /// Seed for this step's random ops (dropout).
    pub seed: u32,
}

/// Everything an op needs to turn itself into dispatches.
pub struct LowerCtx<'a> {
    pub gpu: &'a Gpu,
    pub mode: Mode,
    /// Types of the inputs and outputs, in the node's order.
    pub inputs: &'a [TensorType],
    pub outputs: &'a [TensorType],
    /// Buffers of the inputs and outputs, in the node's order.
    pub in_bufs: &'a [&'a wgpu::Buffer],
    pub out_bufs: &'a [&'a wgpu::Buffer],
    /// Apply ReLU to output 0 in this op's own kernel (the planner fused the ReLU that
    /// followed it).
    pub fused_relu: bool,
    /// Output 0 shares storage with input [`Op::in_place`]: use the in-place kernel.
    pub in_place: bool,
    /// Scope name of the node, for error messages.
    pub layer: &'a str,
}

/// A graph operation.
pub trait Op: Debug + Send + Sync {
    /// Short name used in errors and plan reports (`conv2d`, `relu`...).
    fn name(&self) -> &'static str;

    /// Output types from input types. `Err` carries a message naming the shapes; the
    /// graph adds the op and layer names.
    fn infer(&self, inputs: &[&TensorType]) -> Result<Vec<TensorType>, String>;

    /// Gradients of the inputs from the gradients of the outputs (`None`: no gradient
    /// flows into that output), as new nodes appended to `g`.
    fn backward(
        &self,
        g: &mut Graph,
        node: NodeId,
        grads: &[Option<Value>],
    ) -> Result<Vec<Option<Value>>> {
        let _ = (g, node, grads);
        Err(crate::GraphError::Invalid(format!(
            "{} has no gradient (it cannot lie between a parameter and the loss)",
            self.name()
        )))
    }

    /// The dispatches that compute this op, in recording order.
    fn lower(&self, ctx: &LowerCtx<'_>) -> Result<Vec<Dispatch>>;

    /// Output 0 *is* input 0 (same storage, no dispatch), e.g. a reshape, or dropout in
    /// evaluation.
    fn alias(&self, mode: Mode) -> bool {
        let _ = mode;
        false
    }

    /// Output 0 may overwrite this input when the input is not needed afterwards.
    fn in_place(&self) -> Option<usize> {
        None
    }

    /// This op can apply ReLU to output 0 in its own kernel (bias + ReLU epilogues,
    /// batch norm + ReLU).
    fn accepts_relu_epilogue(&self) -> bool {
        false
    }

    /// Output 0 is a scalar loss whose input gradients this op computes itself, for a
    /// seed gradient of 1 (see [`Graph::backward`]).
    fn is_loss(&self) -> bool {
        false
    }

    /// This op is a plain ReLU (a candidate for fusion into its producer).
    fn is_relu(&self) -> bool {
        false
    }

    /// Inputs this op writes in place (persistent tensors: parameters updated by an
    /// optimizer, batch-norm running statistics). A node with any is a side effect.
    fn mutates(&self, mode: Mode) -> &'static [usize] {
        let _ = mode;
        &[]
    }

    /// This op is a (per-replica) batch norm, which
    /// [`Graph::with_sync_batch_norm`](crate::Graph::with_sync_batch_norm) replaces.
    fn as_batch_norm(&self) -> Option<crate::ops::norm::BatchNorm> {
        None
    }

    /// This node is a host reduction point ([`AllReduce`](crate::ops::sync::AllReduce)):
    /// the session cuts the run there and hands the value to the caller's reduction.
    fn host_reduce(&self) -> Option<crate::ops::sync::HostReduce> {
        None
    }

    /// Rewrites this op's per-run uniforms (learning rate, step, seed) before a run;
    /// `inputs` are the node's input types in this plan.
    fn update(
        &self,
        gpu: &Gpu,
        dispatches: &[Dispatch],
        inputs: &[TensorType],
        step: &StepInfo,
    ) -> Result<()> {
        let _ = (gpu, dispatches, inputs, step);
        Ok(())
    }
}

/// A `Shape` error message helper: `"expected {what}, got {ty}"`.
pub(crate) fn expect(ok: bool, message: impl FnOnce() -> String) -> Result<(), String> {
    if ok { Ok(()) } else { Err(message()) }
}
