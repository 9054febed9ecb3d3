//! The quadratic (mean squared error) cost against one-hot targets given as integer
//! labels ([`MeanSquaredError`]): per row the half squared distance to the one-hot
//! target, the gradient of the mean cost and the label's rank; then a deterministic mean
//! and top-1 / top-5 hit counts. Shader: `shaders/mse.wgsl`.
//!
//! The cost is the textbook `C = 1/(2N) Σ_r ||pred[r] - onehot(label[r])||²` (Nielsen,
//! *Neural Networks and Deep Learning*, ch. 1), whose gradient is `(pred - onehot) / N`.
//! PyTorch's `MSELoss(reduction="mean")` on the same one-hot targets is a different
//! scale: it divides the plain sum of squares by `N · classes`, without the ½.
//!
//! A label `>= classes` is never used as an index: the shader writes NaN for that row's
//! loss and gradient (so the mean is NaN) and never counts it as correct, as
//! [`softmax_xent`](crate::kernels::softmax_xent) does.

use crate::error::Result;
use crate::gpu::Gpu;
use crate::kernels::row_loss::Rows;
use crate::pipeline::{Dispatch, DispatchBuilder, grid_1d};
use crate::shaders;

const KERNEL: &str = "mse";
/// Quadratic cost of `pred [n, classes]` (row-major) against the one-hot rows of
/// `labels [n]` (u32), averaged over the `n` rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MeanSquaredError {
    pub n: u32,
    pub classes: u32,
}

/// The buffers of one [`MeanSquaredError`]: inputs, per-row results and scalars.
#[derive(Clone, Copy, Debug)]
pub struct MseBuffers<'a> {
    /// `[n, classes]` f32: the network's outputs.
    pub pred: &'a wgpu::Buffer,
    /// `[n]` u32, each `< classes`.
    pub labels: &'a wgpu::Buffer,
    /// `[n, classes]`: `(pred - onehot) / n`, the gradient of the mean cost; `None` skips
    /// the gradient (evaluation).
    pub dpred: Option<&'a wgpu::Buffer>,
    /// `[n]`: `½ ||pred[r] - onehot(label[r])||²`.
    pub row_loss: &'a wgpu::Buffer,
    /// `[n]` u32: classes ranked before the label (0: top-1 hit, < 5: top-5 hit;
    /// `u32::MAX` for an invalid label).
    pub label_rank: &'a wgpu::Buffer,
    /// `[1]`: the mean cost.
    pub loss: &'a wgpu::Buffer,
    /// `[2]` u32: rows whose (first) largest prediction is the label, and rows whose
    /// label is in the top 5.
    pub correct: &'a wgpu::Buffer,
}

impl MeanSquaredError {
    pub fn new(n: u32, classes: u32) -> Self {
        Self { n, classes }
    }

    /// Invocations per row: the smallest power of two covering the classes, from 32
    /// (a subgroup on most GPUs) to 256.
    pub fn row_workgroup_size(&self) -> u32 {
        self.rows().workgroup_size()
    }

    fn rows(&self) -> Rows {
        Rows {
            n: self.n,
            classes: self.classes,
        }
    }

    /// The per-row pass and the `finish` pass (mean cost, hit counts), in recording order.
    pub fn prepare(&self, gpu: &Gpu, b: &MseBuffers<'_>) -> Result<Vec<Dispatch>> {
        let shape = self.rows();
        let elems = shape.check(KERNEL)?;
        let n = self.n as u64;
        let wg = shape.workgroup_size();
        let max = gpu.limits().max_compute_workgroups_per_dimension;
        let rows = DispatchBuilder::new(gpu, shaders::MSE, "rows")
            .constant("WG", wg)
            .flag("GRAD", b.dpred.is_some())
            .params(&shape.params())
            .read("pred", b.pred, elems)
            .read("labels", b.labels, n);
        let rows = match b.dpred {
            Some(d) => rows.write("dpred", d, elems),
            // Never written with GRAD off; the placeholder only fills the binding slot.
            None => rows.write("dpred", &gpu.placeholder, 0),
        };
        let rows = rows
            .write("row_loss", b.row_loss, n)
            .write("label_rank", b.label_rank, n)
            .build(grid_1d(n * wg as u64, wg, max))?;
        let finish = shape.finish(
            gpu,
            shaders::MSE,
            b.row_loss,
            b.label_rank,
            b.loss,
            b.correct,
        )?;
        Ok(vec![rows, finish])
    }
}
