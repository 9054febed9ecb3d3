//! Batch norm synchronised across data-parallel replicas (PyTorch's `SyncBatchNorm`):
//! the training statistics, and the sums the backward needs, are those of the global
//! batch.
//!
//! ## Design
//!
//! One [`BatchNorm`] node becomes three, with a host reduction between each pair
//! ([`Graph::with_sync_batch_norm`] rewrites a built model that way):
//!
//! ```text
//! x ─ SyncBnMoments ─ stats [3, C] ─ AllReduce(Moments) ─┐
//! x, gamma, beta, running stats ──────────────────────── SyncBnNormalize ─ y
//! ```
//!
//! `SyncBnMoments` writes this replica's (count, mean, M2); the host combines every
//! replica's in rank order; `SyncBnNormalize` normalises with the result and updates
//! the running statistics. Its backward is `SyncBnBackwardLocal` (this replica's
//! `dgamma`, `dbeta` — its share of the parameter gradients, averaged over replicas like
//! every gradient — and the same sums as a `[2, C]` tensor), an `AllReduce(Sum)` of the
//! sums, and `SyncBnBackwardDx`. Without a reduction callback (one replica) every
//! reduction is the identity and the result is plain batch norm. Evaluation reads the
//! running statistics; the moments are not computed.
//!
//! Replicas whose shares of the global batch are equal get exact gradients (each
//! replica's loss is the mean over its shard, so the summed backward sums carry a factor
//! of the world size that the gradient averaging divides out); the sharded loader gives
//! equal shares except for a last batch that does not divide evenly.

use wgtrain_device::Dispatch;
use wgtrain_device::kernels::batchnorm::{BatchNormBackwardBuffers, BatchNormTrainBuffers};

use crate::error::{GraphError, Result};
use crate::graph::{Graph, NodeId};
use crate::op::{LowerCtx, Mode, Op, expect};
use crate::ops::norm::{BatchNorm, per_channel, rows_and_channels};
use crate::ops::sync::{AllReduce, Reduction};
use crate::tensor::{TensorType, Value};

/// This replica's moments of `x [..., C]`: outputs `stats [3, C]` (count, mean, M2) and
/// the kernel's scratch. Emits nothing in evaluation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SyncBnMoments(pub BatchNorm);

impl Op for SyncBnMoments {
    fn name(&self) -> &'static str {
        "sync_batch_norm_moments"
    }

    fn infer(&self, inputs: &[&TensorType]) -> Result<Vec<TensorType>, String> {
        let k = self.0.kernel(inputs[0])?;
        Ok(vec![
            TensorType::f32(&[3, k.c as usize]),
            TensorType::f32(&[k.scratch_elems() as usize]),
        ])
    }

    fn lower(&self, ctx: &LowerCtx<'_>) -> Result<Vec<Dispatch>> {
        if ctx.mode == Mode::Eval {
            return Ok(Vec::new());
        }
        let k = self.0.kernel(&ctx.inputs[0]).map_err(GraphError::Invalid)?;
        Ok(k.prepare_local_moments(ctx.gpu, ctx.in_bufs[0], ctx.out_bufs[1], ctx.out_bufs[0])?)
    }
}

/// Normalisation with the global moments. Inputs: `x`, `stats [3, C]` (combined over the
/// replicas), `gamma`, `beta`, `running_mean`, `running_var`. Outputs: `y`, `save_mean`,
/// `save_invstd`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SyncBnNormalize(pub BatchNorm);

