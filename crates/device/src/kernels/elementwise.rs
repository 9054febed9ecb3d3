//! Elementwise maps over flat f32 tensors: [`Binary`] (add, multiply, each also in place),
//! [`Scale`], [`Axpy`], [`Relu`] and [`Sigmoid`] (forward and backward, in place or not)
//! and [`BiasAdd`]
//! over the last dimension with its deterministic bias gradient
//! ([`BiasAdd::prepare_grad`]). Shader: `shaders/elementwise.wgsl`.
//!
//! Every op is one invocation per element on a 1-D grid: memory bound, coalesced.

use crate::error::{DeviceError, Result};
use crate::gpu::Gpu;
use crate::kernels::ensure;
use crate::pipeline::{Dispatch, DispatchBuilder, grid_1d};
use crate::shaders;

const KERNEL: &str = "elementwise";
/// Invocations per workgroup (the shader's `WG` override).
const WG: u32 = 256;
/// Rows summed by one invocation of the bias gradient's first pass, at least; see
/// [`BiasAdd::rows_per_chunk`].
const MIN_ROWS_PER_CHUNK: u32 = 16;

/// The shader's uniform; 32 bytes.
#[repr(C)]
#[derive(Clone, Copy, Default, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    count: u32,
    channels: u32,
    alpha: f32,
    rows: u32,
    rows_per_chunk: u32,
    pad: [u32; 3],
}

/// Byte offset of `alpha` in the uniform of [`Scale`] and [`Axpy`] dispatches, for
/// callers that rewrite it between runs through [`Dispatch::uniform`].
pub const ALPHA_OFFSET: u64 = 8;

/// A buffer with the binding name it takes in error messages.
type Named<'a> = (&'static str, &'a wgpu::Buffer);

fn check_count(count: u32, op: &str) -> Result<()> {
    ensure(count > 0, KERNEL, || {
        format!("{op}: the element count must be positive, got 0")
    })
}

/// A builder for `entry` with the uniform set, and its 1-D grid over `threads`.
fn builder<'a>(gpu: &'a Gpu, entry: &'static str, params: &Params) -> DispatchBuilder<'a> {
    DispatchBuilder::new(gpu, shaders::ELEMENTWISE, entry)
        .constant("WG", WG)
        .params(params)
}

fn grid(gpu: &Gpu, threads: u32) -> [u32; 3] {
    grid_1d(
        threads as u64,
        WG,
        gpu.limits().max_compute_workgroups_per_dimension,
    )
}

/// Which binary map [`Binary`] applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryOp {
    /// `z = x + y`
    Add,
    /// `z = x * y`
    Multiply,
}

/// `z = x op y` elementwise over `count` elements, or in place `x = x op y`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Binary {
    pub op: BinaryOp,
    pub count: u32,
}

impl Binary {
    pub fn add(count: u32) -> Self {
        Self {
            op: BinaryOp::Add,
            count,
        }
    }

    pub fn multiply(count: u32) -> Self {
        Self {
            op: BinaryOp::Multiply,
            count,
        }
    }

    /// `z = x op y`; `z` must be a third buffer.
    pub fn prepare(
        &self,
        gpu: &Gpu,
        x: &wgpu::Buffer,
        y: &wgpu::Buffer,
        z: &wgpu::Buffer,
    ) -> Result<Dispatch> {
        check_count(self.count, "binary")?;
        let entry = match self.op {
            BinaryOp::Add => "add",
            BinaryOp::Multiply => "multiply",
        };
        let n = self.count as u64;
        builder(
            gpu,
            entry,
            &Params {
                count: self.count,
                ..Params::default()
            },
        )
        .read("x", x, n)
        .read("y", y, n)
        .write("z", z, n)
        .build(grid(gpu, self.count))
    }

