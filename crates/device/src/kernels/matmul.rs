//! Matrix multiplication `C = op(A) · op(B)`: transposed operands, batches (with
//! broadcasting), and a bias + ReLU epilogue; its backward products are matmuls too
//! ([`Matmul::prepare_grad_a`], [`Matmul::prepare_grad_b`]). Shader: `shaders/matmul.wgsl`.

use crate::error::Result;
use crate::gpu::Gpu;
use crate::kernels::ensure;
use crate::pipeline::{Dispatch, DispatchBuilder};
use crate::shaders;

const KERNEL: &str = "matmul";
/// Rows (TM) and columns (TN) per invocation, as in the shader.
const TM: u32 = 4;
const TN: u32 = 4;
/// The subgroup width `shaders/matmul_sg.wgsl` is written for.
const SUBGROUP_WIDTH: u32 = 8;
/// Rows of C per invocation of the subgroup kernels (one entry point each).
const SUBGROUP_ROWS: [u32; 4] = [8, 16, 24, 32];
/// Subgroups per workgroup of the subgroup kernels (measured on lavapipe at 512³ and
/// 1024³: 1, 2, 4, 8 and 16 are within 5% of each other).
const SG_WG_Y: u32 = 4;

/// One of the kernels that compute a [`Matmul`]; [`Matmul::variants`] lists those that
/// apply to a product on a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MatmulVariant {
    /// `matmul`: any shape, 4 x 4 outputs per invocation, scalar loads.
    Scalar,
    /// `matmul_vec4`: vec4 loads; needs the extents [`Matmul::vec4_eligible`] checks.
    Vec4,
    /// `matmul_sg{rows}[_at]`: rows of A shared across an 8-lane subgroup; needs
    /// subgroups exactly 8 wide (lavapipe) and the vec4 conditions.
    Subgroup { rows: u32 },
    /// `matmul_tiled`: 64 x 64 tiles staged in workgroup memory, for GPUs; any shape.
    Tiled,
}

impl std::fmt::Display for MatmulVariant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MatmulVariant::Scalar => write!(f, "scalar"),
            MatmulVariant::Vec4 => write!(f, "vec4"),
            MatmulVariant::Subgroup { rows } => write!(f, "sg{rows}"),
            MatmulVariant::Tiled => write!(f, "tiled"),
        }
    }
}

fn subgroup_entry(rows: u32, trans_a: bool) -> &'static str {
    match (rows, trans_a) {
        (8, false) => "matmul_sg8",
        (8, true) => "matmul_sg8_at",
        (16, false) => "matmul_sg16",
        (16, true) => "matmul_sg16_at",
        (24, false) => "matmul_sg24",
        (24, true) => "matmul_sg24_at",
        (32, false) => "matmul_sg32",
        _ => "matmul_sg32_at",
    }
}

/// Shape and options of `C[z] = op(A[z]) · op(B[z])` for `z` in `0..batch`.
///
/// `op(A)` is `[m, k]` (stored `[k, m]` when `trans_a`), `op(B)` is `[k, n]` (stored
/// `[n, k]` when `trans_b`), `C` is `[m, n]`, all row-major. Batch strides are in
/// elements; a stride of 0 shares one operand across the batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Matmul {
    pub batch: u32,
    pub m: u32,
    pub n: u32,
    pub k: u32,
    pub trans_a: bool,
    pub trans_b: bool,
    /// Add `bias[n]` to every row.
    pub bias: bool,
    /// Apply ReLU after the bias (and accumulation).
    pub relu: bool,
    /// Add to the existing contents of C instead of overwriting them.
    pub accumulate: bool,
    pub stride_a: u32,
    pub stride_b: u32,
    pub stride_c: u32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    m: u32,
    n: u32,
    k: u32,
    batch: u32,
    stride_a: u32,
    stride_b: u32,
    stride_c: u32,
    pad: u32,
}

