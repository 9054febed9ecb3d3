// conv2d.wgsl — 2-D convolution with groups, stride, zero padding and dilation: the forward
// pass (+ bias[k]) (ReLU), the backward pass to the input (data) and to the weights (filter).
//
// Shapes (G = groups, Cg = C / G, Kg = K / G; channel c is in group c / Cg, out-channel k in
// group k / Kg), all row-major:
//   x       [N, H, W, C]       dx [N, H, W, C]
//   weight  [K, R, S, Cg]      dw [K, R, S, Cg]
//   bias    [K]
//   y       [N, P, Q, K]       dy [N, P, Q, K]
// Entry points and bindings (the uniform Params p is binding 0 in each):
//   conv2d_forward:          x (1), weight (2), bias (3, read only when HAS_BIAS), y (4)
//   conv2d_backward_data:    dy (1), weight (2), dx (3)  (also conv2d_backward_data_vec4)
//   conv2d_backward_filter:  x (1), dy (2), dw (3)  (also conv2d_backward_filter_vec4)
//
// Each pass is an implicit GEMM whose rows and columns are:
//   forward          rows: the N·P·Q pixels of y    cols: out-channels k     sum: r, s, c in group
//   backward_data    rows: the N·H·W pixels of dx   cols: channels c         sum: r, s, k in group
//                    (plus padding rows, ordered by w's phase: see conv2d_backward_data)
//   backward_filter  rows: out-channels k           cols: taps (r, s, c)     sum: n, p, q
// p.rows and p.cols count them; p.cols counts one group's columns (Kg, Cg or R·S·Cg) unless
// MIXED, where the column (forward, data) or row (filter) dimension spans every group.
//
// Dispatch: x = (MIXED ? 1 : G) · p.col_tiles with p.col_tiles = ceil(p.cols / (WG_X·TN));
// the group is wid.x / p.col_tiles. Row tiles of WG_Y·TM rows are spread over y and z
// (tile = wid.z · nwg.y + wid.y) so that a large batch stays under the per-dimension limit.
//
// Register blocking as in matmul.wgsl, with no shared memory and no barriers (on lavapipe
// that is several times faster than shared-memory tiling): each invocation owns TM = 4
// contiguous rows and TN = 4 columns strided by WG_X, so neighbouring invocations touch
// neighbouring columns — neighbouring channels, i.e. neighbouring addresses in NHWC/KRSC.
// Without MIXED every column of an invocation is in one group, so a row operand loaded once
// feeds TN multiply-adds. With few columns per group (depthwise) that would leave most lanes
// idle, so MIXED puts all groups side by side and loads the row operand per (row, column).
//
// Bounds guard: row tiles past p.rows return at once; rows and columns past the end clamp
// their loads to the last one and skip their stores, so the inner loops have no branch.
// Zero padding: a position outside the input (or, for the data pass, a tap that meets no
// output pixel) clamps its index and selects 0; a tap that is padding for all TM rows (or
// all TN columns in the filter pass) is skipped. Sums run in a fixed order: deterministic.

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
    w_steps: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
// conv2d_forward
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> weight: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
// conv2d_backward_data (weight as above)
@group(0) @binding(1) var<storage, read> dy_data: array<f32>;
@group(0) @binding(3) var<storage, read_write> dx: array<f32>;
// conv2d_backward_filter (x as above)
@group(0) @binding(2) var<storage, read> dy_filter: array<f32>;
@group(0) @binding(3) var<storage, read_write> dw: array<f32>;

override WG_X: u32 = 8u;
override WG_Y: u32 = 8u;
override MIXED: bool = false;
override HAS_BIAS: bool = false;
override RELU: bool = false;
override ACCUMULATE: bool = false;

const TM: u32 = 4u;
const TN: u32 = 4u;

// This invocation's first row, first column and group; `live` is false past the last row.
struct Tile {
    row0: u32,
    col0: u32,
    group: u32,
    live: bool,
}

