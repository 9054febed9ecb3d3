//! Softmax cross-entropy with integer labels ([`SoftmaxCrossEntropy`]): per row the
//! numerically stable log-softmax, the row loss, the gradient of the mean loss, the
//! argmax and the label's rank; then a deterministic mean loss and top-1 / top-5 hit
//! counts. Shader: `shaders/softmax_xent.wgsl`.
//!
//! A label `>= classes` is never used as an index: the shader writes NaN for that row's
//! loss and gradient (so the mean loss is NaN and training cannot silently go on) and
//! never counts it as correct. [`check_labels`] catches this on the host when the labels
//! are at hand.

use crate::error::Result;
use crate::gpu::Gpu;
use crate::kernels::ensure;
use crate::kernels::row_loss::Rows;
use crate::pipeline::{Dispatch, DispatchBuilder, grid_1d};
use crate::shaders;

const KERNEL: &str = "softmax_xent";
/// Cross-entropy of `logits [n, classes]` (row-major) against `labels [n]` (u32),
/// averaged over the `n` rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SoftmaxCrossEntropy {
    pub n: u32,
    pub classes: u32,
}

/// The buffers of one [`SoftmaxCrossEntropy`]: inputs, per-row results and scalars.
#[derive(Clone, Copy, Debug)]
pub struct SoftmaxXentBuffers<'a> {
    /// `[n, classes]` f32.
    pub logits: &'a wgpu::Buffer,
    /// `[n]` u32, each `< classes`.
    pub labels: &'a wgpu::Buffer,
    /// `[n, classes]`: `(softmax - onehot) / n`, the gradient of the mean loss; `None`
    /// skips the gradient (evaluation).
    pub dlogits: Option<&'a wgpu::Buffer>,
    /// `[n]`: `logsumexp(row) - row[label]`.
    pub row_loss: &'a wgpu::Buffer,
    /// `[n]` u32: the first index of each row's largest logit.
    pub argmax: &'a wgpu::Buffer,
    /// `[n]` u32: classes ranked before the label (0: top-1 hit, < 5: top-5 hit;
    /// `u32::MAX` for an invalid label).
    pub label_rank: &'a wgpu::Buffer,
    /// `[1]`: the mean loss.
    pub loss: &'a wgpu::Buffer,
    /// `[2]` u32: rows whose argmax is the label, and rows whose label is in the top 5.
    pub correct: &'a wgpu::Buffer,
}

impl SoftmaxCrossEntropy {
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

    /// The per-row pass and the `finish` pass (mean loss, hit counts), in recording order.
    pub fn prepare(&self, gpu: &Gpu, b: &SoftmaxXentBuffers<'_>) -> Result<Vec<Dispatch>> {
        let shape = self.rows();
        let elems = shape.check(KERNEL)?;
        let n = self.n as u64;
        let wg = shape.workgroup_size();
        let max = gpu.limits().max_compute_workgroups_per_dimension;
        let rows = DispatchBuilder::new(gpu, shaders::SOFTMAX_XENT, "rows")
            .constant("WG", wg)
            .flag("GRAD", b.dlogits.is_some())
            .params(&shape.params())
            .read("logits", b.logits, elems)
            .read("labels", b.labels, n);
        let rows = match b.dlogits {
            Some(d) => rows.write("dlogits", d, elems),
            // Never written with GRAD off; the placeholder only fills the binding slot.
            None => rows.write("dlogits", &gpu.placeholder, 0),
        };
        let rows = rows
            .write("row_loss", b.row_loss, n)
            .write("argmax", b.argmax, n)
            .write("label_rank", b.label_rank, n)
            .build(grid_1d(n * wg as u64, wg, max))?;
        let finish = shape.finish(
            gpu,
            shaders::SOFTMAX_XENT,
            b.row_loss,
            b.label_rank,
            b.loss,
            b.correct,
        )?;
        Ok(vec![rows, finish])
    }
}

/// Checks on the host that every label is a valid class index, naming the first that
/// is not (the kernel itself can only poison the loss with NaN).
pub fn check_labels(labels: &[u32], classes: u32) -> Result<()> {
    match labels.iter().position(|&l| l >= classes) {
        None => Ok(()),
        Some(i) => ensure(false, KERNEL, || {
            format!(
                "label {} of row {i} is out of range for {classes} classes",
                labels[i]
            )
        }),
    }
}
