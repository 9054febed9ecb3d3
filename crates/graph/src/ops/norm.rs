//! Normalisation ops over the channel (last) dimension of NHWC activations (or `[N, C]`
//! matrices): [`BatchNorm`] (PyTorch `BatchNorm2d` / `BatchNorm1d`) with its backward
//! [`BatchNormBackward`], and [`LocalResponseNorm`] (AlexNet's LRN) with
//! [`LocalResponseNormBackward`].
//!
//! ## Design
//!
//! Both view `x [..., C]` as `[M, C]` rows of contiguous channels. Batch norm's training
//! forward writes the batch mean and inverse standard deviation as extra outputs, which
//! its backward reads; the partial sums of its column reductions live in a planned
//! scratch output sized by the kernel's [`scratch_elems`](BnKernel::scratch_elems), so
//! every buffer its dispatches bind is a graph value. The running statistics are state
//! variables updated in place by the training forward ([`Op::mutates`]); evaluation reads
//! them instead. A following ReLU fuses into the normalisation kernel in both modes.

use wgtrain_device::Dispatch;
use wgtrain_device::kernels::batchnorm::{
    BatchNorm as BnKernel, BatchNormBackwardBuffers, BatchNormTrainBuffers,
};
use wgtrain_device::kernels::lrn::Lrn;

use crate::error::{GraphError, Result};
use crate::graph::{Graph, NodeId};
use crate::init::Init;
use crate::op::{LowerCtx, Mode, Op, expect};
use crate::ops::{one, u32_of};
use crate::tensor::{DType, TensorType, Value};

/// `(M, C)` of an f32 activation `x [..., C]` of rank ≥ 2: `M` is the product of all
/// dimensions but the last.
pub(crate) fn rows_and_channels(x: &TensorType) -> Result<(u32, u32), String> {
    expect(x.shape.len() >= 2 && x.dtype == DType::F32, || {
        format!("expected an f32 activation [N, ..., C] of rank ≥ 2, got {x}")
    })?;
    let c = x.shape[x.shape.len() - 1];
    expect(!x.is_empty(), || format!("{x} has no elements"))?;
    u32_of(x.len(), "elements")?;
    Ok(((x.len() / c) as u32, c as u32))
}

/// Checks that a per-channel tensor `what` is `[C]` f32 for `x`'s `C` channels.
pub(crate) fn per_channel(
    what: &str,
    t: &TensorType,
    x: &TensorType,
    c: u32,
) -> Result<(), String> {
    expect(t.shape == [c as usize] && t.dtype == DType::F32, || {
        format!("{what} {t} does not match the {c} channels of {x} (expected [{c}])")
    })
}

/// Batch normalisation over all but the last dimension. Inputs: `x [..., C]`,
/// `gamma [C]` (`weight`), `beta [C]` (`bias`), `running_mean [C]`, `running_var [C]`.
/// Outputs: `y` (like `x`), `save_mean [C]`, `save_invstd [C]` (batch statistics for the
/// backward, training only) and the kernel's scratch. Training normalises with the batch
/// statistics and updates the running ones in place
/// (`running = (1 − momentum) · running + momentum · batch`, the variance unbiased);
/// evaluation uses the running statistics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchNorm {
    pub eps: f32,
    pub momentum: f32,
}

impl Default for BatchNorm {
    /// PyTorch's defaults: `eps = 1e-5`, `momentum = 0.1`.
    fn default() -> Self {
        Self {
            eps: 1e-5,
            momentum: 0.1,
        }
    }
}

/// Output indices of [`BatchNorm`].
pub const BN_Y: usize = 0;
pub const BN_SAVE_MEAN: usize = 1;
pub const BN_SAVE_INVSTD: usize = 2;

impl BatchNorm {
    /// The device kernel for `x`, with this op's settings.
    pub(crate) fn kernel(&self, x: &TensorType) -> Result<BnKernel, String> {
        let (m, c) = rows_and_channels(x)?;
        Ok(BnKernel::new(m, c)
            .with_eps(self.eps)
            .with_momentum(self.momentum))
    }
}

