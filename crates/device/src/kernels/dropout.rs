//! Inverted dropout with a counter-based mask: `y = x · keep / (1 − p)` where
//! `keep = uniform(seed, i) ≥ p`. Shader: `shaders/dropout.wgsl`.
//!
//! ## Design
//!
//! The mask is a hash of `(seed, element index)` ([`keep_mask`]'s formula, implemented
//! identically in WGSL and in Rust), so nothing is stored between forward and backward:
//! the backward `dx = dy · keep / (1 − p)` is the same kernel applied to `dy` with the same
//! seed. Every dropout layer and every training step needs its own seed; the seed lives in
//! the uniform, so an executor can reseed a built [`Dispatch`] by writing
//! [`Dropout::uniform_bytes`] to [`Dispatch::uniform`] instead of rebuilding it.
//!
//! [`keep_mask`]: crate::reference::dropout::keep_mask

use crate::error::Result;
use crate::gpu::Gpu;
use crate::kernels::ensure;
use crate::pipeline::{Dispatch, DispatchBuilder, grid_1d};
use crate::shaders;

const KERNEL: &str = "dropout";
/// Invocations per workgroup (the shader's `WG` override).
const WG: u32 = 256;

/// Dropout of `count` elements (any shape, flattened) with drop probability `p`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Dropout {
    pub count: u32,
    /// Probability of zeroing an element, in `[0, 1)`.
    pub p: f32,
    /// Selects the mask; forward and backward of one step must use the same seed.
    pub seed: u32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    count: u32,
    seed: u32,
    p: f32,
    scale: f32,
}

impl Dropout {
    pub fn new(count: u32, p: f32, seed: u32) -> Self {
        Self { count, p, seed }
    }

    /// The factor applied to kept elements, `1 / (1 − p)`, rounded to f32 once (the
    /// shader and the reference both multiply by this exact value).
    pub fn scale(&self) -> f32 {
        1.0 / (1.0 - self.p)
    }

    /// Validates `count > 0` and `0 ≤ p < 1`.
    pub fn check(&self) -> Result<()> {
        ensure(self.count > 0, KERNEL, || {
            "count must be positive, got 0".to_owned()
        })?;
        ensure((0.0..1.0).contains(&self.p), KERNEL, || {
            format!("drop probability p must be in [0, 1), got {}", self.p)
        })
    }

    fn params(&self) -> Params {
        Params {
            count: self.count,
            seed: self.seed,
            p: self.p,
            scale: self.scale(),
        }
    }

    /// The 16 bytes of the kernel's uniform for these settings: write them to a built
    /// dispatch's [`Dispatch::uniform`] to change the seed (or `p`) without rebuilding it.
    /// The `count` must stay the one the dispatch was built with.
    pub fn uniform_bytes(&self) -> [u8; 16] {
        bytemuck::cast(self.params())
    }

    /// Forward: reads `x [count]`, writes `y [count]`.
    pub fn prepare_forward(
        &self,
        gpu: &Gpu,
        x: &wgpu::Buffer,
        y: &wgpu::Buffer,
    ) -> Result<Dispatch> {
        self.prepare_named(gpu, ("x", x), ("y", y))
    }

    /// Backward: `dx = dy · keep / (1 − p)`, the mask regenerated from the seed; the same
    /// kernel as the forward, with `dy` in and `dx` out.
    pub fn prepare_backward(
        &self,
        gpu: &Gpu,
        dy: &wgpu::Buffer,
        dx: &wgpu::Buffer,
    ) -> Result<Dispatch> {
        self.prepare_named(gpu, ("dy", dy), ("dx", dx))
    }

    /// The one dropout dispatch, its bindings named as the caller knows them (for errors).
    fn prepare_named(
        &self,
        gpu: &Gpu,
        (src_name, src): (&'static str, &wgpu::Buffer),
        (dst_name, dst): (&'static str, &wgpu::Buffer),
    ) -> Result<Dispatch> {
        self.check()?;
        let len = self.count as u64;
        let groups = grid_1d(len, WG, gpu.limits().max_compute_workgroups_per_dimension);
        DispatchBuilder::new(gpu, shaders::DROPOUT, "dropout")
            .constant("WG", WG)
            .params(&self.params())
            .read(src_name, src, len)
            .write(dst_name, dst, len)
            .build(groups)
    }
}
