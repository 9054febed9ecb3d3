// matmul.wgsl — batched C = op(A) · op(B) (+ bias[n]) (+ C when ACCUMULATE) (ReLU).
//
// Bindings, row-major, per batch element z (offsets z * stride_*; a stride of 0 broadcasts):
//   p     uniform Params
//   a     [M, K], or [K, M] when TRANS_A
//   b     [K, N], or [N, K] when TRANS_B
//   bias  [N], read only when HAS_BIAS
//   c     [M, N]
// Dispatch: (ceil(N / (WG_X * TN)), ceil(M / (WG_Y * TM)), batch).
//
// Register blocking without shared memory or barriers: each invocation owns TM = 4
// contiguous rows and TN = 4 columns strided by WG_X, so neighbouring invocations read
// neighbouring columns of B (one vector load across SIMD lanes on a CPU adapter such as
// lavapipe, coalesced loads on a GPU) and share A's values (a broadcast).
// Bounds guard: rows and columns past M and N clamp their loads to the last row/column
// and skip their stores, so the K loop has no branch. K has no tile and no tail.

struct Params {
    m: u32,
    n: u32,
    k: u32,
    batch: u32,
    stride_a: u32,
    stride_b: u32,
    stride_c: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read> bias: array<f32>;
@group(0) @binding(4) var<storage, read_write> c: array<f32>;

override WG_X: u32 = 8u;
override WG_Y: u32 = 8u;
override TRANS_A: bool = false;
override TRANS_B: bool = false;
override HAS_BIAS: bool = false;
override RELU: bool = false;
override ACCUMULATE: bool = false;

const TM: u32 = 4u;
const TN: u32 = 4u;

fn store(row: u32, col: u32, base: u32, value: f32) {
    if (row >= p.m || col >= p.n) {
        return;
    }
    let idx = base + row * p.n + col;
    var v = value;
    if (HAS_BIAS) {
        v += bias[col];
    }
    if (ACCUMULATE) {
        v += c[idx];
    }
    if (RELU) {
        v = max(v, 0.0);
    }
    c[idx] = v;
}

@compute @workgroup_size(WG_X, WG_Y, 1)
fn matmul(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let row0 = (wid.y * WG_Y + lid.y) * TM;
    let col0 = wid.x * WG_X * TN + lid.x;
    let a_base = wid.z * p.stride_a;
    let b_base = wid.z * p.stride_b;

    // Clamped rows and columns: loads stay in bounds, stores are skipped in `store`.
    let r = vec4<u32>(
        min(row0, p.m - 1u), min(row0 + 1u, p.m - 1u),
        min(row0 + 2u, p.m - 1u), min(row0 + 3u, p.m - 1u));
    let cl = vec4<u32>(
        min(col0, p.n - 1u), min(col0 + WG_X, p.n - 1u),
        min(col0 + 2u * WG_X, p.n - 1u), min(col0 + 3u * WG_X, p.n - 1u));

    // Element (row, kk) of op(A) is a[a_off[row] + kk * a_step]; likewise for B.
    var a_off: vec4<u32>;
    var a_step: u32;
    if (TRANS_A) {
        a_off = vec4<u32>(a_base) + r;
        a_step = p.m;
    } else {
        a_off = vec4<u32>(a_base) + r * p.k;
        a_step = 1u;
    }
    var b_off: vec4<u32>;
    var b_step: u32;
    if (TRANS_B) {
        b_off = vec4<u32>(b_base) + cl * p.k;
        b_step = 1u;
    } else {
        b_off = vec4<u32>(b_base) + cl;
        b_step = p.n;
    }

    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var kk = 0u; kk < p.k; kk++) {
        let ka = kk * a_step;
        let kb = kk * b_step;
        let bv = vec4<f32>(b[b_off.x + kb], b[b_off.y + kb], b[b_off.z + kb], b[b_off.w + kb]);
        acc0 = fma(vec4<f32>(a[a_off.x + ka]), bv, acc0);
        acc1 = fma(vec4<f32>(a[a_off.y + ka]), bv, acc1);
        acc2 = fma(vec4<f32>(a[a_off.z + ka]), bv, acc2);
        acc3 = fma(vec4<f32>(a[a_off.w + ka]), bv, acc3);
    }

    let c_base = wid.z * p.stride_c;
    let rows = array<vec4<f32>, 4>(acc0, acc1, acc2, acc3);
    for (var i = 0u; i < TM; i++) {
        for (var j = 0u; j < TN; j++) {
            store(row0 + i, col0 + j * WG_X, c_base, rows[i][j]);
        }
    }
}

// matmul_row_lanes — the same product, shaped for CPU adapters (lavapipe), which run
// 8 invocations per AVX2 vector: a load whose address is the same for every lane is one
// scalar load and a broadcast, a load whose address differs per lane is a loop over the
// lanes. So here each invocation owns ONE row of C and TN = 8 columns; the columns are the
// same for the whole workgroup, so every load of B is uniform (any layout of B), and A is
// read along K as vec4s: one per-lane load feeds 4 k-steps of 8 FMAs.
// Requires !TRANS_A, K % 4 == 0 and stride_a % 4 == 0 (A's rows start on a vec4).
// Dispatch: (ceil(N / 8), ceil(M / WG_X), batch).
// Bounds: rows past M clamp their loads and skip stores; columns past N clamp their
// loads and skip stores.

@group(0) @binding(1) var<storage, read> a4: array<vec4<f32>>;

const TN_ROW_LANES: u32 = 8u;

@compute @workgroup_size(WG_X, 1, 1)
fn matmul_row_lanes(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let row = wid.y * WG_X + lid.x;
    let rc = min(row, p.m - 1u);
    let col0 = wid.x * TN_ROW_LANES;
    let k4 = p.k / 4u;
    let a_base4 = wid.z * (p.stride_a / 4u) + rc * k4;
    let b_base = wid.z * p.stride_b;
    // Column j of op(B) at step kk is b[b_col[j] + kk * b_step] (clamped columns).
    var b_col0: vec4<u32>;
    var b_col1: vec4<u32>;
    var b_step: u32;
    let cl0 = min(vec4<u32>(col0) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(p.n - 1u));
    let cl1 = min(vec4<u32>(col0) + vec4<u32>(4u, 5u, 6u, 7u), vec4<u32>(p.n - 1u));
    if (TRANS_B) {
        b_col0 = vec4<u32>(b_base) + cl0 * p.k;
        b_col1 = vec4<u32>(b_base) + cl1 * p.k;
        b_step = 1u;
    } else {
        b_col0 = vec4<u32>(b_base) + cl0;
        b_col1 = vec4<u32>(b_base) + cl1;
        b_step = p.n;
    }
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    for (var kc = 0u; kc < k4; kc++) {
        let av = a4[a_base4 + kc];
        for (var t = 0u; t < 4u; t++) {
            let kb = (kc * 4u + t) * b_step;
            let b0 = vec4<f32>(b[b_col0.x + kb], b[b_col0.y + kb], b[b_col0.z + kb], b[b_col0.w + kb]);
            let b1 = vec4<f32>(b[b_col1.x + kb], b[b_col1.y + kb], b[b_col1.z + kb], b[b_col1.w + kb]);
            acc0 = fma(vec4<f32>(av[t]), b0, acc0);
            acc1 = fma(vec4<f32>(av[t]), b1, acc1);
        }
    }
    let c_base = wid.z * p.stride_c;
    for (var j = 0u; j < 4u; j++) {
        store(row, col0 + j, c_base, acc0[j]);
        store(row, col0 + 4u + j, c_base, acc1[j]);
    }
}
