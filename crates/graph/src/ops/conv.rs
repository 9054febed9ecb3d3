//! 2-D convolution on NHWC activations with KRSC weights: [`Conv2d`] (stride, padding,
//! dilation, groups, optional bias, fused ReLU epilogue) and its two backward ops,
//! [`Conv2dBackwardData`] (`dx`) and [`Conv2dBackwardFilter`] (`dw`); the bias gradient
//! is [`BiasGrad`], the sum of `dy` over all but its last (K) dimension. All three wrap
//! `wgtrain_device::kernels::conv2d::Conv2d`.

use wgtrain_device::Dispatch;
use wgtrain_device::kernels::conv2d::Conv2d as Kernel;

use crate::error::{GraphError, Result};
use crate::graph::{Graph, NodeId};
use crate::op::{LowerCtx, Op, expect};
use crate::ops::matmul::BiasGrad;
use crate::ops::{one, u32_of};
use crate::tensor::{DType, TensorType, Value};

/// Hyper-parameters of a convolution, as PyTorch's `Conv2d` names them; `(h, w)` pairs.
///
/// ```
/// use wgtrain_graph::ops::conv::Conv2dAttrs;
/// let a = Conv2dAttrs::new().stride(2, 2).padding(1, 1).groups(2);
/// assert_eq!((a.stride, a.padding, a.dilation, a.groups), ((2, 2), (1, 1), (1, 1), 2));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dAttrs {
    pub stride: (usize, usize),
    pub padding: (usize, usize),
    pub dilation: (usize, usize),
    pub groups: usize,
}

impl Default for Conv2dAttrs {
    fn default() -> Self {
        Self {
            stride: (1, 1),
            padding: (0, 0),
            dilation: (1, 1),
            groups: 1,
        }
    }
}

impl Conv2dAttrs {
    /// Stride 1, no padding, no dilation, one group.
    pub fn new() -> Self {
        Self::default()
    }

    pub fn stride(mut self, h: usize, w: usize) -> Self {
        self.stride = (h, w);
        self
    }

    pub fn padding(mut self, h: usize, w: usize) -> Self {
        self.padding = (h, w);
        self
    }

    pub fn dilation(mut self, h: usize, w: usize) -> Self {
        self.dilation = (h, w);
        self
    }

    pub fn groups(mut self, groups: usize) -> Self {
        self.groups = groups;
        self
    }
}

/// The four dimensions of an f32 rank-4 tensor (`what` names it in the error).
fn dims4(t: &TensorType, what: &str) -> Result<[usize; 4], String> {
    expect(t.shape.len() == 4 && t.dtype == DType::F32, || {
        format!("{what} must be a rank-4 f32 tensor, got {t}")
    })?;
    Ok([t.shape[0], t.shape[1], t.shape[2], t.shape[3]])
}

/// The device kernel for `x [N, H, W, C]` and `weight [K, R, S, C / groups]`, checked:
/// channels agree with the groups, the output is non-empty, sizes fit 32 bits.
fn kernel(a: &Conv2dAttrs, x: [usize; 4], w: [usize; 4], bias: bool) -> Result<Kernel, String> {
    let (xs, ws) = (TensorType::f32(&x), TensorType::f32(&w));
    let [n, h, wd, c] = x;
    let [k, r, s, cg] = w;
    let g = a.groups;
    expect(g > 0 && c % g == 0 && k % g == 0, || {
        format!("groups = {g} must divide the channels of x {xs} ({c}) and of weight {ws} ({k})")
    })?;
    expect(cg * g == c, || {
        format!(
            "x {xs} has {c} channels, so with {g} group(s) weight [K, R, S, C/groups] needs \
             {} input channels per filter, but weight {ws} has {cg}",
            c / g
        )
    })?;
    let u = |v: usize, what: &str| u32_of(v, what);
    let mut kn = Kernel::new(
        u(n, "N")?,
        u(h, "H")?,
        u(wd, "W")?,
        u(c, "C")?,
        u(k, "K")?,
        u(r, "R")?,
        u(s, "S")?,
    )
    .stride(u(a.stride.0, "stride")?, u(a.stride.1, "stride")?)
    .pad(u(a.padding.0, "padding")?, u(a.padding.1, "padding")?)
    .dilation(u(a.dilation.0, "dilation")?, u(a.dilation.1, "dilation")?)
    .grouped(u(g, "groups")?);
    kn.bias = bias;
    kn.validate()
        .map_err(|e| format!("x {xs} with weight {ws} and {a:?}: {e}"))?;
    Ok(kn)
}