fn tile(wid: vec3<u32>, lid: vec3<u32>, nwg: vec3<u32>) -> Tile {
    let row0 = ((wid.z * nwg.y + wid.y) * WG_Y + lid.y) * TM;
    let col0 = (wid.x % p.col_tiles) * WG_X * TN + lid.x;
    return Tile(row0, col0, wid.x / p.col_tiles, row0 < p.rows);
}

// The TM rows and TN columns of a tile, clamped so that loads stay in bounds.
fn tile_rows(row0: u32) -> vec4<u32> {
    return min(vec4<u32>(row0) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(p.rows - 1u));
}

fn tile_cols(col0: u32) -> vec4<u32> {
    return min(vec4<u32>(col0) + vec4<u32>(0u, 1u, 2u, 3u) * WG_X, vec4<u32>(p.cols - 1u));
}

// Whether each coordinate lies in [0, size), and the coordinate clamped into that range.
fn inside(v: vec4<i32>, size: u32) -> vec4<bool> {
    return (v >= vec4<i32>(0)) & (v < vec4<i32>(i32(size)));
}

fn clamped(v: vec4<i32>, size: u32) -> vec4<u32> {
    return vec4<u32>(clamp(v, vec4<i32>(0), vec4<i32>(i32(size) - 1)));
}

fn x4(i: vec4<u32>) -> vec4<f32> {
    return vec4<f32>(x[i.x], x[i.y], x[i.z], x[i.w]);
}

fn weight4(i: vec4<u32>) -> vec4<f32> {
    return vec4<f32>(weight[i.x], weight[i.y], weight[i.z], weight[i.w]);
}

fn dy_data4(i: vec4<u32>) -> vec4<f32> {
    return vec4<f32>(dy_data[i.x], dy_data[i.y], dy_data[i.z], dy_data[i.w]);
}

fn dy_filter4(i: vec4<u32>) -> vec4<f32> {
    return vec4<f32>(dy_filter[i.x], dy_filter[i.y], dy_filter[i.z], dy_filter[i.w]);
}

fn store_y(row: u32, col: u32, group: u32, value: f32) {
    if (row >= p.rows || col >= p.cols) {
        return;
    }
    let k = group * p.kg + col;
    var v = value;
    if (HAS_BIAS) {
        v += bias[k];
    }
    if (RELU) {
        // select, not max: a NaN stays NaN (as in PyTorch) so that it can be detected.
        v = select(v, 0.0, v < 0.0);
    }
    y[row * p.k + k] = v;
}

