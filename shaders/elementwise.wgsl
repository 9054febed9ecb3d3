// elementwise.wgsl — memory-bound maps over flat f32 tensors: add, multiply, scale, axpy,
// ReLU and sigmoid forward and backward, bias add over the last dimension, and the
// deterministic column sum that computes the bias gradient.
//
// Bindings: every entry point uses the uniform `p` at @binding(0) and one of three sets
// of storage bindings (WGSL lets entry points share binding numbers as long as no entry
// point uses two variables with the same number):
//   out of place     x   [count] read       @binding(1)
//                    y   [count] read       @binding(2)   (bias_add: bias [C])
//                    z   [count] read_write @binding(3)
//   read-modify-dst  x   [count] read       @binding(1)   (bias_add_into: bias [C])
//                    dst [count] read_write @binding(2)
//   in place         v   [count] read_write @binding(1)
// column_sum reads x as [rows, C] and writes dst [chunks, C] (see its comment).
//
// Dispatch: 1-D, one invocation per element, WG invocations per workgroup, groups spread
// over x and y by the host's grid_1d; the flat index is rebuilt as
// (wid.y * nwg.x + wid.x) * WG + lid.x.
// Bounds guard: invocations with index >= p.count return at once (no barriers here).

struct Params {
    // Elements to write (rows * C for the bias ops, chunks * C for column_sum).
    count: u32,
    // Length C of the last dimension (bias ops, column_sum).
    channels: u32,
    // Multiplier of scale and axpy.
    alpha: f32,
    // Rows of the [rows, C] input of column_sum, and how many each chunk sums.
    rows: u32,
    rows_per_chunk: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> y: array<f32>;
@group(0) @binding(3) var<storage, read_write> z: array<f32>;

@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

@group(0) @binding(1) var<storage, read_write> v: array<f32>;

override WG: u32 = 256u;
// column_sum: add to the existing contents of dst instead of overwriting them.
override ACCUMULATE: bool = false;

fn flat_index(wid: vec3<u32>, nwg: vec3<u32>, lid: vec3<u32>) -> u32 {
    return (wid.y * nwg.x + wid.x) * WG + lid.x;
}

// 1 / (1 + exp(-a)) without ever evaluating exp of a positive argument: e = exp(-|a|) is
// in (0, 1], so nothing overflows (WGSL leaves an overflowing exp's value unspecified),
// and for a < 0 the form e / (1 + e) keeps full relative precision for tiny outputs
// instead of computing 1 - (something close to 1).
fn logistic(a: f32) -> f32 {
    let e = exp(-abs(a));
    let r = 1.0 / (1.0 + e);
    return select(e * r, r, a >= 0.0);
}

// ---- out of place: z = f(x, y) ----

@compute @workgroup_size(WG)
fn add(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
       @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = flat_index(wid, nwg, lid);
    if (i >= p.count) { return; }
    z[i] = x[i] + y[i];
}

@compute @workgroup_size(WG)
fn multiply(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = flat_index(wid, nwg, lid);
    if (i >= p.count) { return; }
    z[i] = x[i] * y[i];
}

// x = the forward output (ReLU(a) > 0 exactly where a > 0), y = dy, z = dx.
@compute @workgroup_size(WG)
fn relu_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = flat_index(wid, nwg, lid);
    if (i >= p.count) { return; }
    z[i] = select(0.0, y[i], x[i] > 0.0);
}

// x = the forward output y = sigmoid(a), y = dy, z = dx = dy · y · (1 - y), the
// derivative written in the output (so an in-place forward loses nothing).
@compute @workgroup_size(WG)
fn sigmoid_backward(@builtin(workgroup_id) wid: vec3<u32>,
                    @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = flat_index(wid, nwg, lid);
    if (i >= p.count) { return; }
    let s = x[i];
    z[i] = y[i] * (s * (1.0 - s));
}

// x [rows, C], y = bias [C]: neighbouring invocations read neighbouring bias entries.
@compute @workgroup_size(WG)
fn bias_add(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = flat_index(wid, nwg, lid);
    if (i >= p.count) { return; }
    z[i] = x[i] + y[i % p.channels];
}

// ---- read x, write dst (dst may also be read) ----