/// The kernel's output shape `[N, P, Q, K]`.
fn y_dims(kn: &Kernel) -> [usize; 4] {
    [kn.n, kn.p(), kn.q(), kn.k].map(|v| v as usize)
}

/// `y [N, P, Q, K] = conv2d(x [N, H, W, C], weight [K, R, S, C / groups]) (+ bias [K])`.
/// Inputs: `x`, `weight`, and `bias` when `bias`. Accepts a fused ReLU epilogue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2d {
    pub attrs: Conv2dAttrs,
    pub bias: bool,
}

impl Conv2d {
    fn kernel_for(&self, inputs: &[&TensorType]) -> Result<Kernel, String> {
        expect(inputs.len() == 2 + self.bias as usize, || {
            format!(
                "expected {} inputs (x, weight{}), got {}",
                2 + self.bias as usize,
                if self.bias { ", bias" } else { "" },
                inputs.len()
            )
        })?;
        let x = dims4(inputs[0], "x [N, H, W, C]")?;
        let w = dims4(inputs[1], "weight [K, R, S, C/groups]")?;
        let kn = kernel(&self.attrs, x, w, self.bias)?;
        if self.bias {
            let b = inputs[2];
            expect(b.shape == [w[0]] && b.dtype == DType::F32, || {
                format!(
                    "bias {b} does not match the {} filters of weight {}",
                    w[0], inputs[1]
                )
            })?;
        }
        Ok(kn)
    }
}

impl Op for Conv2d {
    fn name(&self) -> &'static str {
        "conv2d"
    }

    fn infer(&self, inputs: &[&TensorType]) -> Result<Vec<TensorType>, String> {
        let kn = self.kernel_for(inputs)?;
        Ok(vec![TensorType::f32(&y_dims(&kn))])
    }

    fn backward(
        &self,
        g: &mut Graph,
        node: NodeId,
        grads: &[Option<Value>],
    ) -> Result<Vec<Option<Value>>> {
        let Some(dy) = grads[0] else {
            return Ok(vec![None; 2 + self.bias as usize]);
        };
        let (x, w) = (g.nodes[node].inputs[0], g.nodes[node].inputs[1]);
        let (xs, ws) = (g.ty(x).shape.clone(), g.ty(w).shape.clone());
        let data = Conv2dBackwardData {
            attrs: self.attrs,
            h: xs[1],
            w: xs[2],
        };
        let filter = Conv2dBackwardFilter {
            attrs: self.attrs,
            r: ws[1],
            s: ws[2],
        };
        // dx for an input that needs no gradient is never planned (nothing reads it).
        let mut out = vec![
            Some(g.apply1(data, &[dy, w])?),
            Some(g.apply1(filter, &[x, dy])?),
        ];
        if self.bias {
            out.push(Some(g.apply1(BiasGrad, &[dy])?));
        }
        Ok(out)
    }

    fn lower(&self, ctx: &LowerCtx<'_>) -> Result<Vec<Dispatch>> {
        let inputs: Vec<&TensorType> = ctx.inputs.iter().collect();
        let mut kn = self.kernel_for(&inputs).map_err(GraphError::Invalid)?;
        kn.relu = ctx.fused_relu;
        let bias = self.bias.then(|| ctx.in_bufs[2]);
        one(kn.prepare(
            ctx.gpu,
            ctx.in_bufs[0],
            ctx.in_bufs[1],
            bias,
            ctx.out_bufs[0],
        ))
    }

    fn accepts_relu_epilogue(&self) -> bool {
        true
    }
}

/// `dx [N, H, W, C]` from `dy [N, P, Q, K]` and `weight [K, R, S, C / groups]`. The
/// input's spatial size `(h, w)` is an attribute: `P` alone does not determine `H` when
/// the stride exceeds 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2dBackwardData {
    pub attrs: Conv2dAttrs,
    pub h: usize,
    pub w: usize,
}

