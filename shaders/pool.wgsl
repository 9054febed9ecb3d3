// pool.wgsl — 2-D max / average pooling and global average pooling, NHWC, forward and
// backward.
//
// Bindings (u: uniform Params at @binding(0); the rest per entry point, in order):
//   max_forward          x [N, H, W, C], y [N, P, Q, C], argmax [N, P, Q, C] (u32)
//   avg_forward          x [N, H, W, C], y [N, P, Q, C]
//   max_backward         dy [N, P, Q, C], argmax [N, P, Q, C] (u32), dx [N, H, W, C]
//   avg_backward         dy [N, P, Q, C], dx [N, H, W, C]
//   global_avg_forward   x [N, H, W, C], y [N, C]
//   global_avg_backward  dy [N, C], dx [N, H, W, C]
// Entry points never share a binding number between variables of different types within
// one entry point; variables of different entry points may (WGSL checks per entry point).
//
// argmax holds, for each output element, the flat index ih * W + iw of the chosen input
// cell within its (n, c) plane: enough for the backward, which knows n and c.
//
// Dispatch: 1-D, one invocation per element of the tensor written (`u.count` of them),
// grid from grid_1d: i = (wid.y * nwg.x + wid.x) * WG + lid.x. The channel is the fastest
// index, so neighbouring invocations touch neighbouring addresses (coalesced in NHWC).
// Bounds guard: `if (i >= u.count) { return; }`. When C % 4 == 0 the host picks the
// `*_vec4` entries instead (3-D grid, 4 channels per invocation; see their comment).
//
// Windows: output row op covers input rows op * stride_h - pad_h + [0, R); rows outside
// [0, H) are padding. The host guarantees pad <= window / 2 and P, Q >= 1, so every
// window holds at least one real cell: max pooling starts from that cell (padding acts
// as -inf and is never chosen) and the in-bounds count is never 0.
// Backward passes are gathers: each input element sums over the (at most
// ceil(R / stride_h) * ceil(S / stride_w)) windows covering it, in a fixed order, so no
// atomics and bit-for-bit repeatable results.

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
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> u: Params;

// Forward passes.
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<storage, read_write> argmax: array<u32>;

// Backward passes: max_backward binds dy, argmax_in, dx; the others dy, dx.
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read> argmax_in: array<u32>;
@group(0) @binding(3) var<storage, read_write> dx_max: array<f32>;
@group(0) @binding(2) var<storage, read_write> dx: array<f32>;

override WG: u32 = 256u;
// Average pooling: divide by R * S (true, PyTorch's default) or by the in-bounds count.
override COUNT_INCLUDE_PAD: bool = true;

fn linear_id(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return (wid.y * nwg.x + wid.x) * WG + lid.x;
}

// The in-bounds part [begin, end) of a window starting at `start` (may be negative) of
// `len` cells over an axis of `size` cells.
fn clip(start: i32, len: u32, size: u32) -> vec2<u32> {
    let begin = u32(max(start, 0));
    let end = u32(min(start + i32(len), i32(size)));
    return vec2<u32>(begin, end);
}

// Window of output cell (op, oq), clipped to the input: (h_begin, h_end, w_begin, w_end).
fn window(op: u32, oq: u32) -> vec4<u32> {
    let hh = clip(i32(op * u.stride_h) - i32(u.pad_h), u.r, u.h);
    let ww = clip(i32(oq * u.stride_w) - i32(u.pad_w), u.s, u.w);
    return vec4<u32>(hh, ww);
}

// Output indices [begin, end) of the windows along one axis that cover input index `i`:
// those o with o * stride - pad <= i < o * stride - pad + len, and o < out.
fn covering(i: u32, len: u32, stride: u32, pad: u32, out: u32) -> vec2<u32> {
    let shifted = i + pad;
    var begin = 0u;
    if (shifted + 1u > len) {
        begin = (shifted + 1u - len + stride - 1u) / stride;
    }
    let end = min(shifted / stride + 1u, out);
    return vec2<u32>(begin, max(begin, end));
}

fn avg_divisor(win: vec4<u32>) -> f32 {
    if (COUNT_INCLUDE_PAD) {
        return f32(u.r * u.s);
    }
    return f32((win.y - win.x) * (win.w - win.z));
}

@compute @workgroup_size(WG)
fn max_forward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let i = linear_id(wid, nwg, lid);
    if (i >= u.count) {
        return;
    }
    // i = ((n * P + op) * Q + oq) * C + c
    let c = i % u.c;
    let oq = (i / u.c) % u.q;
    let op = (i / (u.c * u.q)) % u.p;
    let n = i / (u.c * u.q * u.p);
    let win = window(op, oq);
    let plane = n * u.h * u.w;
    // Start from the first real cell; `>` keeps the first of equal values (as PyTorch).
    var best_at = win.x * u.w + win.z;
    var best = x[(plane + best_at) * u.c + c];
    for (var ih = win.x; ih < win.y; ih++) {
        for (var iw = win.z; iw < win.w; iw++) {
            let at = ih * u.w + iw;
            let v = x[(plane + at) * u.c + c];
            if (v > best) {
                best = v;
                best_at = at;
            }
        }
    }
    y[i] = best;
    argmax[i] = best_at;
}

