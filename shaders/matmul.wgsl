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
// Two entry points with the same bindings and geometry: `matmul` for any shape (below)
// and `matmul_vec4` for shapes whose blocks are vec4-aligned (further down, 1.6x faster
// on lavapipe). The host picks `matmul_vec4` whenever the shape allows.
//
// `matmul`: register blocking without shared memory or barriers: each invocation owns TM = 4
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
        // select, not max: a NaN stays NaN (as in PyTorch) so that it can be detected.
        v = select(v, 0.0, v < 0.0);
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

// matmul_vec4 — the same product with every load a vec4, for aligned shapes.
// On lavapipe each storage load costs a loop over the SIMD lanes whatever its width, so
// loading 4 floats at a time and reusing each one 4 times is what pays. Each invocation
// owns a 4 x 4 block of C and walks K in chunks of 4, loading a 4 x 4 block of op(A) as
// four vec4s (along K when A is [M, K], along M when A is [K, M]) and likewise of op(B)
// (along N when B is [K, N], along K when B is [N, K]): 8 loads feed 64 FMAs.
// Requires K % 4 == 0; M % 4 == 0 when TRANS_A; N % 4 == 0 unless TRANS_B; every batch
// stride a multiple of 4 (all checked on the host).
// Dispatch: (ceil(N / (4 * WG_X)), ceil(M / (4 * WG_Y)), batch), like `matmul`.
// Bounds: rows and columns past M and N clamp their loads and skip their stores.

@group(0) @binding(1) var<storage, read> a4: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> b4: array<vec4<f32>>;

// The 4 x 4 block of op(A) for k-chunk kc, as rows: result[i][t] = op(A)[row0 + i, 4kc + t].
fn load_a_block(a_base4: u32, row0: u32, kc: u32) -> mat4x4<f32> {
    if (TRANS_A) {
        // A is [K, M]: four vec4s along M, one per k, then transpose.
        let m4 = p.m / 4u;
        let g = min(row0, p.m - 4u) / 4u;
        let k0 = kc * 4u;
        return transpose(mat4x4<f32>(
            a4[a_base4 + k0 * m4 + g], a4[a_base4 + (k0 + 1u) * m4 + g],
            a4[a_base4 + (k0 + 2u) * m4 + g], a4[a_base4 + (k0 + 3u) * m4 + g]));
    }
    let k4 = p.k / 4u;
    let last = p.m - 1u;
    return mat4x4<f32>(
        a4[a_base4 + min(row0, last) * k4 + kc], a4[a_base4 + min(row0 + 1u, last) * k4 + kc],
        a4[a_base4 + min(row0 + 2u, last) * k4 + kc], a4[a_base4 + min(row0 + 3u, last) * k4 + kc]);
}

// The 4 x 4 block of op(B) for k-chunk kc, as rows: result[t][j] = op(B)[4kc + t, col0 + j].
fn load_b_block(b_base4: u32, col0: u32, kc: u32) -> mat4x4<f32> {
    if (TRANS_B) {
        // B is [N, K]: four vec4s along K, one per column, then transpose.
        let k4 = p.k / 4u;
        let last = p.n - 1u;
        return transpose(mat4x4<f32>(
            b4[b_base4 + min(col0, last) * k4 + kc], b4[b_base4 + min(col0 + 1u, last) * k4 + kc],
            b4[b_base4 + min(col0 + 2u, last) * k4 + kc], b4[b_base4 + min(col0 + 3u, last) * k4 + kc]));
    }
    let n4 = p.n / 4u;
    let g = min(col0, p.n - 4u) / 4u;
    let k0 = kc * 4u;
    return mat4x4<f32>(
        b4[b_base4 + k0 * n4 + g], b4[b_base4 + (k0 + 1u) * n4 + g],
        b4[b_base4 + (k0 + 2u) * n4 + g], b4[b_base4 + (k0 + 3u) * n4 + g]);
}

@compute @workgroup_size(WG_X, WG_Y, 1)
fn matmul_vec4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let row0 = (wid.y * WG_Y + lid.y) * 4u;
    let col0 = (wid.x * WG_X + lid.x) * 4u;
    let a_base4 = wid.z * (p.stride_a / 4u);
    let b_base4 = wid.z * (p.stride_b / 4u);
    // WGSL indexes matrices m[column][row]; the loaders return m[i][t] = block(i, t),
    // so (B * A)[i][j] = sum_t A(i, t) B(t, j): acc[i][j] is C(row0 + i, col0 + j).
    var acc = mat4x4<f32>();
    for (var kc = 0u; kc < p.k / 4u; kc++) {
        // 64 FMAs from 8 vec4 loads.
        acc += load_b_block(b_base4, col0, kc) * load_a_block(a_base4, row0, kc);
    }
    let c_base = wid.z * p.stride_c;
    for (var i = 0u; i < 4u; i++) {
        for (var j = 0u; j < 4u; j++) {
            store(row0 + i, col0 + j, c_base, acc[i][j]);
        }
    }
}