    /// `x = x op y` (for [`BinaryOp::Add`], the accumulate form `x += y`).
    pub fn prepare_in_place(
        &self,
        gpu: &Gpu,
        x: &wgpu::Buffer,
        y: &wgpu::Buffer,
    ) -> Result<Dispatch> {
        check_count(self.count, "binary")?;
        let entry = match self.op {
            BinaryOp::Add => "add_into",
            BinaryOp::Multiply => "multiply_into",
        };
        let n = self.count as u64;
        builder(
            gpu,
            entry,
            &Params {
                count: self.count,
                ..Params::default()
            },
        )
        .read("y", y, n)
        .write("x", x, n)
        .build(grid(gpu, self.count))
    }
}

/// `y = alpha * x` over `count` elements, or in place `x *= alpha`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scale {
    pub count: u32,
    pub alpha: f32,
}

impl Scale {
    fn params(&self) -> Params {
        Params {
            count: self.count,
            alpha: self.alpha,
            ..Params::default()
        }
    }

    /// `y = alpha * x`.
    pub fn prepare(&self, gpu: &Gpu, x: &wgpu::Buffer, y: &wgpu::Buffer) -> Result<Dispatch> {
        check_count(self.count, "scale")?;
        let n = self.count as u64;
        builder(gpu, "scale", &self.params())
            .read("x", x, n)
            .write("y", y, n)
            .build(grid(gpu, self.count))
    }

    /// `x *= alpha`.
    pub fn prepare_in_place(&self, gpu: &Gpu, x: &wgpu::Buffer) -> Result<Dispatch> {
        check_count(self.count, "scale")?;
        builder(gpu, "scale_in_place", &self.params())
            .write("x", x, self.count as u64)
            .build(grid(gpu, self.count))
    }
}

/// `y += alpha * x` over `count` elements (one fused multiply-add per element).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Axpy {
    pub count: u32,
    pub alpha: f32,
}

impl Axpy {
    pub fn prepare(&self, gpu: &Gpu, x: &wgpu::Buffer, y: &wgpu::Buffer) -> Result<Dispatch> {
        check_count(self.count, "axpy")?;
        let n = self.count as u64;
        let params = Params {
            count: self.count,
            alpha: self.alpha,
            ..Params::default()
        };
        builder(gpu, "axpy", &params)
            .read("x", x, n)
            .write("y", y, n)
            .build(grid(gpu, self.count))
    }
}

/// `y = max(x, 0)` over `count` elements; its backward masks `dy` by the forward output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Relu {
    pub count: u32,
}

impl Relu {
    fn params(&self) -> Params {
        Params {
            count: self.count,
            ..Params::default()
        }
    }

    /// `y = max(x, 0)`.
    pub fn prepare(&self, gpu: &Gpu, x: &wgpu::Buffer, y: &wgpu::Buffer) -> Result<Dispatch> {
        check_count(self.count, "relu")?;
        let n = self.count as u64;
        builder(gpu, "relu", &self.params())
            .read("x", x, n)
            .write("y", y, n)
            .build(grid(gpu, self.count))
    }

    /// `x = max(x, 0)`.
    pub fn prepare_in_place(&self, gpu: &Gpu, x: &wgpu::Buffer) -> Result<Dispatch> {
        check_count(self.count, "relu")?;
        builder(gpu, "relu_in_place", &self.params())
            .write("x", x, self.count as u64)
            .build(grid(gpu, self.count))
    }

    /// `dx = dy where y > 0, else 0`, from the forward output `y` (which is positive
    /// exactly where the input was, so an in-place forward loses nothing).
    pub fn prepare_backward(
        &self,
        gpu: &Gpu,
        y: &wgpu::Buffer,
        dy: &wgpu::Buffer,
        dx: &wgpu::Buffer,
    ) -> Result<Dispatch> {
        check_count(self.count, "relu backward")?;
        let n = self.count as u64;
        builder(gpu, "relu_backward", &self.params())
            .read("y", y, n)
            .read("dy", dy, n)
            .write("dx", dx, n)
            .build(grid(gpu, self.count))
    }

