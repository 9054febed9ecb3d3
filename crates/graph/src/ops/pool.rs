//! Pooling over NHWC activations: [`MaxPool2d`] (which also writes the argmax its
//! backward gathers with), [`AvgPool2d`], [`GlobalAvgPool`] (`[N, H, W, C]` →
//! `[N, C]`), and their backward ops [`Pool2dBackward`] and [`GlobalAvgPoolBackward`].
//! All wrap `wgtrain_device::kernels::pool`.

use wgtrain_device::Dispatch;
use wgtrain_device::kernels::pool::{GlobalAvgPool as GlobalKernel, Pool2d, PoolKind};

use crate::error::{GraphError, Result};
use crate::graph::{Graph, NodeId};
use crate::op::{LowerCtx, Op, expect};
use crate::ops::{one, u32_of};
use crate::tensor::{DType, TensorType, Value};

/// Window, stride and padding of a 2-D pooling, as `(h, w)` pairs (PyTorch's
/// `ceil_mode=False`; padding at most half the window).
///
/// ```
/// use wgtrain_graph::ops::pool::Pool2dAttrs;
/// let a = Pool2dAttrs::new(3, 2).padding(1);
/// assert_eq!((a.window, a.stride, a.padding), ((3, 3), (2, 2), (1, 1)));
/// assert!(a.count_include_pad);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pool2dAttrs {
    pub window: (usize, usize),
    pub stride: (usize, usize),
    pub padding: (usize, usize),
    /// Average pooling only: divide by the whole window (PyTorch's default, true) or by
    /// its in-bounds cells (false).
    pub count_include_pad: bool,
}

impl Pool2dAttrs {
    /// A square `window` with a square `stride`, no padding, `count_include_pad`.
    pub fn new(window: usize, stride: usize) -> Self {
        Self {
            window: (window, window),
            stride: (stride, stride),
            padding: (0, 0),
            count_include_pad: true,
        }
    }

    /// The same zero padding on every side.
    pub fn padding(mut self, pad: usize) -> Self {
        self.padding = (pad, pad);
        self
    }

    pub fn count_include_pad(mut self, include: bool) -> Self {
        self.count_include_pad = include;
        self
    }

    /// The device kernel pooling `x` (checked: rank 4, window fits, sizes fit 32 bits).
    fn kernel(&self, kind: PoolKind, x: &TensorType) -> Result<Pool2d, String> {
        expect(x.shape.len() == 4 && x.dtype == DType::F32, || {
            format!("x must be an f32 [N, H, W, C] tensor, got {x}")
        })?;
        let u = |v: usize, what: &str| u32_of(v, what);
        let s = &x.shape;
        let p = Pool2d {
            n: u(s[0], "N")?,
            h: u(s[1], "H")?,
            w: u(s[2], "W")?,
            c: u(s[3], "C")?,
            r: u(self.window.0, "window")?,
            s: u(self.window.1, "window")?,
            stride_h: u(self.stride.0, "stride")?,
            stride_w: u(self.stride.1, "stride")?,
            pad_h: u(self.padding.0, "padding")?,
            pad_w: u(self.padding.1, "padding")?,
            kind,
            count_include_pad: self.count_include_pad,
        };
        p.check().map_err(|e| format!("x {x} with {self:?}: {e}"))?;
        Ok(p)
    }
}

/// The output type `[N, P, Q, C]` of a pooling kernel.
fn y_type(p: &Pool2d) -> TensorType {
    TensorType::f32(&[p.n, p.out_h(), p.out_w(), p.c].map(|v| v as usize))
}

/// Max pooling. Input `x [N, H, W, C]`; outputs `y [N, P, Q, C]` and `argmax` (u32,
/// same shape: the flat index `ih·W + iw` of each window's maximum within its plane).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxPool2d {
    pub attrs: Pool2dAttrs,
}

impl Op for MaxPool2d {
    fn name(&self) -> &'static str {
        "max_pool2d"
    }

    fn infer(&self, inputs: &[&TensorType]) -> Result<Vec<TensorType>, String> {
        let y = y_type(&self.attrs.kernel(PoolKind::Max, inputs[0])?);
        let argmax = TensorType::u32(&y.shape);
        Ok(vec![y, argmax])
    }

    fn backward(
        &self,
        g: &mut Graph,
        node: NodeId,
        grads: &[Option<Value>],
    ) -> Result<Vec<Option<Value>>> {
        let Some(dy) = grads[0] else {
            return Ok(vec![None]);
        };
        let (x, argmax) = (g.nodes[node].inputs[0], g.nodes[node].outputs[1]);
        let op = Pool2dBackward::new(PoolKind::Max, self.attrs, g.ty(x));
        Ok(vec![Some(g.apply1(op, &[dy, argmax])?)])
    }

    fn lower(&self, ctx: &LowerCtx<'_>) -> Result<Vec<Dispatch>> {
        let p = (self.attrs.kernel(PoolKind::Max, &ctx.inputs[0])).map_err(GraphError::Invalid)?;
        let o = ctx.out_bufs;
        one(p.prepare_forward(ctx.gpu, ctx.in_bufs[0], o[0], Some(o[1])))
    }
}