impl Matmul {
    /// `C[m, n] = A[m, k] · B[k, n]`, one batch element, no epilogue.
    pub fn new(m: u32, n: u32, k: u32) -> Self {
        Self {
            batch: 1,
            m,
            n,
            k,
            trans_a: false,
            trans_b: false,
            bias: false,
            relu: false,
            accumulate: false,
            stride_a: m * k,
            stride_b: k * n,
            stride_c: m * n,
        }
    }

    /// `batch` independent products with densely packed operands.
    pub fn batched(mut self, batch: u32) -> Self {
        self.batch = batch;
        self
    }

    /// Read A as stored `[k, m]`.
    pub fn transpose_a(mut self) -> Self {
        self.trans_a = true;
        self
    }

    /// Read B as stored `[n, k]` (a PyTorch `Linear` weight).
    pub fn transpose_b(mut self) -> Self {
        self.trans_b = true;
        self
    }

    /// Share one B across the batch.
    pub fn broadcast_b(mut self) -> Self {
        self.stride_b = 0;
        self
    }

    /// Add a bias over columns.
    pub fn with_bias(mut self) -> Self {
        self.bias = true;
        self
    }

    /// Apply ReLU to the result.
    pub fn with_relu(mut self) -> Self {
        self.relu = true;
        self
    }

    /// Accumulate into C.
    pub fn accumulating(mut self) -> Self {
        self.accumulate = true;
        self
    }

    /// Multiply-adds performed (`batch · m · n · k`); FLOPs are twice this.
    pub fn macs(&self) -> u64 {
        self.batch as u64 * self.m as u64 * self.n as u64 * self.k as u64
    }

    fn elems(stride: u32, batch: u32, one: u64) -> u64 {
        (batch as u64 - 1) * stride as u64 + one
    }

    /// Elements read from A, B and written to C (including batch strides).
    pub fn footprint(&self) -> (u64, u64, u64) {
        let (m, n, k) = (self.m as u64, self.n as u64, self.k as u64);
        (
            Self::elems(self.stride_a, self.batch, m * k),
            Self::elems(self.stride_b, self.batch, k * n),
            Self::elems(self.stride_c, self.batch, m * n),
        )
    }

    fn check(&self) -> Result<()> {
        ensure(
            self.m > 0 && self.n > 0 && self.k > 0 && self.batch > 0,
            KERNEL,
            || {
                format!(
                    "every size must be positive, got batch {} m {} n {} k {}",
                    self.batch, self.m, self.n, self.k
                )
            },
        )
    }

    /// Binds `a`, `b`, the optional `bias` and `c`; the dispatch writes C. The kernel is
    /// [`Matmul::tuned_variant`]'s choice.
    pub fn prepare(
        &self,
        gpu: &Gpu,
        a: &wgpu::Buffer,
        b: &wgpu::Buffer,
        bias: Option<&wgpu::Buffer>,
        c: &wgpu::Buffer,
    ) -> Result<Dispatch> {
        self.check()?;
        self.prepare_variant(gpu, self.tuned_variant(gpu), a, b, bias, c)
    }

    /// The kernel [`Matmul::prepare`] uses: the autotuner's choice among
    /// [`Matmul::variants`] (timed on scratch buffers of this shape on first use, then
    /// cached), or [`Matmul::heuristic_variant`] when tuning is off or the product small.
    pub fn tuned_variant(&self, gpu: &Gpu) -> MatmulVariant {
        let candidates = self.variants(gpu);
        let heuristic = self.heuristic_variant(gpu);
        let small = self.validation_problem();
        let mut scratch = None;
        gpu.autotuner().choose(
            KERNEL,
            &format!("{self:?}"),
            self.macs(),
            &candidates,
            heuristic,
            |_| format!("{small:?}"),
            |v| small.validate_variant(gpu, v),
            |v, beat| {
                if scratch.is_none() {
                    scratch = Some(self.scratch(gpu)?);
                }
                let [a, b, bias, c] = scratch.as_ref().expect("allocated above");
                let bias = self.bias.then_some(&**bias);
                let d = self.prepare_variant(gpu, v, a, b, bias, c)?;
                gpu.autotuner().time(gpu, &d, beat)
            },
        )
    }