impl Op for BatchNorm {
    fn name(&self) -> &'static str {
        "batch_norm"
    }

    fn infer(&self, inputs: &[&TensorType]) -> Result<Vec<TensorType>, String> {
        expect(inputs.len() == 5, || {
            format!(
                "expected x, weight, bias, running_mean, running_var; got {} inputs",
                inputs.len()
            )
        })?;
        let x = inputs[0];
        let k = self.kernel(x)?;
        for (what, t) in ["weight", "bias", "running_mean", "running_var"]
            .iter()
            .zip(&inputs[1..])
        {
            per_channel(what, t, x, k.c)?;
        }
        expect(
            self.eps > 0.0 && (0.0..=1.0).contains(&self.momentum),
            || {
                format!(
                    "eps must be > 0 and momentum in [0, 1], got eps {} momentum {}",
                    self.eps, self.momentum
                )
            },
        )?;
        let c = k.c as usize;
        Ok(vec![
            x.clone(),
            TensorType::f32(&[c]),
            TensorType::f32(&[c]),
            TensorType::f32(&[k.scratch_elems() as usize]),
        ])
    }

    fn backward(
        &self,
        g: &mut Graph,
        node: NodeId,
        grads: &[Option<Value>],
    ) -> Result<Vec<Option<Value>>> {
        let Some(dy) = grads[BN_Y] else {
            return Ok(vec![None; 5]);
        };
        let n = &g.nodes[node];
        let (x, gamma) = (n.inputs[0], n.inputs[1]);
        let (mean, invstd) = (n.outputs[BN_SAVE_MEAN], n.outputs[BN_SAVE_INVSTD]);
        let out = g.apply(BatchNormBackward(*self), &[x, dy, gamma, mean, invstd])?;
        Ok(vec![Some(out[0]), Some(out[1]), Some(out[2]), None, None])
    }

    fn lower(&self, ctx: &LowerCtx<'_>) -> Result<Vec<Dispatch>> {
        let mut k = self.kernel(&ctx.inputs[0]).map_err(GraphError::Invalid)?;
        k.relu = ctx.fused_relu;
        let [x, gamma, beta, running_mean, running_var] = ctx.in_bufs[..] else {
            return Err(GraphError::Invalid("batch_norm takes 5 inputs".into()));
        };
        if ctx.mode == Mode::Eval {
            let y = ctx.out_bufs[BN_Y];
            return one(k.prepare_eval(ctx.gpu, x, gamma, beta, running_mean, running_var, y));
        }
        let buffers = BatchNormTrainBuffers {
            x,
            gamma,
            beta,
            running_mean,
            running_var,
            save_mean: ctx.out_bufs[BN_SAVE_MEAN],
            save_invstd: ctx.out_bufs[BN_SAVE_INVSTD],
            y: ctx.out_bufs[BN_Y],
            scratch: ctx.out_bufs[3],
        };
        Ok(k.prepare_train_with_scratch(ctx.gpu, &buffers)?)
    }

    fn accepts_relu_epilogue(&self) -> bool {
        true
    }

    fn as_batch_norm(&self) -> Option<BatchNorm> {
        Some(*self)
    }

    fn mutates(&self, mode: Mode) -> &'static [usize] {
        match mode {
            Mode::Train => &[3, 4],
            Mode::Eval => &[],
        }
    }
}

/// Backward of [`BatchNorm`]'s training forward. Inputs: `x`, `dy` (already masked by a
/// fused ReLU's backward), `gamma`, `save_mean`, `save_invstd`. Outputs: `dx`, `dgamma`,
/// `dbeta` and the kernel's scratch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchNormBackward(pub BatchNorm);

impl Op for BatchNormBackward {
    fn name(&self) -> &'static str {
        "batch_norm_backward"
    }

    fn infer(&self, inputs: &[&TensorType]) -> Result<Vec<TensorType>, String> {
        let (x, dy) = (inputs[0], inputs[1]);
        let k = self.0.kernel(x)?;
        expect(x == dy, || {
            format!("input {x} and output gradient {dy} differ")
        })?;
        for (what, t) in ["weight", "save_mean", "save_invstd"]
            .iter()
            .zip(&inputs[2..])
        {
            per_channel(what, t, x, k.c)?;
        }
        let c = k.c as usize;
        Ok(vec![
            x.clone(),
            TensorType::f32(&[c]),
            TensorType::f32(&[c]),
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
            dx: o[0],
            dgamma: o[1],
            dbeta: o[2],
            scratch: o[3],
        };
        Ok(k.prepare_backward_with_scratch(ctx.gpu, &buffers)?)
    }
}