impl Conv2dBackwardData {
    fn kernel_for(&self, dy: &TensorType, weight: &TensorType) -> Result<Kernel, String> {
        let d = dims4(dy, "dy [N, P, Q, K]")?;
        let w = dims4(weight, "weight [K, R, S, C/groups]")?;
        let x = [d[0], self.h, self.w, w[3] * self.attrs.groups];
        let kn = kernel(&self.attrs, x, w, false)?;
        expect(y_dims(&kn) == d, || {
            format!(
                "dy {dy} does not match the output {} of x {} with weight {weight}",
                TensorType::f32(&y_dims(&kn)),
                TensorType::f32(&x)
            )
        })?;
        Ok(kn)
    }
}

impl Op for Conv2dBackwardData {
    fn name(&self) -> &'static str {
        "conv2d_backward_data"
    }

    fn infer(&self, inputs: &[&TensorType]) -> Result<Vec<TensorType>, String> {
        let kn = self.kernel_for(inputs[0], inputs[1])?;
        let x = [kn.n, kn.h, kn.w, kn.c].map(|v| v as usize);
        Ok(vec![TensorType::f32(&x)])
    }

    fn lower(&self, ctx: &LowerCtx<'_>) -> Result<Vec<Dispatch>> {
        let kn = (self.kernel_for(&ctx.inputs[0], &ctx.inputs[1])).map_err(GraphError::Invalid)?;
        one(kn.prepare_backward_data(
            ctx.gpu,
            ctx.in_bufs[0],
            ctx.in_bufs[1],
            ctx.out_bufs[0],
            false,
        ))
    }
}

/// `dw [K, R, S, C / groups]` from `x [N, H, W, C]` and `dy [N, P, Q, K]`. The filter
/// size `(r, s)` is an attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv2dBackwardFilter {
    pub attrs: Conv2dAttrs,
    pub r: usize,
    pub s: usize,
}

impl Conv2dBackwardFilter {
    fn kernel_for(&self, x: &TensorType, dy: &TensorType) -> Result<Kernel, String> {
        let xd = dims4(x, "x [N, H, W, C]")?;
        let d = dims4(dy, "dy [N, P, Q, K]")?;
        let groups = self.attrs.groups.max(1);
        let w = [d[3], self.r, self.s, xd[3] / groups];
        let kn = kernel(&self.attrs, xd, w, false)?;
        expect(y_dims(&kn) == d, || {
            format!(
                "dy {dy} does not match the output {} of x {x} with a {}x{} filter",
                TensorType::f32(&y_dims(&kn)),
                self.r,
                self.s
            )
        })?;
        Ok(kn)
    }
}

impl Op for Conv2dBackwardFilter {
    fn name(&self) -> &'static str {
        "conv2d_backward_filter"
    }

    fn infer(&self, inputs: &[&TensorType]) -> Result<Vec<TensorType>, String> {
        let kn = self.kernel_for(inputs[0], inputs[1])?;
        let w = [kn.k, kn.r, kn.s, kn.cg()].map(|v| v as usize);
        Ok(vec![TensorType::f32(&w)])
    }

    fn lower(&self, ctx: &LowerCtx<'_>) -> Result<Vec<Dispatch>> {
        let kn = (self.kernel_for(&ctx.inputs[0], &ctx.inputs[1])).map_err(GraphError::Invalid)?;
        one(kn.prepare_backward_filter(
            ctx.gpu,
            ctx.in_bufs[0],
            ctx.in_bufs[1],
            ctx.out_bufs[0],
            false,
        ))
    }
}

impl Graph {
    /// `conv2d(x [N, H, W, C], w [K, R, S, C / groups]) (+ b [K])` → `[N, P, Q, K]`, a
    /// PyTorch `Conv2d` in NHWC with KRSC weights. A following [`Graph::relu`] fuses into
    /// the convolution's kernel.
    pub fn conv2d(
        &mut self,
        x: Value,
        w: Value,
        b: Option<Value>,
        attrs: Conv2dAttrs,
    ) -> Result<Value> {
        let op = Conv2d {
            attrs,
            bias: b.is_some(),
        };
        let mut inputs = vec![x, w];
        inputs.extend(b);
        let y = self.apply1(op, &inputs)?;
        self.set_layout(w, crate::graph::Layout::ConvKrsc);
        Ok(y)
    }
}
