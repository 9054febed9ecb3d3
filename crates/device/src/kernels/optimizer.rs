//! Optimizer updates with PyTorch's formulas: [`Sgd`] (`torch.optim.SGD`, with momentum,
//! dampening, Nesterov and weight decay) and [`Adam`] (`torch.optim.Adam` and, with
//! decoupled weight decay, `torch.optim.AdamW`). Shader: `shaders/optimizer.wgsl`.
//!
//! ## Design
//!
//! Each update is one memory-bound dispatch, one invocation per parameter element,
//! in place on the parameter and its state buffers. Everything that changes from step to
//! step (the learning rate, the step count, Adam's bias corrections) lives in the
//! dispatch's uniform buffer, so a training loop builds the dispatch once and, before
//! each step, rewrites the uniform: `queue.write_buffer(dispatch.uniform().unwrap(), 0,
//! &opt.uniform_bytes(step, lr)?)`, which is what [`Sgd::write_step`] and
//! [`Adam::write_step`] do. A freshly prepared dispatch holds the values of step 1 at
//! the struct's `lr`.
//!
//! ```no_run
//! # use wgtrain_device::{Gpu, kernels::optimizer::Adam};
//! # fn demo(gpu: &Gpu, w: &wgpu::Buffer, g: &wgpu::Buffer, m: &wgpu::Buffer, v: &wgpu::Buffer)
//! # -> wgtrain_device::Result<()> {
//! let adam = Adam::adamw(1000, 1e-3);
//! let update = adam.prepare(gpu, w, g, m, v)?; // m and v start zeroed
//! for step in 1..=100 {
//!     let lr = 1e-3 * 0.99f32.powi(step as i32 - 1); // a schedule: no recompilation
//!     adam.write_step(gpu, &update, step, lr)?;
//!     // ... record the backward, then `update`, and submit
//! }
//! # Ok(()) }
//! ```

use crate::error::Result;
use crate::gpu::Gpu;
use crate::kernels::ensure;
use crate::pipeline::{Dispatch, DispatchBuilder, grid_1d};
use crate::shaders;

const KERNEL: &str = "optimizer";

/// A parameter server's update for one worker's pushed gradient: asynchronous SGD with
/// delay compensation (Zheng et al., ICML 2017). With `w_bak` the copy of the weights
/// the pushing worker last pulled:
///
/// - `d = g + λ · g ⊙ g ⊙ (w − w_bak) + weight_decay · w` (DC-ASGD-c; `λ = 0` is plain
///   ASGD), then `w -= lr · d`;
/// - with `adaptive = Some((m, eps))` (DC-ASGD-a), first `ms = m · ms + (1 − m) · g ⊙ g`,
///   and `λ` becomes `λ0 / sqrt(ms + eps)` element-wise;
/// - with `momentum > 0`, the compensated `d` goes through a momentum buffer as
///   `torch.optim.SGD`'s (no dampening): `vel = momentum · vel + d` (`vel` starts
///   zeroed), then `d = vel`, or `d + momentum · vel` when `nesterov`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DcAsgd {
    pub count: u32,
    pub lr: f32,
    /// `λ` (DC-ASGD-c) or `λ0` (DC-ASGD-a).
    pub lambda: f32,
    /// `(m, eps)` of the mean square for DC-ASGD-a (the paper's defaults: 0.95, 1e-7).
    pub adaptive: Option<(f32, f32)>,
    /// Momentum of the server's update (0: none, and no velocity buffer).
    pub momentum: f32,
    pub nesterov: bool,
    pub weight_decay: f32,
}

