//! 2-D convolution on NHWC activations with KRSC weights: groups, stride, zero padding,
//! dilation, and a bias + ReLU epilogue; its two backward passes, to the input
//! ([`Conv2d::prepare_backward_data`]) and to the weights
//! ([`Conv2d::prepare_backward_filter`]). Shader: `shaders/conv2d.wgsl`.
//!
//! ## Design
//!
//! Each pass is an implicit GEMM with register blocking and no shared memory (see the
//! shader's header). The wrapper picks the workgroup shape from the GEMM's rows and
//! columns, so that narrow GEMMs (few output channels, a small filter) keep their lanes
//! busy, and chooses between one dispatch column per group and "mixed" mode, where all
//! groups sit side by side (for depthwise and other narrow groups). When not mixed and
//! `C / groups` is a multiple of 4 (for the backward passes `K / groups` too), each pass
//! uses its `*_vec4` entry, whose loads are all vec4s, each feeding 4+ FMAs.
//! The bias gradient (a column sum of `dy`) and the ReLU backward live in the
//! elementwise family.

use crate::error::Result;
use crate::gpu::Gpu;
use crate::kernels::{ensure, to_u32};
use crate::pipeline::{Dispatch, DispatchBuilder, grid_1d};
use crate::shaders;

const KERNEL: &str = "conv2d";
/// Rows (TM) and columns (TN) per invocation, as in the shader.
const TM: u32 = 4;
const TN: u32 = 4;
/// Invocations per workgroup when the GEMM is large enough to fill them.
const WG_INVOCATIONS: u32 = 64;
/// A group with fewer columns (rows for the filter pass) than this runs in mixed mode.
const MIN_PER_GROUP: u32 = 8 * TN;

/// Shape and options of `y = conv2d(x, weight) (+ bias) (ReLU)`.
///
/// `x` is `[n, h, w, c]`, `weight` is `[k, r, s, c / groups]`, `bias` is `[k]` and `y` is
/// `[n, p, q, k]` with `p`, `q` from [`Conv2d::p`], [`Conv2d::q`]; all row-major:
///
/// `y[n,p,q,k] = Σ_{r,s,c} x[n, p·stride_h - pad_h + r·dil_h, q·stride_w - pad_w + s·dil_w,
/// g·Cg + c] · weight[k,r,s,c]`, with `g = k / (K / groups)`, `Cg = C / groups` and `x`
/// zero outside the image.
///
/// ```
/// use wgtrain_device::kernels::conv2d::Conv2d;
/// let conv = Conv2d::new(8, 32, 32, 3, 16, 3, 3).pad(1, 1).stride(2, 2).with_bias();
/// assert_eq!((conv.p(), conv.q()), (16, 16));
/// assert_eq!(conv.macs(), 8 * 16 * 16 * 16 * 3 * 3 * 3);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2d {
    pub n: u32,
    pub h: u32,
    pub w: u32,
    pub c: u32,
    pub k: u32,
    pub r: u32,
    pub s: u32,
    pub stride_h: u32,
    pub stride_w: u32,
    pub pad_h: u32,
    pub pad_w: u32,
    pub dil_h: u32,
    pub dil_w: u32,
    pub groups: u32,
    /// Add `bias[k]` to every output pixel.
    pub bias: bool,
    /// Apply ReLU after the bias. The backward passes expect `dy` already masked by it.
    pub relu: bool,
}

/// The shader's uniform: the shape, then the GEMM this dispatch computes (96 bytes).
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    n: u32,
    h: u32,
    w: u32,
    c: u32,
    k: u32,
    r: u32,
    s: u32,
    p: u32,
    q: u32,
    stride_h: u32,
    stride_w: u32,
    pad_h: u32,
    pad_w: u32,
    dil_h: u32,
    dil_w: u32,
    groups: u32,
    cg: u32,
    kg: u32,
    rows: u32,
    cols: u32,
    col_tiles: u32,
    /// `ceil(W / stride_w)`: the backward-data pass orders its rows by w's phase.
    w_steps: u32,
    pad: [u32; 2],
}

/// Rows of y per invocation of the subgroup forward kernels (`shaders/conv2d_sg.wgsl`).
const SUBGROUP_ROWS: [u32; 3] = [8, 16, 32];
/// Rows per invocation of the half-lane (`_h`) kernels, for at most `HALF_COLUMNS`.
const SUBGROUP_HALF_ROWS: [u32; 2] = [8, 16];
const HALF_COLUMNS: u32 = 16;
/// Subgroups per workgroup of the subgroup kernels.
const SUBGROUP_WG_Y: u32 = 4;

/// Rows per invocation for a subgroup pass over `rows` GEMM rows: the most that still
/// leaves enough row tiles to keep every core busy.
fn subgroup_rows_for(rows: u64) -> u32 {
    if rows >= 2048 {
        32
    } else if rows >= 256 {
        16
    } else {
        8
    }
}

/// The heuristics' choice among `variants`: the subgroup kernel with `rows` rows per
/// invocation (the vec4 one, else the flattened-taps one), else the register-blocked one.
fn subgroup_or_blocked(variants: &[ConvVariant], rows: u32) -> ConvVariant {
    [
        ConvVariant::Subgroup { rows },
        ConvVariant::SubgroupTaps { rows },
    ]
    .into_iter()
    .find(|v| variants.contains(v))
    .unwrap_or(ConvVariant::Blocked)
}

