//! Losses: [`SoftmaxCrossEntropy`], the mean cross-entropy of logits against integer
//! labels, computed with its gradient in one pass, plus top-1 / top-5 hit counts.

use wgtrain_device::Dispatch;
use wgtrain_device::kernels::softmax_xent::{SoftmaxCrossEntropy as Kernel, SoftmaxXentBuffers};

use crate::error::Result;
use crate::graph::{Graph, NodeId};
use crate::op::{LowerCtx, Mode, Op, expect};
use crate::ops::u32_of;
use crate::tensor::{DType, TensorType, Value};

/// Inputs `logits [N, classes]`, `labels [N]` (u32). Outputs: `loss [1]` (the mean),
/// `correct [2]` (u32: top-1 and top-5 hits), `dlogits [N, classes]` (the gradient of
/// the mean loss, training only), and per-row scratch (`row_loss`, `argmax`, `rank`).
#[derive(Debug, Clone, Copy)]
pub struct SoftmaxCrossEntropy;

/// Output indices of [`SoftmaxCrossEntropy`].
pub const LOSS: usize = 0;
pub const CORRECT: usize = 1;
const DLOGITS: usize = 2;

impl Op for SoftmaxCrossEntropy {
    fn name(&self) -> &'static str {
        "softmax_cross_entropy"
    }

    fn infer(&self, inputs: &[&TensorType]) -> Result<Vec<TensorType>, String> {
        let (logits, labels) = (inputs[0], inputs[1]);
        expect(
            logits.shape.len() == 2 && logits.dtype == DType::F32,
            || format!("logits must be an f32 matrix [N, classes], got {logits}"),
        )?;
        let (n, classes) = (logits.shape[0], logits.shape[1]);
        expect(labels.shape == [n] && labels.dtype == DType::U32, || {
            format!("labels must be [{n}] u32 to match logits {logits}, got {labels}")
        })?;
        u32_of(logits.len(), "logits")?;
        Ok(vec![
            TensorType::f32(&[1]),
            TensorType::u32(&[2]),
            TensorType::f32(&[n, classes]),
            TensorType::f32(&[n]),
            TensorType::u32(&[n]),
            TensorType::u32(&[n]),
        ])
    }

    fn backward(
        &self,
        g: &mut Graph,
        node: NodeId,
        grads: &[Option<Value>],
    ) -> Result<Vec<Option<Value>>> {
        // The seed of the loss is 1, and the kernel already wrote d(mean loss)/d logits.
        let dlogits = grads[LOSS].map(|_| g.nodes[node].outputs[DLOGITS]);
        Ok(vec![dlogits, None])
    }

    fn lower(&self, ctx: &LowerCtx<'_>) -> Result<Vec<Dispatch>> {
        let (n, classes) = (ctx.inputs[0].shape[0] as u32, ctx.inputs[0].shape[1] as u32);
        let o = ctx.out_bufs;
        let buffers = SoftmaxXentBuffers {
            logits: ctx.in_bufs[0],
            labels: ctx.in_bufs[1],
            dlogits: (ctx.mode == Mode::Train).then(|| o[DLOGITS]),
            row_loss: o[3],
            argmax: o[4],
            label_rank: o[5],
            loss: o[LOSS],
            correct: o[CORRECT],
        };
        Ok(Kernel::new(n, classes).prepare(ctx.gpu, &buffers)?)
    }

    fn is_loss(&self) -> bool {
        true
    }
}

impl Graph {
    /// Mean softmax cross-entropy of `logits [N, classes]` against `labels [N]` (u32).
    /// Returns `(loss [1], correct [2] u32)`.
    pub fn softmax_cross_entropy(
        &mut self,
        logits: Value,
        labels: Value,
    ) -> Result<(Value, Value)> {
        let out = self.apply(SoftmaxCrossEntropy, &[logits, labels])?;
        Ok((out[LOSS], out[CORRECT]))
    }
}