// `matmul_tiled`: shared-memory tiling for GPUs (the entries above read every operand
// from global memory, which suits a CPU adapter's caches; a GPU wants the reuse staged
// in workgroup memory). A workgroup of 16 x 16 invocations computes a 64 x 64 tile of C,
// each invocation 4 x 4 outputs at rows ty + 16i and columns tx + 16j (strided: the
// shared-memory reads of a row of invocations hit consecutive words, and stores
// coalesce). K is walked in steps of 16: the workgroup stages A[64 x 16] and B[16 x 64]
// (4 elements of each per invocation, read along the operand's contiguous axis so that
// global loads coalesce), one barrier, 16 rank-1 updates from shared memory, one
// barrier. Out-of-range elements load as 0 and their outputs are not stored, so any
// shape works. Same bindings, overrides (but WG_X / WG_Y) and epilogue as `matmul`.
// Dispatch: (ceil(N / 64), ceil(M / 64), batch).
const TILE: u32 = 64u;
const BK: u32 = 16u;
var<workgroup> tile_a: array<array<f32, 64>, 16>;
var<workgroup> tile_b: array<array<f32, 64>, 16>;

fn a_at(base: u32, row: u32, kk: u32) -> f32 {
    if (row >= p.m || kk >= p.k) {
        return 0.0;
    }
    if (TRANS_A) {
        return a[base + kk * p.m + row];
    }
    return a[base + row * p.k + kk];
}

fn b_at(base: u32, kk: u32, col: u32) -> f32 {
    if (kk >= p.k || col >= p.n) {
        return 0.0;
    }
    if (TRANS_B) {
        return b[base + col * p.k + kk];
    }
    return b[base + kk * p.n + col];
}

@compute @workgroup_size(16, 16, 1)
fn matmul_tiled(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let tx = lid.x;
    let ty = lid.y;
    let t = ty * 16u + tx;
    let row0 = wid.y * TILE;
    let col0 = wid.x * TILE;
    let a_base = wid.z * p.stride_a;
    let b_base = wid.z * p.stride_b;
    var acc: array<vec4<f32>, 4>;
    for (var k0 = 0u; k0 < p.k; k0 += BK) {
        for (var e = 0u; e < 4u; e++) {
            let idx = t + e * 256u;
            // A stored [M, K] is contiguous along k, [K, M] (TRANS_A) along rows.
            var ra = idx / BK;
            var ka = idx % BK;
            if (TRANS_A) {
                ra = idx % TILE;
                ka = idx / TILE;
            }
            tile_a[ka][ra] = a_at(a_base, row0 + ra, k0 + ka);
            // B stored [K, N] is contiguous along columns, [N, K] (TRANS_B) along k.
            var cb = idx % TILE;
            var kb = idx / TILE;
            if (TRANS_B) {
                cb = idx / BK;
                kb = idx % BK;
            }
            tile_b[kb][cb] = b_at(b_base, k0 + kb, col0 + cb);
        }
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk++) {
            let bv = vec4<f32>(tile_b[kk][tx], tile_b[kk][tx + 16u], tile_b[kk][tx + 32u], tile_b[kk][tx + 48u]);
            acc[0] = fma(vec4(tile_a[kk][ty]), bv, acc[0]);
            acc[1] = fma(vec4(tile_a[kk][ty + 16u]), bv, acc[1]);
            acc[2] = fma(vec4(tile_a[kk][ty + 32u]), bv, acc[2]);
            acc[3] = fma(vec4(tile_a[kk][ty + 48u]), bv, acc[3]);
        }
        workgroupBarrier();
    }
    let c_base = wid.z * p.stride_c;
    for (var i = 0u; i < 4u; i++) {
        let row = row0 + ty + 16u * i;
        store(row, col0 + tx, c_base, acc[i].x);
        store(row, col0 + tx + 16u, c_base, acc[i].y);
        store(row, col0 + tx + 32u, c_base, acc[i].z);
        store(row, col0 + tx + 48u, c_base, acc[i].w);
    }
}