/// One of the kernels for a convolution pass; [`Conv2d::forward_variants`] lists those
/// that apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConvVariant {
    /// `conv2d.wgsl`: register-blocked, vec4 loads where the channels allow.
    Blocked,
    /// `conv2d_sg.wgsl`: pixel rows shared across an 8-lane subgroup (lavapipe);
    /// needs Cg % 4 == 0.
    Subgroup { rows: u32 },
    /// `conv2d_forward_taps_sg*` / `conv2d_backward_filter_taps_sg*`: the forward and
    /// backward-filter passes for few channels per group (Cg % 4 != 0, e.g. a first
    /// layer's 1 or 3), over the flattened taps (s, c) / (r, s, c) loaded as scalars.
    SubgroupTaps { rows: u32 },
    /// [`ConvVariant::Subgroup`] for at most 16 output columns (`*_h` entries): 4 lanes
    /// span the 16 columns and the other 4 take a second set of `rows` rows.
    SubgroupHalf { rows: u32 },
    /// [`ConvVariant::SubgroupTaps`] for at most 16 output columns.
    SubgroupTapsHalf { rows: u32 },
}

/// The passes with more than one kernel (and so an autotuned choice).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pass {
    Forward,
    BackwardData,
    BackwardFilter,
}

impl Pass {
    /// The name the autotuner files this pass's decisions under.
    fn kernel(self) -> &'static str {
        match self {
            Pass::Forward => "conv2d_forward",
            Pass::BackwardData => "conv2d_backward_data",
            Pass::BackwardFilter => "conv2d_backward_filter",
        }
    }
}

impl std::fmt::Display for ConvVariant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConvVariant::Blocked => write!(f, "blocked"),
            ConvVariant::Subgroup { rows } => write!(f, "sg{rows}"),
            ConvVariant::SubgroupTaps { rows } => write!(f, "taps_sg{rows}"),
            ConvVariant::SubgroupHalf { rows } => write!(f, "sg{rows}h"),
            ConvVariant::SubgroupTapsHalf { rows } => write!(f, "taps_sg{rows}h"),
        }
    }
}

/// One pass as a GEMM: `rows` × `cols` outputs (`cols` for one group unless `mixed`).
struct Gemm {
    entry: &'static str,
    rows: u32,
    cols: u32,
    mixed: bool,
}

/// Output size along one axis, or 0 when the (dilated) filter does not fit the padded input.
fn out_size(size: u32, filter: u32, stride: u32, pad: u32, dil: u32) -> u32 {
    let padded = size as u64 + 2 * pad as u64;
    let span = dil as u64 * (filter as u64).saturating_sub(1) + 1;
    if stride == 0 || padded < span {
        return 0;
    }
    ((padded - span) / stride as u64 + 1).min(u32::MAX as u64) as u32
}

/// The next power of two at or above `v`, capped at `cap`.
fn pow2_at_least(v: u32, cap: u32) -> u32 {
    v.max(1).checked_next_power_of_two().unwrap_or(cap).min(cap)
}

impl Conv2d {
    /// A convolution of `x[n, h, w, c]` with `k` filters of `r` × `s`: stride 1, no
    /// padding, no dilation, one group, no epilogue.
    pub fn new(n: u32, h: u32, w: u32, c: u32, k: u32, r: u32, s: u32) -> Self {
        Self {
            n,
            h,
            w,
            c,
            k,
            r,
            s,
            stride_h: 1,
            stride_w: 1,
            pad_h: 0,
            pad_w: 0,
            dil_h: 1,
            dil_w: 1,
            groups: 1,
            bias: false,
            relu: false,
        }
    }

    /// Steps between output pixels, in input pixels.
    pub fn stride(mut self, stride_h: u32, stride_w: u32) -> Self {
        (self.stride_h, self.stride_w) = (stride_h, stride_w);
        self
    }

    /// Zero padding on each side.
    pub fn pad(mut self, pad_h: u32, pad_w: u32) -> Self {
        (self.pad_h, self.pad_w) = (pad_h, pad_w);
        self
    }

    /// Steps between filter taps, in input pixels.
    pub fn dilation(mut self, dil_h: u32, dil_w: u32) -> Self {
        (self.dil_h, self.dil_w) = (dil_h, dil_w);
        self
    }

    /// Split channels into `groups` independent convolutions (`groups = c` is depthwise).
    pub fn grouped(mut self, groups: u32) -> Self {
        self.groups = groups;
        self
    }

    /// Add a bias over output channels.
    pub fn with_bias(mut self) -> Self {
        self.bias = true;
        self
    }

    /// Apply ReLU to the result.
    pub fn with_relu(mut self) -> Self {
        self.relu = true;
        self
    }

    /// Output height `(h + 2·pad_h - dil_h·(r - 1) - 1) / stride_h + 1` (0 if none fits).
    pub fn p(&self) -> u32 {
        out_size(self.h, self.r, self.stride_h, self.pad_h, self.dil_h)
    }

    /// Output width `(w + 2·pad_w - dil_w·(s - 1) - 1) / stride_w + 1` (0 if none fits).
    pub fn q(&self) -> u32 {
        out_size(self.w, self.s, self.stride_w, self.pad_w, self.dil_w)
    }

    /// Input channels per group.
    pub fn cg(&self) -> u32 {
        self.c / self.groups.max(1)
    }

    /// Output channels per group.
    pub fn kg(&self) -> u32 {
        self.k / self.groups.max(1)
    }

    /// Multiply-adds of the forward pass, `n·p·q·k·r·s·(c / groups)`; each backward pass
    /// performs as many. FLOPs are twice this.
    pub fn macs(&self) -> u64 {
        self.y_elems() * (self.r as u64 * self.s as u64 * self.cg() as u64)
    }

