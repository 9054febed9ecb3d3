//! Batch normalisation over the channels of an NHWC tensor (PyTorch `BatchNorm2d`):
//! training forward with batch statistics and in-place running-stat updates, inference
//! forward with the running statistics, and the backward. Shader: `shaders/batchnorm.wgsl`.
//!
//! ## Design
//!
//! The input `x` is viewed as `[M, C]` with `M = N·H·W` rows and contiguous channels.
//! Per-channel statistics are column reductions over `M` rows, made deterministic
//! without atomics: each invocation sums one chunk of rows of one channel into a scratch
//! buffer of partials `[k, chunks, C]`, then a finalize pass adds each channel's partials
//! in chunk order. The chunking is a function of `(M, C)` only. The training forward
//! takes both moments in one pass, about each channel's first value (a pivot within
//! about a standard deviation of the mean, so the variance does not cancel).
//!
//! The training forward and the backward are several dispatches that share a scratch
//! buffer of partial sums ([`BatchNorm::scratch_elems`] f32). A caller that plans its own
//! memory (the graph executor) passes it in through [`BatchNormTrainBuffers`] /
//! [`BatchNormBackwardBuffers`] and gets plain dispatches back; the convenience
//! [`BatchNorm::prepare_train`] / [`BatchNorm::prepare_backward`] take it from the pool and
//! return a [`BatchNormPasses`], which owns it, so no dispatch can outlive a buffer it binds.

use crate::error::Result;
use crate::gpu::Gpu;
use crate::kernels::{ensure, to_u32};
use crate::pipeline::{Dispatch, DispatchBuilder, grid_1d};
use crate::pool::PooledBuffer;
use crate::shaders;

const KERNEL: &str = "batchnorm";
/// Invocations per workgroup in every entry point.
const WG: u32 = 256;
/// The partial-sum passes aim for about this many invocations (enough to fill a GPU)...
const TARGET_THREADS: u64 = 65_536;
/// ...with at most this many chunks, which bounds the finalize pass's serial loop...
const MAX_CHUNKS: u64 = 1024;
/// ...and at least this many rows per chunk, so an invocation does real work.
const MIN_ROWS_PER_CHUNK: u64 = 8;

/// Batch normalisation of `x[M, C]` (NHWC with `M = N·H·W`), PyTorch defaults.
///
/// `y = gamma · (x - mean) / sqrt(var + eps) + beta`, then ReLU when `relu`. Training
/// uses the batch mean and biased variance and updates
/// `running = (1 - momentum) · running + momentum · batch` (the variance unbiased by
/// `M / (M - 1)`); inference uses the running statistics.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BatchNorm {
    /// Rows: `N · H · W`.
    pub m: u32,
    /// Channels.
    pub c: u32,
    pub eps: f32,
    pub momentum: f32,
    /// Apply ReLU to the output (fused). The backward then expects `dy` already masked
    /// by the ReLU (`dy · [y > 0]`): it computes the batch norm's backward only.
    pub relu: bool,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    m: u32,
    c: u32,
    chunks: u32,
    rows_per_chunk: u32,
    count: u32,
    eps: f32,
    momentum: f32,
    pad: u32,
}

/// The dispatches of a multi-pass op, in recording order, and the scratch buffer they
/// bind. Record them with [`encode_all`](crate::encode_all)`(enc, label, passes.dispatches())`
/// and keep this value alive for as long as the dispatches are recorded.
pub struct BatchNormPasses {
    dispatches: Vec<Dispatch>,
    // Returned to the pool only when the dispatches that bind it are gone.
    partials: PooledBuffer,
}

impl BatchNormPasses {
    /// The dispatches, in recording order.
    pub fn dispatches(&self) -> &[Dispatch] {
        &self.dispatches
    }

    /// Bytes of the scratch buffer (size class of the partial sums).
    pub fn scratch_bytes(&self) -> u64 {
        self.partials.capacity()
    }
}

impl std::fmt::Debug for BatchNormPasses {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "BatchNormPasses({:?}, scratch {:?})",
            self.dispatches, self.partials
        )
    }
}

