// probe.wgsl — the adapter's own ceilings, measured by `cargo xtask bench` before any
// kernel figure (see docs/BENCHMARKS.md: "the roofline comes first").
//
// fma_peak: registers only. Each invocation runs `iters` rounds of 8 independent vec4
// FMA chains (8 · 4 = 32 FMAs, 64 FLOPs per round), so the ALUs never wait on a
// dependency or on memory; one store at the end keeps the compiler from deleting it.
//   p    uniform Params { count: invocations, iters }
//   src  unused (both entry points share one binding layout)
//   dst  [count] vec4<f32>, one per invocation
// Dispatch: grid_1d(count, 64). Guard: i >= count returns.
//
// copy: dst[i] = src[i] as vec4s — a large copy measures memory bandwidth
// (bytes = 2 · 16 · count: each vec4 read once and written once).
//   p    uniform Params { count: vec4 elements }
//   src  [count] vec4<f32>, dst [count] vec4<f32>
// Dispatch: grid_1d(count, 64). Guard: i >= count returns.

struct Params {
    count: u32,
    iters: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> dst: array<vec4<f32>>;

@compute @workgroup_size(64)
fn fma_peak(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let i = (wid.y * nwg.x + wid.x) * 64u + lid.x;
    if (i >= p.count) {
        return;
    }
    let seed = f32(i) * 1e-9;
    // Multiplier just under 1 and a small addend keep the values bounded and finite.
    let m = vec4<f32>(0.999999);
    let c = vec4<f32>(1e-7);
    var a0 = vec4<f32>(seed);
    var a1 = a0 + 0.1;
    var a2 = a0 + 0.2;
    var a3 = a0 + 0.3;
    var a4 = a0 + 0.4;
    var a5 = a0 + 0.5;
    var a6 = a0 + 0.6;
    var a7 = a0 + 0.7;
    for (var it = 0u; it < p.iters; it++) {
        a0 = fma(a0, m, c);
        a1 = fma(a1, m, c);
        a2 = fma(a2, m, c);
        a3 = fma(a3, m, c);
        a4 = fma(a4, m, c);
        a5 = fma(a5, m, c);
        a6 = fma(a6, m, c);
        a7 = fma(a7, m, c);
    }
    let s = (a0 + a1) + (a2 + a3) + (a4 + a5) + (a6 + a7);
    dst[i] = s;
}

@compute @workgroup_size(64)
fn copy(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let i = (wid.y * nwg.x + wid.x) * 64u + lid.x;
    if (i >= p.count) {
        return;
    }
    dst[i] = src[i];
}
