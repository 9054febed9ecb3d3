//! The quadratic cost: [`MeanSquaredError`], `C = 1/(2N) Σ_r ||pred[r] - onehot(label[r])||²`
//! of predictions against integer labels (one-hot targets implied), computed with its
//! gradient in one pass, plus top-1 / top-5 hit counts — the loss of the textbook
//! sigmoid MNIST network. PyTorch's `MSELoss()` would divide the plain sum of squares by
//! `N · classes` instead (no ½).

use wgtrain_device::Dispatch;
use wgtrain_device::kernels::mse::{MeanSquaredError as Kernel, MseBuffers};

use crate::error::Result;
use crate::graph::{Graph, NodeId};
use crate::op::{LowerCtx, Mode, Op, expect};
use crate::ops::loss::{CORRECT, LOSS};
use crate::ops::u32_of;
use crate::tensor::{DType, TensorType, Value};

/// Inputs `pred [N, classes]`, `labels [N]` (u32). Outputs, at the same indices as
/// [`SoftmaxCrossEntropy`](crate::ops::loss::SoftmaxCrossEntropy)'s (so
/// [`Graph::minimize`] finds the hit counts): `loss [1]` (the mean), `correct [2]` (u32:
/// top-1 and top-5 hits, ranking the predictions), `dpred [N, classes]` (the gradient of
/// the mean cost, training only), and per-row scratch (`row_loss`, `rank`).
#[derive(Debug, Clone, Copy)]
pub struct MeanSquaredError;

const DPRED: usize = 2;

impl Op for MeanSquaredError {
    fn name(&self) -> &'static str {
        "mse_loss"
    }

    fn infer(&self, inputs: &[&TensorType]) -> Result<Vec<TensorType>, String> {
        let (pred, labels) = (inputs[0], inputs[1]);
        expect(pred.shape.len() == 2 && pred.dtype == DType::F32, || {
            format!("predictions must be an f32 matrix [N, classes], got {pred}")
        })?;
        let (n, classes) = (pred.shape[0], pred.shape[1]);
        expect(labels.shape == [n] && labels.dtype == DType::U32, || {
            format!("labels must be [{n}] u32 to match predictions {pred}, got {labels}")
        })?;
        u32_of(pred.len(), "predictions")?;
        Ok(vec![
            TensorType::f32(&[1]),
            TensorType::u32(&[2]),
            TensorType::f32(&[n, classes]),
            TensorType::f32(&[n]),
            TensorType::u32(&[n]),
        ])
    }

    fn backward(
        &self,
        g: &mut Graph,
        node: NodeId,
        grads: &[Option<Value>],
    ) -> Result<Vec<Option<Value>>> {
        // The seed of the loss is 1, and the kernel already wrote d(mean cost)/d pred.
        let dpred = grads[LOSS].map(|_| g.nodes[node].outputs[DPRED]);
        Ok(vec![dpred, None])
    }

    fn lower(&self, ctx: &LowerCtx<'_>) -> Result<Vec<Dispatch>> {
        let (n, classes) = (ctx.inputs[0].shape[0] as u32, ctx.inputs[0].shape[1] as u32);
        let o = ctx.out_bufs;
        let buffers = MseBuffers {
            pred: ctx.in_bufs[0],
            labels: ctx.in_bufs[1],
            dpred: (ctx.mode == Mode::Train).then(|| o[DPRED]),
            row_loss: o[3],
            label_rank: o[4],
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
    /// Mean quadratic cost `1/(2N) Σ_r ||pred[r] - onehot(labels[r])||²` of
    /// `pred [N, classes]` against `labels [N]` (u32). Returns `(loss [1], correct [2] u32)`.
    pub fn mse_loss(&mut self, pred: Value, labels: Value) -> Result<(Value, Value)> {
        let out = self.apply(MeanSquaredError, &[pred, labels])?;
        Ok((out[LOSS], out[CORRECT]))
    }
}