impl Op for SyncBnNormalize {
    fn name(&self) -> &'static str {
        "sync_batch_norm"
    }

    fn infer(&self, inputs: &[&TensorType]) -> Result<Vec<TensorType>, String> {
        expect(inputs.len() == 6, || {
            format!(
                "expected x, stats, weight, bias, running_mean, running_var; got {} inputs",
                inputs.len()
            )
        })?;
        let x = inputs[0];
        let (_, c) = rows_and_channels(x)?;
        expect(inputs[1].shape == [3, c as usize], || {
            format!("stats {} do not match the {c} channels of {x}", inputs[1])
        })?;
        for (what, t) in ["weight", "bias", "running_mean", "running_var"]
            .iter()
            .zip(&inputs[2..])
        {
            per_channel(what, t, x, c)?;
        }
        let c = c as usize;
        Ok(vec![
            x.clone(),
            TensorType::f32(&[c]),
            TensorType::f32(&[c]),
        ])
    }

    fn backward(
        &self,
        g: &mut Graph,
        node: NodeId,
        grads: &[Option<Value>],
    ) -> Result<Vec<Option<Value>>> {
        let Some(dy) = grads[0] else {
            return Ok(vec![None; 6]);
        };
        let n = &g.nodes[node];
        let (x, stats, gamma) = (n.inputs[0], n.inputs[1], n.inputs[2]);
        let (mean, invstd) = (n.outputs[1], n.outputs[2]);
        let local = g.apply(SyncBnBackwardLocal(self.0), &[x, dy, gamma, mean, invstd])?;
        let sums = g.all_reduce(local[2], Reduction::Sum)?;
        let dx = g.apply1(
            SyncBnBackwardDx(self.0),
            &[x, dy, gamma, mean, invstd, sums, stats],
        )?;
        Ok(vec![
            Some(dx),
            None,
            Some(local[0]),
            Some(local[1]),
            None,
            None,
        ])
    }

    fn lower(&self, ctx: &LowerCtx<'_>) -> Result<Vec<Dispatch>> {
        let mut k = self.0.kernel(&ctx.inputs[0]).map_err(GraphError::Invalid)?;
        k.relu = ctx.fused_relu;
        let [x, stats, gamma, beta, running_mean, running_var] = ctx.in_bufs[..] else {
            return Err(GraphError::Invalid("sync_batch_norm takes 6 inputs".into()));
        };
        let y = ctx.out_bufs[0];
        if ctx.mode == Mode::Eval {
            return Ok(vec![k.prepare_eval(
                ctx.gpu,
                x,
                gamma,
                beta,
                running_mean,
                running_var,
                y,
            )?]);
        }
        let buffers = BatchNormTrainBuffers {
            x,
            gamma,
            beta,
            running_mean,
            running_var,
            save_mean: ctx.out_bufs[1],
            save_invstd: ctx.out_bufs[2],
            y,
            scratch: stats,
        };
        Ok(k.prepare_train_global(ctx.gpu, &buffers, stats)?)
    }

    fn accepts_relu_epilogue(&self) -> bool {
        true
    }

    fn mutates(&self, mode: Mode) -> &'static [usize] {
        match mode {
            Mode::Train => &[4, 5],
            Mode::Eval => &[],
        }
    }
}

/// This replica's half of the backward. Inputs: `x`, `dy`, `gamma`, `save_mean`,
/// `save_invstd`. Outputs: `dgamma`, `dbeta` (this replica's rows), `sums [2, C]`
/// (`Σ dy`, `Σ dy · xhat`, to be summed over replicas) and the kernel's scratch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SyncBnBackwardLocal(pub BatchNorm);

impl Op for SyncBnBackwardLocal {
    fn name(&self) -> &'static str {
        "sync_batch_norm_backward_sums"
    }

    fn infer(&self, inputs: &[&TensorType]) -> Result<Vec<TensorType>, String> {
        let (x, dy) = (inputs[0], inputs[1]);
        let k = self.0.kernel(x)?;
        expect(x == dy, || {
            format!("input {x} and output gradient {dy} differ")
        })?;
        let c = k.c as usize;
        Ok(vec![
            TensorType::f32(&[c]),
            TensorType::f32(&[c]),
            TensorType::f32(&[2, c]),
            TensorType::f32(&[k.scratch_elems() as usize]),
        ])
    }

    fn lower(&self, ctx: &LowerCtx<'_>) -> Result<Vec<Dispatch>> {
        let k = self.0.kernel(&ctx.inputs[0]).map_err(GraphError::Invalid)?;
        let (i, o) = (ctx.in_bufs, ctx.out_bufs);
        let buffers = BatchNormBackwardBuffers {
            x: i[0],
            dy: i[1],
            gamma: i[2],
            save_mean: i[3],
            save_invstd: i[4],
            dgamma: o[0],
            dbeta: o[1],
            dx: o[2], // not written
            scratch: o[3],
        };
        Ok(k.prepare_backward_local(ctx.gpu, &buffers, o[2])?)
    }
}

/// `dx` from the global sums and count. Inputs: `x`, `dy`, `gamma`, `save_mean`,
/// `save_invstd`, `sums [2, C]` (summed over replicas), `stats [3, C]` (global).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SyncBnBackwardDx(pub BatchNorm);