    /// The backward in place: `dy` becomes `dx`.
    pub fn prepare_backward_in_place(
        &self,
        gpu: &Gpu,
        y: &wgpu::Buffer,
        dy: &wgpu::Buffer,
    ) -> Result<Dispatch> {
        check_count(self.count, "relu backward")?;
        let n = self.count as u64;
        builder(gpu, "relu_backward_into", &self.params())
            .read("y", y, n)
            .write("dy", dy, n)
            .build(grid(gpu, self.count))
    }
}

/// `y = 1 / (1 + exp(-x))` over `count` elements, finite for every finite `x` (the
/// shader never takes `exp` of a positive argument); its backward
/// `dx = dy · y · (1 - y)` reads the forward output, so the forward may run in place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sigmoid {
    pub count: u32,
}

impl Sigmoid {
    fn params(&self) -> Params {
        Params {
            count: self.count,
            ..Params::default()
        }
    }

    /// `y = sigmoid(x)`.
    pub fn prepare(&self, gpu: &Gpu, x: &wgpu::Buffer, y: &wgpu::Buffer) -> Result<Dispatch> {
        check_count(self.count, "sigmoid")?;
        let n = self.count as u64;
        builder(gpu, "sigmoid", &self.params())
            .read("x", x, n)
            .write("y", y, n)
            .build(grid(gpu, self.count))
    }

    /// `x = sigmoid(x)`.
    pub fn prepare_in_place(&self, gpu: &Gpu, x: &wgpu::Buffer) -> Result<Dispatch> {
        check_count(self.count, "sigmoid")?;
        builder(gpu, "sigmoid_in_place", &self.params())
            .write("x", x, self.count as u64)
            .build(grid(gpu, self.count))
    }

    /// `dx = dy · y · (1 - y)` from the forward output `y`.
    pub fn prepare_backward(
        &self,
        gpu: &Gpu,
        y: &wgpu::Buffer,
        dy: &wgpu::Buffer,
        dx: &wgpu::Buffer,
    ) -> Result<Dispatch> {
        check_count(self.count, "sigmoid backward")?;
        let n = self.count as u64;
        builder(gpu, "sigmoid_backward", &self.params())
            .read("y", y, n)
            .read("dy", dy, n)
            .write("dx", dx, n)
            .build(grid(gpu, self.count))
    }

    /// The backward in place: `dy` becomes `dx`.
    pub fn prepare_backward_in_place(
        &self,
        gpu: &Gpu,
        y: &wgpu::Buffer,
        dy: &wgpu::Buffer,
    ) -> Result<Dispatch> {
        check_count(self.count, "sigmoid backward")?;
        let n = self.count as u64;
        builder(gpu, "sigmoid_backward_into", &self.params())
            .read("y", y, n)
            .write("dy", dy, n)
            .build(grid(gpu, self.count))
    }
}

/// `y[r, c] = x[r, c] + bias[c]` for a row-major `[rows, c]` tensor (NHWC activations
/// have `rows = N·H·W`); its gradient `db[c] = Σ_r dy[r, c]` is a deterministic column sum.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BiasAdd {
    pub rows: u32,
    pub c: u32,
}

impl BiasAdd {
    pub fn new(rows: u32, c: u32) -> Self {
        Self { rows, c }
    }

    fn count(&self) -> Result<u32> {
        ensure(self.rows > 0 && self.c > 0, KERNEL, || {
            format!(
                "bias add: rows and C must be positive, got rows {} C {}",
                self.rows, self.c
            )
        })?;
        crate::kernels::to_u32(
            self.rows as u64 * self.c as u64,
            KERNEL,
            "bias add rows * C",
        )
    }

    fn params(&self, count: u32) -> Params {
        Params {
            count,
            channels: self.c,
            ..Params::default()
        }
    }

    /// `y = x + bias` (broadcast over rows).
    pub fn prepare(
        &self,
        gpu: &Gpu,
        x: &wgpu::Buffer,
        bias: &wgpu::Buffer,
        y: &wgpu::Buffer,
    ) -> Result<Dispatch> {
        let count = self.count()?;
        builder(gpu, "bias_add", &self.params(count))
            .read("x", x, count as u64)
            .read("bias", bias, self.c as u64)
            .write("y", y, count as u64)
            .build(grid(gpu, count))
    }