    /// Buffers of this product's size (A, B, bias, C) for timing candidates.
    fn scratch(&self, gpu: &Gpu) -> Result<[crate::PooledBuffer; 4]> {
        let (ea, eb, ec) = self.footprint();
        let get = |elems: u64| {
            gpu.pool()
                .acquire(4 * elems.max(1), "wgtrain.autotune.scratch")
        };
        Ok([get(ea)?, get(eb)?, get(self.n as u64)?, get(ec)?])
    }

    /// A small product with this one's options (transposes, broadcast, epilogue), on which
    /// a variant is checked against the reference before it is ever timed: 140 rows (more
    /// than 4 row tiles of the tallest subgroup kernel, and a partial one), a batch of 2.
    fn validation_problem(&self) -> Matmul {
        let mut p = Matmul::new(140, 44, 20).batched(2);
        p.trans_a = self.trans_a;
        p.trans_b = self.trans_b;
        p.bias = self.bias;
        p.relu = self.relu;
        p.accumulate = self.accumulate;
        if self.stride_b == 0 {
            p.stride_b = 0;
        }
        p
    }

    /// Runs `variant` on this product with deterministic inputs and compares it with the
    /// CPU reference; `Ok(false)` when it disagrees.
    pub fn validate_variant(&self, gpu: &Gpu, variant: MatmulVariant) -> Result<bool> {
        use crate::autotune::{close, run_and_read, test_values};
        let (ea, eb, ec) = self.footprint();
        let a = test_values(ea as usize, 1);
        let b = test_values(eb as usize, 2);
        let bias = test_values(self.n as usize, 3);
        let c_in = test_values(ec as usize, 4);
        let label = "wgtrain.autotune.validate";
        let (da, db, dbias, dc) = (
            gpu.upload(&a, label)?,
            gpu.upload(&b, label)?,
            gpu.upload(&bias, label)?,
            gpu.upload(&c_in, label)?,
        );
        let d = self.prepare_variant(gpu, variant, &da, &db, self.bias.then_some(&*dbias), &dc)?;
        let got = run_and_read(gpu, &d, &dc, ec as usize)?;
        let want =
            crate::reference::matmul::matmul(self, &a, &b, self.bias.then_some(&bias[..]), &c_in);
        Ok(close(&got, &want, self.k))
    }