@compute @workgroup_size(WG_X, WG_Y, 1)
fn conv2d_forward(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let t = tile(wid, lid, nwg);
    if (!t.live) {
        return;
    }
    // Each row's output pixel (n, p, q) and the input position of its tap (0, 0).
    let rows = tile_rows(t.row0);
    let out_q = rows % p.q;
    let out_p = (rows / p.q) % p.p;
    let img = rows / (p.q * p.p);
    let h0 = vec4<i32>(out_p * p.stride_h) - i32(p.pad_h);
    let w0 = vec4<i32>(out_q * p.stride_w) - i32(p.pad_w);
    // Each column's out-channel k, its weight row, and its group's first input channel.
    let k = t.group * p.kg + tile_cols(t.col0);
    let w_off = k * (p.r * p.s * p.cg);
    var c_base = vec4<u32>(t.group * p.cg);
    if (MIXED) {
        c_base = (k / p.kg) * p.cg;
    }

    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    let zero = vec4<f32>(0.0);
    for (var r = 0u; r < p.r; r++) {
        let ih = h0 + vec4<i32>(i32(r * p.dil_h));
        let in_h = inside(ih, p.h);
        if (!any(in_h)) {
            continue;
        }
        let x_row = (img * p.h + clamped(ih, p.h)) * p.w;
        for (var s = 0u; s < p.s; s++) {
            let iw = w0 + vec4<i32>(i32(s * p.dil_w));
            let ok = in_h & inside(iw, p.w);
            if (!any(ok)) {
                continue;
            }
            let pix = (x_row + clamped(iw, p.w)) * p.c;
            let wt = w_off + (r * p.s + s) * p.cg;
            for (var c = 0u; c < p.cg; c++) {
                let wv = weight4(wt + c);
                if (MIXED) {
                    let cc = c_base + c;
                    acc0 = fma(select(zero, x4(pix.x + cc), ok.x), wv, acc0);
                    acc1 = fma(select(zero, x4(pix.y + cc), ok.y), wv, acc1);
                    acc2 = fma(select(zero, x4(pix.z + cc), ok.z), wv, acc2);
                    acc3 = fma(select(zero, x4(pix.w + cc), ok.w), wv, acc3);
                } else {
                    // One group for all columns: each x value is a broadcast.
                    let xv = select(zero, x4(pix + c_base.x + c), ok);
                    acc0 = fma(vec4<f32>(xv.x), wv, acc0);
                    acc1 = fma(vec4<f32>(xv.y), wv, acc1);
                    acc2 = fma(vec4<f32>(xv.z), wv, acc2);
                    acc3 = fma(vec4<f32>(xv.w), wv, acc3);
                }
            }
        }
    }

    let accs = array<vec4<f32>, 4>(acc0, acc1, acc2, acc3);
    for (var i = 0u; i < TM; i++) {
        for (var j = 0u; j < TN; j++) {
            store_y(t.row0 + i, t.col0 + j * WG_X, t.group, accs[i][j]);
        }
    }
}

// Stores one invocation's dx tile; `pix` is each row's dx pixel, `live` whether it exists.
fn store_dx_tile(t: Tile, pix: vec4<u32>, live: vec4<bool>, accs: array<vec4<f32>, 4>) {
    for (var i = 0u; i < TM; i++) {
        for (var j = 0u; j < TN; j++) {
            let col = t.col0 + j * WG_X;
            if (!live[i] || col >= p.cols) {
                continue;
            }
            let idx = pix[i] * p.c + t.group * p.cg + col;
            var v = accs[i][j];
            if (ACCUMULATE) {
                v += dx[idx];
            }
            dx[idx] = v;
        }
    }
}

// Output coordinate o with o·stride - pad + tap·dil = i, given `shifted` = i + pad - tap·dil:
// it exists when `shifted` is non-negative, divisible by the stride and o < size. Returns
// o clamped into range; `ok` receives whether it exists.
fn gather_coord(shifted: vec4<i32>, stride: u32, size: u32, ok: ptr<function, vec4<bool>>) -> vec4<u32> {
    let nonneg = vec4<u32>(max(shifted, vec4<i32>(0)));
    let o = nonneg / stride;
    *ok = (shifted >= vec4<i32>(0)) & (nonneg % stride == vec4<u32>(0u)) & (o < vec4<u32>(size));
    return min(o, vec4<u32>(size - 1u));
}

// conv2d_forward_vec4 — the forward pass with every load a vec4, for C/groups % 4 == 0
// (and not MIXED). In NHWC/KRSC both operands are contiguous along the channels they are
// summed over, so per chunk of 4 channels a tile loads its 4 rows' input pixels and its
// 4 columns' filter taps as 8 vec4s and does 64 FMAs (a 4×4 matrix times 4 vectors). On
// lavapipe every storage load costs a loop over the SIMD lanes whatever its width, so
// this does 4x fewer loads than conv2d_forward. Bindings, geometry and bounds guard as
// conv2d_forward; padding taps load a clamped pixel and select zero.
@group(0) @binding(1) var<storage, read> x_v4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> weight_v4: array<vec4<f32>>;

