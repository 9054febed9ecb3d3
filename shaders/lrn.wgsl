// lrn.wgsl — local response normalisation across channels (AlexNet), NHWC, forward and
// backward, with PyTorch's semantics (torch.nn.LocalResponseNorm):
//
//   s_c = k + alpha / size * sum_{c' in win(c)} a_{c'}^2,   b_c = a_c * s_c^(-beta),
//   win(c) = [c - size/2, c + (size-1)/2] clipped to [0, C).
//
// Backward (a_c enters its own scale and the scales of every j whose window holds c, i.e.
// j in [c - (size-1)/2, c + size/2]):
//   da_c = db_c * s_c^(-beta)
//        - 2 * beta * alpha / size * a_c * sum_j db_j * a_j * s_j^(-beta-1).
// The backward recomputes the neighbours' scales s_j from x rather than saving them in
// the forward: no extra buffer, and the reads hit the same cached row of C channels.
//
// Bindings (u: uniform Params at @binding(0)):
//   lrn_forward   x [rows, C], y [rows, C]         (rows = N*H*W)
//   lrn_backward  x [rows, C], dy [rows, C], dx [rows, C]
// Dispatch: 1-D, one invocation per element (`u.count` = rows * C), grid from grid_1d:
// i = (wid.y * nwg.x + wid.x) * WG + lid.x; neighbouring invocations handle neighbouring
// channels of one pixel (coalesced). Bounds guard: `if (i >= u.count) { return; }`.
// The host guarantees k > 0 and alpha >= 0, so every s is positive and pow() is defined.

struct Params {
    rows: u32,
    c: u32,
    size: u32,
    count: u32,
    alpha: f32,
    beta: f32,
    k: f32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> u: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
// Backward only.
@group(0) @binding(2) var<storage, read> dy: array<f32>;
@group(0) @binding(3) var<storage, read_write> dx: array<f32>;

override WG: u32 = 256u;

fn linear_id(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return (wid.y * nwg.x + wid.x) * WG + lid.x;
}

fn sq(v: f32) -> f32 {
    return v * v;
}

// Sum of a^2 over win(ch) for the pixel whose channels start at `base`.
fn sum_squares(base: u32, ch: u32) -> f32 {
    let lo = u32(max(i32(ch) - i32(u.size / 2u), 0));
    let hi = min(ch + (u.size - 1u) / 2u, u.c - 1u);
    var sum = 0.0;
    for (var j = lo; j <= hi; j++) {
        sum += sq(x[base + j]);
    }
    return sum;
}

@compute @workgroup_size(WG)
fn lrn_forward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let i = linear_id(wid, nwg, lid);
    if (i >= u.count) {
        return;
    }
    let ch = i % u.c;
    let s = u.k + u.alpha / f32(u.size) * sum_squares(i - ch, ch);
    y[i] = x[i] * pow(s, -u.beta);
}

@compute @workgroup_size(WG)
fn lrn_backward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let i = linear_id(wid, nwg, lid);
    if (i >= u.count) {
        return;
    }
    let ch = i % u.c;
    let base = i - ch;
    let half_lo = u.size / 2u;
    let half_hi = (u.size - 1u) / 2u;
    // The channels j whose window contains ch.
    let j_lo = u32(max(i32(ch) - i32(half_hi), 0));
    let j_hi = min(ch + half_lo, u.c - 1u);
    let coef = u.alpha / f32(u.size);
    // Sum of squares over win(j), slid from j to j + 1 by one add and one subtract.
    var sumsq = sum_squares(base, j_lo);
    var cross = 0.0;
    var own = 0.0;
    for (var j = j_lo; j <= j_hi; j++) {
        if (j > j_lo) {
            let enter = j + half_hi;
            if (enter < u.c) {
                sumsq += sq(x[base + enter]);
            }
            if (j - 1u >= half_lo) {
                sumsq -= sq(x[base + j - 1u - half_lo]);
            }
        }
        let s = u.k + coef * sumsq;
        let t = pow(s, -u.beta);
        let g = dy[base + j];
        if (j == ch) {
            own = g * t;
        }
        cross += g * x[base + j] * t / s;
    }
    dx[i] = own - 2.0 * u.beta * coef * x[i] * cross;
}