/// Buffers of the training forward: `x`, `y` `[M, C]`; the rest `[C]` except `scratch`
/// (at least [`BatchNorm::scratch_elems`] f32, contents irrelevant).
#[derive(Clone, Copy, Debug)]
pub struct BatchNormTrainBuffers<'a> {
    pub x: &'a wgpu::Buffer,
    pub gamma: &'a wgpu::Buffer,
    pub beta: &'a wgpu::Buffer,
    /// Read and updated in place.
    pub running_mean: &'a wgpu::Buffer,
    /// Read and updated in place.
    pub running_var: &'a wgpu::Buffer,
    /// Written: the batch mean, for the backward.
    pub save_mean: &'a wgpu::Buffer,
    /// Written: `1 / sqrt(batch variance + eps)`, for the backward.
    pub save_invstd: &'a wgpu::Buffer,
    pub y: &'a wgpu::Buffer,
    pub scratch: &'a wgpu::Buffer,
}

/// Buffers of the backward: `x`, `dy`, `dx` `[M, C]`; the rest `[C]` except `scratch`
/// (at least [`BatchNorm::scratch_elems`] f32, contents irrelevant).
#[derive(Clone, Copy, Debug)]
pub struct BatchNormBackwardBuffers<'a> {
    pub x: &'a wgpu::Buffer,
    pub dy: &'a wgpu::Buffer,
    pub gamma: &'a wgpu::Buffer,
    pub save_mean: &'a wgpu::Buffer,
    pub save_invstd: &'a wgpu::Buffer,
    pub dgamma: &'a wgpu::Buffer,
    pub dbeta: &'a wgpu::Buffer,
    pub dx: &'a wgpu::Buffer,
    pub scratch: &'a wgpu::Buffer,
}

/// How the rows are cut for the column reductions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Chunking {
    chunks: u32,
    rows_per_chunk: u32,
}

impl BatchNorm {
    /// `m` rows of `c` channels, PyTorch defaults: `eps = 1e-5`, `momentum = 0.1`.
    pub fn new(m: u32, c: u32) -> Self {
        Self {
            m,
            c,
            eps: 1e-5,
            momentum: 0.1,
            relu: false,
        }
    }

    /// An NHWC tensor `[n, h, w, c]`; an error if `n·h·w` does not fit in 32 bits.
    pub fn nhwc(n: u32, h: u32, w: u32, c: u32) -> Result<Self> {
        let m = to_u32(n as u64 * h as u64 * w as u64, KERNEL, "N·H·W")?;
        Ok(Self::new(m, c))
    }

    /// Sets `eps`.
    pub fn with_eps(mut self, eps: f32) -> Self {
        self.eps = eps;
        self
    }

    /// Sets the running-statistics momentum.
    pub fn with_momentum(mut self, momentum: f32) -> Self {
        self.momentum = momentum;
        self
    }

    /// Fuses a ReLU after the affine transform.
    pub fn with_relu(mut self) -> Self {
        self.relu = true;
        self
    }

    /// Elements of `x`: `m · c`.
    pub fn len(&self) -> u64 {
        self.m as u64 * self.c as u64
    }

    /// True when `x` has no element.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// f32 elements of the scratch buffer the training forward and the backward need
    /// (the forward's three partial sums per chunk and channel; the backward uses two):
    /// `3 · chunks · C`, a function of `(M, C)` only (0 when either is 0).
    pub fn scratch_elems(&self) -> u64 {
        if self.is_empty() {
            return 0;
        }
        3 * self.chunking().chunks as u64 * self.c as u64
    }

    fn check(&self) -> Result<u32> {
        ensure(self.m > 0 && self.c > 0, KERNEL, || {
            format!(
                "rows M = N·H·W and channels C must be positive, got M {} C {}",
                self.m, self.c
            )
        })?;
        ensure(self.eps > 0.0 && self.eps.is_finite(), KERNEL, || {
            format!("eps must be positive and finite, got {}", self.eps)
        })?;
        ensure((0.0..=1.0).contains(&self.momentum), KERNEL, || {
            format!("momentum must be in [0, 1], got {}", self.momentum)
        })?;
        to_u32(self.len(), KERNEL, "M·C")
    }

