// finite.wgsl — counts the non-finite elements (NaN, +Inf, -Inf) of tensors, one count
// per tensor in a slot of a small u32 buffer, so a training step can tell on the GPU,
// in its own submission, whether any gradient went bad and which one.
//
// The test is on the bits: an f32 is NaN or ±Inf exactly when its exponent field is all
// ones. `x != x` or `isinf`-style comparisons may be folded away by compilers that
// assume finite math, the bit test cannot.
//
// clear_counts:
//   p       uniform Params { count: slots to clear }
//   counts  [count] u32 read_write, set to 0
//   Dispatch: grid_1d(count, WG). Guard: i >= count returns.
// count_nonfinite:
//   p       uniform Params { count: elements of x, groups, slot }
//   x       [count] f32 read
//   counts  [slot + 1] atomic u32 read_write: counts[slot] += non-finite elements of x
//   Dispatch: `groups` workgroups of WG invocations (1-D over x and y, as grid_1d).
//   Each invocation counts a grid-stride slice and, only if it found any, adds its count
//   with one atomicAdd (no shared memory, no barrier: the healthy case is all reads).
//   Integer addition is associative, so the count is exact and deterministic whatever
//   order the workgroups finish in (unlike float atomics).
//   Guard: the loop stops at p.count; workgroups past p.groups return at once.

struct Params {
    count: u32,
    groups: u32,
    slot: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

// Invocations per workgroup.
override WG: u32 = 256u;
const EXPONENT: u32 = 0x7f800000u;

@group(0) @binding(1) var<storage, read_write> counts_out: array<u32>;

@compute @workgroup_size(WG)
fn clear_counts(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let i = (wid.y * nwg.x + wid.x) * WG + lid.x;
    if (i >= p.count) {
        return;
    }
    counts_out[i] = 0u;
}

@group(0) @binding(1) var<storage, read> x: array<u32>;
@group(0) @binding(2) var<storage, read_write> counts: array<atomic<u32>>;

@compute @workgroup_size(WG)
fn count_nonfinite(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let g = wid.y * nwg.x + wid.x;
    if (g >= p.groups) {
        return;
    }
    let t = lid.x;
    var n = 0u;
    // Neighbouring invocations read neighbouring words (coalesced).
    for (var i = g * WG + t; i < p.count; i += p.groups * WG) {
        n += select(0u, 1u, (x[i] & EXPONENT) == EXPONENT);
    }
    // Only an invocation that found something adds it: in a healthy step no atomic and
    // no barrier runs at all (barriers are costly on CPU adapters such as lavapipe).
    if (n > 0u) {
        atomicAdd(&counts[p.slot], n);
    }
}
