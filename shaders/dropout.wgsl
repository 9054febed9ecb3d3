// dropout.wgsl — inverted dropout with a counter-based mask: y = x * keep / (1 - p),
// keep = uniform(seed, i) >= p. The mask is a pure function of (seed, element index),
// so the backward regenerates it (dx = dy * keep / (1 - p) is this same kernel applied
// to dy) and no mask buffer exists. The Rust reference (reference/dropout.rs) implements
// the same hash, so it reproduces the mask bit for bit.
//
// Bindings (u: uniform Params at @binding(0)):
//   x [count] (read), y [count] (written); any shape, flattened.
// Dispatch: 1-D, one invocation per element, grid from grid_1d:
// i = (wid.y * nwg.x + wid.x) * WG + lid.x. Bounds guard: `if (i >= u.count) { return; }`.
//
// Random numbers: two rounds of the PCG hash (Jarzynski & Olano, "Hash Functions for GPU
// Rendering", JCGT 2020), keyed by the seed before and between them, so that for one seed
// i -> bits is a bijection (no two elements share a draw within 2^32) and different seeds
// give unrelated streams rather than shifted copies. The top 24 bits become an f32 in
// [0, 1) exactly (no rounding), so the comparison with p is identical on every device.

struct Params {
    count: u32,
    seed: u32,
    // Drop probability, in [0, 1).
    p: f32,
    // 1 / (1 - p), computed once on the host in f32 so GPU and reference agree exactly.
    scale: f32,
}

@group(0) @binding(0) var<uniform> u: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

override WG: u32 = 256u;

fn pcg_hash(v: u32) -> u32 {
    let state = v * 747796405u + 2891336453u;
    let word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
    return (word >> 22u) ^ word;
}

fn random_bits(seed: u32, i: u32) -> u32 {
    return pcg_hash(pcg_hash(i ^ pcg_hash(seed)) + seed);
}

// Uniform in [0, 1) with 24 random bits: exact in f32.
fn uniform01(seed: u32, i: u32) -> f32 {
    return f32(random_bits(seed, i) >> 8u) * (1.0 / 16777216.0);
}

@compute @workgroup_size(WG)
fn dropout(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
) {
    let i = (wid.y * nwg.x + wid.x) * WG + lid.x;
    if (i >= u.count) {
        return;
    }
    let keep = uniform01(u.seed, i) >= u.p;
    y[i] = select(0.0, x[i] * u.scale, keep);
}