    /// The row chunking of the column reductions: a function of (M, C) only.
    fn chunking(&self) -> Chunking {
        let (m, c) = (self.m as u64, self.c as u64);
        let wanted = TARGET_THREADS.div_ceil(c).clamp(1, MAX_CHUNKS);
        let rows = m.div_ceil(wanted).max(MIN_ROWS_PER_CHUNK).min(m);
        // chunks ≤ m and rows ≤ m, so both fit in u32.
        Chunking {
            chunks: m.div_ceil(rows) as u32,
            rows_per_chunk: rows as u32,
        }
    }

    fn params(&self, count: u32) -> (Params, Chunking) {
        let ch = self.chunking();
        let params = Params {
            m: self.m,
            c: self.c,
            chunks: ch.chunks,
            rows_per_chunk: ch.rows_per_chunk,
            count,
            eps: self.eps,
            momentum: self.momentum,
            pad: 0,
        };
        (params, ch)
    }

    fn grid(gpu: &Gpu, threads: u64) -> [u32; 3] {
        grid_1d(
            threads,
            WG,
            gpu.limits().max_compute_workgroups_per_dimension,
        )
    }

    fn builder<'a>(gpu: &'a Gpu, entry: &'static str, p: &Params) -> DispatchBuilder<'a> {
        DispatchBuilder::new(gpu, shaders::BATCHNORM, entry)
            .constant("WG", WG)
            .params(p)
    }

    /// Training forward, three dispatches: the batch mean and biased variance (one pass
    /// over `x`, moments about each channel's first value), `save_mean` / `save_invstd`
    /// (`[C]`, kept for the backward) with the in-place update of `running_mean` /
    /// `running_var` (`[C]`), and `y[M, C]`.
    /// An error when `M = 1`, as in PyTorch (no variance from one value per channel).
    pub fn prepare_train_with_scratch(
        &self,
        gpu: &Gpu,
        b: &BatchNormTrainBuffers<'_>,
    ) -> Result<Vec<Dispatch>> {
        let count = self.check()?;
        ensure(self.m > 1, KERNEL, || {
            format!(
                "training needs more than one value per channel to estimate a variance, \
                 got M = N·H·W = {} (C {})",
                self.m, self.c
            )
        })?;
        let (params, ch) = self.params(count);
        let (m, c) = (self.len(), self.c as u64);
        let moment_elems = 3 * ch.chunks as u64 * c;
        let moments = b.scratch;
        Ok(vec![
            Self::builder(gpu, "column_moments", &params)
                .read("x", b.x, m)
                .write("moments", moments, moment_elems)
                .build(Self::grid(gpu, moment_elems / 3))?,
            Self::builder(gpu, "finalize_moments", &params)
                .read("moments", moments, moment_elems)
                .write("save_mean", b.save_mean, c)
                .write("save_invstd", b.save_invstd, c)
                .write("running_mean", b.running_mean, c)
                .write("running_var", b.running_var, c)
                .build(Self::grid(gpu, c))?,
            self.normalize(
                gpu,
                &params,
                false,
                [b.x, b.save_mean, b.save_invstd, b.gamma, b.beta],
                b.y,
            )?,
        ])
    }

    /// [`prepare_train_with_scratch`](Self::prepare_train_with_scratch) with a scratch
    /// buffer from the pool, owned by the returned passes.
    #[allow(clippy::too_many_arguments)]
    pub fn prepare_train(
        &self,
        gpu: &Gpu,
        x: &wgpu::Buffer,
        gamma: &wgpu::Buffer,
        beta: &wgpu::Buffer,
        running_mean: &wgpu::Buffer,
        running_var: &wgpu::Buffer,
        save_mean: &wgpu::Buffer,
        save_invstd: &wgpu::Buffer,
        y: &wgpu::Buffer,
    ) -> Result<BatchNormPasses> {
        let partials = self.pooled_scratch(gpu, "batchnorm.partials")?;
        let buffers = BatchNormTrainBuffers {
            x,
            gamma,
            beta,
            running_mean,
            running_var,
            save_mean,
            save_invstd,
            y,
            scratch: &partials,
        };
        let dispatches = self.prepare_train_with_scratch(gpu, &buffers)?;
        Ok(BatchNormPasses {
            dispatches,
            partials,
        })
    }