    /// [`Matmul::prepare`] with a chosen kernel, which must be one of
    /// [`Matmul::variants`].
    pub fn prepare_variant(
        &self,
        gpu: &Gpu,
        variant: MatmulVariant,
        a: &wgpu::Buffer,
        b: &wgpu::Buffer,
        bias: Option<&wgpu::Buffer>,
        c: &wgpu::Buffer,
    ) -> Result<Dispatch> {
        self.check()?;
        ensure(self.bias == bias.is_some(), KERNEL, || {
            format!(
                "bias option is {} but a bias buffer was {}",
                self.bias,
                if bias.is_some() { "given" } else { "not given" }
            )
        })?;
        ensure(self.variants(gpu).contains(&variant), KERNEL, || {
            format!(
                "kernel variant {variant} does not apply to [{}, {}] x [{}, {}] on this adapter",
                self.m, self.k, self.k, self.n
            )
        })?;
        let params = Params {
            m: self.m,
            n: self.n,
            k: self.k,
            batch: self.batch,
            stride_a: self.stride_a,
            stride_b: self.stride_b,
            stride_c: self.stride_c,
            pad: 0,
        };
        let (ea, eb, ec) = self.footprint();
        let (builder, groups) = match variant {
            MatmulVariant::Scalar | MatmulVariant::Vec4 => {
                let entry = if variant == MatmulVariant::Vec4 {
                    "matmul_vec4"
                } else {
                    "matmul"
                };
                let (wg_x, wg_y) = (8u32, 8u32);
                let groups = [
                    self.n.div_ceil(wg_x * TN),
                    self.m.div_ceil(wg_y * TM),
                    self.batch,
                ];
                let builder = DispatchBuilder::new(gpu, shaders::MATMUL, entry)
                    .flag("TRANS_A", self.trans_a)
                    .constant("WG_X", wg_x)
                    .constant("WG_Y", wg_y);
                (builder, groups)
            }
            MatmulVariant::Tiled => {
                let groups = [self.n.div_ceil(64), self.m.div_ceil(64), self.batch];
                let builder = DispatchBuilder::new(gpu, shaders::MATMUL, "matmul_tiled")
                    .flag("TRANS_A", self.trans_a);
                (builder, groups)
            }
            MatmulVariant::Subgroup { rows } => {
                let entry = subgroup_entry(rows, self.trans_a);
                // Workgroups of 8 x wg_y: one subgroup per row of the workgroup, and no
                // more subgroups than the product has row blocks (a short M, such as a
                // batch of 16, would otherwise leave subgroups idle).
                let wg_y = SG_WG_Y.min(self.m.div_ceil(rows));
                let groups = [
                    self.n.div_ceil(SUBGROUP_WIDTH * TN),
                    self.m.div_ceil(rows * wg_y),
                    self.batch,
                ];
                let builder =
                    DispatchBuilder::new(gpu, shaders::MATMUL_SG, entry).constant("WG_Y", wg_y);
                (builder, groups)
            }
        };
        builder
            .flag("TRANS_B", self.trans_b)
            .flag("HAS_BIAS", self.bias)
            .flag("RELU", self.relu)
            .flag("ACCUMULATE", self.accumulate)
            .params(&params)
            .read("a", a, ea)
            .read("b", b, eb)
            .read_opt("bias", bias, self.n as u64)
            .write("c", c, ec)
            .build(groups)
    }

    /// Every kernel that can compute this product on `gpu`, the general one first.
    pub fn variants(&self, gpu: &Gpu) -> Vec<MatmulVariant> {
        let mut v = vec![MatmulVariant::Scalar, MatmulVariant::Tiled];
        if self.vec4_eligible() {
            v.push(MatmulVariant::Vec4);
            if gpu.subgroup_width() == Some(SUBGROUP_WIDTH) {
                for rows in SUBGROUP_ROWS {
                    v.push(MatmulVariant::Subgroup { rows });
                }
            }
        }
        v
    }

    /// The fixed choice, used when autotuning is off: the subgroup kernel where it
    /// applies (CPU adapters with 8-wide subgroups), with as many rows per invocation as
    /// the product has rows to fill them (more rows per invocation means fewer loads per
    /// FMA; measured on lavapipe, 1024³: 8 rows 37, 16 rows 52, 24 rows 58, 32 rows 66
    /// GFLOP/s); on a GPU the tiled kernel for products of at least 64 x 64; else the
    /// vec4 kernel, else the general one.
    pub fn heuristic_variant(&self, gpu: &Gpu) -> MatmulVariant {
        let eligible = self.variants(gpu);
        let rows = match self.m {
            m if m >= 512 => 32,
            m if m >= 192 => 24,
            m if m >= 64 => 16,
            _ => 8,
        };
        let sg = MatmulVariant::Subgroup { rows };
        if eligible.contains(&sg) {
            sg
        } else if !gpu.is_cpu() && self.m >= 64 && self.n >= 64 {
            // A GPU stages operands in workgroup memory.
            MatmulVariant::Tiled
        } else if eligible.contains(&MatmulVariant::Vec4) {
            MatmulVariant::Vec4
        } else {
            MatmulVariant::Scalar
        }
    }