/// Average pooling `x [N, H, W, C]` → `y [N, P, Q, C]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AvgPool2d {
    pub attrs: Pool2dAttrs,
}

impl Op for AvgPool2d {
    fn name(&self) -> &'static str {
        "avg_pool2d"
    }

    fn infer(&self, inputs: &[&TensorType]) -> Result<Vec<TensorType>, String> {
        Ok(vec![y_type(&self.attrs.kernel(PoolKind::Avg, inputs[0])?)])
    }

    fn backward(
        &self,
        g: &mut Graph,
        node: NodeId,
        grads: &[Option<Value>],
    ) -> Result<Vec<Option<Value>>> {
        let Some(dy) = grads[0] else {
            return Ok(vec![None]);
        };
        let x = g.nodes[node].inputs[0];
        let op = Pool2dBackward::new(PoolKind::Avg, self.attrs, g.ty(x));
        Ok(vec![Some(g.apply1(op, &[dy])?)])
    }

    fn lower(&self, ctx: &LowerCtx<'_>) -> Result<Vec<Dispatch>> {
        let p = (self.attrs.kernel(PoolKind::Avg, &ctx.inputs[0])).map_err(GraphError::Invalid)?;
        one(p.prepare_forward(ctx.gpu, ctx.in_bufs[0], ctx.out_bufs[0], None))
    }
}

/// `dx [N, H, W, C]` of a 2-D pooling from `dy [N, P, Q, C]` (and, for max pooling, the
/// forward's `argmax`). The input's spatial size `(h, w)` is an attribute: `P` alone does
/// not determine `H`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool2dBackward {
    pub kind: PoolKind,
    pub attrs: Pool2dAttrs,
    pub h: usize,
    pub w: usize,
}

impl Pool2dBackward {
    fn new(kind: PoolKind, attrs: Pool2dAttrs, x: &TensorType) -> Self {
        Self {
            kind,
            attrs,
            h: x.shape[1],
            w: x.shape[2],
        }
    }

    fn kernel_for(&self, inputs: &[&TensorType]) -> Result<Pool2d, String> {
        let dy = inputs[0];
        expect(dy.shape.len() == 4 && dy.dtype == DType::F32, || {
            format!("dy must be an f32 [N, P, Q, C] tensor, got {dy}")
        })?;
        let x = TensorType::f32(&[dy.shape[0], self.h, self.w, dy.shape[3]]);
        let p = self.attrs.kernel(self.kind, &x)?;
        let y = y_type(&p);
        expect(*dy == y, || {
            format!("dy {dy} does not match the pooled output {y} of x {x}")
        })?;
        let with_argmax = self.kind == PoolKind::Max;
        expect(inputs.len() == 1 + with_argmax as usize, || {
            format!("expected {} inputs", 1 + with_argmax as usize)
        })?;
        if with_argmax {
            let a = inputs[1];
            expect(a.shape == dy.shape && a.dtype == DType::U32, || {
                format!("argmax {a} must be u32 shaped like dy {dy}")
            })?;
        }
        Ok(p)
    }
}

impl Op for Pool2dBackward {
    fn name(&self) -> &'static str {
        match self.kind {
            PoolKind::Max => "max_pool2d_backward",
            PoolKind::Avg => "avg_pool2d_backward",
        }
    }

    fn infer(&self, inputs: &[&TensorType]) -> Result<Vec<TensorType>, String> {
        let p = self.kernel_for(inputs)?;
        Ok(vec![TensorType::f32(
            &[p.n, p.h, p.w, p.c].map(|v| v as usize),
        )])
    }

    fn lower(&self, ctx: &LowerCtx<'_>) -> Result<Vec<Dispatch>> {
        let inputs: Vec<&TensorType> = ctx.inputs.iter().collect();
        let p = self.kernel_for(&inputs).map_err(GraphError::Invalid)?;
        let argmax = ctx.in_bufs.get(1).copied();
        one(p.prepare_backward(ctx.gpu, ctx.in_bufs[0], argmax, ctx.out_bufs[0]))
    }
}