@compute @workgroup_size(WG)
fn add_into(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
            @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = flat_index(wid, nwg, lid);
    if (i >= p.count) { return; }
    dst[i] += x[i];
}

@compute @workgroup_size(WG)
fn multiply_into(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = flat_index(wid, nwg, lid);
    if (i >= p.count) { return; }
    dst[i] *= x[i];
}

@compute @workgroup_size(WG)
fn axpy(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = flat_index(wid, nwg, lid);
    if (i >= p.count) { return; }
    dst[i] = fma(p.alpha, x[i], dst[i]);
}

@compute @workgroup_size(WG)
fn scale(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
         @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = flat_index(wid, nwg, lid);
    if (i >= p.count) { return; }
    dst[i] = p.alpha * x[i];
}

@compute @workgroup_size(WG)
fn relu(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = flat_index(wid, nwg, lid);
    if (i >= p.count) { return; }
    // select, not max: a NaN stays NaN (as in PyTorch) so that it can be detected.
    dst[i] = select(x[i], 0.0, x[i] < 0.0);
}

@compute @workgroup_size(WG)
fn sigmoid(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
           @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = flat_index(wid, nwg, lid);
    if (i >= p.count) { return; }
    dst[i] = logistic(x[i]);
}

// x = the forward output, dst = dy, multiplied in place into dx = dy · y · (1 - y).
@compute @workgroup_size(WG)
fn sigmoid_backward_into(@builtin(workgroup_id) wid: vec3<u32>,
                         @builtin(num_workgroups) nwg: vec3<u32>,
                         @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = flat_index(wid, nwg, lid);
    if (i >= p.count) { return; }
    let s = x[i];
    dst[i] = dst[i] * (s * (1.0 - s));
}

// x = the forward output, dst = dy, masked in place into dx.
@compute @workgroup_size(WG)
fn relu_backward_into(@builtin(workgroup_id) wid: vec3<u32>,
                      @builtin(num_workgroups) nwg: vec3<u32>,
                      @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = flat_index(wid, nwg, lid);
    if (i >= p.count) { return; }
    dst[i] = select(0.0, dst[i], x[i] > 0.0);
}

// x = bias [C], dst [rows, C].
@compute @workgroup_size(WG)
fn bias_add_into(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = flat_index(wid, nwg, lid);
    if (i >= p.count) { return; }
    dst[i] += x[i % p.channels];
}

// dst[chunk, c] (+)= sum of x[r, c] for r in chunk's rows, in increasing r: a fixed order,
// so the result is bitwise reproducible. Invocation i owns (chunk = i / C, c = i % C):
// neighbouring invocations read neighbouring columns of one row (coalesced), and when C
// is small one workgroup covers several chunks instead of idling. The host runs it twice
// for many rows: x = dy [rows, C] -> scratch [chunks, C], then scratch -> db [1, C].
@compute @workgroup_size(WG)
fn column_sum(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
              @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = flat_index(wid, nwg, lid);
    if (i >= p.count) { return; }
    let c = i % p.channels;
    let row0 = (i / p.channels) * p.rows_per_chunk;
    let row1 = min(row0 + p.rows_per_chunk, p.rows);
    var acc = 0.0;
    for (var r = row0; r < row1; r++) {
        acc += x[r * p.channels + c];
    }
    if (ACCUMULATE) {
        acc += dst[i];
    }
    dst[i] = acc;
}

// ---- in place: v = f(v) ----

@compute @workgroup_size(WG)
fn scale_in_place(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = flat_index(wid, nwg, lid);
    if (i >= p.count) { return; }
    v[i] *= p.alpha;
}

@compute @workgroup_size(WG)
fn relu_in_place(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                 @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = flat_index(wid, nwg, lid);
    if (i >= p.count) { return; }
    v[i] = select(v[i], 0.0, v[i] < 0.0);
}

@compute @workgroup_size(WG)
fn sigmoid_in_place(@builtin(workgroup_id) wid: vec3<u32>,
                    @builtin(num_workgroups) nwg: vec3<u32>,
                    @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = flat_index(wid, nwg, lid);
    if (i >= p.count) { return; }
    v[i] = logistic(v[i]);
}