    /// Elements of `x` (and `dx`): `n·h·w·c`.
    pub fn x_elems(&self) -> u64 {
        self.n as u64 * self.h as u64 * self.w as u64 * self.c as u64
    }

    /// Elements of `weight` (and `dw`): `k·r·s·(c / groups)`.
    pub fn w_elems(&self) -> u64 {
        self.k as u64 * self.r as u64 * self.s as u64 * self.cg() as u64
    }

    /// Elements of `y` (and `dy`): `n·p·q·k`.
    pub fn y_elems(&self) -> u64 {
        self.n as u64 * self.p() as u64 * self.q() as u64 * self.k as u64
    }

    /// Checks the shape: every size positive, channels divisible by the groups, a
    /// non-empty output, and tensors small enough for the shader's 32-bit indexing.
    pub fn validate(&self) -> Result<()> {
        let sizes = [
            self.n,
            self.h,
            self.w,
            self.c,
            self.k,
            self.r,
            self.s,
            self.stride_h,
            self.stride_w,
            self.dil_h,
            self.dil_w,
            self.groups,
        ];
        ensure(sizes.iter().all(|&v| v > 0), KERNEL, || {
            format!(
                "every size must be positive, got N {} H {} W {} C {} K {} R {} S {} stride \
                 {}x{} dilation {}x{} groups {}",
                self.n,
                self.h,
                self.w,
                self.c,
                self.k,
                self.r,
                self.s,
                self.stride_h,
                self.stride_w,
                self.dil_h,
                self.dil_w,
                self.groups
            )
        })?;
        for (name, v) in [("C", self.c), ("K", self.k)] {
            ensure(v % self.groups == 0, KERNEL, || {
                format!("{name} = {v} is not divisible by groups = {}", self.groups)
            })?;
        }
        ensure(self.p() > 0 && self.q() > 0, KERNEL, || {
            format!(
                "the output is empty: a {}x{} filter with dilation {}x{} does not fit the {}x{} \
                 input padded by {}x{} (P = {}, Q = {})",
                self.r,
                self.s,
                self.dil_h,
                self.dil_w,
                self.h,
                self.w,
                self.pad_h,
                self.pad_w,
                self.p(),
                self.q()
            )
        })?;
        let reach_h = self.h as u64 + 2 * self.pad_h as u64 + self.dil_h as u64 * self.r as u64;
        let reach_w = self.w as u64 + 2 * self.pad_w as u64 + self.dil_w as u64 * self.s as u64;
        ensure(reach_h.max(reach_w) < 1 << 30, KERNEL, || {
            format!("spatial extent {reach_h}x{reach_w} (with padding and dilation) is too large")
        })?;
        to_u32(self.x_elems(), KERNEL, "elements of x (N·H·W·C)")?;
        to_u32(
            self.w_elems(),
            KERNEL,
            "elements of the weight (K·R·S·C/groups)",
        )?;
        to_u32(self.y_elems(), KERNEL, "elements of y (N·P·Q·K)")?;
        Ok(())
    }

    /// Binds `x`, `weight`, the optional `bias` and `y`; the dispatch writes y. The
    /// kernel is the autotuner's choice among [`Conv2d::forward_variants`] (see
    /// [`crate::autotune`]), or [`Conv2d::heuristic_forward`]'s when tuning is off.
    pub fn prepare(
        &self,
        gpu: &Gpu,
        x: &wgpu::Buffer,
        weight: &wgpu::Buffer,
        bias: Option<&wgpu::Buffer>,
        y: &wgpu::Buffer,
    ) -> Result<Dispatch> {
        self.validate()?;
        let variant = self.tuned(gpu, Pass::Forward, false);
        self.prepare_forward_variant(gpu, variant, x, weight, bias, y)
    }

    /// The autotuner's kernel for `pass` (`accumulate`: backward-data adds to dx).
    fn tuned(&self, gpu: &Gpu, pass: Pass, accumulate: bool) -> ConvVariant {
        let (candidates, heuristic) = match pass {
            Pass::Forward => (self.forward_variants(gpu), self.heuristic_forward(gpu)),
            Pass::BackwardData => (
                self.backward_data_variants(gpu),
                self.heuristic_backward_data(gpu),
            ),
            Pass::BackwardFilter => (
                self.backward_filter_variants(gpu),
                self.heuristic_backward_filter(gpu),
            ),
        };
        let small = self.validation_problem();
        let mut scratch = None;
        gpu.autotuner().choose(
            pass.kernel(),
            &format!("{self:?} accumulate={accumulate}"),
            self.macs(),
            &candidates,
            heuristic,
            |_| format!("{small:?} accumulate={accumulate}"),
            |v| small.validate_variant(gpu, pass, v, accumulate),
            |v, beat| {
                if scratch.is_none() {
                    let get = |elems: u64| {
                        gpu.pool()
                            .acquire(4 * elems.max(1), "wgtrain.autotune.scratch")
                    };
                    let bias = get(self.k as u64)?;
                    scratch = Some([
                        get(self.x_elems())?,
                        get(self.w_elems())?,
                        bias,
                        get(self.y_elems())?,
                    ]);
                }
                let [x, w, bias, y] = scratch.as_ref().expect("allocated above");
                let d = match pass {
                    Pass::Forward => {
                        let bias = self.bias.then_some(&**bias);
                        self.prepare_forward_variant(gpu, v, x, w, bias, y)?
                    }
                    Pass::BackwardData => {
                        self.prepare_backward_data_variant(gpu, v, y, w, x, accumulate)?
                    }
                    Pass::BackwardFilter => {
                        self.prepare_backward_filter_variant(gpu, v, x, y, w, accumulate)?
                    }
                };
                gpu.autotuner().time(gpu, &d, beat)
            },
        )
    }