    /// `x += bias` (broadcast over rows).
    pub fn prepare_in_place(
        &self,
        gpu: &Gpu,
        x: &wgpu::Buffer,
        bias: &wgpu::Buffer,
    ) -> Result<Dispatch> {
        let count = self.count()?;
        builder(gpu, "bias_add_into", &self.params(count))
            .read("bias", bias, self.c as u64)
            .write("x", x, count as u64)
            .build(grid(gpu, count))
    }

    /// Rows each first-pass invocation of the gradient sums: about `√rows` (at least
    /// 16), so both passes loop about as long. It depends on the shape only, so the
    /// summation order, and hence the result, is the same on every adapter.
    pub fn rows_per_chunk(&self) -> u32 {
        let root = (self.rows as f64).sqrt().ceil() as u32;
        root.max(MIN_ROWS_PER_CHUNK).min(self.rows.max(1))
    }

    /// Row chunks of the gradient's first pass; 1 means a single pass straight into `db`.
    pub fn chunks(&self) -> u32 {
        self.rows.div_ceil(self.rows_per_chunk())
    }

    /// Elements of the scratch buffer [`BiasAdd::prepare_grad`] needs (`chunks · C`), or
    /// 0 when the gradient is one pass and needs none.
    pub fn grad_scratch_elems(&self) -> u64 {
        if self.chunks() > 1 {
            self.chunks() as u64 * self.c as u64
        } else {
            0
        }
    }

    /// `db[c] (+)= Σ_r dy[r, c]`, adding to `db` when `accumulate`. Sums are taken in a
    /// fixed order: per chunk of [`rows_per_chunk`](Self::rows_per_chunk) rows into
    /// `scratch` (`[chunks, C]`, needed when [`grad_scratch_elems`](Self::grad_scratch_elems)
    /// is non-zero), then over chunks in order. Returns the dispatches in recording order.
    pub fn prepare_grad(
        &self,
        gpu: &Gpu,
        dy: &wgpu::Buffer,
        scratch: Option<&wgpu::Buffer>,
        db: &wgpu::Buffer,
        accumulate: bool,
    ) -> Result<Vec<Dispatch>> {
        self.count()?;
        let chunks = self.chunks();
        // Sums `rows` rows of `input` in chunks of `per_chunk` into `output`; the names
        // label the bindings in errors.
        let column_sum = |rows: u32, per_chunk: u32, input: Named<'_>, output: Named<'_>, acc| {
            let threads = rows.div_ceil(per_chunk) * self.c;
            let params = Params {
                rows,
                rows_per_chunk: per_chunk,
                ..self.params(threads)
            };
            builder(gpu, "column_sum", &params)
                .flag("ACCUMULATE", acc)
                .read(input.0, input.1, rows as u64 * self.c as u64)
                .write(output.0, output.1, threads as u64)
                .build(grid(gpu, threads))
        };
        if chunks == 1 {
            return Ok(vec![column_sum(
                self.rows,
                self.rows,
                ("dy", dy),
                ("db", db),
                accumulate,
            )?]);
        }
        let scratch = scratch.ok_or_else(|| DeviceError::InvalidParams {
            kernel: KERNEL.to_owned(),
            message: format!(
                "bias gradient over {} rows of C {} runs in two passes and needs a scratch \
                 buffer of {} elements, but none was given",
                self.rows,
                self.c,
                self.grad_scratch_elems()
            ),
        })?;
        let first = column_sum(
            self.rows,
            self.rows_per_chunk(),
            ("dy", dy),
            ("scratch", scratch),
            false,
        )?;
        let second = column_sum(chunks, chunks, ("scratch", scratch), ("db", db), accumulate)?;
        Ok(vec![first, second])
    }
}
