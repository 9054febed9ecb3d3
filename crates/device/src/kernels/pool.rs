//! Pooling over NHWC activations: 2-D max and average pooling ([`Pool2d`], forward and
//! backward) and global average pooling ([`GlobalAvgPool`]). Shader: `shaders/pool.wgsl`.
//!
//! ## Design
//!
//! One invocation per element written, channels fastest, so neighbouring invocations
//! read and write neighbouring addresses. Max pooling's forward also writes an `argmax`
//! tensor (`u32`, shaped like the output) holding the flat index `ih * W + iw` of the
//! chosen cell within its `(n, c)` plane; the backward gathers: every input element sums
//! `dy` over the windows covering it whose argmax is that element. No atomics, so results
//! are deterministic. When `c % 4 == 0` the 2-D pools use `*_vec4` entries instead: a 3-D
//! grid (channel vec4s × columns × n·rows) whose row and image come from the workgroup id,
//! so no invocation decodes its index with integer divisions (scalarised per lane on CPU
//! drivers), and every load and store moves 4 channels.

use crate::error::Result;
use crate::gpu::Gpu;
use crate::kernels::{ensure, to_u32};
use crate::pipeline::{Dispatch, DispatchBuilder, grid_1d};
use crate::shaders;

const KERNEL: &str = "pool";
/// Invocations per workgroup (the shader's `WG` override).
const WG: u32 = 256;

/// Which reduction a [`Pool2d`] applies over each window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolKind {
    /// The largest in-bounds value; padding never wins (it acts as `-inf`).
    Max,
    /// The mean; see [`Pool2d::count_include_pad`].
    Avg,
}

/// 2-D pooling of `x [n, h, w, c]` into `y [n, P, Q, c]` with windows `r × s`.
///
/// `P = (h + 2·pad_h − r) / stride_h + 1` and `Q = (w + 2·pad_w − s) / stride_w + 1`
/// (floor: PyTorch's `ceil_mode=False`). As in PyTorch, padding may be at most half the
/// window, so every window covers at least one real cell. Overlapping windows (stride
/// smaller than the window, as AlexNet's 3×3 stride 2) are supported.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pool2d {
    pub n: u32,
    pub h: u32,
    pub w: u32,
    pub c: u32,
    /// Window height.
    pub r: u32,
    /// Window width.
    pub s: u32,
    pub stride_h: u32,
    pub stride_w: u32,
    pub pad_h: u32,
    pub pad_w: u32,
    pub kind: PoolKind,
    /// Average pooling only: divide by `r · s` (true, PyTorch's default) or by the
    /// number of in-bounds cells of each window (false).
    pub count_include_pad: bool,
}

/// The shader's uniform (shared by every entry point of `pool.wgsl`).
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    h: u32,
    w: u32,
    c: u32,
    p: u32,
    q: u32,
    r: u32,
    s: u32,
    stride_h: u32,
    stride_w: u32,
    pad_h: u32,
    pad_w: u32,
    count: u32,
    pad: [u32; 3],
}

impl Pool2d {
    /// Max pooling with a square `window`, `stride` and `pad`.
    pub fn max(n: u32, h: u32, w: u32, c: u32, window: u32, stride: u32, pad: u32) -> Self {
        Self {
            n,
            h,
            w,
            c,
            r: window,
            s: window,
            stride_h: stride,
            stride_w: stride,
            pad_h: pad,
            pad_w: pad,
            kind: PoolKind::Max,
            count_include_pad: true,
        }
    }

    /// Average pooling with a square `window`, `stride` and `pad`, dividing by `r · s`.
    pub fn avg(n: u32, h: u32, w: u32, c: u32, window: u32, stride: u32, pad: u32) -> Self {
        Self {
            kind: PoolKind::Avg,
            ..Self::max(n, h, w, c, window, stride, pad)
        }
    }

    /// Output height P (0 if the window does not fit; [`Pool2d::check`] rejects that).
    pub fn out_h(&self) -> u32 {
        out_size(self.h, self.r, self.stride_h, self.pad_h)
    }

