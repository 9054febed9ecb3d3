// reduce.wgsl — deterministic sum (optionally of squares, optionally divided, e.g. a
// mean) of a vector to partial sums or to one scalar.
//
// Bindings:
//   p    uniform Params
//   x    [count] read
//   out  [out_offset + groups] read_write:
//        out[out_offset + g] = (sum over workgroup g's elements) / p.divisor
//        (an offset lets several reductions write side by side, e.g. per-tensor norms)
// Dispatch: `groups` workgroups of WG invocations (1-D; rebuilt from x and y as usual).
// The host runs it twice for long vectors: x -> partials [groups], then partials ->
// out [1] with groups = 1 (and the mean's divisor); one pass when groups = 1.
//
// Order of summation is fixed by (count, groups, WG) alone: invocation t of workgroup g
// sums x[(j * groups + g) * WG + t] for j = 0, 1, ... in order (a grid-stride loop whose
// neighbouring invocations read neighbouring elements), then the workgroup combines its
// WG sums with a shared-memory tree. So the result is bitwise reproducible run to run,
// and the error grows like log(count) rather than count.
// Bounds guard: the loop stops at p.count; workgroups past p.groups (grid rounding)
// return before the tree, which is uniform per workgroup, so barriers stay legal.

struct Params {
    count: u32,
    // Workgroups sharing the grid-stride loop (and entries written to out).
    groups: u32,
    // The final result is divided by this (1 for sums, the element count for a mean).
    divisor: f32,
    // Index of the first element of `out` this pass writes.
    out_offset: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

// Power of two, at most MAX_WG.
override WG: u32 = 256u;
// Square each element before summing (sum of squares; only the first pass sets it).
override SQUARE: bool = false;

const MAX_WG: u32 = 256u;
var<workgroup> partial: array<f32, MAX_WG>;

@compute @workgroup_size(WG)
fn reduce(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
          @builtin(local_invocation_id) lid: vec3<u32>) {
    let g = wid.y * nwg.x + wid.x;
    if (g >= p.groups) { return; }
    let t = lid.x;
    let stride = p.groups * WG;
    var acc = 0.0;
    for (var i = g * WG + t; i < p.count; i += stride) {
        let v = x[i];
        if (SQUARE) {
            acc = fma(v, v, acc);
        } else {
            acc += v;
        }
    }
    partial[t] = acc;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (t < s) {
            partial[t] += partial[t + s];
        }
        workgroupBarrier();
    }
    if (t == 0u) {
        out[p.out_offset + g] = partial[0] / p.divisor;
    }
}