    /// A pool buffer of [`scratch_elems`](Self::scratch_elems) f32 (at least 4 bytes).
    fn pooled_scratch(&self, gpu: &Gpu, label: &str) -> Result<PooledBuffer> {
        self.check()?;
        gpu.pool().acquire((self.scratch_elems() * 4).max(4), label)
    }

    /// Inference forward, one dispatch: `y = gamma · (x - running_mean) /
    /// sqrt(running_var + eps) + beta` (then ReLU); the running statistics are only read.
    #[allow(clippy::too_many_arguments)]
    pub fn prepare_eval(
        &self,
        gpu: &Gpu,
        x: &wgpu::Buffer,
        gamma: &wgpu::Buffer,
        beta: &wgpu::Buffer,
        running_mean: &wgpu::Buffer,
        running_var: &wgpu::Buffer,
        y: &wgpu::Buffer,
    ) -> Result<Dispatch> {
        let count = self.check()?;
        let (params, _) = self.params(count);
        self.normalize(
            gpu,
            &params,
            true,
            [x, running_mean, running_var, gamma, beta],
            y,
        )
    }

    /// `inputs` = x, mean, spread (invstd, or the running variance when `running`),
    /// gamma, beta.
    fn normalize(
        &self,
        gpu: &Gpu,
        params: &Params,
        running: bool,
        inputs: [&wgpu::Buffer; 5],
        y: &wgpu::Buffer,
    ) -> Result<Dispatch> {
        let [x, mean, spread, gamma, beta] = inputs;
        let (m, c) = (self.len(), self.c as u64);
        Self::builder(gpu, "normalize", params)
            .constant("CHANNELS", self.c)
            .flag("RUNNING_STATS", running)
            .flag("RELU", self.relu)
            .read("x", x, m)
            .read("mean", mean, c)
            .read(if running { "running_var" } else { "invstd" }, spread, c)
            .read("gamma", gamma, c)
            .read("beta", beta, c)
            .write("y", y, m)
            .build(Self::grid(gpu, m))
    }

    /// Backward of the training forward, three dispatches, from the saved batch
    /// statistics: `dbeta = Σ dy`, `dgamma = Σ dy · xhat` (`[C]`, overwritten), and
    /// `dx = gamma · invstd / M · (M · dy - dbeta - xhat · dgamma)` (`[M, C]`), where
    /// `xhat = (x - save_mean) · save_invstd`. With a fused ReLU, `dy` must already be
    /// masked by the ReLU's backward (`dy · [y > 0]`).
    pub fn prepare_backward_with_scratch(
        &self,
        gpu: &Gpu,
        b: &BatchNormBackwardBuffers<'_>,
    ) -> Result<Vec<Dispatch>> {
        let count = self.check()?;
        let (params, _) = self.params(count);
        let (m, c) = (self.len(), self.c as u64);
        // Two partial sums per chunk and channel (dbeta, dgamma).
        let partial_elems = 2 * self.chunking().chunks as u64 * c;
        let partials = b.scratch;
        Ok(vec![
            self.backward_partials(gpu, &params, b)?,
            Self::builder(gpu, "backward_finalize", &params)
                .read("partials", partials, partial_elems)
                .write("dgamma", b.dgamma, c)
                .write("dbeta", b.dbeta, c)
                .build(Self::grid(gpu, c))?,
            Self::builder(gpu, "backward_dx", &params)
                .constant("CHANNELS", self.c)
                .read("x", b.x, m)
                .read("save_mean", b.save_mean, c)
                .read("save_invstd", b.save_invstd, c)
                .read("dy", b.dy, m)
                .read("gamma", b.gamma, c)
                .read("dgamma", b.dgamma, c)
                .read("dbeta", b.dbeta, c)
                .write("dx", b.dx, m)
                .build(Self::grid(gpu, m))?,
        ])
    }