    /// A small convolution with this one's filter, strides, padding, dilation, groups and
    /// epilogue, and channel counts that keep the same kernels applicable, on which a
    /// variant is checked against the reference before it is ever timed.
    fn validation_problem(&self) -> Conv2d {
        // Keep a count's residue mod 4 (the vec4 and subgroup kernels' condition) and
        // its side of MIN_PER_GROUP (whether groups run side by side).
        let shrink = |v: u32, keep: u32| if v <= keep { v } else { keep - 4 + v % 4 };
        let (cg, kg) = (
            shrink(self.cg(), MIN_PER_GROUP + 4),
            shrink(self.kg(), MIN_PER_GROUP + 12),
        );
        let side = |size: u32, r: u32, dil: u32| size.min((dil * (r - 1) + 1).max(12));
        Conv2d {
            n: 2,
            h: side(self.h, self.r, self.dil_h),
            w: side(self.w, self.s, self.dil_w),
            c: cg * self.groups,
            k: kg * self.groups,
            ..*self
        }
    }

    /// Runs `variant` of `pass` on this convolution with deterministic inputs and
    /// compares it with the CPU reference; `Ok(false)` when it disagrees.
    fn validate_variant(
        &self,
        gpu: &Gpu,
        pass: Pass,
        variant: ConvVariant,
        accumulate: bool,
    ) -> Result<bool> {
        use crate::autotune::{close, run_and_read, test_values};
        use crate::reference::conv2d as reference;
        let label = "wgtrain.autotune.validate";
        let w = test_values(self.w_elems() as usize, 2);
        let dw = gpu.upload(&w, label)?;
        match pass {
            Pass::Forward => {
                let x = test_values(self.x_elems() as usize, 1);
                let bias = test_values(self.k as usize, 3);
                let (dx, dbias) = (gpu.upload(&x, label)?, gpu.upload(&bias, label)?);
                let dy = gpu.upload(&vec![0f32; self.y_elems() as usize], label)?;
                let bias_buf = self.bias.then_some(&*dbias);
                let d = self.prepare_forward_variant(gpu, variant, &dx, &dw, bias_buf, &dy)?;
                let got = run_and_read(gpu, &d, &dy, self.y_elems() as usize)?;
                let want = reference::forward(self, &x, &w, self.bias.then_some(&bias[..]));
                Ok(close(&got, &want, self.r * self.s * self.cg()))
            }
            Pass::BackwardData => {
                let dy = test_values(self.y_elems() as usize, 1);
                let dx_in = test_values(self.x_elems() as usize, 4);
                let (ddy, ddx) = (gpu.upload(&dy, label)?, gpu.upload(&dx_in, label)?);
                let d =
                    self.prepare_backward_data_variant(gpu, variant, &ddy, &dw, &ddx, accumulate)?;
                let got = run_and_read(gpu, &d, &ddx, self.x_elems() as usize)?;
                let mut want = reference::backward_data(self, &dy, &w);
                if accumulate {
                    want.iter_mut().zip(&dx_in).for_each(|(o, i)| *o += i);
                }
                Ok(close(&got, &want, self.r * self.s * self.kg()))
            }
            Pass::BackwardFilter => {
                let x = test_values(self.x_elems() as usize, 1);
                let dy = test_values(self.y_elems() as usize, 3);
                let (dx, ddy) = (gpu.upload(&x, label)?, gpu.upload(&dy, label)?);
                let d =
                    self.prepare_backward_filter_variant(gpu, variant, &dx, &ddy, &dw, accumulate)?;
                let got = run_and_read(gpu, &d, &dw, self.w_elems() as usize)?;
                let mut want = reference::backward_filter(self, &x, &dy);
                if accumulate {
                    want.iter_mut().zip(&w).for_each(|(o, i)| *o += i);
                }
                let pixels = self.n * self.p() * self.q();
                Ok(close(&got, &want, pixels))
            }
        }
    }

    /// The forward kernels that apply on `gpu`, the register-blocked one first.
    pub fn forward_variants(&self, gpu: &Gpu) -> Vec<ConvVariant> {
        let mut v = vec![ConvVariant::Blocked];
        if gpu.subgroup_width() == Some(8) && !self.mixed(self.kg()) {
            let narrow = self.kg() <= HALF_COLUMNS;
            if self.cg() % 4 == 0 {
                v.extend(SUBGROUP_ROWS.map(|rows| ConvVariant::Subgroup { rows }));
                if narrow {
                    v.extend(SUBGROUP_HALF_ROWS.map(|rows| ConvVariant::SubgroupHalf { rows }));
                }
            } else {
                v.extend(SUBGROUP_ROWS.map(|rows| ConvVariant::SubgroupTaps { rows }));
                if narrow {
                    v.extend(SUBGROUP_HALF_ROWS.map(|rows| ConvVariant::SubgroupTapsHalf { rows }));
                }
            }
        }
        v
    }

    /// The fixed forward choice: the subgroup kernel where it applies (2-4x the
    /// register-blocked one on lavapipe), with rows per invocation by the output pixels.
    pub fn heuristic_forward(&self, gpu: &Gpu) -> ConvVariant {
        let rows = subgroup_rows_for(self.n as u64 * self.p() as u64 * self.q() as u64);
        subgroup_or_blocked(&self.forward_variants(gpu), rows)
    }

