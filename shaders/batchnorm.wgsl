// batchnorm.wgsl — batch normalisation over the channels of an NHWC tensor viewed as
// x[M, C] (M = N·H·W rows, channels contiguous), with PyTorch BatchNorm2d semantics.
//
// Entry points, in recording order:
//   training forward:  column_moments, finalize_moments, normalize (RUNNING_STATS = false)
//   inference forward: normalize (RUNNING_STATS = true)
//   backward:          backward_partials, backward_finalize, backward_dx
//   synchronised across replicas (the host reduces between the passes):
//     forward:  column_moments, local_moments | host: combine | finalize_global, normalize
//     backward: backward_partials, backward_finalize_sync | host: sum | backward_dx_global
//
// Bindings (p = uniform Params at 0; the others in order from 1; each entry point binds
// only its own, so one binding number serves different variables in different entries):
//   column_moments:    x [M, C], moments [3, chunks, C]
//   finalize_moments:  moments [3, chunks, C], mean_out [C], invstd_out [C],
//                      running_mean [C], running_var [C] (both updated in place)
//   normalize:         x [M, C], mean [C], spread [C] (invstd, or the running variance
//                      when RUNNING_STATS), gamma [C], beta [C], y [M, C]
//   backward_partials: x, mean, invstd, dy [M, C], partials [2, chunks, C]
//   backward_finalize: partials [2, chunks, C], dgamma_out [C], dbeta_out [C]
//   backward_dx:       x, mean, invstd, dy, gamma, dgamma [C], dbeta [C], dx [M, C]
//   local_moments:     moments [3, chunks, C], stats_out [3, C] (count, mean, M2)
//   finalize_global:   stats [3, C] (the replicas' combined count, mean, M2), then as
//                      finalize_moments
//   backward_finalize_sync: partials [2, chunks, C], dgamma_out, dbeta_out, sums_out [2, C]
//                      (Σ dy, Σ dy · xhat: this replica's, for the host to sum)
//   backward_dx_global: x, mean, invstd, dy, gamma, sums [2, C] and stats [3, C] summed
//                      over the replicas, dx [M, C]
//
// Column reductions are deterministic, without atomics: rows are cut into `chunks`
// chunks of `rows_per_chunk`; invocation i = chunk · C + channel sums its chunk's rows
// in order into partials[i] (neighbouring invocations read neighbouring channels, so
// loads are contiguous), then a finalize pass sums each channel's partials in chunk
// order. The chunking depends only on (M, C), so a shape always gives the same bits.
// Dispatch: 1-D grids of WG invocations (spread over x and y, see grid_1d) over
// chunks · C (partials), C (finalize) or M · C (element-wise) invocations; the linear
// index is (wid.y · nwg.x + wid.x) · WG + lid.x and every entry returns past its count.

