//! Host reduction points: where a run leaves the GPU for a collective across replicas
//! (data-parallel gradient all-reduce, synchronised batch-norm statistics).
//!
//! ## Design
//!
//! [`AllReduce`] is a graph node like any other, but it emits no dispatch: its output
//! *is* its input (an alias, so the planner keeps one buffer), and the session treats
//! it as a cut in the run. The dispatches up to the input's producer are submitted, the
//! value is copied into a staging buffer, and the caller's reduction (see
//! [`Session::run_synced`](crate::Session::run_synced)) runs on the host while the GPU
//! goes on with the rest of the step; the result is written back before the first
//! dispatch that reads the output. Nodes with the same `bucket` travel together, as
//! one contiguous message (PyTorch DDP's buckets, Horovod's tensor fusion). A run
//! without a reduction callback treats every `AllReduce` as the identity, so a graph
//! built for many replicas still runs alone.

use wgtrain_device::Dispatch;
use wgtrain_device::kernels::elementwise::Scale;

use crate::error::Result;
use crate::graph::{Graph, NodeId};
use crate::op::{LowerCtx, Mode, Op, expect};
use crate::tensor::{DType, TensorType, Value};

/// How replicas' values combine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reduction {
    /// A gradient of a mean loss: each replica's value weighted by its share of the
    /// global batch, then summed (the mean over the global batch).
    BatchMean,
    /// A plain sum over replicas (e.g. per-channel sums of synchronised batch norm).
    Sum,
    /// Per-channel moments `[3, C]` (count, mean, M2) combined over replicas in rank
    /// order ([`combine_moments`](wgtrain_device::kernels::batchnorm::combine_moments)).
    Moments,
}

/// What the session asks its caller to reduce: a bucket's id and how to combine it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct HostReduce {
    pub bucket: u32,
    pub reduction: Reduction,
}

/// An all-reduce across replicas, done on the host between two submissions of a run.
/// One f32 input; the output aliases it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AllReduce {
    pub bucket: u32,
    pub reduction: Reduction,
}

impl Op for AllReduce {
    fn name(&self) -> &'static str {
        "all_reduce"
    }

    fn infer(&self, inputs: &[&TensorType]) -> Result<Vec<TensorType>, String> {
        expect(inputs.len() == 1 && inputs[0].dtype == DType::F32, || {
            format!("expected one f32 tensor, got {} inputs", inputs.len())
        })?;
        Ok(vec![inputs[0].clone()])
    }

    /// The reduction of a replicated sum is a sum again: each replica's loss depends on
    /// every replica's input through the sum, so the input gradient is the sum of the
    /// replicas' output gradients.
    fn backward(
        &self,
        g: &mut Graph,
        _node: NodeId,
        grads: &[Option<Value>],
    ) -> Result<Vec<Option<Value>>> {
        match (self.reduction, grads[0]) {
            (Reduction::Sum, Some(dy)) => Ok(vec![Some(g.all_reduce(dy, Reduction::Sum)?)]),
            (Reduction::Sum, None) => Ok(vec![None]),
            (Reduction::BatchMean | Reduction::Moments, _) => {
                Err(crate::GraphError::Invalid(format!(
                    "a {:?} all-reduce has no gradient of its own",
                    self.reduction
                )))
            }
        }
    }

    fn lower(&self, _: &LowerCtx<'_>) -> Result<Vec<Dispatch>> {
        Ok(Vec::new())
    }

    fn alias(&self, _: Mode) -> bool {
        true
    }

    fn host_reduce(&self) -> Option<HostReduce> {
        Some(HostReduce {
            bucket: self.bucket,
            reduction: self.reduction,
        })
    }
}

/// `y = x` into a buffer of its own: gives an all-reduce a private copy of a value that
/// other nodes also read (the write-back must not change what they see).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Copy;

impl Op for Copy {
    fn name(&self) -> &'static str {
        "copy"
    }

    fn infer(&self, inputs: &[&TensorType]) -> Result<Vec<TensorType>, String> {
        expect(inputs.len() == 1 && inputs[0].dtype == DType::F32, || {
            format!("expected one f32 tensor, got {} inputs", inputs.len())
        })?;
        crate::ops::u32_of(inputs[0].len(), "elements")?;
        Ok(vec![inputs[0].clone()])
    }

    fn lower(&self, ctx: &LowerCtx<'_>) -> Result<Vec<Dispatch>> {
        let k = Scale {
            count: crate::ops::count(&ctx.outputs[0]),
            alpha: 1.0,
        };
        crate::ops::one(k.prepare(ctx.gpu, ctx.in_bufs[0], ctx.out_bufs[0]))
    }
}

impl Graph {
    /// A fresh bucket id for [`AllReduce`] nodes.
    pub fn new_reduce_bucket(&mut self) -> u32 {
        self.reduce_buckets += 1;
        self.reduce_buckets - 1
    }

    /// `x` reduced across replicas, in a bucket of its own.
    pub fn all_reduce(&mut self, x: Value, reduction: Reduction) -> Result<Value> {
        let bucket = self.new_reduce_bucket();
        self.apply1(AllReduce { bucket, reduction }, &[x])
    }
}