    /// [`Conv2d::prepare`] with a chosen kernel, one of [`Conv2d::forward_variants`].
    pub fn prepare_forward_variant(
        &self,
        gpu: &Gpu,
        variant: ConvVariant,
        x: &wgpu::Buffer,
        weight: &wgpu::Buffer,
        bias: Option<&wgpu::Buffer>,
        y: &wgpu::Buffer,
    ) -> Result<Dispatch> {
        self.validate()?;
        ensure(self.bias == bias.is_some(), KERNEL, || {
            let given = if bias.is_some() { "given" } else { "not given" };
            format!("bias option is {} but a bias buffer was {given}", self.bias)
        })?;
        ensure(
            self.forward_variants(gpu).contains(&variant),
            KERNEL,
            || format!("kernel variant {variant:?} does not apply to {self:?} on this adapter"),
        )?;
        let subgroup = match variant {
            ConvVariant::Subgroup { rows: 8 } => Some((8, "conv2d_forward_sg8")),
            ConvVariant::Subgroup { rows: 16 } => Some((16, "conv2d_forward_sg16")),
            ConvVariant::Subgroup { .. } => Some((32, "conv2d_forward_sg32")),
            ConvVariant::SubgroupTaps { rows: 8 } => Some((8, "conv2d_forward_taps_sg8")),
            ConvVariant::SubgroupTaps { rows: 16 } => Some((16, "conv2d_forward_taps_sg16")),
            ConvVariant::SubgroupTaps { .. } => Some((32, "conv2d_forward_taps_sg32")),
            ConvVariant::SubgroupHalf { rows: 8 } => Some((8, "conv2d_forward_sg8_h")),
            ConvVariant::SubgroupHalf { .. } => Some((16, "conv2d_forward_sg16_h")),
            ConvVariant::SubgroupTapsHalf { rows: 8 } => Some((8, "conv2d_forward_taps_sg8_h")),
            ConvVariant::SubgroupTapsHalf { .. } => Some((16, "conv2d_forward_taps_sg16_h")),
            ConvVariant::Blocked => None,
        };
        let half = matches!(
            variant,
            ConvVariant::SubgroupHalf { .. } | ConvVariant::SubgroupTapsHalf { .. }
        );
        if let Some((tm, entry)) = subgroup {
            let rows = (self.n as u64 * self.p() as u64 * self.q() as u64) as u32;
            let gemm = Gemm {
                entry,
                rows,
                cols: self.kg(),
                mixed: false,
            };
            let (builder, groups) = self.subgroup_builder(gpu, &gemm, tm, half);
            return builder
                .flag("HAS_BIAS", self.bias)
                .flag("RELU", self.relu)
                .read("x", x, self.x_elems())
                .read("weight", weight, self.w_elems())
                .read_opt("bias", bias, self.k as u64)
                .write("y", y, self.y_elems())
                .build(groups);
        }
        let mixed = self.mixed(self.kg());
        let cols = if mixed { self.k } else { self.kg() };
        let rows = (self.n as u64 * self.p() as u64 * self.q() as u64) as u32;
        // Channels per group in whole vec4s: every load of the vec4 variant is aligned.
        let vec4 = !mixed && self.cg() % 4 == 0;
        let gemm = Gemm {
            entry: if vec4 {
                "conv2d_forward_vec4"
            } else {
                "conv2d_forward"
            },
            rows,
            cols,
            mixed,
        };
        let (builder, groups) = self.builder(gpu, &gemm);
        builder
            .flag("HAS_BIAS", self.bias)
            .flag("RELU", self.relu)
            .read("x", x, self.x_elems())
            .read("weight", weight, self.w_elems())
            .read_opt("bias", bias, self.k as u64)
            .write("y", y, self.y_elems())
            .build(groups)
    }

    /// Gradient with respect to `x`: `dx[n,h,w,c] = Σ dy[n,p,q,k] · weight[k,r,s,c]` over
    /// the `k` of c's group and the taps `(r, s)` that reach `(h, w)` from an output pixel
    /// `(p, q)`. Overwrites `dx`, or adds to it when `accumulate`.
    pub fn prepare_backward_data(
        &self,
        gpu: &Gpu,
        dy: &wgpu::Buffer,
        weight: &wgpu::Buffer,
        dx: &wgpu::Buffer,
        accumulate: bool,
    ) -> Result<Dispatch> {
        self.validate()?;
        let variant = self.tuned(gpu, Pass::BackwardData, accumulate);
        self.prepare_backward_data_variant(gpu, variant, dy, weight, dx, accumulate)
    }

    /// The backward-data kernels that apply on `gpu`, the register-blocked one first. The
    /// subgroup kernels need whole vec4s of channels and out-channels, and dilation 1
    /// when strided (then they run by stride phases).
    pub fn backward_data_variants(&self, gpu: &Gpu) -> Vec<ConvVariant> {
        let mut v = vec![ConvVariant::Blocked];
        let strided = self.stride_h > 1 || self.stride_w > 1;
        if gpu.subgroup_width() == Some(8)
            && (!strided || (self.dil_h == 1 && self.dil_w == 1))
            && self.cg() % 4 == 0
            && self.kg() % 4 == 0
            && !self.mixed(self.cg())
        {
            v.extend(SUBGROUP_ROWS.map(|rows| ConvVariant::Subgroup { rows }));
            if !strided && self.cg() <= HALF_COLUMNS {
                v.extend(SUBGROUP_HALF_ROWS.map(|rows| ConvVariant::SubgroupHalf { rows }));
            }
        }
        v
    }