struct Params {
    m: u32,
    c: u32,
    chunks: u32,
    rows_per_chunk: u32,
    // m · c: the element count of x.
    count: u32,
    eps: f32,
    momentum: f32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

// Element-wise and partial-sum inputs.
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> mean: array<f32>;
@group(0) @binding(3) var<storage, read> invstd: array<f32>;
@group(0) @binding(4) var<storage, read> dy: array<f32>;

// column_moments
@group(0) @binding(2) var<storage, read_write> moments_out: array<f32>;
// backward_partials
@group(0) @binding(5) var<storage, read_write> grad_partials_out: array<f32>;

// finalize_* and backward_finalize
@group(0) @binding(1) var<storage, read> partials: array<f32>;
@group(0) @binding(2) var<storage, read_write> mean_out: array<f32>;
@group(0) @binding(3) var<storage, read_write> invstd_out: array<f32>;
@group(0) @binding(4) var<storage, read_write> running_mean: array<f32>;
@group(0) @binding(5) var<storage, read_write> running_var: array<f32>;
@group(0) @binding(2) var<storage, read_write> dgamma_out: array<f32>;
@group(0) @binding(3) var<storage, read_write> dbeta_out: array<f32>;

// normalize (spread shares binding 3 with invstd: same role, read only)
@group(0) @binding(4) var<storage, read> gamma: array<f32>;
@group(0) @binding(5) var<storage, read> beta: array<f32>;
@group(0) @binding(6) var<storage, read_write> y: array<f32>;

// backward_dx
@group(0) @binding(5) var<storage, read> gamma_bwd: array<f32>;
@group(0) @binding(6) var<storage, read> dgamma: array<f32>;
@group(0) @binding(7) var<storage, read> dbeta: array<f32>;
@group(0) @binding(8) var<storage, read_write> dx: array<f32>;

// local_moments (stats_out shares binding 2 with moments_out: another entry)
@group(0) @binding(2) var<storage, read_write> stats_out: array<f32>;
// backward_finalize_sync
@group(0) @binding(4) var<storage, read_write> sums_out: array<f32>;
// backward_dx_global
@group(0) @binding(6) var<storage, read> g_sums: array<f32>;
@group(0) @binding(7) var<storage, read> g_stats: array<f32>;

// The channel count again, as a pipeline constant for the element-wise entries
// (normalize, backward_dx; the host sets it to p.c): `i % CHANNELS` then compiles to a
// multiplication or a mask instead of a per-lane division (scalarised on CPU drivers).
override CHANNELS: u32 = 1u;
override WG: u32 = 256u;
override RUNNING_STATS: bool = false;
override RELU: bool = false;

fn linear(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return (wid.y * nwg.x + wid.x) * WG + lid.x;
}

// One pass over x for both moments. Per chunk and channel: the sum of x (for the mean,
// summed exactly as a plain mean would be), and the sums of d = x - pivot and of d²,
// where the channel's pivot is its first value x[0, ch]. The pivot is a sample of the
// column, so |mean - pivot| is of the order of the standard deviation and
// Σd² - (Σd)²/M keeps the variance's precision (without a pivot, E[x²] - E[x]² cancels
// catastrophically for columns whose mean is large against their spread). Layout
// [3, chunks, C]: the sums of x, of d, of d².
@compute @workgroup_size(WG)
fn column_moments(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let i = linear(wid, nwg, lid);
    let total = p.chunks * p.c;
    if (i >= total) {
        return;
    }
    let chunk = i / p.c;
    let ch = i - chunk * p.c;
    let r0 = chunk * p.rows_per_chunk;
    let r1 = min(r0 + p.rows_per_chunk, p.m);
    let pivot = x[ch];
    var s0 = 0.0;
    var s1 = 0.0;
    var s2 = 0.0;
    for (var r = r0; r < r1; r++) {
        let v = x[r * p.c + ch];
        let d = v - pivot;
        s0 += v;
        s1 += d;
        s2 = fma(d, d, s2);
    }
    moments_out[i] = s0;
    moments_out[total + i] = s1;
    moments_out[2u * total + i] = s2;
}

// Sum of one channel's partials in chunk order (fixed, hence deterministic).
fn channel_total(ch: u32, first: u32) -> f32 {
    var acc = 0.0;
    for (var k = 0u; k < p.chunks; k++) {
        acc += partials[first + k * p.c + ch];
    }
    return acc;
}

// Mean and biased variance → invstd for the normalisation; the unbiased variance (the
// host checked M > 1) goes into the running estimate, as in PyTorch.
@compute @workgroup_size(WG)
fn finalize_moments(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let ch = linear(wid, nwg, lid);
    if (ch >= p.c) {
        return;
    }
    let m = f32(p.m);
    let total = p.chunks * p.c;
    let mu = channel_total(ch, 0u) / m;
    let shift = channel_total(ch, total) / m;
    // Σ (x - mean)² = Σ d² - M · (mean - pivot)², with mean - pivot = Σ d / M.
    let sq = max(channel_total(ch, 2u * total) - shift * shift * m, 0.0);
    mean_out[ch] = mu;
    invstd_out[ch] = 1.0 / sqrt(sq / m + p.eps);
    let keep = 1.0 - p.momentum;
    running_mean[ch] = keep * running_mean[ch] + p.momentum * mu;
    running_var[ch] = keep * running_var[ch] + p.momentum * (sq / f32(p.m - 1u));
}

// y = gamma · (x - mean) · invstd + beta (then ReLU when RELU).
@compute @workgroup_size(WG)
fn normalize(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let i = linear(wid, nwg, lid);
    if (i >= p.count) {
        return;
    }
    let ch = i % CHANNELS;
    var inv = invstd[ch];
    if (RUNNING_STATS) {
        // Inference: the spread binding holds the running variance.
        inv = 1.0 / sqrt(inv + p.eps);
    }
    var v = fma((x[i] - mean[ch]) * inv, gamma[ch], beta[ch]);
    if (RELU) {
        // select, not max: a NaN stays NaN (as in PyTorch) so that it can be detected.
        v = select(v, 0.0, v < 0.0);
    }
    y[i] = v;
}

// Partial sums of dy (→ dbeta) and dy · xhat (→ dgamma), laid out [2, chunks, C].
@compute @workgroup_size(WG)
fn backward_partials(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let i = linear(wid, nwg, lid);
    let total = p.chunks * p.c;
    if (i >= total) {
        return;
    }
    let chunk = i / p.c;
    let ch = i - chunk * p.c;
    let r0 = chunk * p.rows_per_chunk;
    let r1 = min(r0 + p.rows_per_chunk, p.m);
    let mu = mean[ch];
    var sum_dy = 0.0;
    var sum_dy_xc = 0.0;
    for (var r = r0; r < r1; r++) {
        let idx = r * p.c + ch;
        let g = dy[idx];
        sum_dy += g;
        sum_dy_xc = fma(g, x[idx] - mu, sum_dy_xc);
    }
    grad_partials_out[i] = sum_dy;
    // invstd is constant over the column: scale once instead of per row.
    grad_partials_out[total + i] = sum_dy_xc * invstd[ch];
}

@compute @workgroup_size(WG)
fn backward_finalize(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let ch = linear(wid, nwg, lid);
    if (ch >= p.c) {
        return;
    }
    dgamma_out[ch] = channel_total(ch, p.chunks * p.c);
    dbeta_out[ch] = channel_total(ch, 0u);
}

// dx = gamma · invstd / M · (M · dy - dbeta - xhat · dgamma), written as
// gamma · invstd · (dy - (dbeta + xhat · dgamma) / M).
@compute @workgroup_size(WG)
fn backward_dx(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let i = linear(wid, nwg, lid);
    if (i >= p.count) {
        return;
    }
    let ch = i % CHANNELS;
    let inv = invstd[ch];
    let xhat = (x[i] - mean[ch]) * inv;
    let inv_m = 1.0 / f32(p.m);
    let correction = fma(xhat, dgamma[ch], dbeta[ch]) * inv_m;
    dx[i] = gamma_bwd[ch] * inv * (dy[i] - correction);
}

// This replica's moments for the host to combine with the others' (Chan et al.'s
// pairwise update, in rank order): per channel the row count, the mean and
// M2 = Σ (x - mean)², from the pivoted sums of column_moments. Layout [3, C].
@compute @workgroup_size(WG)
fn local_moments(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let ch = linear(wid, nwg, lid);
    if (ch >= p.c) {
        return;
    }
    let m = f32(p.m);
    let total = p.chunks * p.c;
    let shift = channel_total(ch, total) / m;
    stats_out[ch] = m;
    stats_out[p.c + ch] = channel_total(ch, 0u) / m;
    stats_out[2u * p.c + ch] = max(channel_total(ch, 2u * total) - shift * shift * m, 0.0);
}

// finalize_moments from the combined moments of all replicas (binding 1: [3, C] of
// count, mean, M2 over the global batch).
@compute @workgroup_size(WG)
fn finalize_global(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let ch = linear(wid, nwg, lid);
    if (ch >= p.c) {
        return;
    }
    let n = partials[ch];
    let mu = partials[p.c + ch];
    let sq = partials[2u * p.c + ch];
    mean_out[ch] = mu;
    invstd_out[ch] = 1.0 / sqrt(sq / n + p.eps);
    let keep = 1.0 - p.momentum;
    running_mean[ch] = keep * running_mean[ch] + p.momentum * mu;
    running_var[ch] = keep * running_var[ch] + p.momentum * (sq / max(n - 1.0, 1.0));
}

// backward_finalize, also writing this replica's sums [2, C] (Σ dy, Σ dy · xhat) for the
// host to add up over the replicas.
@compute @workgroup_size(WG)
fn backward_finalize_sync(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let ch = linear(wid, nwg, lid);
    if (ch >= p.c) {
        return;
    }
    let dg = channel_total(ch, p.chunks * p.c);
    let db = channel_total(ch, 0u);
    dgamma_out[ch] = dg;
    dbeta_out[ch] = db;
    sums_out[ch] = db;
    sums_out[p.c + ch] = dg;
}

// backward_dx with the sums and the row count of the whole (global) batch.
@compute @workgroup_size(WG)
fn backward_dx_global(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let i = linear(wid, nwg, lid);
    if (i >= p.count) {
        return;
    }
    let ch = i % CHANNELS;
    let inv = invstd[ch];
    let xhat = (x[i] - mean[ch]) * inv;
    let correction = fma(xhat, g_sums[CHANNELS + ch], g_sums[ch]) / g_stats[ch];
    dx[i] = gamma_bwd[ch] * inv * (dy[i] - correction);
}