@compute @workgroup_size(WG_X, WG_Y, 1)
fn conv2d_forward_vec4(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let t = tile(wid, lid, nwg);
    if (!t.live) {
        return;
    }
    let rows = tile_rows(t.row0);
    let out_q = rows % p.q;
    let out_p = (rows / p.q) % p.p;
    let img = rows / (p.q * p.p);
    let h0 = vec4<i32>(out_p * p.stride_h) - i32(p.pad_h);
    let w0 = vec4<i32>(out_q * p.stride_w) - i32(p.pad_w);
    let k = t.group * p.kg + tile_cols(t.col0);
    // In vec4 units: filter rows, channels per group, the group's first channel.
    let cg4 = p.cg / 4u;
    let w_off4 = k * (p.r * p.s * cg4);
    let c_base4 = t.group * cg4;
    let c4 = p.c / 4u;
    let zero = vec4<f32>(0.0);
    // acc[i] holds row i's 4 output channels.
    var acc0 = zero;
    var acc1 = zero;
    var acc2 = zero;
    var acc3 = zero;
    for (var r = 0u; r < p.r; r++) {
        let ih = h0 + vec4<i32>(i32(r * p.dil_h));
        let in_h = inside(ih, p.h);
        if (!any(in_h)) {
            continue;
        }
        let x_row = (img * p.h + clamped(ih, p.h)) * p.w;
        for (var s = 0u; s < p.s; s++) {
            let iw = w0 + vec4<i32>(i32(s * p.dil_w));
            let ok = in_h & inside(iw, p.w);
            if (!any(ok)) {
                continue;
            }
            let pix4 = (x_row + clamped(iw, p.w)) * c4 + c_base4;
            let wt4 = w_off4 + (r * p.s + s) * cg4;
            for (var c = 0u; c < cg4; c++) {
                // Rows of wt are the 4 columns' filter taps: wt * xv = their dot products.
                let wt = transpose(mat4x4<f32>(
                    weight_v4[wt4.x + c], weight_v4[wt4.y + c],
                    weight_v4[wt4.z + c], weight_v4[wt4.w + c]));
                acc0 += wt * select(zero, x_v4[pix4.x + c], ok.x);
                acc1 += wt * select(zero, x_v4[pix4.y + c], ok.y);
                acc2 += wt * select(zero, x_v4[pix4.z + c], ok.z);
                acc3 += wt * select(zero, x_v4[pix4.w + c], ok.w);
            }
        }
    }
    let accs = array<vec4<f32>, 4>(acc0, acc1, acc2, acc3);
    for (var i = 0u; i < TM; i++) {
        for (var j = 0u; j < TN; j++) {
            store_y(t.row0 + i, t.col0 + j * WG_X, t.group, accs[i][j]);
        }
    }
}