    /// The backward's column sums of `dy` and `dy · xhat`, per chunk, into `b.scratch`
    /// (`[2, chunks, C]`): the first pass of both backwards.
    fn backward_partials(
        &self,
        gpu: &Gpu,
        params: &Params,
        b: &BatchNormBackwardBuffers<'_>,
    ) -> Result<Dispatch> {
        let (m, c) = (self.len(), self.c as u64);
        let partial_elems = 2 * self.chunking().chunks as u64 * c;
        Self::builder(gpu, "backward_partials", params)
            .read("x", b.x, m)
            .read("save_mean", b.save_mean, c)
            .read("save_invstd", b.save_invstd, c)
            .read("dy", b.dy, m)
            .write("partials", b.scratch, partial_elems)
            .build(Self::grid(gpu, partial_elems / 2))
    }

    /// [`prepare_backward_with_scratch`](Self::prepare_backward_with_scratch) with a
    /// scratch buffer from the pool, owned by the returned passes.
    #[allow(clippy::too_many_arguments)]
    pub fn prepare_backward(
        &self,
        gpu: &Gpu,
        x: &wgpu::Buffer,
        dy: &wgpu::Buffer,
        gamma: &wgpu::Buffer,
        save_mean: &wgpu::Buffer,
        save_invstd: &wgpu::Buffer,
        dgamma: &wgpu::Buffer,
        dbeta: &wgpu::Buffer,
        dx: &wgpu::Buffer,
    ) -> Result<BatchNormPasses> {
        let partials = self.pooled_scratch(gpu, "batchnorm.grad_partials")?;
        let buffers = BatchNormBackwardBuffers {
            x,
            dy,
            gamma,
            save_mean,
            save_invstd,
            dgamma,
            dbeta,
            dx,
            scratch: &partials,
        };
        let dispatches = self.prepare_backward_with_scratch(gpu, &buffers)?;
        Ok(BatchNormPasses {
            dispatches,
            partials,
        })
    }
}

/// Batch norm synchronised across replicas: the batch statistics and the backward's
/// column sums are those of the *global* batch, every replica's rows together. Each pass
/// pair leaves a small `[3, C]` or `[2, C]` tensor for the host to combine across replicas
/// (with [`combine_moments`] and a plain sum) before the next pass reads the result.
impl BatchNorm {
    /// This replica's moments, two dispatches: the pivoted column sums into `scratch`
    /// (as the training forward), then `stats_out [3, C]`: the row count `M`, the mean
    /// and `M2 = Σ (x - mean)²` per channel. `M = 1` is allowed (other replicas may
    /// bring more rows).
    pub fn prepare_local_moments(
        &self,
        gpu: &Gpu,
        x: &wgpu::Buffer,
        scratch: &wgpu::Buffer,
        stats_out: &wgpu::Buffer,
    ) -> Result<Vec<Dispatch>> {
        let count = self.check()?;
        let (params, ch) = self.params(count);
        let (m, c) = (self.len(), self.c as u64);
        let moment_elems = 3 * ch.chunks as u64 * c;
        Ok(vec![
            Self::builder(gpu, "column_moments", &params)
                .read("x", x, m)
                .write("moments", scratch, moment_elems)
                .build(Self::grid(gpu, moment_elems / 3))?,
            Self::builder(gpu, "local_moments", &params)
                .read("moments", scratch, moment_elems)
                .write("stats", stats_out, 3 * c)
                .build(Self::grid(gpu, c))?,
        ])
    }

    /// The training forward from the combined moments `stats [3, C]` (count, mean, M2
    /// over every replica's rows), two dispatches: `save_mean`, `save_invstd` and the
    /// running statistics (unbiased by the global count), then `y`. `b.scratch` is not
    /// used.
    pub fn prepare_train_global(
        &self,
        gpu: &Gpu,
        b: &BatchNormTrainBuffers<'_>,
        stats: &wgpu::Buffer,
    ) -> Result<Vec<Dispatch>> {
        let count = self.check()?;
        let (params, _) = self.params(count);
        let c = self.c as u64;
        Ok(vec![
            Self::builder(gpu, "finalize_global", &params)
                .read("stats", stats, 3 * c)
                .write("save_mean", b.save_mean, c)
                .write("save_invstd", b.save_invstd, c)
                .write("running_mean", b.running_mean, c)
                .write("running_var", b.running_var, c)
                .build(Self::grid(gpu, c))?,
            self.normalize(
                gpu,
                &params,
                false,
                [b.x, b.save_mean, b.save_invstd, b.gamma, b.beta],
                b.y,
            )?,
        ])
    }

