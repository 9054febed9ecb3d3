//! Deterministic reductions of a vector to one scalar: [`Reduce`] with
//! [`ReduceOp::Sum`], [`ReduceOp::Mean`] or [`ReduceOp::SumOfSquares`]. Two levels:
//! workgroup partial sums (a grid-stride loop, then a shared-memory tree), then one
//! workgroup over the partials; the order is fixed by the length alone, so results are
//! bitwise reproducible. Shader: `shaders/reduce.wgsl`.

use crate::error::{DeviceError, Result};
use crate::gpu::Gpu;
use crate::kernels::ensure;
use crate::pipeline::{Dispatch, DispatchBuilder, grid_1d};
use crate::shaders;

const KERNEL: &str = "reduce";
/// Invocations per workgroup (the shader's `WG`).
const WG: u32 = 256;
/// Elements each invocation of the first pass sums at least, before more workgroups are
/// added.
const MIN_PER_THREAD: u32 = 4;
/// Most workgroups of the first pass: enough to fill a large GPU, few enough that the
/// second pass (one workgroup) stays short.
const MAX_GROUPS: u32 = 1024;

/// What [`Reduce`] computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReduceOp {
    /// `Σ x[i]`
    Sum,
    /// `Σ x[i] / count`
    Mean,
    /// `Σ x[i]²` (the squared L2 norm)
    SumOfSquares,
}

/// Reduces `x[0..count]` to `out[out_index]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reduce {
    pub op: ReduceOp,
    pub count: u32,
    /// Where the scalar lands in `out` (several reductions can fill one buffer).
    pub out_index: u32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    count: u32,
    groups: u32,
    divisor: f32,
    out_offset: u32,
}

impl Reduce {
    pub fn new(op: ReduceOp, count: u32) -> Self {
        Self {
            op,
            count,
            out_index: 0,
        }
    }

    pub fn sum(count: u32) -> Self {
        Self::new(ReduceOp::Sum, count)
    }

    pub fn mean(count: u32) -> Self {
        Self::new(ReduceOp::Mean, count)
    }

    pub fn sum_of_squares(count: u32) -> Self {
        Self::new(ReduceOp::SumOfSquares, count)
    }

    /// Writes the result to `out[index]` instead of `out[0]`.
    pub fn into_slot(mut self, index: u32) -> Self {
        self.out_index = index;
        self
    }

    /// Workgroups (and partial sums) of the first pass; 1 means a single pass.
    pub fn groups(&self) -> u32 {
        self.count
            .div_ceil(WG * MIN_PER_THREAD)
            .clamp(1, MAX_GROUPS)
    }

    /// Elements of the scratch buffer for the partial sums, or 0 when one pass suffices.
    pub fn scratch_elems(&self) -> u64 {
        if self.groups() > 1 {
            self.groups() as u64
        } else {
            0
        }
    }

    fn divisor(&self) -> f32 {
        if self.op == ReduceOp::Mean {
            self.count as f32
        } else {
            1.0
        }
    }

    fn pass(
        &self,
        gpu: &Gpu,
        params: Params,
        square: bool,
        x: &wgpu::Buffer,
        out: &wgpu::Buffer,
    ) -> Result<Dispatch> {
        let max = gpu.limits().max_compute_workgroups_per_dimension;
        DispatchBuilder::new(gpu, shaders::REDUCE, "reduce")
            .constant("WG", WG)
            .flag("SQUARE", square)
            .params(&params)
            .read("x", x, params.count as u64)
            .write("out", out, params.out_offset as u64 + params.groups as u64)
            .build(grid_1d(params.groups as u64 * WG as u64, WG, max))
    }

    /// Binds `x` (`count` elements), the `scratch` for the partial sums (needed when
    /// [`scratch_elems`](Self::scratch_elems) is non-zero) and `out` (the scalar lands in
    /// `out[out_index]`). Returns the dispatches in recording order.
    pub fn prepare(
        &self,
        gpu: &Gpu,
        x: &wgpu::Buffer,
        scratch: Option<&wgpu::Buffer>,
        out: &wgpu::Buffer,
    ) -> Result<Vec<Dispatch>> {
        ensure(self.count > 0, KERNEL, || {
            format!("{:?} of an empty vector: count must be positive", self.op)
        })?;
        let square = self.op == ReduceOp::SumOfSquares;
        let groups = self.groups();
        let first = Params {
            count: self.count,
            groups,
            divisor: 1.0,
            out_offset: 0,
        };
        if groups == 1 {
            let single = Params {
                divisor: self.divisor(),
                out_offset: self.out_index,
                ..first
            };
            return Ok(vec![self.pass(gpu, single, square, x, out)?]);
        }
        let scratch = scratch.ok_or_else(|| DeviceError::InvalidParams {
            kernel: KERNEL.to_owned(),
            message: format!(
                "{:?} of {} elements runs in two passes and needs a scratch buffer of {groups} \
                 elements, but none was given",
                self.op, self.count
            ),
        })?;
        let second = Params {
            count: groups,
            groups: 1,
            divisor: self.divisor(),
            out_offset: self.out_index,
        };
        Ok(vec![
            self.pass(gpu, first, square, x, scratch)?,
            self.pass(gpu, second, false, scratch, out)?,
        ])
    }
}