@compute @workgroup_size(WG_X, WG_Y, 1)
fn conv2d_backward_data(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let t = tile(wid, lid, nwg);
    if (!t.live) {
        return;
    }
    // Rows are ordered (n, h, w mod stride_w, w / stride_w), p.w_steps = ceil(W / stride_w)
    // per phase, so a tile's TM rows lie stride_w apart in w: they meet the same taps s,
    // and a strided convolution skips the taps that reach none of them instead of running
    // them 1 / stride_w useful. Rows with w >= W exist only to pad the phases.
    let rows = tile_rows(t.row0);
    let phase_w = (rows / p.w_steps) % p.stride_w;
    let in_w = (rows % p.w_steps) * p.stride_w + phase_w;
    let in_h = (rows / (p.w_steps * p.stride_w)) % p.h;
    let img = rows / (p.w_steps * p.stride_w * p.h);
    let live = (vec4<u32>(t.row0) + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(p.rows)) & (in_w < vec4<u32>(p.w));
    let in_wc = min(in_w, vec4<u32>(p.w - 1u));
    let from_w = vec4<i32>(in_wc + p.pad_w);
    let from_h = vec4<i32>(in_h + p.pad_h);
    // Each column's channel c and its group g: weight[g·Kg + kk, r, s, c - g·Cg] is
    // weight[w_off + kk·R·S·Cg + (r·S + s)·Cg], and dy's channel is k_base + kk.
    let c = t.group * p.cg + tile_cols(t.col0);
    var g = vec4<u32>(t.group);
    if (MIXED) {
        g = c / p.cg;
    }
    let rsc = p.r * p.s * p.cg;
    let k_base = g * p.kg;
    let w_off = k_base * rsc + (c - g * p.cg);

    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    let zero = vec4<f32>(0.0);
    for (var r = 0u; r < p.r; r++) {
        var ok_h: vec4<bool>;
        let out_p = gather_coord(from_h - i32(r * p.dil_h), p.stride_h, p.p, &ok_h);
        if (!any(ok_h)) {
            continue;
        }
        let dy_row = (img * p.p + out_p) * p.q;
        for (var s = 0u; s < p.s; s++) {
            var ok_w: vec4<bool>;
            let out_q = gather_coord(from_w - i32(s * p.dil_w), p.stride_w, p.q, &ok_w);
            let ok = ok_h & ok_w;
            if (!any(ok)) {
                continue;
            }
            let pix = (dy_row + out_q) * p.k;
            let wt = w_off + (r * p.s + s) * p.cg;
            for (var kk = 0u; kk < p.kg; kk++) {
                let wv = weight4(wt + kk * rsc);
                if (MIXED) {
                    let kc = k_base + kk;
                    acc0 = fma(select(zero, dy_data4(pix.x + kc), ok.x), wv, acc0);
                    acc1 = fma(select(zero, dy_data4(pix.y + kc), ok.y), wv, acc1);
                    acc2 = fma(select(zero, dy_data4(pix.z + kc), ok.z), wv, acc2);
                    acc3 = fma(select(zero, dy_data4(pix.w + kc), ok.w), wv, acc3);
                } else {
                    // One group for all columns: each dy value is a broadcast.
                    let dv = select(zero, dy_data4(pix + k_base.x + kk), ok);
                    acc0 = fma(vec4<f32>(dv.x), wv, acc0);
                    acc1 = fma(vec4<f32>(dv.y), wv, acc1);
                    acc2 = fma(vec4<f32>(dv.z), wv, acc2);
                    acc3 = fma(vec4<f32>(dv.w), wv, acc3);
                }
            }
        }
    }
    let dx_pix = (img * p.h + in_h) * p.w + in_wc;
    store_dx_tile(t, dx_pix, live, array<vec4<f32>, 4>(acc0, acc1, acc2, acc3));
}

// conv2d_backward_data_vec4 — the data pass with every load a vec4, for Cg % 4 == 0 and
// Kg % 4 == 0 (and not MIXED). Each invocation owns TM = 4 rows (as conv2d_backward_data,
// same row order and gather) and 4 CONTIGUOUS channels c4·4 .. c4·4 + 3, c4 = the column
// tile's first vec4 + lid.x (so p.col_tiles is unchanged: WG_X·4 channels per tile). Per
// chunk of 4 out-channels kk..kk+3 it loads each row's dy as one vec4 (along k) and the
// filter taps weight[k_base + kk + j, r, s, c..c+4] as 4 vec4s (along c): 8 loads feed 64
// FMAs (a 4×4 matrix whose columns are the taps, times each row's dy). Stores are vec4s.
@group(0) @binding(1) var<storage, read> dy_data_v4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> dx_v4: array<vec4<f32>>;

