//! Probe kernels for the roofline: peak FMA rate (registers only) and memory bandwidth
//! (a large copy). Shader: `shaders/probe.wgsl`. Used by `cargo xtask bench`.

use crate::error::Result;
use crate::gpu::Gpu;
use crate::kernels::ensure;
use crate::pipeline::{Dispatch, DispatchBuilder, grid_1d};
use crate::shaders;

const GROUP: u32 = 64;
/// FMAs per invocation and round: 8 chains of vec4.
const FMAS_PER_ROUND: u64 = 32;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    count: u32,
    iters: u32,
    pad: [u32; 2],
}

/// `invocations` threads each running `iters` rounds of 32 independent FMAs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FmaPeak {
    pub invocations: u32,
    pub iters: u32,
}

impl FmaPeak {
    /// Floating-point operations per dispatch (an FMA counts as two).
    pub fn flops(&self) -> f64 {
        2.0 * (self.invocations as u64 * self.iters as u64 * FMAS_PER_ROUND) as f64
    }

    /// Binds `out`, one vec4<f32> (16 bytes) per invocation.
    pub fn prepare(&self, gpu: &Gpu, out: &wgpu::Buffer) -> Result<Dispatch> {
        ensure(
            self.invocations > 0 && self.iters > 0,
            "probe.fma_peak",
            || {
                format!(
                    "invocations {} and iters {} must be positive",
                    self.invocations, self.iters
                )
            },
        )?;
        let params = Params {
            count: self.invocations,
            iters: self.iters,
            pad: [0; 2],
        };
        let groups = grid_1d(
            self.invocations as u64,
            GROUP,
            gpu.limits().max_compute_workgroups_per_dimension,
        );
        DispatchBuilder::new(gpu, shaders::PROBE, "fma_peak")
            .params(&params)
            .read_opt("src", None, 0)
            .write("out", out, self.invocations as u64 * 4)
            .build(groups)
    }
}

/// Copies `vec4s` vec4<f32> values from one buffer to another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Copy {
    pub vec4s: u32,
}

impl Copy {
    /// Bytes moved per dispatch: each element read once and written once.
    pub fn bytes(&self) -> f64 {
        2.0 * 16.0 * self.vec4s as f64
    }

    /// Binds `src` and `dst`, each at least `16 · vec4s` bytes.
    pub fn prepare(&self, gpu: &Gpu, src: &wgpu::Buffer, dst: &wgpu::Buffer) -> Result<Dispatch> {
        ensure(self.vec4s > 0, "probe.copy", || {
            "vec4s must be positive".to_owned()
        })?;
        let params = Params {
            count: self.vec4s,
            iters: 0,
            pad: [0; 2],
        };
        let groups = grid_1d(
            self.vec4s as u64,
            GROUP,
            gpu.limits().max_compute_workgroups_per_dimension,
        );
        let elems = self.vec4s as u64 * 4;
        DispatchBuilder::new(gpu, shaders::PROBE, "copy")
            .params(&params)
            .read("src", src, elems)
            .write("dst", dst, elems)
            .build(groups)
    }
}