    /// The fixed backward-data choice, as [`Conv2d::heuristic_forward`] but over the
    /// N·H·W input pixels.
    pub fn heuristic_backward_data(&self, gpu: &Gpu) -> ConvVariant {
        // Per stride phase when strided.
        let rows = self.n as u64
            * self.h.div_ceil(self.stride_h.max(1)) as u64
            * self.w.div_ceil(self.stride_w.max(1)) as u64;
        subgroup_or_blocked(&self.backward_data_variants(gpu), subgroup_rows_for(rows))
    }

    /// [`Conv2d::prepare_backward_data`] with a chosen kernel, one of
    /// [`Conv2d::backward_data_variants`].
    pub fn prepare_backward_data_variant(
        &self,
        gpu: &Gpu,
        variant: ConvVariant,
        dy: &wgpu::Buffer,
        weight: &wgpu::Buffer,
        dx: &wgpu::Buffer,
        accumulate: bool,
    ) -> Result<Dispatch> {
        self.validate()?;
        ensure(
            self.backward_data_variants(gpu).contains(&variant),
            KERNEL,
            || format!("kernel variant {variant:?} does not apply to {self:?} on this adapter"),
        )?;
        let subgroup = match variant {
            ConvVariant::Subgroup { rows } => Some((rows, false)),
            ConvVariant::SubgroupHalf { rows } => Some((rows, true)),
            _ => None,
        };
        if let Some((tm, half)) = subgroup {
            // Strided: one workgroup column per stride phase, rows for the largest phase.
            let phases = self.stride_h * self.stride_w;
            let rows = to_u32(
                self.n as u64
                    * self.h.div_ceil(self.stride_h) as u64
                    * self.w.div_ceil(self.stride_w) as u64,
                KERNEL,
                "N·H·W",
            )?;
            let entry = match (phases > 1, half, tm) {
                (false, false, 8) => "conv2d_backward_data_sg8",
                (false, false, 16) => "conv2d_backward_data_sg16",
                (false, false, _) => "conv2d_backward_data_sg32",
                (false, true, 8) => "conv2d_backward_data_sg8_h",
                (false, true, _) => "conv2d_backward_data_sg16_h",
                (true, _, 8) => "conv2d_backward_data_phase_sg8",
                (true, _, 16) => "conv2d_backward_data_phase_sg16",
                (true, _, _) => "conv2d_backward_data_phase_sg32",
            };
            let gemm = Gemm {
                entry,
                rows,
                cols: self.cg(),
                mixed: false,
            };
            let (builder, mut groups) = self.subgroup_builder(gpu, &gemm, tm, half);
            groups[0] = groups[0].saturating_mul(phases);
            ensure(
                groups[0] <= gpu.limits().max_compute_workgroups_per_dimension,
                KERNEL,
                || format!("{self:?}: too many stride phases x column tiles for one dispatch"),
            )?;
            return builder
                .flag("ACCUMULATE", accumulate)
                .read("dy", dy, self.y_elems())
                .read("weight", weight, self.w_elems())
                .write("dx", dx, self.x_elems())
                .build(groups);
        }
        let mixed = self.mixed(self.cg());
        let cols = if mixed { self.c } else { self.cg() };
        // Rows are dx pixels in phases of stride_w, each padded to w_steps (see the shader).
        let padded_w = self.stride_w as u64 * self.w_steps() as u64;
        let rows = to_u32(
            self.n as u64 * self.h as u64 * padded_w,
            KERNEL,
            "N·H·W rounded up",
        )?;
        // Channels and out-channels per group in whole vec4s: every load is aligned.
        let vec4 = !mixed && self.cg() % 4 == 0 && self.kg() % 4 == 0;
        let gemm = Gemm {
            entry: if vec4 {
                "conv2d_backward_data_vec4"
            } else {
                "conv2d_backward_data"
            },
            rows,
            cols,
            mixed,
        };
        let (builder, groups) = self.builder(gpu, &gemm);
        builder
            .flag("ACCUMULATE", accumulate)
            .read("dy", dy, self.y_elems())
            .read("weight", weight, self.w_elems())
            .write("dx", dx, self.x_elems())
            .build(groups)
    }

    /// Gradient with respect to the weight: `dw[k,r,s,c] = Σ_{n,p,q} dy[n,p,q,k] ·
    /// x[n, p·stride_h - pad_h + r·dil_h, q·stride_w - pad_w + s·dil_w, g·Cg + c]`.
    /// Overwrites `dw`, or adds to it when `accumulate`. The kernel is the autotuner's
    /// choice among [`Conv2d::backward_filter_variants`].
    pub fn prepare_backward_filter(
        &self,
        gpu: &Gpu,
        x: &wgpu::Buffer,
        dy: &wgpu::Buffer,
        dw: &wgpu::Buffer,
        accumulate: bool,
    ) -> Result<Dispatch> {
        self.validate()?;
        let variant = self.tuned(gpu, Pass::BackwardFilter, accumulate);
        self.prepare_backward_filter_variant(gpu, variant, x, dy, dw, accumulate)
    }

    /// The backward-filter kernels that apply on `gpu`, the register-blocked one first.
    /// The subgroup kernels need whole vec4s of channels and out-channels.
    pub fn backward_filter_variants(&self, gpu: &Gpu) -> Vec<ConvVariant> {
        let mut v = vec![ConvVariant::Blocked];
        if gpu.subgroup_width() == Some(8) && self.kg() % 4 == 0 && !self.mixed(self.kg()) {
            if self.cg() % 4 == 0 {
                v.extend(SUBGROUP_ROWS.map(|rows| ConvVariant::Subgroup { rows }));
            } else {
                v.extend(SUBGROUP_ROWS.map(|rows| ConvVariant::SubgroupTaps { rows }));
            }
        }
        v
    }