    /// Output width Q.
    pub fn out_w(&self) -> u32 {
        out_size(self.w, self.s, self.stride_w, self.pad_w)
    }

    /// Elements of `x` (and `dx`): `n · h · w · c`.
    pub fn input_len(&self) -> u64 {
        self.n as u64 * self.h as u64 * self.w as u64 * self.c as u64
    }

    /// Elements of `y`, `dy` and `argmax`: `n · P · Q · c`.
    pub fn output_len(&self) -> u64 {
        self.n as u64 * self.out_h() as u64 * self.out_w() as u64 * self.c as u64
    }

    /// Validates the shape: positive sizes and strides, padding at most half the window,
    /// a window that fits the padded input.
    pub fn check(&self) -> Result<()> {
        let sizes = [
            self.n,
            self.h,
            self.w,
            self.c,
            self.r,
            self.s,
            self.stride_h,
            self.stride_w,
        ];
        ensure(sizes.iter().all(|&v| v > 0), KERNEL, || {
            format!("every size, window and stride must be positive, got {self:?}")
        })?;
        for (axis, pad, window) in [
            ("height", self.pad_h, self.r),
            ("width", self.pad_w, self.s),
        ] {
            ensure(pad <= window / 2, KERNEL, || {
                format!(
                    "padding {pad} exceeds half the window {axis} {window}; pad must be at most \
                     window / 2 (PyTorch's rule)"
                )
            })?;
        }
        for (axis, size, pad, window) in [
            ("height", self.h, self.pad_h, self.r),
            ("width", self.w, self.pad_w, self.s),
        ] {
            ensure(
                size as u64 + 2 * pad as u64 >= window as u64,
                KERNEL,
                || {
                    format!(
                        "window {axis} {window} exceeds the padded input {axis} {size} + 2 x {pad}: \
                     the output would be empty"
                    )
                },
            )?;
        }
        to_u32(self.input_len(), KERNEL, "input elements n*h*w*c")?;
        to_u32(self.output_len(), KERNEL, "output elements n*P*Q*c")?;
        Ok(())
    }

    fn params(&self, count: u64) -> Params {
        Params {
            n: self.n,
            h: self.h,
            w: self.w,
            c: self.c,
            p: self.out_h(),
            q: self.out_w(),
            r: self.r,
            s: self.s,
            stride_h: self.stride_h,
            stride_w: self.stride_w,
            pad_h: self.pad_h,
            pad_w: self.pad_w,
            count: count as u32,
            pad: [0; 3],
        }
    }

    /// Workgroup shape and grid of the `*_vec4` entries, which write a `[n, rows, cols, c]`
    /// tensor with one invocation per 4 channels of a pixel (x: channel vec4s, y: columns,
    /// z: n·rows + row); `None` (use the 1-D entries) unless `c % 4 == 0` and the grid
    /// fits the per-dimension limit.
    /// Whether the windows cover the input exactly once (stride = window, no padding,
    /// nothing left over): max pooling's backward then scatters per window.
    fn tiles_exactly(&self) -> bool {
        self.stride_h == self.r
            && self.stride_w == self.s
            && self.pad_h == 0
            && self.pad_w == 0
            && self.out_h() * self.r == self.h
            && self.out_w() * self.s == self.w
    }

    fn grid_vec4(&self, gpu: &Gpu, rows: u32, cols: u32) -> Option<([u32; 2], [u32; 3])> {
        let max = gpu.limits().max_compute_workgroups_per_dimension as u64;
        let vecs = self.c / 4;
        if self.c % 4 != 0 {
            return None;
        }
        // Channel vec4s across (up to a whole workgroup of 64), columns down the rest.
        let wg_x = vecs.next_power_of_two().min(64);
        let wg_y = 64 / wg_x;
        let grid = [
            vecs.div_ceil(wg_x) as u64,
            cols.div_ceil(wg_y) as u64,
            self.n as u64 * rows as u64,
        ];
        if grid.iter().any(|&g| g > max) {
            return None;
        }
        Some(([wg_x, wg_y], grid.map(|g| g as u32)))
    }