    /// The backward's first half on this replica, two dispatches: `dgamma`, `dbeta`
    /// (this replica's rows: its share of the parameter gradients) and `sums_out [2, C]`
    /// (`Σ dy`, `Σ dy · xhat`) for the host to add up over the replicas. `b.dx` is not
    /// written.
    pub fn prepare_backward_local(
        &self,
        gpu: &Gpu,
        b: &BatchNormBackwardBuffers<'_>,
        sums_out: &wgpu::Buffer,
    ) -> Result<Vec<Dispatch>> {
        let count = self.check()?;
        let (params, _) = self.params(count);
        let c = self.c as u64;
        let partial_elems = 2 * self.chunking().chunks as u64 * c;
        Ok(vec![
            self.backward_partials(gpu, &params, b)?,
            Self::builder(gpu, "backward_finalize_sync", &params)
                .read("partials", b.scratch, partial_elems)
                .write("dgamma", b.dgamma, c)
                .write("dbeta", b.dbeta, c)
                .write("sums", sums_out, 2 * c)
                .build(Self::grid(gpu, c))?,
        ])
    }

    /// `dx` from the global sums `sums [2, C]` (Σ dy, Σ dy · xhat over every replica) and
    /// the global count in `stats [3, C]`: `dx = gamma · invstd · (dy - (Σ dy + xhat ·
    /// Σ dy·xhat) / N)`. Reads `b.x`, `b.dy`, `b.gamma`, the saved statistics.
    pub fn prepare_backward_dx_global(
        &self,
        gpu: &Gpu,
        b: &BatchNormBackwardBuffers<'_>,
        sums: &wgpu::Buffer,
        stats: &wgpu::Buffer,
    ) -> Result<Dispatch> {
        let count = self.check()?;
        let (params, _) = self.params(count);
        let (m, c) = (self.len(), self.c as u64);
        Self::builder(gpu, "backward_dx_global", &params)
            .constant("CHANNELS", self.c)
            .read("x", b.x, m)
            .read("save_mean", b.save_mean, c)
            .read("save_invstd", b.save_invstd, c)
            .read("dy", b.dy, m)
            .read("gamma", b.gamma, c)
            .read("sums", sums, 2 * c)
            .read("stats", stats, 3 * c)
            .write("dx", b.dx, m)
            .build(Self::grid(gpu, m))
    }
}

/// Combines replicas' moments `[3, C]` (count, mean, M2 per channel, as
/// [`BatchNorm::prepare_local_moments`] writes them) into those of all their rows, in
/// the order given (Chan, Golub and LeVeque's pairwise update, in f64): the same bits
/// for the same inputs, on every replica.
pub fn combine_moments(parts: &[&[f32]], c: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; 3 * c];
    for ch in 0..c {
        let (mut n, mut mean, mut m2) = (0.0f64, 0.0f64, 0.0f64);
        for part in parts {
            let (nb, mb, m2b) = (
                part[ch] as f64,
                part[c + ch] as f64,
                part[2 * c + ch] as f64,
            );
            if nb == 0.0 {
                continue;
            }
            let total = n + nb;
            let delta = mb - mean;
            mean += delta * nb / total;
            m2 += m2b + delta * delta * n * nb / total;
            n = total;
        }
        out[ch] = n as f32;
        out[c + ch] = mean as f32;
        out[2 * c + ch] = m2 as f32;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunking_covers_every_row_once() {
        for (m, c) in [
            (1, 1),
            (2, 3),
            (7, 1),
            (100, 67),
            (115_200, 3),
            (4096, 512),
            (9, 70_000),
        ] {
            let ch = BatchNorm::new(m, c).chunking();
            let (chunks, rows) = (ch.chunks as u64, ch.rows_per_chunk as u64);
            assert!(
                chunks * rows >= m as u64 && (chunks - 1) * rows < m as u64,
                "{m} {c} {ch:?}"
            );
            assert!(chunks <= MAX_CHUNKS, "{m} {c} {ch:?}");
        }
    }
}