    /// The fixed backward-filter choice: the subgroup kernel with as many rows (out-
    /// channels) per invocation as a group has, up to 32.
    pub fn heuristic_backward_filter(&self, gpu: &Gpu) -> ConvVariant {
        let rows = match self.kg() {
            kg if kg >= 32 => 32,
            kg if kg >= 16 => 16,
            _ => 8,
        };
        subgroup_or_blocked(&self.backward_filter_variants(gpu), rows)
    }

    /// [`Conv2d::prepare_backward_filter`] with a chosen kernel, one of
    /// [`Conv2d::backward_filter_variants`].
    pub fn prepare_backward_filter_variant(
        &self,
        gpu: &Gpu,
        variant: ConvVariant,
        x: &wgpu::Buffer,
        dy: &wgpu::Buffer,
        dw: &wgpu::Buffer,
        accumulate: bool,
    ) -> Result<Dispatch> {
        self.validate()?;
        ensure(
            self.backward_filter_variants(gpu).contains(&variant),
            KERNEL,
            || format!("kernel variant {variant:?} does not apply to {self:?} on this adapter"),
        )?;
        let subgroup = match variant {
            ConvVariant::Subgroup { rows: 8 } => Some((8, "conv2d_backward_filter_sg8")),
            ConvVariant::Subgroup { rows: 16 } => Some((16, "conv2d_backward_filter_sg16")),
            ConvVariant::Subgroup { .. } => Some((32, "conv2d_backward_filter_sg32")),
            ConvVariant::SubgroupTaps { rows: 8 } => Some((8, "conv2d_backward_filter_taps_sg8")),
            ConvVariant::SubgroupTaps { rows: 16 } => {
                Some((16, "conv2d_backward_filter_taps_sg16"))
            }
            ConvVariant::SubgroupTaps { .. } => Some((32, "conv2d_backward_filter_taps_sg32")),
            // Not offered by backward_filter_variants (refused above).
            ConvVariant::Blocked
            | ConvVariant::SubgroupHalf { .. }
            | ConvVariant::SubgroupTapsHalf { .. } => None,
        };
        if let Some((tm, entry)) = subgroup {
            let gemm = Gemm {
                entry,
                rows: self.kg(),
                cols: self.r * self.s * self.cg(),
                mixed: false,
            };
            let (builder, groups) = self.subgroup_builder(gpu, &gemm, tm, false);
            return builder
                .flag("ACCUMULATE", accumulate)
                .read("x", x, self.x_elems())
                .read("dy", dy, self.y_elems())
                .write("dw", dw, self.w_elems())
                .build(groups);
        }
        let mixed = self.mixed(self.kg());
        let rows = if mixed { self.k } else { self.kg() };
        let mut cols = self.r * self.s * self.cg();
        // Channels and out-channels per group in whole vec4s: every load is aligned. The
        // vec4 entry's columns come in units of 4 channels, or 8 (`wide`) when Cg allows.
        let vec4 = !mixed && self.cg() % 4 == 0 && self.kg() % 4 == 0;
        let wide = vec4 && self.cg() % 8 == 0;
        if wide {
            cols /= 2;
        }
        let gemm = Gemm {
            entry: if vec4 {
                "conv2d_backward_filter_vec4"
            } else {
                "conv2d_backward_filter"
            },
            rows,
            cols,
            mixed,
        };
        let (builder, groups) = self.builder(gpu, &gemm);
        builder
            .flag("ACCUMULATE", accumulate)
            .flag("WIDE", wide)
            .read("x", x, self.x_elems())
            .read("dy", dy, self.y_elems())
            .write("dw", dw, self.w_elems())
            .build(groups)
    }

    /// Output columns one input column can reach along w: `ceil(w / stride_w)`.
    fn w_steps(&self) -> u32 {
        self.w.div_ceil(self.stride_w.max(1))
    }

    /// Whether a pass whose grouped dimension has `per_group` entries per group runs all
    /// groups side by side (a dispatch column per group would leave most lanes idle).
    fn mixed(&self, per_group: u32) -> bool {
        self.groups > 1 && per_group < MIN_PER_GROUP
    }

    /// Workgroup shape for a `rows` × `cols` GEMM: up to 8 invocations across columns
    /// (more when there are few rows), the rest down rows; smaller when both are small.
    fn workgroup(rows: u32, cols: u32) -> (u32, u32) {
        let want_x = pow2_at_least(cols.div_ceil(TN), WG_INVOCATIONS);
        let want_y = pow2_at_least(rows.div_ceil(TM), WG_INVOCATIONS);
        let wg_x = want_x.min(8);
        let wg_y = want_y.min(WG_INVOCATIONS / wg_x);
        (want_x.min(WG_INVOCATIONS / wg_y), wg_y)
    }

