// clip.wgsl — gradient clipping by global norm, as torch.nn.utils.clip_grad_norm_:
// every gradient is multiplied by min(1, max_norm / (total_norm + 1e-6)), where
// total_norm = sqrt(sum over tensors of their sums of squares).
//
// The sums of squares come from `reduce` (SumOfSquares, one slot per tensor) into
// norms[0..tensors]; `clip_factor` adds them in a fixed order and writes the factor to
// norms[tensors]; `clip_scale` multiplies one gradient by it, in place.
//
// clip_factor:
//   p      uniform Params { count: unused, tensors, max_norm }
//   norms  [tensors + 1] read_write
//   Dispatch: (1, 1, 1), one invocation. No bounds guard needed.
// clip_scale:
//   p      uniform Params { count: elements of grad, tensors }
//   norms  [tensors + 1] read
//   grad   [count] read_write
//   Dispatch: grid_1d(count, WG). Guard: i >= count returns.

struct Params {
    count: u32,
    tensors: u32,
    max_norm: f32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

override WG: u32 = 256u;

@group(0) @binding(1) var<storage, read_write> norms_rw: array<f32>;

@compute @workgroup_size(1)
fn clip_factor() {
    var sum = 0.0;
    for (var i = 0u; i < p.tensors; i++) {
        sum += norms_rw[i];
    }
    norms_rw[p.tensors] = min(1.0, p.max_norm / (sqrt(sum) + 1e-6));
}

@group(0) @binding(1) var<storage, read> norms: array<f32>;
@group(0) @binding(2) var<storage, read_write> grad: array<f32>;

@compute @workgroup_size(WG)
fn clip_scale(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let i = (wid.y * nwg.x + wid.x) * WG + lid.x;
    if (i >= p.count) {
        return;
    }
    grad[i] *= norms[p.tensors];
}
