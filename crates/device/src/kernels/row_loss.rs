//! What the per-row losses ([`softmax_xent`](super::softmax_xent) and
//! [`mse`](super::mse)) share: the workgroup size of the row pass, their uniform, shape
//! validation, and the `finish` pass that averages the row losses and counts hits.
//! Their shaders declare the same `Params` and the same `finish` bindings.

use crate::error::Result;
use crate::gpu::Gpu;
use crate::kernels::{ensure, to_u32};
use crate::pipeline::{Dispatch, DispatchBuilder};
use crate::shaders::Shader;

/// Invocations of the single-workgroup `finish` pass.
const FINISH_WG: u32 = 256;

/// The uniform of both shaders.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct Params {
    n: u32,
    classes: u32,
    invalid: f32,
    pad: u32,
}

/// `n` rows of `classes` values.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Rows {
    pub n: u32,
    pub classes: u32,
}

impl Rows {
    /// Invocations per row: the smallest power of two covering the classes, from 32
    /// (a subgroup on most GPUs) to 256. It depends on the shape only, so the order of
    /// the row sums, and hence the result, is the same on every adapter.
    pub fn workgroup_size(&self) -> u32 {
        self.classes.next_power_of_two().clamp(32, 256)
    }

    /// The uniform; an invalid label's row loss is NaN.
    pub fn params(&self) -> Params {
        Params {
            n: self.n,
            classes: self.classes,
            invalid: f32::NAN,
            pad: 0,
        }
    }

    /// Validates the shape for `kernel`; returns `n · classes`.
    pub fn check(&self, kernel: &str) -> Result<u64> {
        ensure(self.n > 0 && self.classes > 0, kernel, || {
            format!(
                "n and classes must be positive, got n {} classes {}",
                self.n, self.classes
            )
        })?;
        let elems = self.n as u64 * self.classes as u64;
        to_u32(elems, kernel, "n * classes")?;
        Ok(elems)
    }

    /// The `finish` pass of `shader`: the mean of `row_loss` into `loss[0]`, and the
    /// top-1 / top-5 hits from `label_rank` into `correct[0..2]`.
    pub fn finish(
        &self,
        gpu: &Gpu,
        shader: Shader,
        row_loss: &wgpu::Buffer,
        label_rank: &wgpu::Buffer,
        loss: &wgpu::Buffer,
        correct: &wgpu::Buffer,
    ) -> Result<Dispatch> {
        let n = self.n as u64;
        DispatchBuilder::new(gpu, shader, "finish")
            .constant("WG", FINISH_WG)
            .params(&self.params())
            .read("row_loss", row_loss, n)
            .read("label_rank", label_rank, n)
            .write("loss", loss, 1)
            .write("correct", correct, 2)
            .build([1, 1, 1])
    }
}
