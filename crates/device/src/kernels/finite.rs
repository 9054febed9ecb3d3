//! Non-finite detection: [`CountNonFinite`] adds the number of NaN and ±Inf elements of
//! a tensor to one slot of a small u32 `counts` buffer, after [`ClearCounts`] zeroed it.
//! A training step checks every gradient this way inside its own submission and reads
//! the counts back with the loss, so a fault costs no extra synchronisation and names
//! the offending tensor. Shader: `shaders/finite.wgsl`.

use crate::error::Result;
use crate::gpu::Gpu;
use crate::kernels::ensure;
use crate::pipeline::{Dispatch, DispatchBuilder, grid_1d};
use crate::shaders;

const KERNEL: &str = "finite";
/// Invocations per workgroup (the shader's `WG`).
const WG: u32 = 256;
/// Elements each invocation counts at least before more workgroups are added.
const MIN_PER_THREAD: u32 = 4;
/// Most workgroups: enough to fill a large GPU; each adds one atomic.
const MAX_GROUPS: u32 = 1024;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    count: u32,
    groups: u32,
    slot: u32,
    pad: u32,
}

/// Sets `counts[0..slots]` to zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClearCounts {
    pub slots: u32,
}

impl ClearCounts {
    /// Binds `counts` (`slots` u32 elements).
    pub fn prepare(&self, gpu: &Gpu, counts: &wgpu::Buffer) -> Result<Dispatch> {
        ensure(self.slots > 0, KERNEL, || {
            "clearing counts needs at least one slot".into()
        })?;
        let params = Params {
            count: self.slots,
            groups: 0,
            slot: 0,
            pad: 0,
        };
        let max = gpu.limits().max_compute_workgroups_per_dimension;
        DispatchBuilder::new(gpu, shaders::FINITE, "clear_counts")
            .constant("WG", WG)
            .params(&params)
            .write("counts", counts, self.slots as u64)
            .build(grid_1d(self.slots as u64, WG, max))
    }
}

/// `counts[slot] += |{ i < count : x[i] is NaN or ±Inf }|`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CountNonFinite {
    pub count: u32,
    /// Where the count is added in `counts`.
    pub slot: u32,
}

impl CountNonFinite {
    /// Workgroups of the dispatch (each adds its count with one atomic).
    pub fn groups(&self) -> u32 {
        self.count
            .div_ceil(WG * MIN_PER_THREAD)
            .clamp(1, MAX_GROUPS)
    }

    /// Binds `x` (`count` f32 elements, read as raw bits) and `counts` (at least
    /// `slot + 1` u32 elements, zeroed beforehand by [`ClearCounts`]).
    pub fn prepare(&self, gpu: &Gpu, x: &wgpu::Buffer, counts: &wgpu::Buffer) -> Result<Dispatch> {
        ensure(self.count > 0, KERNEL, || {
            format!(
                "cannot check an empty tensor (count 0) into slot {}",
                self.slot
            )
        })?;
        let groups = self.groups();
        let params = Params {
            count: self.count,
            groups,
            slot: self.slot,
            pad: 0,
        };
        let max = gpu.limits().max_compute_workgroups_per_dimension;
        DispatchBuilder::new(gpu, shaders::FINITE, "count_nonfinite")
            .constant("WG", WG)
            .params(&params)
            .read("x", x, self.count as u64)
            .write("counts", counts, self.slot as u64 + 1)
            .build(grid_1d(groups as u64 * WG as u64, WG, max))
    }
}
