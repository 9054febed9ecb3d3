//! [`CountNonFinite`]: a check node that counts the NaN and ±Inf elements of each of its
//! inputs into one u32 slot per input. [`Graph::minimize_with`] puts one over every
//! gradient, and [`Session::train_step`](crate::Session::train_step) reads its output
//! back with the loss, so a numerical fault is seen in the step that caused it, on the
//! GPU, without another submission.

use wgtrain_device::Dispatch;
use wgtrain_device::kernels::finite::{ClearCounts, CountNonFinite as CountKernel};

use crate::error::Result;
use crate::op::{LowerCtx, Op, expect};
use crate::ops::u32_of;
use crate::tensor::{DType, TensorType};

/// Inputs: `k` f32 tensors. Output: `counts [k]` u32, `counts[i]` = the number of NaN
/// and ±Inf elements of input `i`.
///
/// `fused`: the node only clears the counts, and the optimizer updates that read the
/// inputs anyway count them ([`Update::nonfinite_slot`](crate::ops::optim::Update)),
/// saving a pass over every gradient. The inputs stay, so the node still comes after
/// the gradients.
#[derive(Debug, Clone, Copy)]
pub struct CountNonFinite {
    pub fused: bool,
}

impl Op for CountNonFinite {
    fn name(&self) -> &'static str {
        if self.fused {
            "clear_nonfinite_counts"
        } else {
            "count_nonfinite"
        }
    }

    fn infer(&self, inputs: &[&TensorType]) -> Result<Vec<TensorType>, String> {
        expect(!inputs.is_empty(), || "no tensors to check".to_owned())?;
        for (i, t) in inputs.iter().enumerate() {
            expect(t.dtype == DType::F32, || {
                format!("input {i} ({t}) is not f32")
            })?;
            expect(!t.is_empty(), || format!("input {i} ({t}) is empty"))?;
            u32_of(t.len(), "elements")?;
        }
        Ok(vec![TensorType::u32(&[inputs.len()])])
    }

    fn lower(&self, ctx: &LowerCtx<'_>) -> Result<Vec<Dispatch>> {
        let counts = ctx.out_bufs[0];
        let slots = ctx.inputs.len() as u32;
        let mut out = Vec::with_capacity(ctx.inputs.len() + 1);
        out.push(ClearCounts { slots }.prepare(ctx.gpu, counts)?);
        if self.fused {
            return Ok(out);
        }
        for (i, (ty, buf)) in ctx.inputs.iter().zip(ctx.in_bufs).enumerate() {
            let k = CountKernel {
                count: ty.len() as u32,
                slot: i as u32,
            };
            out.push(k.prepare(ctx.gpu, buf, counts)?);
        }
        Ok(out)
    }
}