@compute @workgroup_size(WG)
fn avg_forward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let i = linear_id(wid, nwg, lid);
    if (i >= u.count) {
        return;
    }
    let c = i % u.c;
    let oq = (i / u.c) % u.q;
    let op = (i / (u.c * u.q)) % u.p;
    let n = i / (u.c * u.q * u.p);
    let win = window(op, oq);
    let plane = n * u.h * u.w;
    var sum = 0.0;
    for (var ih = win.x; ih < win.y; ih++) {
        for (var iw = win.z; iw < win.w; iw++) {
            sum += x[(plane + ih * u.w + iw) * u.c + c];
        }
    }
    y[i] = sum / avg_divisor(win);
}

@compute @workgroup_size(WG)
fn max_backward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let i = linear_id(wid, nwg, lid);
    if (i >= u.count) {
        return;
    }
    // i = ((n * H + ih) * W + iw) * C + c
    let c = i % u.c;
    let iw = (i / u.c) % u.w;
    let ih = (i / (u.c * u.w)) % u.h;
    let n = i / (u.c * u.w * u.h);
    let rows = covering(ih, u.r, u.stride_h, u.pad_h, u.p);
    let cols = covering(iw, u.s, u.stride_w, u.pad_w, u.q);
    let me = ih * u.w + iw;
    var sum = 0.0;
    for (var op = rows.x; op < rows.y; op++) {
        for (var oq = cols.x; oq < cols.y; oq++) {
            let o = ((n * u.p + op) * u.q + oq) * u.c + c;
            sum += select(0.0, dy[o], argmax_in[o] == me);
        }
    }
    dx_max[i] = sum;
}

@compute @workgroup_size(WG)
fn avg_backward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let i = linear_id(wid, nwg, lid);
    if (i >= u.count) {
        return;
    }
    let c = i % u.c;
    let iw = (i / u.c) % u.w;
    let ih = (i / (u.c * u.w)) % u.h;
    let n = i / (u.c * u.w * u.h);
    let rows = covering(ih, u.r, u.stride_h, u.pad_h, u.p);
    let cols = covering(iw, u.s, u.stride_w, u.pad_w, u.q);
    var sum = 0.0;
    for (var op = rows.x; op < rows.y; op++) {
        for (var oq = cols.x; oq < cols.y; oq++) {
            let o = ((n * u.p + op) * u.q + oq) * u.c + c;
            sum += dy[o] / avg_divisor(window(op, oq));
        }
    }
    dx[i] = sum;
}

@compute @workgroup_size(WG)
fn global_avg_forward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let i = linear_id(wid, nwg, lid);
    if (i >= u.count) {
        return;
    }
    // i = n * C + c; consecutive invocations read consecutive channels of each pixel.
    let c = i % u.c;
    let n = i / u.c;
    let hw = u.h * u.w;
    var sum = 0.0;
    for (var j = 0u; j < hw; j++) {
        sum += x[(n * hw + j) * u.c + c];
    }
    y[i] = sum / f32(hw);
}

@compute @workgroup_size(WG)
fn global_avg_backward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let i = linear_id(wid, nwg, lid);
    if (i >= u.count) {
        return;
    }
    let c = i % u.c;
    let n = i / (u.h * u.w * u.c);
    dx[i] = dy[n * u.c + c] / f32(u.h * u.w);
}

// ---- vec4 variants, for C % 4 == 0 ----
// One invocation per 4 channels of one pixel of the tensor written, on a 3-D grid:
// x = channel vec4 (wid.x·WG_X + lid.x), y = column (wid.y·WG_Y + lid.y), z = image row
// n·rows + row (wid.z; rows = P forward, H backward). The row and image come from the
// workgroup id, uniform over the workgroup, so the per-invocation index decoding of the
// 1-D entries (several integer divisions per lane, scalarised on CPU drivers) is gone,
// and every load and store moves 4 channels. Bounds guard: channel vec4 >= C / 4 or
// column >= Q (W) returns. Bindings as the matching 1-D entries, as vec4 arrays.
@group(0) @binding(1) var<storage, read> x_v4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> y_v4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> argmax_v4: array<vec4<u32>>;
@group(0) @binding(1) var<storage, read> dy_v4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> argmax_in_v4: array<vec4<u32>>;
@group(0) @binding(3) var<storage, read_write> dx_max_v4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> dx_v4: array<vec4<f32>>;

override WG_X: u32 = 4u;
override WG_Y: u32 = 16u;

