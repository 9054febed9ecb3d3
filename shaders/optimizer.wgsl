// optimizer.wgsl — in-place parameter updates with PyTorch's torch.optim formulas.
//
//   sgd            g = grad + weight_decay · param;  param -= lr · g
//   sgd_momentum   the same with a momentum buffer: buf = g on the first step, else
//                  buf = momentum · buf + (1 - dampening) · g; then g = g + momentum · buf
//                  when NESTEROV, else g = buf
//   adam           Adam (g += weight_decay · param) or, when DECOUPLED, AdamW
//                  (param *= 1 - lr · weight_decay); then
//                  m = b1 · m + (1 - b1) · g,  v = b2 · v + (1 - b2) · g²,
//                  param -= (lr / bc1) · m / (sqrt(v) / sqrt(bc2) + eps)
//                  with bc1 = 1 - b1^t and bc2 = 1 - b2^t from the host (in f64)
//
// Bindings (the uniform at 0; every tensor has `count` elements):
//   sgd:          sp uniform SgdParams, param (read_write), grad (read)
//   sgd_momentum: sp uniform SgdParams, param (read_write), grad (read), buf (read_write)
//   adam:         ap uniform AdamParams, param (read_write), grad (read),
//                 exp_avg (read_write), exp_avg_sq (read_write)
//   dc_asgd        a parameter server's update for one worker's pushed gradient
//                  (Zheng et al. 2017, delay-compensated ASGD): with w_bak the copy of the
//                  weights that worker last pulled,
//                  d = g + lambda · g · g · (w - w_bak) + weight_decay · w
//                  (lambda = 0: plain ASGD); with ADAPTIVE (DC-ASGD-a) first
//                  ms = m · ms + (1 - m) · g² and lambda = lambda0 / sqrt(ms + eps),
//                  element-wise; with MOMENTUM, vel = momentum · vel + d (vel starts at
//                  zero, so step 1 gives vel = d as PyTorch's first step), then
//                  d = d + momentum · vel (NESTEROV) or d = vel; finally w -= lr · d
//   dc_asgd:      dp uniform DcParams, param (read_write), grad (read), backup (read),
//                 ms (read_write; a placeholder unless ADAPTIVE), vel (read_write; a
//                 placeholder unless MOMENTUM)
// With COUNT_NONFINITE, each entry also counts the NaN and ±Inf elements of `grad` (as it
// was computed, before weight decay) into counts[nonfinite_slot] (atomic u32, the binding
// after the last tensor: 3 for sgd, 4 for sgd_momentum, 5 for adam; finite.wgsl's test on
// the exponent bits): the training step's check then costs no pass of its own over the
// gradients. Only an invocation that finds one adds, so a healthy step runs no atomic.
// Without it the binding is a placeholder that is never touched.
// The learning rate and every step-dependent number live in the uniform, so a schedule
// rewrites it with Queue::write_buffer instead of building a new pipeline.
// Dispatch: memory bound, one invocation per element, a 1-D grid of WG invocations
// spread over x and y (grid_1d); i = (wid.y · nwg.x + wid.x) · WG + lid.x, and
// invocations with i >= count return.

struct SgdParams {
    count: u32,
    lr: f32,
    momentum: f32,
    dampening: f32,
    weight_decay: f32,
    // 1 on the first step: the momentum buffer starts as a copy of g.
    first_step: u32,
    nonfinite_slot: u32,
    _pad1: u32,
}

struct AdamParams {
    count: u32,
    step: u32,
    lr: f32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
    // 1 - beta1^step
    bias_correction1: f32,
    // sqrt(1 - beta2^step)
    bias_correction2_sqrt: f32,
    nonfinite_slot: u32,
    _pad1: u32,
    _pad2: u32,
}

struct DcParams {
    count: u32,
    lr: f32,
    lambda: f32,
    ms_momentum: f32,
    eps: f32,
    momentum: f32,
    weight_decay: f32,
    _pad0: u32,
}

@group(0) @binding(0) var<uniform> sp: SgdParams;
@group(0) @binding(0) var<uniform> dp: DcParams;
@group(0) @binding(0) var<uniform> ap: AdamParams;
@group(0) @binding(1) var<storage, read_write> param: array<f32>;
@group(0) @binding(2) var<storage, read> grad: array<f32>;
@group(0) @binding(3) var<storage, read_write> buf: array<f32>;
@group(0) @binding(3) var<storage, read_write> exp_avg: array<f32>;
@group(0) @binding(4) var<storage, read_write> exp_avg_sq: array<f32>;
@group(0) @binding(3) var<storage, read> backup: array<f32>;
@group(0) @binding(4) var<storage, read_write> ms: array<f32>;
@group(0) @binding(5) var<storage, read_write> vel: array<f32>;