    fn check_argmax(&self, argmax: Option<&wgpu::Buffer>) -> Result<()> {
        let want = self.kind == PoolKind::Max;
        ensure(want == argmax.is_some(), KERNEL, || {
            if want {
                "max pooling needs an argmax buffer, but none was given".to_owned()
            } else {
                "average pooling takes no argmax buffer, but one was given".to_owned()
            }
        })
    }

    /// Forward: binds `x [n, h, w, c]` and writes `y [n, P, Q, c]`; max pooling also
    /// writes `argmax [n, P, Q, c]` (u32, `ih * w + iw`), which average pooling does not
    /// take (pass `None`).
    pub fn prepare_forward(
        &self,
        gpu: &Gpu,
        x: &wgpu::Buffer,
        y: &wgpu::Buffer,
        argmax: Option<&wgpu::Buffer>,
    ) -> Result<Dispatch> {
        self.check()?;
        self.check_argmax(argmax)?;
        let (len_x, len_y) = (self.input_len(), self.output_len());
        if let Some((wg, groups)) = self.grid_vec4(gpu, self.out_h(), self.out_w()) {
            let builder = match argmax {
                Some(argmax) => DispatchBuilder::new(gpu, shaders::POOL, "max_forward_vec4")
                    .params(&self.params(len_y))
                    .read("x", x, len_x)
                    .write("y", y, len_y)
                    .write("argmax", argmax, len_y),
                None => DispatchBuilder::new(gpu, shaders::POOL, "avg_forward_vec4")
                    .flag("COUNT_INCLUDE_PAD", self.count_include_pad)
                    .params(&self.params(len_y))
                    .read("x", x, len_x)
                    .write("y", y, len_y),
            };
            return builder
                .constant("WG_X", wg[0])
                .constant("WG_Y", wg[1])
                .build(groups);
        }
        let groups = grid_1d(len_y, WG, gpu.limits().max_compute_workgroups_per_dimension);
        let builder = match argmax {
            Some(argmax) => DispatchBuilder::new(gpu, shaders::POOL, "max_forward")
                .params(&self.params(len_y))
                .read("x", x, len_x)
                .write("y", y, len_y)
                .write("argmax", argmax, len_y),
            None => DispatchBuilder::new(gpu, shaders::POOL, "avg_forward")
                .flag("COUNT_INCLUDE_PAD", self.count_include_pad)
                .params(&self.params(len_y))
                .read("x", x, len_x)
                .write("y", y, len_y),
        };
        builder.constant("WG", WG).build(groups)
    }

    /// Backward: binds `dy [n, P, Q, c]` (and, for max pooling, the forward's `argmax`)
    /// and overwrites `dx [n, h, w, c]`.
    pub fn prepare_backward(
        &self,
        gpu: &Gpu,
        dy: &wgpu::Buffer,
        argmax: Option<&wgpu::Buffer>,
        dx: &wgpu::Buffer,
    ) -> Result<Dispatch> {
        self.check()?;
        self.check_argmax(argmax)?;
        let (len_x, len_y) = (self.input_len(), self.output_len());
        if let (Some(argmax), true) = (argmax, self.tiles_exactly()) {
            if let Some((wg, groups)) = self.grid_vec4(gpu, self.out_h(), self.out_w()) {
                return DispatchBuilder::new(gpu, shaders::POOL, "max_backward_tiles_vec4")
                    .params(&self.params(len_x))
                    .read("dy", dy, len_y)
                    .read("argmax", argmax, len_y)
                    .write("dx", dx, len_x)
                    .constant("WG_X", wg[0])
                    .constant("WG_Y", wg[1])
                    .build(groups);
            }
        }
        if let Some((wg, groups)) = self.grid_vec4(gpu, self.h, self.w) {
            let builder = match argmax {
                Some(argmax) => DispatchBuilder::new(gpu, shaders::POOL, "max_backward_vec4")
                    .params(&self.params(len_x))
                    .read("dy", dy, len_y)
                    .read("argmax", argmax, len_y)
                    .write("dx", dx, len_x),
                None => DispatchBuilder::new(gpu, shaders::POOL, "avg_backward_vec4")
                    .flag("COUNT_INCLUDE_PAD", self.count_include_pad)
                    .params(&self.params(len_x))
                    .read("dy", dy, len_y)
                    .write("dx", dx, len_x),
            };
            return builder
                .constant("WG_X", wg[0])
                .constant("WG_Y", wg[1])
                .build(groups);
        }
        let groups = grid_1d(len_x, WG, gpu.limits().max_compute_workgroups_per_dimension);
        let builder = match argmax {
            Some(argmax) => DispatchBuilder::new(gpu, shaders::POOL, "max_backward")
                .params(&self.params(len_x))
                .read("dy", dy, len_y)
                .read("argmax", argmax, len_y)
                .write("dx", dx, len_x),
            None => DispatchBuilder::new(gpu, shaders::POOL, "avg_backward")
                .flag("COUNT_INCLUDE_PAD", self.count_include_pad)
                .params(&self.params(len_x))
                .read("dy", dy, len_y)
                .write("dx", dx, len_x),
        };
        builder.constant("WG", WG).build(groups)
    }
}