@compute @workgroup_size(WG_X, WG_Y, 1)
fn conv2d_backward_data_vec4(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let t = tile(wid, lid, nwg);
    if (!t.live) {
        return;
    }
    // Row decoding as in conv2d_backward_data (phases of stride_w).
    let rows = tile_rows(t.row0);
    let phase_w = (rows / p.w_steps) % p.stride_w;
    let in_w = (rows % p.w_steps) * p.stride_w + phase_w;
    let in_h = (rows / (p.w_steps * p.stride_w)) % p.h;
    let img = rows / (p.w_steps * p.stride_w * p.h);
    let live = (vec4<u32>(t.row0) + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(p.rows)) & (in_w < vec4<u32>(p.w));
    let in_wc = min(in_w, vec4<u32>(p.w - 1u));
    let from_w = vec4<i32>(in_wc + p.pad_w);
    let from_h = vec4<i32>(in_h + p.pad_h);
    // In vec4 units: this invocation's channel chunk within the group (clamped), the
    // filter's row length R·S·Cg, and dy's first chunk of the group's out-channels.
    let cg4 = p.cg / 4u;
    let col4 = (wid.x % p.col_tiles) * WG_X + lid.x;
    let c4 = min(col4, cg4 - 1u);
    let rsc4 = p.r * p.s * cg4;
    let k_base = t.group * p.kg;
    let w_off4 = k_base * rsc4 + c4;
    let k4 = p.k / 4u;
    let kg4 = p.kg / 4u;
    let zero = vec4<f32>(0.0);
    // acc[i] holds row i's 4 channels.
    var acc0 = zero;
    var acc1 = zero;
    var acc2 = zero;
    var acc3 = zero;
    for (var r = 0u; r < p.r; r++) {
        var ok_h: vec4<bool>;
        let out_p = gather_coord(from_h - i32(r * p.dil_h), p.stride_h, p.p, &ok_h);
        if (!any(ok_h)) {
            continue;
        }
        let dy_row = (img * p.p + out_p) * p.q;
        for (var s = 0u; s < p.s; s++) {
            var ok_w: vec4<bool>;
            let out_q = gather_coord(from_w - i32(s * p.dil_w), p.stride_w, p.q, &ok_w);
            let ok = ok_h & ok_w;
            if (!any(ok)) {
                continue;
            }
            let pix4 = (dy_row + out_q) * k4 + k_base / 4u;
            var wt4 = w_off4 + (r * p.s + s) * cg4;
            for (var kk = 0u; kk < kg4; kk++) {
                // Columns of wt are the taps of out-channels 4·kk + j: wt * dv = Σ_j dv[j]·tap_j.
                let wt = mat4x4<f32>(
                    weight_v4[wt4], weight_v4[wt4 + rsc4],
                    weight_v4[wt4 + 2u * rsc4], weight_v4[wt4 + 3u * rsc4]);
                wt4 += 4u * rsc4;
                acc0 += wt * select(zero, dy_data_v4[pix4.x + kk], ok.x);
                acc1 += wt * select(zero, dy_data_v4[pix4.y + kk], ok.y);
                acc2 += wt * select(zero, dy_data_v4[pix4.z + kk], ok.z);
                acc3 += wt * select(zero, dy_data_v4[pix4.w + kk], ok.w);
            }
        }
    }
    if (col4 >= cg4) {
        return;
    }
    let dx_pix4 = ((img * p.h + in_h) * p.w + in_wc) * (p.c / 4u) + t.group * cg4 + c4;
    let accs = array<vec4<f32>, 4>(acc0, acc1, acc2, acc3);
    for (var i = 0u; i < TM; i++) {
        if (!live[i]) {
            continue;
        }
        var v = accs[i];
        if (ACCUMULATE) {
            v += dx_v4[dx_pix4[i]];
        }
        dx_v4[dx_pix4[i]] = v;
    }
}

fn store_dw(row: u32, col: u32, group: u32, value: f32) {
    if (row >= p.rows || col >= p.cols) {
        return;
    }
    let idx = (group * p.kg + row) * p.cols + col;
    var v = value;
    if (ACCUMULATE) {
        v += dw[idx];
    }
    dw[idx] = v;
}