@group(0) @binding(3) var<storage, read_write> counts_sgd: array<atomic<u32>>;
@group(0) @binding(4) var<storage, read_write> counts_momentum: array<atomic<u32>>;
@group(0) @binding(5) var<storage, read_write> counts_adam: array<atomic<u32>>;

override WG: u32 = 256u;
override NESTEROV: bool = false;
override DECOUPLED: bool = false;
override COUNT_NONFINITE: bool = false;
override ADAPTIVE: bool = false;
override MOMENTUM: bool = false;

const EXPONENT: u32 = 0x7f800000u;

// NaN or ±Inf: the exponent field all ones.
fn nonfinite(g: f32) -> bool {
    return (bitcast<u32>(g) & EXPONENT) == EXPONENT;
}

fn linear(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return (wid.y * nwg.x + wid.x) * WG + lid.x;
}

@compute @workgroup_size(WG)
fn sgd(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let i = linear(wid, nwg, lid);
    if (i >= sp.count) {
        return;
    }
    let w = param[i];
    let raw = grad[i];
    if (COUNT_NONFINITE && nonfinite(raw)) {
        atomicAdd(&counts_sgd[sp.nonfinite_slot], 1u);
    }
    let g = raw + sp.weight_decay * w;
    param[i] = w - sp.lr * g;
}

@compute @workgroup_size(WG)
fn sgd_momentum(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let i = linear(wid, nwg, lid);
    if (i >= sp.count) {
        return;
    }
    let w = param[i];
    let raw = grad[i];
    if (COUNT_NONFINITE && nonfinite(raw)) {
        atomicAdd(&counts_momentum[sp.nonfinite_slot], 1u);
    }
    var g = raw + sp.weight_decay * w;
    var b = g;
    if (sp.first_step == 0u) {
        b = sp.momentum * buf[i] + (1.0 - sp.dampening) * g;
    }
    buf[i] = b;
    if (NESTEROV) {
        g = g + sp.momentum * b;
    } else {
        g = b;
    }
    param[i] = w - sp.lr * g;
}

@compute @workgroup_size(WG)
fn adam(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let i = linear(wid, nwg, lid);
    if (i >= ap.count) {
        return;
    }
    var w = param[i];
    var g = grad[i];
    if (COUNT_NONFINITE && nonfinite(g)) {
        atomicAdd(&counts_adam[ap.nonfinite_slot], 1u);
    }
    if (DECOUPLED) {
        w = w * (1.0 - ap.lr * ap.weight_decay);
    } else {
        g = g + ap.weight_decay * w;
    }
    let m = ap.beta1 * exp_avg[i] + (1.0 - ap.beta1) * g;
    let v = ap.beta2 * exp_avg_sq[i] + (1.0 - ap.beta2) * g * g;
    exp_avg[i] = m;
    exp_avg_sq[i] = v;
    // PyTorch's order of operations: denom = sqrt(v) / sqrt(bc2) + eps, then
    // param -= (lr / bc1) · (m / denom).
    let denom = sqrt(v) / ap.bias_correction2_sqrt + ap.eps;
    param[i] = w - (ap.lr / ap.bias_correction1) * (m / denom);
}

@compute @workgroup_size(WG)
fn dc_asgd(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let i = linear(wid, nwg, lid);
    if (i >= dp.count) {
        return;
    }
    let g = grad[i];
    var lambda = dp.lambda;
    if (ADAPTIVE) {
        let m = fma(dp.ms_momentum, ms[i], (1.0 - dp.ms_momentum) * g * g);
        ms[i] = m;
        lambda = dp.lambda / sqrt(m + dp.eps);
    }
    let w = param[i];
    var d = fma(lambda * g * g, w - backup[i], g) + dp.weight_decay * w;
    if (MOMENTUM) {
        let b = dp.momentum * vel[i] + d;
        vel[i] = b;
        if (NESTEROV) {
            d = d + dp.momentum * b;
        } else {
            d = b;
        }
    }
    param[i] = w - dp.lr * d;
}