impl Op for SyncBnBackwardDx {
    fn name(&self) -> &'static str {
        "sync_batch_norm_backward"
    }

    fn infer(&self, inputs: &[&TensorType]) -> Result<Vec<TensorType>, String> {
        self.0.kernel(inputs[0])?;
        Ok(vec![inputs[0].clone()])
    }

    fn lower(&self, ctx: &LowerCtx<'_>) -> Result<Vec<Dispatch>> {
        let k = self.0.kernel(&ctx.inputs[0]).map_err(GraphError::Invalid)?;
        let (i, o) = (ctx.in_bufs, ctx.out_bufs);
        let buffers = BatchNormBackwardBuffers {
            x: i[0],
            dy: i[1],
            gamma: i[2],
            save_mean: i[3],
            save_invstd: i[4],
            dgamma: i[5], // not read
            dbeta: i[5],  // not read
            dx: o[0],
            scratch: i[5], // not read
        };
        Ok(vec![k.prepare_backward_dx_global(
            ctx.gpu, &buffers, i[5], i[6],
        )?])
    }
}

impl Graph {
    /// The batch norm `op` of `x` synchronised across replicas, with the given
    /// parameters and running statistics (see the module's design).
    pub(crate) fn sync_batch_norm_of(
        &mut self,
        op: BatchNorm,
        inputs: [Value; 5],
    ) -> Result<Value> {
        let [x, gamma, beta, running_mean, running_var] = inputs;
        let local = self.apply(SyncBnMoments(op), &[x])?[0];
        let bucket = self.new_reduce_bucket();
        let stats = self.apply1(
            AllReduce {
                bucket,
                reduction: Reduction::Moments,
            },
            &[local],
        )?;
        self.apply1(
            SyncBnNormalize(op),
            &[x, stats, gamma, beta, running_mean, running_var],
        )
    }
}

/// Where a graph rewrite put each value of the original.
#[derive(Clone, Debug)]
pub struct ValueMap(Vec<Option<Value>>);

impl ValueMap {
    /// The copy of `value`, or `None` when the rewrite removed it.
    pub fn get(&self, value: Value) -> Option<Value> {
        self.0.get(value.0).copied().flatten()
    }
}

impl Graph {
    /// A copy of this model in which every [`BatchNorm`] is synchronised across
    /// data-parallel replicas (same parameters, state and names; see the module's
    /// design), with the map from this graph's values to the copy's (`None` for values
    /// that no longer exist: a batch norm's saved statistics). Build the copy's training
    /// step after this (the backward of a graph that already has one is not rewritten).
    pub fn with_sync_batch_norm(&self) -> Result<(Graph, ValueMap)> {
        if self.nodes.iter().any(|n| n.op.host_reduce().is_some()) {
            return Err(GraphError::Invalid(
                "with_sync_batch_norm: the graph already has host reductions (rewrite the \
                 model before minimize_synced)"
                    .to_owned(),
            ));
        }
        let mut g = Graph {
            variables: self.variables.clone(),
            reduce_buckets: self.reduce_buckets,
            ..Graph::default()
        };
        let mut map: Vec<Option<Value>> = vec![None; self.values.len()];
        for node in &self.nodes {
            g.scope = match node.scope.is_empty() {
                true => Vec::new(),
                false => vec![node.scope.clone()],
            };
            if node.inputs.is_empty() {
                let v = node.outputs[0];
                let info = &self.values[v.0];
                let new = g.add_leaf(info.ty.clone(), info.kind.clone());
                if let crate::graph::ValueKind::Variable(i) = info.kind {
                    g.variables[i].value = new;
                }
                map[v.0] = Some(new);
                continue;
            }
            let inputs = node
                .inputs
                .iter()
                .map(|v| {
                    map[v.0].ok_or_else(|| {
                        GraphError::Invalid(format!(
                            "with_sync_batch_norm: {} in layer `{}` reads a batch norm's saved \
                             statistics",
                            node.op.name(),
                            node.scope
                        ))
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            match node.op.as_batch_norm() {
                Some(op) => {
                    let [x, gamma, beta, mean, var] = inputs[..] else {
                        return Err(GraphError::Invalid("batch_norm takes 5 inputs".into()));
                    };
                    map[node.outputs[0].0] =
                        Some(g.sync_batch_norm_of(op, [x, gamma, beta, mean, var])?);
                }
                None => {
                    let outs = g.apply_arc(node.op.clone(), &inputs)?;
                    for (old, new) in node.outputs.iter().zip(outs) {
                        map[old.0] = Some(new);
                    }
                }
            }
        }
        g.scope = Vec::new();
        Ok((g, ValueMap(map)))
    }
}
