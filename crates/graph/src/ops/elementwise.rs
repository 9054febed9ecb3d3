//! Elementwise ops: [`Add`] (residual connections, gradient accumulation), [`Relu`] and
//! [`Sigmoid`] with their backwards, and [`Reshape`] (a view: no dispatch, same storage).

use wgtrain_device::Dispatch;
use wgtrain_device::kernels::elementwise::{Binary, Relu as ReluKernel, Sigmoid as SigmoidKernel};

use crate::error::Result;
use crate::graph::{Graph, NodeId};
use crate::op::{LowerCtx, Mode, Op, expect};
use crate::ops::{count, one, u32_of};
use crate::tensor::{DType, TensorType, Value};

/// `z = x + y` (same shapes). May overwrite `x` in place.
#[derive(Debug, Clone, Copy)]
pub struct Add;

impl Op for Add {
    fn name(&self) -> &'static str {
        "add"
    }
    fn infer(&self, inputs: &[&TensorType]) -> Result<Vec<TensorType>, String> {
        let (x, y) = (inputs[0], inputs[1]);
        expect(x == y, || format!("operands differ: {x} and {y}"))?;
        u32_of(x.len(), "elements")?;
        Ok(vec![x.clone()])
    }
    fn backward(
        &self,
        _: &mut Graph,
        _: NodeId,
        grads: &[Option<Value>],
    ) -> Result<Vec<Option<Value>>> {
        Ok(vec![grads[0], grads[0]])
    }
    fn lower(&self, ctx: &LowerCtx<'_>) -> Result<Vec<Dispatch>> {
        let k = Binary::add(count(&ctx.outputs[0]));
        if ctx.in_place {
            one(k.prepare_in_place(ctx.gpu, ctx.in_bufs[0], ctx.in_bufs[1]))
        } else {
            one(k.prepare(ctx.gpu, ctx.in_bufs[0], ctx.in_bufs[1], ctx.out_bufs[0]))
        }
    }
    fn in_place(&self) -> Option<usize> {
        Some(0)
    }
}

/// `y = max(x, 0)`. Fused into the producer's kernel where it can be.
#[derive(Debug, Clone, Copy)]
pub struct Relu;

impl Op for Relu {
    fn name(&self) -> &'static str {
        "relu"
    }
    fn infer(&self, inputs: &[&TensorType]) -> Result<Vec<TensorType>, String> {
        u32_of(inputs[0].len(), "elements")?;
        Ok(vec![inputs[0].clone()])
    }
    fn backward(
        &self,
        g: &mut Graph,
        node: NodeId,
        grads: &[Option<Value>],
    ) -> Result<Vec<Option<Value>>> {
        let y = g.nodes[node].outputs[0];
        let Some(dy) = grads[0] else {
            return Ok(vec![None]);
        };
        Ok(vec![Some(g.apply1(ReluBackward, &[y, dy])?)])
    }
    fn lower(&self, ctx: &LowerCtx<'_>) -> Result<Vec<Dispatch>> {
        let k = ReluKernel {
            count: count(&ctx.outputs[0]),
        };
        if ctx.in_place {
            one(k.prepare_in_place(ctx.gpu, ctx.in_bufs[0]))
        } else {
            one(k.prepare(ctx.gpu, ctx.in_bufs[0], ctx.out_bufs[0]))
        }
    }
    fn in_place(&self) -> Option<usize> {
        Some(0)
    }
    fn is_relu(&self) -> bool {
        true
    }
}

/// `dx = dy · [y > 0]` from the ReLU's output `y`. May overwrite `dy` in place.
#[derive(Debug, Clone, Copy)]
pub struct ReluBackward;

impl Op for ReluBackward {
    fn name(&self) -> &'static str {
        "relu_backward"
    }
    fn infer(&self, inputs: &[&TensorType]) -> Result<Vec<TensorType>, String> {
        let (y, dy) = (inputs[0], inputs[1]);
        expect(y == dy, || {
            format!("output {y} and its gradient {dy} differ")
        })?;
        Ok(vec![dy.clone()])
    }
    fn lower(&self, ctx: &LowerCtx<'_>) -> Result<Vec<Dispatch>> {
        let k = ReluKernel {
            count: count(&ctx.outputs[0]),
        };
        if ctx.in_place {
            one(k.prepare_backward_in_place(ctx.gpu, ctx.in_bufs[0], ctx.in_bufs[1]))
        } else {
            one(k.prepare_backward(ctx.gpu, ctx.in_bufs[0], ctx.in_bufs[1], ctx.out_bufs[0]))
        }
    }
    fn in_place(&self) -> Option<usize> {
        Some(1)
    }
}

/// `y = 1 / (1 + exp(-x))`. May overwrite `x` in place: the backward needs only `y`.
#[derive(Debug, Clone, Copy)]
pub struct Sigmoid;