fn out_size(size: u32, window: u32, stride: u32, pad: u32) -> u32 {
    let padded = size as u64 + 2 * pad as u64;
    if stride == 0 || padded < window as u64 {
        return 0;
    }
    ((padded - window as u64) / stride as u64 + 1) as u32
}

/// Global average pooling `x [n, h, w, c] → y [n, c]`, the mean over all `h · w` pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GlobalAvgPool {
    pub n: u32,
    pub h: u32,
    pub w: u32,
    pub c: u32,
}

impl GlobalAvgPool {
    pub fn new(n: u32, h: u32, w: u32, c: u32) -> Self {
        Self { n, h, w, c }
    }

    /// Elements of `x` (and `dx`).
    pub fn input_len(&self) -> u64 {
        self.n as u64 * self.h as u64 * self.w as u64 * self.c as u64
    }

    /// Elements of `y` (and `dy`): `n · c`.
    pub fn output_len(&self) -> u64 {
        self.n as u64 * self.c as u64
    }

    fn params(&self, count: u64) -> Result<Params> {
        ensure(
            self.n > 0 && self.h > 0 && self.w > 0 && self.c > 0,
            KERNEL,
            || format!("every size must be positive, got {self:?}"),
        )?;
        to_u32(self.input_len(), KERNEL, "input elements n*h*w*c")?;
        let (n, h, w, c) = (self.n, self.h, self.w, self.c);
        let count = count as u32;
        Ok(Params {
            n,
            h,
            w,
            c,
            p: 1,
            q: 1,
            r: h,
            s: w,
            count,
            ..bytemuck::Zeroable::zeroed()
        })
    }

    /// Forward: reads `x [n, h, w, c]`, writes `y [n, c]`.
    pub fn prepare_forward(
        &self,
        gpu: &Gpu,
        x: &wgpu::Buffer,
        y: &wgpu::Buffer,
    ) -> Result<Dispatch> {
        let (len_x, len_y) = (self.input_len(), self.output_len());
        let params = self.params(len_y)?;
        let groups = grid_1d(len_y, WG, gpu.limits().max_compute_workgroups_per_dimension);
        DispatchBuilder::new(gpu, shaders::POOL, "global_avg_forward")
            .constant("WG", WG)
            .params(&params)
            .read("x", x, len_x)
            .write("y", y, len_y)
            .build(groups)
    }

    /// Backward: reads `dy [n, c]`, overwrites `dx [n, h, w, c]` with `dy / (h · w)`.
    pub fn prepare_backward(
        &self,
        gpu: &Gpu,
        dy: &wgpu::Buffer,
        dx: &wgpu::Buffer,
    ) -> Result<Dispatch> {
        let (len_x, len_y) = (self.input_len(), self.output_len());
        let params = self.params(len_x)?;
        let groups = grid_1d(len_x, WG, gpu.limits().max_compute_workgroups_per_dimension);
        DispatchBuilder::new(gpu, shaders::POOL, "global_avg_backward")
            .constant("WG", WG)
            .params(&params)
            .read("dy", dy, len_y)
            .write("dx", dx, len_x)
            .build(groups)
    }
}