@compute @workgroup_size(WG_X, WG_Y, 1)
fn conv2d_backward_filter(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let t = tile(wid, lid, nwg);
    if (!t.live) {
        return;
    }
    // Each row's out-channel k; each column's tap (r, s) and channel within the group.
    let k = t.group * p.kg + tile_rows(t.row0);
    let col = tile_cols(t.col0);
    let c_in = col % p.cg;
    let tap_s = (col / p.cg) % p.s;
    let tap_r = col / (p.cg * p.s);
    let h_tap = vec4<i32>(tap_r * p.dil_h) - i32(p.pad_h);
    let w_tap = vec4<i32>(tap_s * p.dil_w) - i32(p.pad_w);
    // x's channel is chan + (MIXED ? row_chan[i] : 0).
    var chan = c_in;
    if (!MIXED) {
        chan += t.group * p.cg;
    }
    let row_chan = (k / p.kg) * p.cg;

    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    let zero = vec4<f32>(0.0);
    for (var n = 0u; n < p.n; n++) {
        for (var op = 0u; op < p.p; op++) {
            let ih = h_tap + i32(op * p.stride_h);
            let in_h = inside(ih, p.h);
            if (!any(in_h)) {
                continue;
            }
            let x_row = (n * p.h + clamped(ih, p.h)) * p.w;
            let dy_row = (n * p.p + op) * p.q;
            for (var oq = 0u; oq < p.q; oq++) {
                let iw = w_tap + i32(oq * p.stride_w);
                let ok = in_h & inside(iw, p.w);
                if (!any(ok)) {
                    continue;
                }
                let xi = (x_row + clamped(iw, p.w)) * p.c + chan;
                let dv = dy_filter4((dy_row + oq) * p.k + k);
                if (MIXED) {
                    acc0 = fma(vec4<f32>(dv.x), select(zero, x4(xi + row_chan.x), ok), acc0);
                    acc1 = fma(vec4<f32>(dv.y), select(zero, x4(xi + row_chan.y), ok), acc1);
                    acc2 = fma(vec4<f32>(dv.z), select(zero, x4(xi + row_chan.z), ok), acc2);
                    acc3 = fma(vec4<f32>(dv.w), select(zero, x4(xi + row_chan.w), ok), acc3);
                } else {
                    // One group for all rows: each x value feeds TM multiply-adds.
                    let xv = select(zero, x4(xi), ok);
                    acc0 = fma(vec4<f32>(dv.x), xv, acc0);
                    acc1 = fma(vec4<f32>(dv.y), xv, acc1);
                    acc2 = fma(vec4<f32>(dv.z), xv, acc2);
                    acc3 = fma(vec4<f32>(dv.w), xv, acc3);
                }
            }
        }
    }

    let accs = array<vec4<f32>, 4>(acc0, acc1, acc2, acc3);
    for (var i = 0u; i < TM; i++) {
        for (var j = 0u; j < TN; j++) {
            store_dw(t.row0 + i, t.col0 + j * WG_X, t.group, accs[i][j]);
        }
    }
}

// conv2d_backward_filter_vec4 — the filter pass with every load a vec4, for Cg % 4 == 0
// and Kg % 4 == 0 (and not MIXED). Each invocation owns TM = 4 contiguous out-channels
// (rows, as conv2d_backward_filter) and CV = 1 or 2 (CV = 2 when WIDE, for Cg % 8 == 0)
// CONTIGUOUS vec4s of columns: channels of one tap (r, s). Its column unit is the column
// tile's first + lid.x; the host counts p.cols in those units (R·S·Cg / CV) so that
// p.col_tiles covers them. Per output pixel it loads dy as one vec4 (along k) and x as CV
// vec4s (along c): 1 + CV loads feed 16·CV FMAs. Having one tap, it loops only over the
// output pixels whose input pixel lies inside the image (bounds computed once), so
// padding costs nothing. Sums run over n, p, q in order: deterministic.
@group(0) @binding(2) var<storage, read> dy_filter_v4: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> dw_v4: array<vec4<f32>>;

override WIDE: bool = false;

