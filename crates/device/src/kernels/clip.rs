//! Gradient clipping by global norm (`torch.nn.utils.clip_grad_norm_`): per-tensor sums
//! of squares from [`Reduce`](super::reduce::Reduce) into slots of one `norms` buffer,
//! then [`ClipFactor`] and one [`ClipScale`] per gradient. Shader: `shaders/clip.wgsl`.

use crate::error::Result;
use crate::gpu::Gpu;
use crate::kernels::ensure;
use crate::pipeline::{Dispatch, DispatchBuilder, grid_1d};
use crate::shaders;

const KERNEL: &str = "clip";
const WG: u32 = 256;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    count: u32,
    tensors: u32,
    max_norm: f32,
    pad: u32,
}

/// Writes `norms[tensors] = min(1, max_norm / (sqrt(Σ norms[0..tensors]) + 1e-6))`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClipFactor {
    pub tensors: u32,
    pub max_norm: f32,
}

impl ClipFactor {
    /// Binds `norms` (`tensors + 1` elements: the sums of squares, then the factor).
    pub fn prepare(&self, gpu: &Gpu, norms: &wgpu::Buffer) -> Result<Dispatch> {
        ensure(self.tensors > 0, KERNEL, || {
            "clipping needs at least one tensor".into()
        })?;
        ensure(
            self.max_norm > 0.0 && self.max_norm.is_finite(),
            KERNEL,
            || {
                format!(
                    "max_norm must be positive and finite, got {}",
                    self.max_norm
                )
            },
        )?;
        let params = Params {
            count: 0,
            tensors: self.tensors,
            max_norm: self.max_norm,
            pad: 0,
        };
        DispatchBuilder::new(gpu, shaders::CLIP, "clip_factor")
            .params(&params)
            .write("norms", norms, self.tensors as u64 + 1)
            .build([1, 1, 1])
    }
}

/// `grad *= norms[tensors]` (the factor written by [`ClipFactor`]), in place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClipScale {
    pub count: u32,
    pub tensors: u32,
}

impl ClipScale {
    /// Binds `norms` (read) and `grad` (`count` elements, scaled in place).
    pub fn prepare(
        &self,
        gpu: &Gpu,
        norms: &wgpu::Buffer,
        grad: &wgpu::Buffer,
    ) -> Result<Dispatch> {
        ensure(self.count > 0, KERNEL, || {
            "cannot clip an empty gradient".into()
        })?;
        let params = Params {
            count: self.count,
            tensors: self.tensors,
            max_norm: 0.0,
            pad: 0,
        };
        let max = gpu.limits().max_compute_workgroups_per_dimension;
        DispatchBuilder::new(gpu, shaders::CLIP, "clip_scale")
            .constant("WG", WG)
            .params(&params)
            .read("norms", norms, self.tensors as u64 + 1)
            .write("grad", grad, self.count as u64)
            .build(grid_1d(self.count as u64, WG, max))
    }
}
