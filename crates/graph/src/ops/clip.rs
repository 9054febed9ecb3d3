//! Gradient clipping by global norm, as graph ops: [`GradNorm`] reads every gradient
//! and writes the per-tensor sums of squares plus the clip factor; [`ClipGrad`] scales
//! one gradient by that factor, in place. [`Graph::minimize_with`] inserts them between
//! the backward pass and the optimizer updates.

use wgtrain_device::Dispatch;
use wgtrain_device::kernels::clip::{ClipFactor, ClipScale};
use wgtrain_device::kernels::reduce::Reduce;

use crate::error::{GraphError, Result};
use crate::op::{LowerCtx, Op, expect};
use crate::ops::u32_of;
use crate::tensor::{DType, TensorType};

/// Inputs: every gradient. Outputs: `norms [k + 1]` (sums of squares, then the factor
/// `min(1, max_norm / (‖g‖ + 1e-6))`) and scratch for the reductions.
#[derive(Debug, Clone, Copy)]
pub struct GradNorm {
    pub max_norm: f32,
}

impl Op for GradNorm {
    fn name(&self) -> &'static str {
        "grad_norm"
    }

    fn infer(&self, inputs: &[&TensorType]) -> Result<Vec<TensorType>, String> {
        expect(!inputs.is_empty(), || "no gradients to clip".to_owned())?;
        let mut scratch = 0;
        for g in inputs {
            expect(g.dtype == DType::F32, || format!("gradient {g} is not f32"))?;
            scratch =
                scratch.max(Reduce::sum_of_squares(u32_of(g.len(), "elements")?).scratch_elems());
        }
        Ok(vec![
            TensorType::f32(&[inputs.len() + 1]),
            TensorType::f32(&[scratch as usize]),
        ])
    }

    fn lower(&self, ctx: &LowerCtx<'_>) -> Result<Vec<Dispatch>> {
        let (norms, scratch) = (ctx.out_bufs[0], ctx.out_bufs[1]);
        let mut out = Vec::with_capacity(2 * ctx.inputs.len() + 1);
        for (i, (ty, buf)) in ctx.inputs.iter().zip(ctx.in_bufs).enumerate() {
            let r = Reduce::sum_of_squares(ty.len() as u32).into_slot(i as u32);
            let scratch = (r.scratch_elems() > 0).then_some(scratch);
            out.extend(r.prepare(ctx.gpu, buf, scratch, norms)?);
        }
        let tensors = ctx.inputs.len() as u32;
        out.push(
            ClipFactor {
                tensors,
                max_norm: self.max_norm,
            }
            .prepare(ctx.gpu, norms)?,
        );
        Ok(out)
    }
}

/// Inputs `grad`, `norms` (from [`GradNorm`]); output: the clipped gradient (in place).
#[derive(Debug, Clone, Copy)]
pub struct ClipGrad;

impl Op for ClipGrad {
    fn name(&self) -> &'static str {
        "clip_grad"
    }

    fn infer(&self, inputs: &[&TensorType]) -> Result<Vec<TensorType>, String> {
        Ok(vec![inputs[0].clone()])
    }

    fn lower(&self, ctx: &LowerCtx<'_>) -> Result<Vec<Dispatch>> {
        if !ctx.in_place {
            return Err(GraphError::Invalid(format!(
                "clip_grad in layer `{}` must run in place on its gradient",
                ctx.layer
            )));
        }
        let tensors = ctx.inputs[1].len() as u32 - 1;
        let k = ClipScale {
            count: ctx.inputs[0].len() as u32,
            tensors,
        };
        Ok(vec![k.prepare(ctx.gpu, ctx.in_bufs[1], ctx.in_bufs[0])?])
    }

    fn in_place(&self) -> Option<usize> {
        Some(0)
    }
}
