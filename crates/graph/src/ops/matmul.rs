//! Matrix products: [`Matmul2d`] (`C = op(A)·op(B) (+ bias)`, the core of `Linear`) with
//! its backward as matmuls, and [`BiasGrad`], the column sum that is the gradient of a
//! bias over the last dimension (also used by convolutions).

use wgtrain_device::Dispatch;
use wgtrain_device::kernels::elementwise::BiasAdd;
use wgtrain_device::kernels::matmul::Matmul;

use crate::error::Result;
use crate::graph::{Graph, NodeId};
use crate::op::{LowerCtx, Op, expect};
use crate::ops::u32_of;
use crate::tensor::{DType, TensorType, Value};

/// `C[m, n] = op(A) · op(B) (+ bias[n])`; `op(A)` is `[m, k]` (stored `[k, m]` when
/// `trans_a`), `op(B)` is `[k, n]` (stored `[n, k]` when `trans_b`, as a PyTorch
/// `Linear` weight `[out, in]`). Inputs: `a`, `b`, and `bias` when `bias`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Matmul2d {
    pub trans_a: bool,
    pub trans_b: bool,
    pub bias: bool,
}

impl Matmul2d {
    fn dims(&self, a: &TensorType, b: &TensorType) -> Result<(usize, usize, usize), String> {
        expect(a.shape.len() == 2 && b.shape.len() == 2, || {
            format!("operands must be matrices, got {a} and {b}")
        })?;
        let (m, ka) = if self.trans_a {
            (a.shape[1], a.shape[0])
        } else {
            (a.shape[0], a.shape[1])
        };
        let (kb, n) = if self.trans_b {
            (b.shape[1], b.shape[0])
        } else {
            (b.shape[0], b.shape[1])
        };
        expect(ka == kb, || {
            format!(
                "inner dimensions differ: {a}{} has {ka}, {b}{} has {kb}",
                if self.trans_a { "ᵀ" } else { "" },
                if self.trans_b { "ᵀ" } else { "" }
            )
        })?;
        Ok((m, n, ka))
    }
}

impl Op for Matmul2d {
    fn name(&self) -> &'static str {
        "matmul"
    }

    fn infer(&self, inputs: &[&TensorType]) -> Result<Vec<TensorType>, String> {
        expect(inputs.len() == 2 + self.bias as usize, || {
            "wrong number of inputs".to_owned()
        })?;
        let (m, n, k) = self.dims(inputs[0], inputs[1])?;
        for (d, what) in [(m, "m"), (n, "n"), (k, "k")] {
            u32_of(d, what)?;
        }
        if self.bias {
            let b = inputs[2];
            expect(b.shape == [n], || {
                format!("bias {b} does not match {n} output columns")
            })?;
        }
        Ok(vec![TensorType::f32(&[m, n])])
    }

    fn backward(
        &self,
        g: &mut Graph,
        node: NodeId,
        grads: &[Option<Value>],
    ) -> Result<Vec<Option<Value>>> {
        let Some(dc) = grads[0] else {
            return Ok(vec![None; 2 + self.bias as usize]);
        };
        let (a, b) = (g.nodes[node].inputs[0], g.nodes[node].inputs[1]);
        let plain = |trans_a, trans_b| Matmul2d {
            trans_a,
            trans_b,
            bias: false,
        };
        let da = if self.trans_a {
            g.apply1(plain(self.trans_b, true), &[b, dc])? // dA[k, m] = op(B) · dCᵀ
        } else {
            g.apply1(plain(false, !self.trans_b), &[dc, b])? // dA[m, k] = dC · op(B)ᵀ
        };
        let db = if self.trans_b {
            g.apply1(plain(true, self.trans_a), &[dc, a])? // dB[n, k] = dCᵀ · op(A)
        } else {
            g.apply1(plain(!self.trans_a, false), &[a, dc])? // dB[k, n] = op(A)ᵀ · dC
        };
        let mut out = vec![Some(da), Some(db)];
        if self.bias {
            out.push(Some(g.apply1(BiasGrad, &[dc])?));
        }
        Ok(out)
    }

    fn lower(&self, ctx: &LowerCtx<'_>) -> Result<Vec<Dispatch>> {
        let (m, n, k) = self
            .dims(&ctx.inputs[0], &ctx.inputs[1])
            .map_err(crate::GraphError::Invalid)?;
        let mut p = Matmul::new(m as u32, n as u32, k as u32);
        p.trans_a = self.trans_a;
        p.trans_b = self.trans_b;
        p.bias = self.bias;
        p.relu = ctx.fused_relu;
        let bias = self.bias.then(|| ctx.in_bufs[2]);
        Ok(vec![p.prepare(
            ctx.gpu,
            ctx.in_bufs[0],
            ctx.in_bufs[1],
            bias,
            ctx.out_bufs[0],
        )?])
    }

    fn accepts_relu_epilogue(&self) -> bool {
        true
    }
}

/// `db[c] = Σ_rows dy[row, c]` over the last dimension of `dy`. Outputs: `db` and a
/// scratch tensor for the two-pass deterministic reduction.
#[derive(Debug, Clone, Copy)]
pub struct BiasGrad;

fn rows_and_channels(dy: &TensorType) -> Result<(u32, u32), String> {
    let c = *dy.shape.last().ok_or("bias gradient of a scalar")?;
    expect(c > 0, || format!("{dy} has no channels"))?;
    Ok((u32_of(dy.len() / c, "rows")?, u32_of(c, "channels")?))
}

impl Op for BiasGrad {
    fn name(&self) -> &'static str {
        "bias_grad"
    }
    fn infer(&self, inputs: &[&TensorType]) -> Result<Vec<TensorType>, String> {
        let dy = inputs[0];
        expect(dy.dtype == DType::F32, || format!("{dy} is not f32"))?;
        let (rows, c) = rows_and_channels(dy)?;
        let scratch = BiasAdd::new(rows, c).grad_scratch_elems() as usize;
        Ok(vec![
            TensorType::f32(&[c as usize]),
            TensorType::f32(&[scratch]),
        ])
    }
    fn lower(&self, ctx: &LowerCtx<'_>) -> Result<Vec<Dispatch>> {
        let (rows, c) = rows_and_channels(&ctx.inputs[0]).map_err(crate::GraphError::Invalid)?;
        let k = BiasAdd::new(rows, c);
        let scratch = (k.grad_scratch_elems() > 0).then(|| ctx.out_bufs[1]);
        Ok(k.prepare_grad(ctx.gpu, ctx.in_bufs[0], scratch, ctx.out_bufs[0], false)?)
    }
}

impl Graph {
    /// `x[N, in] · wᵀ (+ b)`: a PyTorch `Linear` with weight `w[out, in]` and bias `b[out]`.
    pub fn linear(&mut self, x: Value, w: Value, b: Option<Value>) -> Result<Value> {
        let op = Matmul2d {
            trans_a: false,
            trans_b: true,
            bias: b.is_some(),
        };
        let mut inputs = vec![x, w];
        inputs.extend(b);
        let y = self.apply1(op, &inputs)?;
        if let Some([h, w_, c]) = self.flattened_map(x) {
            self.set_layout(w, crate::graph::Layout::LinearOverNhwc { h, w: w_, c });
        }
        Ok(y)
    }
}