/// The kernel of a global average pooling over `x [N, H, W, C]`.
fn global_kernel(x: &TensorType) -> Result<GlobalKernel, String> {
    expect(
        x.shape.len() == 4 && x.dtype == DType::F32 && !x.is_empty(),
        || format!("x must be a non-empty f32 [N, H, W, C] tensor, got {x}"),
    )?;
    u32_of(x.len(), "elements of x")?;
    let s = &x.shape;
    Ok(GlobalKernel::new(
        s[0] as u32,
        s[1] as u32,
        s[2] as u32,
        s[3] as u32,
    ))
}

/// Global average pooling `x [N, H, W, C]` → `y [N, C]` (the mean over all pixels).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GlobalAvgPool;

impl Op for GlobalAvgPool {
    fn name(&self) -> &'static str {
        "global_avg_pool"
    }

    fn infer(&self, inputs: &[&TensorType]) -> Result<Vec<TensorType>, String> {
        let k = global_kernel(inputs[0])?;
        Ok(vec![TensorType::f32(&[k.n as usize, k.c as usize])])
    }

    fn backward(
        &self,
        g: &mut Graph,
        node: NodeId,
        grads: &[Option<Value>],
    ) -> Result<Vec<Option<Value>>> {
        let Some(dy) = grads[0] else {
            return Ok(vec![None]);
        };
        let x = g.ty(g.nodes[node].inputs[0]).shape.clone();
        let op = GlobalAvgPoolBackward { h: x[1], w: x[2] };
        Ok(vec![Some(g.apply1(op, &[dy])?)])
    }

    fn lower(&self, ctx: &LowerCtx<'_>) -> Result<Vec<Dispatch>> {
        let k = global_kernel(&ctx.inputs[0]).map_err(GraphError::Invalid)?;
        one(k.prepare_forward(ctx.gpu, ctx.in_bufs[0], ctx.out_bufs[0]))
    }
}

/// `dx [N, h, w, C] = dy [N, C] / (h·w)` broadcast over every pixel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GlobalAvgPoolBackward {
    pub h: usize,
    pub w: usize,
}

impl GlobalAvgPoolBackward {
    fn x_type(&self, dy: &TensorType) -> Result<TensorType, String> {
        expect(dy.shape.len() == 2 && dy.dtype == DType::F32, || {
            format!("dy must be an f32 [N, C] matrix, got {dy}")
        })?;
        Ok(TensorType::f32(&[dy.shape[0], self.h, self.w, dy.shape[1]]))
    }
}

impl Op for GlobalAvgPoolBackward {
    fn name(&self) -> &'static str {
        "global_avg_pool_backward"
    }

    fn infer(&self, inputs: &[&TensorType]) -> Result<Vec<TensorType>, String> {
        let x = self.x_type(inputs[0])?;
        global_kernel(&x)?;
        Ok(vec![x])
    }

    fn lower(&self, ctx: &LowerCtx<'_>) -> Result<Vec<Dispatch>> {
        let x = self.x_type(&ctx.inputs[0]).map_err(GraphError::Invalid)?;
        let k = global_kernel(&x).map_err(GraphError::Invalid)?;
        one(k.prepare_backward(ctx.gpu, ctx.in_bufs[0], ctx.out_bufs[0]))
    }
}

impl Graph {
    /// Max pooling of `x [N, H, W, C]` (PyTorch's `MaxPool2d`); returns `y [N, P, Q, C]`.
    pub fn max_pool2d(&mut self, x: Value, attrs: Pool2dAttrs) -> Result<Value> {
        self.apply1(MaxPool2d { attrs }, &[x])
    }

    /// Average pooling of `x [N, H, W, C]` (PyTorch's `AvgPool2d`, `count_include_pad`
    /// from `attrs`); returns `y [N, P, Q, C]`.
    pub fn avg_pool2d(&mut self, x: Value, attrs: Pool2dAttrs) -> Result<Value> {
        self.apply1(AvgPool2d { attrs }, &[x])
    }

    /// The mean over every pixel: `x [N, H, W, C]` → `[N, C]` (`AdaptiveAvgPool2d(1)`
    /// followed by a flatten).
    pub fn global_avg_pool(&mut self, x: Value) -> Result<Value> {
        self.apply1(GlobalAvgPool, &[x])
    }
}