    /// The builder with the pipeline's constants and uniform set, and the workgroup grid.
    fn builder<'a>(&self, gpu: &'a Gpu, gemm: &Gemm) -> (DispatchBuilder<'a>, [u32; 3]) {
        let (wg_x, wg_y) = Self::workgroup(gemm.rows, gemm.cols);
        let col_tiles = gemm.cols.div_ceil(wg_x * TN);
        let row_tiles = gemm.rows.div_ceil(wg_y * TM);
        let (builder, groups) = self.builder_with(gpu, gemm, shaders::CONV2D, col_tiles, row_tiles);
        let builder = builder
            .constant("WG_X", wg_x)
            .constant("WG_Y", wg_y)
            .flag("MIXED", gemm.mixed);
        (builder, groups)
    }

    /// The builder and grid of a `conv2d_sg.wgsl` kernel with `tm` rows per invocation:
    /// workgroups of 8 x wg_y, one subgroup (8 lanes x 4 columns, or with `half` 4 lanes
    /// x 4 columns x 2 row sets) per workgroup row.
    fn subgroup_builder<'a>(
        &self,
        gpu: &'a Gpu,
        gemm: &Gemm,
        tm: u32,
        half: bool,
    ) -> (DispatchBuilder<'a>, [u32; 3]) {
        // A half-lane (`_h`) subgroup spans 16 columns and two sets of tm rows.
        let (tile_cols, sg_rows) = if half { (16, 2 * tm) } else { (32, tm) };
        let wg_y = SUBGROUP_WG_Y.min(gemm.rows.div_ceil(sg_rows));
        let col_tiles = gemm.cols.div_ceil(tile_cols);
        let row_tiles = gemm.rows.div_ceil(sg_rows * wg_y);
        let (builder, groups) =
            self.builder_with(gpu, gemm, shaders::CONV2D_SG, col_tiles, row_tiles);
        (builder.constant("WG_Y", wg_y), groups)
    }

    /// The builder for `shader` with the uniform set, and the grid for the given tiles.
    fn builder_with<'a>(
        &self,
        gpu: &'a Gpu,
        gemm: &Gemm,
        shader: crate::shaders::Shader,
        col_tiles: u32,
        row_tiles: u32,
    ) -> (DispatchBuilder<'a>, [u32; 3]) {
        let max = gpu.limits().max_compute_workgroups_per_dimension;
        let [ry, rz, _] = grid_1d(row_tiles as u64, 1, max);
        let group_columns = if gemm.mixed { 1 } else { self.groups };
        let groups = [group_columns.saturating_mul(col_tiles), ry, rz];
        let params = Params {
            n: self.n,
            h: self.h,
            w: self.w,
            c: self.c,
            k: self.k,
            r: self.r,
            s: self.s,
            p: self.p(),
            q: self.q(),
            stride_h: self.stride_h,
            stride_w: self.stride_w,
            pad_h: self.pad_h,
            pad_w: self.pad_w,
            dil_h: self.dil_h,
            dil_w: self.dil_w,
            groups: self.groups,
            cg: self.cg(),
            kg: self.kg(),
            rows: gemm.rows,
            cols: gemm.cols,
            col_tiles,
            w_steps: self.w_steps(),
            pad: [0; 2],
        };
        let builder = DispatchBuilder::new(gpu, shader, gemm.entry).params(&params);
        (builder, groups)
    }
}

#[cfg(test)]
mod tests {
    use super::{Conv2d, out_size};

    #[test]
    fn output_size_formula() {
        assert_eq!(out_size(35, 11, 4, 2, 1), 8);
        assert_eq!(out_size(5, 3, 1, 1, 1), 5);
        assert_eq!(out_size(7, 3, 2, 0, 2), 2);
        assert_eq!(out_size(2, 3, 1, 0, 1), 0);
        assert_eq!(out_size(4, 1, 0, 0, 1), 0);
    }

    /// The autotuner validates a variant on `validation_problem()`: the same kernels must
    /// apply there as on the real shape, or a good variant is never picked (AlexNet
    /// 2012's grouped layers once lost their subgroup kernels this way).
    #[test]
    fn validation_problems_offer_the_same_variants() {
        let gpu = crate::Gpu::new().expect("adapter");
        let shapes = [
            Conv2d::new(1, 27, 27, 96, 256, 5, 5).pad(2, 2).grouped(2),
            Conv2d::new(1, 13, 13, 384, 384, 3, 3).pad(1, 1).grouped(2),
            Conv2d::new(1, 224, 224, 3, 64, 11, 11)
                .stride(4, 4)
                .pad(2, 2),
            Conv2d::new(64, 28, 28, 1, 16, 5, 5),
            Conv2d::new(64, 12, 12, 16, 32, 5, 5),
            Conv2d::new(1, 56, 56, 256, 512, 1, 1).stride(2, 2),
            Conv2d::new(1, 14, 14, 512, 512, 3, 3)
                .stride(2, 2)
                .pad(1, 1),
            Conv2d::new(2, 9, 9, 6, 12, 3, 3).pad(1, 1).grouped(3),
            Conv2d::new(2, 30, 30, 64, 64, 3, 3)
                .pad(2, 2)
                .dilation(2, 2),
        ];
        for p in shapes {
            let small = p.validation_problem();
            assert_eq!(
                p.forward_variants(&gpu),
                small.forward_variants(&gpu),
                "{p:?}"
            );
            assert_eq!(
                p.backward_data_variants(&gpu),
                small.backward_data_variants(&gpu),
                "{p:?}"
            );
            assert_eq!(
                p.backward_filter_variants(&gpu),
                small.backward_filter_variants(&gpu),
                "{p:?}"
            );
        }
    }

    #[test]
    fn workgroups_hold_at_most_64_invocations_and_follow_narrow_gemms() {
        assert_eq!(Conv2d::workgroup(10_000, 256), (8, 8));
        assert_eq!(Conv2d::workgroup(10_000, 8), (2, 32));
        assert_eq!(Conv2d::workgroup(8, 10_000), (32, 2));
        assert_eq!(Conv2d::workgroup(3, 5), (2, 1));
    }
}