impl DcAsgd {
    /// Plain DC-ASGD-c (`lambda`; 0 for ASGD) over `count` parameters: no momentum, no
    /// weight decay.
    pub fn new(count: u32, lr: f32, lambda: f32) -> Self {
        Self {
            count,
            lr,
            lambda,
            adaptive: None,
            momentum: 0.0,
            nesterov: false,
            weight_decay: 0.0,
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct DcParams {
    count: u32,
    lr: f32,
    lambda: f32,
    ms_momentum: f32,
    eps: f32,
    momentum: f32,
    weight_decay: f32,
    pad: u32,
}

impl DcAsgd {
    fn check(&self, lr: f32) -> Result<()> {
        check_count(self.count, "DC-ASGD")?;
        check_lr(lr, "DC-ASGD")?;
        ensure(
            self.lambda >= 0.0 && self.lambda.is_finite(),
            KERNEL,
            || {
                format!(
                    "DC-ASGD: invalid lambda {} (must be finite and >= 0)",
                    self.lambda
                )
            },
        )?;
        if let Some((m, eps)) = self.adaptive {
            ensure(
                (0.0..1.0).contains(&m) && eps > 0.0 && eps.is_finite(),
                KERNEL,
                || {
                    format!(
                        "DC-ASGD-a: the mean square needs 0 <= m < 1 and eps > 0, got m {m} eps {eps}"
                    )
                },
            )?;
        }
        ensure(
            (0.0..1.0).contains(&self.momentum)
                && self.weight_decay >= 0.0
                && self.weight_decay.is_finite(),
            KERNEL,
            || {
                format!(
                    "DC-ASGD: needs 0 <= momentum < 1 and a finite weight decay >= 0, got \
                     momentum {} weight decay {}",
                    self.momentum, self.weight_decay
                )
            },
        )?;
        ensure(!self.nesterov || self.momentum > 0.0, KERNEL, || {
            "DC-ASGD: Nesterov needs a momentum".to_owned()
        })?;
        Ok(())
    }

    fn params(&self, lr: f32) -> Result<DcParams> {
        self.check(lr)?;
        let (ms_momentum, eps) = self.adaptive.unwrap_or((0.0, 1.0));
        Ok(DcParams {
            count: self.count,
            lr,
            lambda: self.lambda,
            ms_momentum,
            eps,
            momentum: self.momentum,
            weight_decay: self.weight_decay,
            pad: 0,
        })
    }

    /// The in-place update of `param` from `grad` and the pushing worker's `backup`
    /// (and the mean square `ms`, required exactly when adaptive, and the velocity `vel`,
    /// required exactly with a momentum; both start zeroed), at `self.lr`.
    pub fn prepare(
        &self,
        gpu: &Gpu,
        param: &wgpu::Buffer,
        grad: &wgpu::Buffer,
        backup: &wgpu::Buffer,
        ms: Option<&wgpu::Buffer>,
        vel: Option<&wgpu::Buffer>,
    ) -> Result<Dispatch> {
        let params = self.params(self.lr)?;
        ensure(self.adaptive.is_some() == ms.is_some(), KERNEL, || {
            "DC-ASGD: a mean-square buffer is needed exactly for the adaptive variant".to_owned()
        })?;
        ensure((self.momentum > 0.0) == vel.is_some(), KERNEL, || {
            "DC-ASGD: a velocity buffer is needed exactly with a momentum".to_owned()
        })?;
        let n = self.count as u64;
        DispatchBuilder::new(gpu, shaders::OPTIMIZER, "dc_asgd")
            .constant("WG", WG)
            .flag("ADAPTIVE", self.adaptive.is_some())
            .flag("MOMENTUM", self.momentum > 0.0)
            .flag("NESTEROV", self.nesterov)
            .params(&params)
            .write("param", param, n)
            .read("grad", grad, n)
            .read("backup", backup, n)
            .write_opt("ms", ms, n)
            .write_opt("vel", vel, n)
            .build(grid(gpu, self.count))
    }

    /// Sets `dispatch` (from [`DcAsgd::prepare`]) to learning rate `lr`.
    pub fn write_lr(&self, gpu: &Gpu, dispatch: &Dispatch, lr: f32) -> Result<()> {
        write_uniform(gpu, dispatch, bytemuck::bytes_of(&self.params(lr)?))
    }
}
/// Invocations per workgroup.
const WG: u32 = 256;

/// `torch.optim.SGD` over `count` parameters. With `momentum == 0` there is no
/// momentum buffer; otherwise one of `count` elements (its contents are ignored on
/// step 1, where PyTorch creates it as a copy of the gradient).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sgd {
    pub count: u32,
    pub lr: f32,
    pub momentum: f32,
    pub dampening: f32,
    pub weight_decay: f32,
    pub nesterov: bool,
    /// Also count the gradient's NaN and ±Inf elements into this slot of a counts
    /// buffer ([`Sgd::prepare_counting`]).
    pub nonfinite_slot: Option<u32>,
}

/// `torch.optim.Adam` (weight decay added to the gradient) or, when `decoupled`,
/// `torch.optim.AdamW` (parameters scaled by `1 - lr · weight_decay`), over `count`
/// parameters with first and second moment buffers of `count` elements (zeroed before
/// step 1). `amsgrad` and `maximize` are not supported.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Adam {
    pub count: u32,
    pub lr: f32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub weight_decay: f32,
    pub decoupled: bool,
    /// Also count the gradient's NaN and ±Inf elements into this slot of a counts
    /// buffer ([`Adam::prepare_counting`]).
    pub nonfinite_slot: Option<u32>,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct SgdParams {
    count: u32,
    lr: f32,
    momentum: f32,
    dampening: f32,
    weight_decay: f32,
    first_step: u32,
    nonfinite_slot: u32,
    pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct AdamParams {
    count: u32,
    step: u32,
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    bias_correction1: f32,
    bias_correction2_sqrt: f32,
    nonfinite_slot: u32,
    pad: [u32; 2],
}

fn check_counts(slot: Option<u32>, counts: Option<&wgpu::Buffer>, what: &str) -> Result<()> {
    ensure(slot.is_some() == counts.is_some(), KERNEL, || {
        format!(
            "{what}: non-finite slot {slot:?} but a counts buffer was {}",
            if counts.is_some() {
                "given"
            } else {
                "not given"
            }
        )
    })
}

fn check_lr(lr: f32, what: &str) -> Result<()> {
    ensure(lr >= 0.0 && lr.is_finite(), KERNEL, || {
        format!("{what}: invalid learning rate {lr} (must be finite and >= 0)")
    })
}

fn check_step(step: u32, what: &str) -> Result<()> {
    ensure(step >= 1, KERNEL, || {
        format!("{what}: steps count from 1, got step {step}")
    })
}

fn check_count(count: u32, what: &str) -> Result<()> {
    ensure(count > 0, KERNEL, || {
        format!("{what}: the parameter count must be positive, got 0")
    })
}

/// Rewrites `dispatch`'s uniform with `bytes` through the queue (ordered before the
/// next submission).
fn write_uniform(gpu: &Gpu, dispatch: &Dispatch, bytes: &[u8]) -> Result<()> {
    let what = || {
        format!(
            "dispatch {} has no uniform buffer of {} bytes",
            dispatch.label(),
            bytes.len()
        )
    };
    let Some(u) = dispatch
        .uniform()
        .filter(|u| u.size() == bytes.len() as u64)
    else {
        return ensure(false, KERNEL, what);
    };
    gpu.queue().write_buffer(u, 0, bytes);
    Ok(())
}

fn grid(gpu: &Gpu, count: u32) -> [u32; 3] {
    grid_1d(
        count as u64,
        WG,
        gpu.limits().max_compute_workgroups_per_dimension,
    )
}

impl Sgd {
    /// Plain SGD: no momentum, no weight decay.
    pub fn new(count: u32, lr: f32) -> Self {
        Self {
            count,
            lr,
            momentum: 0.0,
            dampening: 0.0,
            weight_decay: 0.0,
            nesterov: false,
            nonfinite_slot: None,
        }
    }

    /// Sets the momentum (a momentum buffer is then required).
    pub fn with_momentum(mut self, momentum: f32) -> Self {
        self.momentum = momentum;
        self
    }

    /// Sets the dampening of the momentum.
    pub fn with_dampening(mut self, dampening: f32) -> Self {
        self.dampening = dampening;
        self
    }

    /// Sets the L2 weight decay (added to the gradient).
    pub fn with_weight_decay(mut self, weight_decay: f32) -> Self {
        self.weight_decay = weight_decay;
        self
    }

    /// Uses Nesterov momentum (needs a momentum and zero dampening).
    pub fn with_nesterov(mut self) -> Self {
        self.nesterov = true;
        self
    }

    fn check(&self) -> Result<()> {
        check_count(self.count, "SGD")?;
        check_lr(self.lr, "SGD")?;
        ensure(
            self.momentum >= 0.0 && self.momentum.is_finite(),
            KERNEL,
            || {
                format!(
                    "SGD: invalid momentum value {} (must be >= 0)",
                    self.momentum
                )
            },
        )?;
        ensure(self.dampening.is_finite(), KERNEL, || {
            format!("SGD: invalid dampening {}", self.dampening)
        })?;
        ensure(
            self.weight_decay >= 0.0 && self.weight_decay.is_finite(),
            KERNEL,
            || {
                format!(
                    "SGD: invalid weight_decay value {} (must be >= 0)",
                    self.weight_decay
                )
            },
        )?;
        ensure(
            !self.nesterov || (self.momentum > 0.0 && self.dampening == 0.0),
            KERNEL,
            || {
                format!(
                    "SGD: Nesterov momentum requires a momentum and zero dampening, got momentum {} \
                 dampening {}",
                    self.momentum, self.dampening
                )
            },
        )
    }

    /// The uniform for `step` (from 1) at learning rate `lr`: write it into the update
    /// dispatch's [`uniform`](Dispatch::uniform) with `Queue::write_buffer` (or use
    /// [`Sgd::write_step`]).
    pub fn uniform_bytes(&self, step: u32, lr: f32) -> Result<Vec<u8>> {
        Ok(bytemuck::bytes_of(&self.params(step, lr)?).to_vec())
    }

    fn params(&self, step: u32, lr: f32) -> Result<SgdParams> {
        check_step(step, "SGD")?;
        check_lr(lr, "SGD")?;
        Ok(SgdParams {
            count: self.count,
            lr,
            momentum: self.momentum,
            dampening: self.dampening,
            weight_decay: self.weight_decay,
            first_step: (step == 1) as u32,
            nonfinite_slot: self.nonfinite_slot.unwrap_or(0),
            pad: 0,
        })
    }

    /// Sets `dispatch` (from [`Sgd::prepare`]) up for `step` at learning rate `lr`.
    pub fn write_step(&self, gpu: &Gpu, dispatch: &Dispatch, step: u32, lr: f32) -> Result<()> {
        write_uniform(gpu, dispatch, &self.uniform_bytes(step, lr)?)
    }

    /// The in-place update of `param` (and `momentum_buf`, required exactly when
    /// `momentum != 0`) from `grad`, set up for step 1 at `self.lr`.
    pub fn prepare(
        &self,
        gpu: &Gpu,
        param: &wgpu::Buffer,
        grad: &wgpu::Buffer,
        momentum_buf: Option<&wgpu::Buffer>,
    ) -> Result<Dispatch> {
        self.prepare_counting(gpu, param, grad, momentum_buf, None)
    }

    /// [`Sgd::prepare`] that also counts the gradient's non-finite elements into
    /// `counts[nonfinite_slot]` (atomic adds; clear the slot before the step). `counts`
    /// is required exactly when [`Sgd::nonfinite_slot`] is set.
    pub fn prepare_counting(
        &self,
        gpu: &Gpu,
        param: &wgpu::Buffer,
        grad: &wgpu::Buffer,
        momentum_buf: Option<&wgpu::Buffer>,
        counts: Option<&wgpu::Buffer>,
    ) -> Result<Dispatch> {
        self.check()?;
        check_counts(self.nonfinite_slot, counts, "SGD")?;
        let with_momentum = self.momentum != 0.0;
        ensure(with_momentum == momentum_buf.is_some(), KERNEL, || {
            format!(
                "SGD: momentum is {} but a momentum buffer was {}",
                self.momentum,
                if momentum_buf.is_some() {
                    "given"
                } else {
                    "not given"
                }
            )
        })?;
        let params = self.params(1, self.lr)?;
        let n = self.count as u64;
        let entry = if with_momentum { "sgd_momentum" } else { "sgd" };
        let mut b = DispatchBuilder::new(gpu, shaders::OPTIMIZER, entry)
            .constant("WG", WG)
            .flag("NESTEROV", self.nesterov)
            .params(&params)
            .write("param", param, n)
            .read("grad", grad, n);
        if let Some(buf) = momentum_buf {
            b = b.write("momentum_buf", buf, n);
        }
        let slots = self.nonfinite_slot.map_or(0, |s| s as u64 + 1);
        b.flag("COUNT_NONFINITE", self.nonfinite_slot.is_some())
            .write_opt("counts", counts, slots)
            .build(grid(gpu, self.count))
    }
}

impl Adam {
    /// `torch.optim.Adam` defaults: betas (0.9, 0.999), eps 1e-8, no weight decay.
    pub fn new(count: u32, lr: f32) -> Self {
        Self {
            count,
            lr,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            decoupled: false,
            nonfinite_slot: None,
        }
    }

    /// `torch.optim.AdamW` defaults: as [`Adam::new`] with decoupled weight decay 0.01.
    pub fn adamw(count: u32, lr: f32) -> Self {
        Self {
            weight_decay: 0.01,
            decoupled: true,
            ..Self::new(count, lr)
        }
    }

    /// Sets the moment decay rates.
    pub fn with_betas(mut self, beta1: f32, beta2: f32) -> Self {
        (self.beta1, self.beta2) = (beta1, beta2);
        self
    }

    /// Sets the denominator's epsilon.
    pub fn with_eps(mut self, eps: f32) -> Self {
        self.eps = eps;
        self
    }

    /// Sets the weight decay (L2 for Adam, decoupled for AdamW).
    pub fn with_weight_decay(mut self, weight_decay: f32) -> Self {
        self.weight_decay = weight_decay;
        self
    }

    fn name(&self) -> &'static str {
        if self.decoupled { "AdamW" } else { "Adam" }
    }

    fn check(&self) -> Result<()> {
        let name = self.name();
        check_count(self.count, name)?;
        check_lr(self.lr, name)?;
        ensure(self.eps >= 0.0 && self.eps.is_finite(), KERNEL, || {
            format!("{name}: invalid epsilon value {} (must be >= 0)", self.eps)
        })?;
        for (i, beta) in [self.beta1, self.beta2].into_iter().enumerate() {
            ensure((0.0..1.0).contains(&beta), KERNEL, || {
                format!("{name}: invalid beta parameter at index {i}: {beta} (must be in [0, 1))")
            })?;
        }
        ensure(
            self.weight_decay >= 0.0 && self.weight_decay.is_finite(),
            KERNEL,
            || {
                format!(
                    "{name}: invalid weight_decay value {} (must be >= 0)",
                    self.weight_decay
                )
            },
        )
    }

    /// The uniform for `step` (from 1) at learning rate `lr`, with the bias corrections
    /// `1 - beta1^step` and `sqrt(1 - beta2^step)` computed in f64: write it into the
    /// update dispatch's [`uniform`](Dispatch::uniform) with `Queue::write_buffer` (or
    /// use [`Adam::write_step`]).
    pub fn uniform_bytes(&self, step: u32, lr: f32) -> Result<Vec<u8>> {
        Ok(bytemuck::bytes_of(&self.params(step, lr)?).to_vec())
    }

    fn params(&self, step: u32, lr: f32) -> Result<AdamParams> {
        check_step(step, self.name())?;
        check_lr(lr, self.name())?;
        let t = step.min(i32::MAX as u32) as i32;
        Ok(AdamParams {
            count: self.count,
            step,
            lr,
            beta1: self.beta1,
            beta2: self.beta2,
            eps: self.eps,
            weight_decay: self.weight_decay,
            bias_correction1: (1.0 - (self.beta1 as f64).powi(t)) as f32,
            bias_correction2_sqrt: (1.0 - (self.beta2 as f64).powi(t)).sqrt() as f32,
            nonfinite_slot: self.nonfinite_slot.unwrap_or(0),
            pad: [0; 2],
        })
    }

    /// Sets `dispatch` (from [`Adam::prepare`]) up for `step` at learning rate `lr`.
    pub fn write_step(&self, gpu: &Gpu, dispatch: &Dispatch, step: u32, lr: f32) -> Result<()> {
        write_uniform(gpu, dispatch, &self.uniform_bytes(step, lr)?)
    }

    /// The in-place update of `param`, `exp_avg` (m) and `exp_avg_sq` (v) from `grad`,
    /// set up for step 1 at `self.lr`.
    pub fn prepare(
        &self,
        gpu: &Gpu,
        param: &wgpu::Buffer,
        grad: &wgpu::Buffer,
        exp_avg: &wgpu::Buffer,
        exp_avg_sq: &wgpu::Buffer,
    ) -> Result<Dispatch> {
        self.prepare_counting(gpu, param, grad, exp_avg, exp_avg_sq, None)
    }

    /// [`Adam::prepare`] that also counts the gradient's non-finite elements into
    /// `counts[nonfinite_slot]` (see [`Sgd::prepare_counting`]).
    pub fn prepare_counting(
        &self,
        gpu: &Gpu,
        param: &wgpu::Buffer,
        grad: &wgpu::Buffer,
        exp_avg: &wgpu::Buffer,
        exp_avg_sq: &wgpu::Buffer,
        counts: Option<&wgpu::Buffer>,
    ) -> Result<Dispatch> {
        self.check()?;
        check_counts(self.nonfinite_slot, counts, self.name())?;
        let params = self.params(1, self.lr)?;
        let n = self.count as u64;
        DispatchBuilder::new(gpu, shaders::OPTIMIZER, "adam")
            .constant("WG", WG)
            .flag("DECOUPLED", self.decoupled)
            .params(&params)
            .write("param", param, n)
            .read("grad", grad, n)
            .write("exp_avg", exp_avg, n)
            .write("exp_avg_sq", exp_avg_sq, n)
            .flag("COUNT_NONFINITE", self.nonfinite_slot.is_some())
            .write_opt(
                "counts",
                counts,
                self.nonfinite_slot.map_or(0, |s| s as u64 + 1),
            )
            .build(grid(gpu, self.count))
    }
}