@compute @workgroup_size(WG_X, WG_Y, 1)
fn max_forward_vec4(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let c4 = wid.x * WG_X + lid.x;
    let oq = wid.y * WG_Y + lid.y;
    let cv = u.c / 4u;
    if (c4 >= cv || oq >= u.q) {
        return;
    }
    let op = wid.z % u.p;
    let n = wid.z / u.p;
    let win = window(op, oq);
    let plane = n * u.h * u.w;
    // As max_forward, per channel: `>` keeps the first of equal values.
    var best_at = vec4<u32>(win.x * u.w + win.z);
    var best = x_v4[(plane + best_at.x) * cv + c4];
    for (var ih = win.x; ih < win.y; ih++) {
        for (var iw = win.z; iw < win.w; iw++) {
            let at = ih * u.w + iw;
            let v = x_v4[(plane + at) * cv + c4];
            let better = v > best;
            best = select(best, v, better);
            best_at = select(best_at, vec4<u32>(at), better);
        }
    }
    let o = (wid.z * u.q + oq) * cv + c4;
    y_v4[o] = best;
    argmax_v4[o] = best_at;
}

@compute @workgroup_size(WG_X, WG_Y, 1)
fn avg_forward_vec4(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let c4 = wid.x * WG_X + lid.x;
    let oq = wid.y * WG_Y + lid.y;
    let cv = u.c / 4u;
    if (c4 >= cv || oq >= u.q) {
        return;
    }
    let op = wid.z % u.p;
    let n = wid.z / u.p;
    let win = window(op, oq);
    let plane = n * u.h * u.w;
    var sum = vec4<f32>(0.0);
    for (var ih = win.x; ih < win.y; ih++) {
        for (var iw = win.z; iw < win.w; iw++) {
            sum += x_v4[(plane + ih * u.w + iw) * cv + c4];
        }
    }
    y_v4[(wid.z * u.q + oq) * cv + c4] = sum / avg_divisor(win);
}

@compute @workgroup_size(WG_X, WG_Y, 1)
fn max_backward_vec4(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let c4 = wid.x * WG_X + lid.x;
    let iw = wid.y * WG_Y + lid.y;
    let cv = u.c / 4u;
    if (c4 >= cv || iw >= u.w) {
        return;
    }
    let ih = wid.z % u.h;
    let n = wid.z / u.h;
    let rows = covering(ih, u.r, u.stride_h, u.pad_h, u.p);
    let cols = covering(iw, u.s, u.stride_w, u.pad_w, u.q);
    let me = vec4<u32>(ih * u.w + iw);
    var sum = vec4<f32>(0.0);
    for (var op = rows.x; op < rows.y; op++) {
        for (var oq = cols.x; oq < cols.y; oq++) {
            let o = ((n * u.p + op) * u.q + oq) * cv + c4;
            sum += select(vec4<f32>(0.0), dy_v4[o], argmax_in_v4[o] == me);
        }
    }
    dx_max_v4[(wid.z * u.w + iw) * cv + c4] = sum;
}

@compute @workgroup_size(WG_X, WG_Y, 1)
fn avg_backward_vec4(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let c4 = wid.x * WG_X + lid.x;
    let iw = wid.y * WG_Y + lid.y;
    let cv = u.c / 4u;
    if (c4 >= cv || iw >= u.w) {
        return;
    }
    let ih = wid.z % u.h;
    let n = wid.z / u.h;
    let rows = covering(ih, u.r, u.stride_h, u.pad_h, u.p);
    let cols = covering(iw, u.s, u.stride_w, u.pad_w, u.q);
    var sum = vec4<f32>(0.0);
    for (var op = rows.x; op < rows.y; op++) {
        for (var oq = cols.x; oq < cols.y; oq++) {
            let o = ((n * u.p + op) * u.q + oq) * cv + c4;
            sum += dy_v4[o] / avg_divisor(window(op, oq));
        }
    }
    dx_v4[(wid.z * u.w + iw) * cv + c4] = sum;
}

// `max_backward_tiles_vec4`: max_backward_vec4 when the windows tile the input exactly
// (stride = window, no padding, H = P·R, W = Q·S): every input cell lies in exactly one
// window, so one invocation per output element (4 channels) writes its whole window:
// dy where the argmax points, 0 elsewhere. A quarter of the invocations of the gather
// for 2×2 windows, and no window search per input cell. Grid as max_forward_vec4.
@compute @workgroup_size(WG_X, WG_Y, 1)
fn max_backward_tiles_vec4(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let c4 = wid.x * WG_X + lid.x;
    let oq = wid.y * WG_Y + lid.y;
    let cv = u.c / 4u;
    if (c4 >= cv || oq >= u.q) {
        return;
    }
    let op = wid.z % u.p;
    let n = wid.z / u.p;
    let o = (wid.z * u.q + oq) * cv + c4;
    let g = dy_v4[o];
    let chosen = argmax_in_v4[o];
    for (var dr = 0u; dr < u.r; dr++) {
        let ih = op * u.r + dr;
        for (var ds = 0u; ds < u.s; ds++) {
            let iw = oq * u.s + ds;
            let at = vec4<u32>(ih * u.w + iw);
            dx_max_v4[((n * u.h + ih) * u.w + iw) * cv + c4] = select(vec4<f32>(0.0), g, chosen == at);
        }
    }
}