impl Op for Sigmoid {
    fn name(&self) -> &'static str {
        "sigmoid"
    }
    fn infer(&self, inputs: &[&TensorType]) -> Result<Vec<TensorType>, String> {
        let x = inputs[0];
        expect(x.dtype == DType::F32, || format!("{x} is not f32"))?;
        u32_of(x.len(), "elements")?;
        Ok(vec![x.clone()])
    }
    fn backward(
        &self,
        g: &mut Graph,
        node: NodeId,
        grads: &[Option<Value>],
    ) -> Result<Vec<Option<Value>>> {
        let y = g.nodes[node].outputs[0];
        let Some(dy) = grads[0] else {
            return Ok(vec![None]);
        };
        Ok(vec![Some(g.apply1(SigmoidBackward, &[y, dy])?)])
    }
    fn lower(&self, ctx: &LowerCtx<'_>) -> Result<Vec<Dispatch>> {
        let k = SigmoidKernel {
            count: count(&ctx.outputs[0]),
        };
        if ctx.in_place {
            one(k.prepare_in_place(ctx.gpu, ctx.in_bufs[0]))
        } else {
            one(k.prepare(ctx.gpu, ctx.in_bufs[0], ctx.out_bufs[0]))
        }
    }
    fn in_place(&self) -> Option<usize> {
        Some(0)
    }
}

/// `dx = dy · y · (1 - y)` from the sigmoid's output `y`. May overwrite `dy` in place.
#[derive(Debug, Clone, Copy)]
pub struct SigmoidBackward;

impl Op for SigmoidBackward {
    fn name(&self) -> &'static str {
        "sigmoid_backward"
    }
    fn infer(&self, inputs: &[&TensorType]) -> Result<Vec<TensorType>, String> {
        let (y, dy) = (inputs[0], inputs[1]);
        expect(y == dy, || {
            format!("output {y} and its gradient {dy} differ")
        })?;
        Ok(vec![dy.clone()])
    }
    fn lower(&self, ctx: &LowerCtx<'_>) -> Result<Vec<Dispatch>> {
        let k = SigmoidKernel {
            count: count(&ctx.outputs[0]),
        };
        if ctx.in_place {
            one(k.prepare_backward_in_place(ctx.gpu, ctx.in_bufs[0], ctx.in_bufs[1]))
        } else {
            one(k.prepare_backward(ctx.gpu, ctx.in_bufs[0], ctx.in_bufs[1], ctx.out_bufs[0]))
        }
    }
    fn in_place(&self) -> Option<usize> {
        Some(1)
    }
}

/// A new shape for the same elements (e.g. flatten `[N, H, W, C]` to `[N, H·W·C]`). The
/// first dimension is the batch and is kept; `tail` replaces the rest.
#[derive(Debug, Clone)]
pub struct Reshape {
    pub tail: Vec<usize>,
}

impl Op for Reshape {
    fn name(&self) -> &'static str {
        "reshape"
    }
    fn infer(&self, inputs: &[&TensorType]) -> Result<Vec<TensorType>, String> {
        let x = inputs[0];
        let n = *x.shape.first().ok_or("cannot reshape a scalar")?;
        let mut shape = vec![n];
        shape.extend_from_slice(&self.tail);
        let out = TensorType {
            shape,
            dtype: x.dtype,
        };
        expect(out.len() == x.len(), || format!("cannot view {x} as {out}"))?;
        Ok(vec![out])
    }
    fn backward(
        &self,
        g: &mut Graph,
        node: NodeId,
        grads: &[Option<Value>],
    ) -> Result<Vec<Option<Value>>> {
        let x = g.nodes[node].inputs[0];
        let tail = g.ty(x).shape[1..].to_vec();
        Ok(vec![match grads[0] {
            Some(dy) => Some(g.apply1(Reshape { tail }, &[dy])?),
            None => None,
        }])
    }
    fn lower(&self, _: &LowerCtx<'_>) -> Result<Vec<Dispatch>> {
        Ok(Vec::new())
    }
    fn alias(&self, _: Mode) -> bool {
        true
    }
}

impl Graph {
    /// `x + y`.
    pub fn add(&mut self, x: Value, y: Value) -> Result<Value> {
        self.apply1(Add, &[x, y])
    }

    /// `max(x, 0)`.
    pub fn relu(&mut self, x: Value) -> Result<Value> {
        self.apply1(Relu, &[x])
    }

    /// `1 / (1 + exp(-x))`, the logistic sigmoid.
    pub fn sigmoid(&mut self, x: Value) -> Result<Value> {
        self.apply1(Sigmoid, &[x])
    }

    /// `[N, ...]` → `[N, product of the rest]`.
    pub fn flatten(&mut self, x: Value) -> Result<Value> {
        let rest: usize = self.ty(x).shape[1..].iter().product();
        self.apply1(Reshape { tail: vec![rest] }, &[x])
    }
}