    /// `matmul_vec4` reads 4 x 4 blocks as vec4s along K and along M (transposed A) or N
    /// (plain B): those extents and every batch stride must be multiples of 4.
    pub fn vec4_eligible(&self) -> bool {
        self.k % 4 == 0
            && (!self.trans_a || self.m % 4 == 0)
            && (self.trans_b || self.n % 4 == 0)
            && self.stride_a % 4 == 0
            && self.stride_b % 4 == 0
    }

    /// The product computing `dA` from `dC` (and B): see [`Matmul::prepare_grad_a`].
    pub fn grad_a(&self, accumulate: bool) -> Matmul {
        let mut g = if self.trans_a {
            // A stored [k, m]: dA = op(B) · dCᵀ, shape [k, m].
            let mut g = Matmul::new(self.k, self.m, self.n);
            g.trans_a = self.trans_b;
            g.trans_b = true;
            g.stride_a = self.stride_b;
            g.stride_b = self.stride_c;
            g
        } else {
            // dA = dC · op(B)ᵀ, shape [m, k].
            let mut g = Matmul::new(self.m, self.k, self.n);
            g.trans_b = !self.trans_b;
            g.stride_a = self.stride_c;
            g.stride_b = self.stride_b;
            g
        };
        g.batch = self.batch;
        g.stride_c = self.stride_a;
        g.accumulate = accumulate;
        g
    }

    /// The product computing `dB` from A and `dC`: see [`Matmul::prepare_grad_b`].
    pub fn grad_b(&self, accumulate: bool) -> Matmul {
        let mut g = if self.trans_b {
            // B stored [n, k]: dB = dCᵀ · op(A), shape [n, k].
            let mut g = Matmul::new(self.n, self.k, self.m);
            g.trans_a = true;
            g.trans_b = self.trans_a;
            g.stride_a = self.stride_c;
            g.stride_b = self.stride_a;
            g
        } else {
            // dB = op(A)ᵀ · dC, shape [k, n].
            let mut g = Matmul::new(self.k, self.n, self.m);
            g.trans_a = !self.trans_a;
            g.stride_a = self.stride_a;
            g.stride_b = self.stride_c;
            g
        };
        g.batch = self.batch;
        g.stride_c = self.stride_b;
        g.accumulate = accumulate;
        g
    }

    /// Gradient of the loss with respect to A, given `grad_c` (same layout as C). With a
    /// ReLU epilogue, `grad_c` must already be masked by the ReLU's backward.
    pub fn prepare_grad_a(
        &self,
        gpu: &Gpu,
        grad_c: &wgpu::Buffer,
        b: &wgpu::Buffer,
        grad_a: &wgpu::Buffer,
        accumulate: bool,
    ) -> Result<Dispatch> {
        self.check_grad_stride(self.stride_a, "A")?;
        let g = self.grad_a(accumulate);
        if self.trans_a {
            g.prepare(gpu, b, grad_c, None, grad_a)
        } else {
            g.prepare(gpu, grad_c, b, None, grad_a)
        }
    }

    /// Gradient of the loss with respect to B, given A and `grad_c`.
    pub fn prepare_grad_b(
        &self,
        gpu: &Gpu,
        a: &wgpu::Buffer,
        grad_c: &wgpu::Buffer,
        grad_b: &wgpu::Buffer,
        accumulate: bool,
    ) -> Result<Dispatch> {
        self.check_grad_stride(self.stride_b, "B")?;
        let g = self.grad_b(accumulate);
        if self.trans_b {
            g.prepare(gpu, grad_c, a, None, grad_b)
        } else {
            g.prepare(gpu, a, grad_c, None, grad_b)
        }
    }

    fn check_grad_stride(&self, stride: u32, which: &str) -> Result<()> {
        ensure(stride != 0 || self.batch == 1, KERNEL, || {
            format!(
                "the gradient of a broadcast {which} is a sum over the batch: fold the batch \
                 into m instead (batch {} with stride 0)",
                self.batch
            )
        })
    }
}
