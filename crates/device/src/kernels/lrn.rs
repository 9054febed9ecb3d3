//! Local response normalisation across channels (AlexNet's LRN) over NHWC activations,
//! forward and backward, with PyTorch's semantics. Shader: `shaders/lrn.wgsl`.
//!
//! ```text
//! s_c = k + alpha / size · Σ_{c' ∈ win(c)} a_{c'}²,   b_c = a_c · s_c^(−beta)
//! win(c) = [c − size/2, c + (size−1)/2] ∩ [0, C)
//! ```
//!
//! PyTorch's `LocalResponseNorm` divides `alpha` by `size`; the 2012 AlexNet paper does
//! not (its `alpha = 1e-4` multiplies the plain sum). [`Lrn::alexnet`] uses PyTorch's
//! convention, so its `alpha = 1e-4` is the paper's `alpha = 2e-5`.
//!
//! ## Design
//!
//! One invocation per element, channels fastest (coalesced in NHWC). The backward needs
//! the scales `s_j` of the neighbouring channels; it recomputes them from `x` (a sliding
//! window sum over one pixel's cached channels) instead of saving them in the forward,
//! so the forward writes only `y` and no scale tensor is kept alive until the backward.

use crate::error::Result;
use crate::gpu::Gpu;
use crate::kernels::{ensure, to_u32};
use crate::pipeline::{Dispatch, DispatchBuilder, grid_1d};
use crate::shaders;

const KERNEL: &str = "lrn";
/// Invocations per workgroup (the shader's `WG` override).
const WG: u32 = 256;

/// Cross-channel LRN of `x [rows, c]`, where `rows = N · H · W` (NHWC).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Lrn {
    /// Pixels: `N · H · W`.
    pub rows: u32,
    /// Channels C.
    pub c: u32,
    /// Channels in the window (may exceed C: the window is clipped).
    pub size: u32,
    /// Scale of the sum of squares, divided by `size` (PyTorch's convention).
    pub alpha: f32,
    pub beta: f32,
    /// Additive constant; must be positive so that the scale never vanishes.
    pub k: f32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    c: u32,
    size: u32,
    count: u32,
    alpha: f32,
    beta: f32,
    k: f32,
    pad: u32,
}

impl Lrn {
    /// LRN with explicit settings.
    pub fn new(rows: u32, c: u32, size: u32, alpha: f32, beta: f32, k: f32) -> Self {
        Self {
            rows,
            c,
            size,
            alpha,
            beta,
            k,
        }
    }

    /// AlexNet's settings in PyTorch's convention: size 5, alpha 1e-4, beta 0.75, k 2.
    pub fn alexnet(rows: u32, c: u32) -> Self {
        Self::new(rows, c, 5, 1e-4, 0.75, 2.0)
    }

    /// Elements of every tensor involved: `rows · c`.
    pub fn len(&self) -> u64 {
        self.rows as u64 * self.c as u64
    }

    /// True when the tensor is empty (never valid for a dispatch).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Validates sizes and settings.
    pub fn check(&self) -> Result<()> {
        ensure(self.rows > 0 && self.c > 0 && self.size > 0, KERNEL, || {
            format!(
                "rows, channels and size must be positive, got rows {} c {} size {}",
                self.rows, self.c, self.size
            )
        })?;
        ensure(self.k > 0.0 && self.k.is_finite(), KERNEL, || {
            format!(
                "k must be positive and finite (it keeps the scale above 0), got {}",
                self.k
            )
        })?;
        ensure(self.alpha >= 0.0 && self.alpha.is_finite(), KERNEL, || {
            format!("alpha must be non-negative and finite, got {}", self.alpha)
        })?;
        ensure(self.beta.is_finite(), KERNEL, || {
            format!("beta must be finite, got {}", self.beta)
        })?;
        to_u32(self.len(), KERNEL, "elements rows*c").map(|_| ())
    }

    fn params(&self) -> Params {
        Params {
            rows: self.rows,
            c: self.c,
            size: self.size,
            count: self.len() as u32,
            alpha: self.alpha,
            beta: self.beta,
            k: self.k,
            pad: 0,
        }
    }

    /// Forward: reads `x [rows, c]`, writes `y [rows, c]`.
    pub fn prepare_forward(
        &self,
        gpu: &Gpu,
        x: &wgpu::Buffer,
        y: &wgpu::Buffer,
    ) -> Result<Dispatch> {
        self.check()?;
        let len = self.len();
        let groups = grid_1d(len, WG, gpu.limits().max_compute_workgroups_per_dimension);
        DispatchBuilder::new(gpu, shaders::LRN, "lrn_forward")
            .constant("WG", WG)
            .params(&self.params())
            .read("x", x, len)
            .write("y", y, len)
            .build(groups)
    }

    /// Backward: reads the forward's input `x` and `dy`, overwrites `dx` (all `[rows, c]`).
    pub fn prepare_backward(
        &self,
        gpu: &Gpu,
        x: &wgpu::Buffer,
        dy: &wgpu::Buffer,
        dx: &wgpu::Buffer,
    ) -> Result<Dispatch> {
        self.check()?;
        let len = self.len();
        let groups = grid_1d(len, WG, gpu.limits().max_compute_workgroups_per_dimension);
        DispatchBuilder::new(gpu, shaders::LRN, "lrn_backward")
            .constant("WG", WG)
            .params(&self.params())
            .read("x", x, len)
            .read("dy", dy, len)
            .write("dx", dx, len)
            .build(groups)
    }
}