// The output coordinates [begin, end) whose input coordinate o·stride + start is in [0, size).
fn inside_range(start: i32, stride: u32, size: u32, out: u32) -> vec2<u32> {
    var begin = 0u;
    if (start < 0) {
        begin = (u32(-start) + stride - 1u) / stride;
    }
    var end = 0u;
    if (start < i32(size)) {
        end = min(out, u32(i32(size) - 1 - start) / stride + 1u);
    }
    return vec2<u32>(begin, max(begin, end));
}

fn store_dw4(idx: u32, value: vec4<f32>) {
    var v = value;
    if (ACCUMULATE) {
        v += dw_v4[idx];
    }
    dw_v4[idx] = v;
}

@compute @workgroup_size(WG_X, WG_Y, 1)
fn conv2d_backward_filter_vec4(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let t = tile(wid, lid, nwg);
    if (!t.live) {
        return;
    }
    let cv = select(1u, 2u, WIDE);
    // Kg % 4 == 0, so all 4 rows exist; in vec4 units: the rows' dy chunk, this
    // invocation's first column (clamped), its channel chunk and tap.
    let k4 = (t.group * p.kg + t.row0) / 4u;
    let cg4 = p.cg / 4u;
    let cols4 = p.r * p.s * cg4;
    let col4 = ((wid.x % p.col_tiles) * WG_X + lid.x) * cv;
    let cc4 = min(col4, cols4 - cv);
    let tap = cc4 / cg4;
    let xc4 = t.group * cg4 + cc4 % cg4;
    let h_tap = i32((tap / p.s) * p.dil_h) - i32(p.pad_h);
    let w_tap = i32((tap % p.s) * p.dil_w) - i32(p.pad_w);
    let ops = inside_range(h_tap, p.stride_h, p.h, p.p);
    let oqs = inside_range(w_tap, p.stride_w, p.w, p.q);
    let c4 = p.c / 4u;
    let kv = p.k / 4u;
    let zero = vec4<f32>(0.0);
    // acc[i] (and wide[i] for the second vec4 of columns) holds row i's columns.
    var acc0 = zero;
    var acc1 = zero;
    var acc2 = zero;
    var acc3 = zero;
    var wide0 = zero;
    var wide1 = zero;
    var wide2 = zero;
    var wide3 = zero;
    for (var n = 0u; n < p.n; n++) {
        for (var op = ops.x; op < ops.y; op++) {
            let ih = u32(h_tap + i32(op * p.stride_h));
            let x_row = (n * p.h + ih) * p.w;
            let dy_row = (n * p.p + op) * p.q;
            for (var oq = oqs.x; oq < oqs.y; oq++) {
                let iw = u32(w_tap + i32(oq * p.stride_w));
                let xi = (x_row + iw) * c4 + xc4;
                let xv = x_v4[xi];
                let dv = dy_filter_v4[(dy_row + oq) * kv + k4];
                acc0 = fma(vec4<f32>(dv.x), xv, acc0);
                acc1 = fma(vec4<f32>(dv.y), xv, acc1);
                acc2 = fma(vec4<f32>(dv.z), xv, acc2);
                acc3 = fma(vec4<f32>(dv.w), xv, acc3);
                if (WIDE) {
                    let xw = x_v4[xi + 1u];
                    wide0 = fma(vec4<f32>(dv.x), xw, wide0);
                    wide1 = fma(vec4<f32>(dv.y), xw, wide1);
                    wide2 = fma(vec4<f32>(dv.z), xw, wide2);
                    wide3 = fma(vec4<f32>(dv.w), xw, wide3);
                }
            }
        }
    }
    if (col4 >= cols4) {
        return;
    }
    let accs = array<vec4<f32>, 4>(acc0, acc1, acc2, acc3);
    let wides = array<vec4<f32>, 4>(wide0, wide1, wide2, wide3);
    for (var i = 0u; i < TM; i++) {
        let idx = (k4 * 4u + i) * cols4 + col4;
        store_dw4(idx, accs[i]);
        if (WIDE) {
            store_dw4(idx + 1u, wides[i]);
        }
    }
}