/// Cross-channel local response normalisation of `x [..., C]` with PyTorch's semantics
/// (`alpha` divided by `size`): `y_c = x_c · (k + alpha/size · Σ_{win(c)} x²)^(−beta)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LocalResponseNorm {
    /// Channels in the window.
    pub size: u32,
    pub alpha: f32,
    pub beta: f32,
    pub k: f32,
}

impl LocalResponseNorm {
    /// AlexNet's settings in PyTorch's convention: size 5, alpha 1e-4, beta 0.75, k 2.
    pub fn alexnet() -> Self {
        Self {
            size: 5,
            alpha: 1e-4,
            beta: 0.75,
            k: 2.0,
        }
    }

    fn kernel(&self, x: &TensorType) -> Result<Lrn, String> {
        let (rows, c) = rows_and_channels(x)?;
        expect(self.size > 0 && self.k > 0.0 && self.alpha >= 0.0, || {
            format!(
                "size must be > 0, k > 0 and alpha ≥ 0, got size {} k {} alpha {}",
                self.size, self.k, self.alpha
            )
        })?;
        Ok(Lrn::new(rows, c, self.size, self.alpha, self.beta, self.k))
    }
}

impl Op for LocalResponseNorm {
    fn name(&self) -> &'static str {
        "local_response_norm"
    }

    fn infer(&self, inputs: &[&TensorType]) -> Result<Vec<TensorType>, String> {
        self.kernel(inputs[0])?;
        Ok(vec![inputs[0].clone()])
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
        Ok(vec![Some(
            g.apply1(LocalResponseNormBackward(*self), &[x, dy])?,
        )])
    }

    fn lower(&self, ctx: &LowerCtx<'_>) -> Result<Vec<Dispatch>> {
        let k = self.kernel(&ctx.inputs[0]).map_err(GraphError::Invalid)?;
        one(k.prepare_forward(ctx.gpu, ctx.in_bufs[0], ctx.out_bufs[0]))
    }
}

/// Backward of [`LocalResponseNorm`]: inputs the forward's `x` and `dy`, output `dx`
/// (the kernel recomputes the scales from `x`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LocalResponseNormBackward(pub LocalResponseNorm);

impl Op for LocalResponseNormBackward {
    fn name(&self) -> &'static str {
        "local_response_norm_backward"
    }

    fn infer(&self, inputs: &[&TensorType]) -> Result<Vec<TensorType>, String> {
        let (x, dy) = (inputs[0], inputs[1]);
        self.0.kernel(x)?;
        expect(x == dy, || {
            format!("input {x} and output gradient {dy} differ")
        })?;
        Ok(vec![x.clone()])
    }

    fn lower(&self, ctx: &LowerCtx<'_>) -> Result<Vec<Dispatch>> {
        let k = self.0.kernel(&ctx.inputs[0]).map_err(GraphError::Invalid)?;
        let (i, o) = (ctx.in_bufs, ctx.out_bufs);
        one(k.prepare_backward(ctx.gpu, i[0], i[1], o[0]))
    }
}

impl Graph {
    /// Batch norm of `x [..., C]` with PyTorch's defaults ([`BatchNorm::default`]),
    /// creating `weight` (ones), `bias` (zeros), `running_mean` (zeros) and `running_var`
    /// (ones) in the current scope, as torchvision names them.
    pub fn batch_norm(&mut self, x: Value) -> Result<Value> {
        self.batch_norm_with(x, BatchNorm::default())
    }

    /// [`Graph::batch_norm`] with explicit `eps` and `momentum`.
    pub fn batch_norm_with(&mut self, x: Value, op: BatchNorm) -> Result<Value> {
        let (_, c) = rows_and_channels(self.ty(x)).map_err(|message| GraphError::Shape {
            op: op.name(),
            layer: self.scope_name(),
            message,
        })?;
        let c = c as usize;
        let gamma = self.param("weight", &[c], Init::Constant(1.0))?;
        let beta = self.param("bias", &[c], Init::Constant(0.0))?;
        let mean = self.state("running_mean", TensorType::f32(&[c]), Init::Constant(0.0))?;
        let var = self.state("running_var", TensorType::f32(&[c]), Init::Constant(1.0))?;
        self.apply1(op, &[x, gamma, beta, mean, var])
    }

    /// Local response normalisation of `x [..., C]` across channels.
    pub fn local_response_norm(&mut self, x: Value, op: LocalResponseNorm) -> Result<Value> {
        self.apply1(op, &[x])
    }
}
