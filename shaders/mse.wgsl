// mse.wgsl — the quadratic cost of predictions against one-hot targets given as integer
// labels, mean over rows, with its gradient and top-1/top-5 counts:
//   loss = (1/N) Σ_r ½ Σ_j (pred[r, j] - [j == label[r]])²
//   dpred[r, j] = (pred[r, j] - [j == label[r]]) / N
// This is the textbook C = 1/(2n) Σ_x ||y(x) - a(x)||². PyTorch's MSELoss (reduction
// "mean") would instead divide the plain sum of squares by N·classes, without the ½.
//
// Entry point `rows`, one workgroup per row (WG invocations striding over the classes,
// so neighbouring invocations read neighbouring predictions):
//   p           uniform Params
//   pred        [N, classes] read
//   labels      u32 [N] read
//   dpred       [N, classes] read_write, written when GRAD: (pred - onehot(label)) / N
//   row_loss    [N] read_write: ½ ||pred[r] - onehot(label[r])||²
//   label_rank  u32 [N] read_write: how many classes rank before the label (strictly
//               larger prediction, or equal with a smaller index); 0 means the first
//               argmax is the label, < 5 means a top-5 hit
// Entry point `finish`, one workgroup of WG invocations looping over the rows in a fixed
// order, then a shared-memory tree (deterministic):
//   p           uniform Params
//   row_loss    [N] read (binding 1)
//   label_rank  u32 [N] read (binding 2)
//   loss        [1] read_write: mean of row_loss
//   correct     u32 [2] read_write: rows with label_rank == 0 (top-1), < 5 (top-5)
// Dispatch: rows: N workgroups spread over x and y (row = wid.y * nwg.x + wid.x);
// finish: 1 workgroup.
// Bounds guard: rows past N return (uniform per workgroup, so barriers stay legal).
// A label >= classes is never used to index: the row's loss and gradient become
// p.invalid (NaN), its label_rank 0xffffffff (never counted), so the mean loss is NaN.

struct Params {
    n: u32,
    classes: u32,
    // Written for rows whose label is out of range: NaN (a WGSL constant cannot be NaN).
    invalid: f32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

@group(0) @binding(1) var<storage, read> pred: array<f32>;
@group(0) @binding(2) var<storage, read> labels: array<u32>;
@group(0) @binding(3) var<storage, read_write> dpred: array<f32>;
@group(0) @binding(4) var<storage, read_write> row_loss: array<f32>;
@group(0) @binding(5) var<storage, read_write> label_rank: array<u32>;

@group(0) @binding(1) var<storage, read> finish_row_loss: array<f32>;
@group(0) @binding(2) var<storage, read> finish_label_rank: array<u32>;
@group(0) @binding(3) var<storage, read_write> loss: array<f32>;
@group(0) @binding(4) var<storage, read_write> correct: array<u32>;

// Power of two, at most MAX_WG.
override WG: u32 = 64u;
override GRAD: bool = true;

const MAX_WG: u32 = 256u;
const NO_INDEX: u32 = 0xffffffffu;

var<workgroup> red_sum: array<f32, MAX_WG>;
var<workgroup> red_top1: array<u32, MAX_WG>;
var<workgroup> red_top5: array<u32, MAX_WG>;

// Shared-memory tree over the WG slots, sums into slot 0: a fixed pairing, so the
// result depends on WG (chosen from the shape alone), never on timing.
fn tree_sum(t: u32) {
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (t < s) {
            red_sum[t] += red_sum[t + s];
            red_top1[t] += red_top1[t + s];
            red_top5[t] += red_top5[t + s];
        }
        workgroupBarrier();
    }
}

@compute @workgroup_size(WG)
fn rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_id) lid: vec3<u32>) {
    let row = wid.y * nwg.x + wid.x;
    if (row >= p.n) { return; }
    let t = lid.x;
    let base = row * p.classes;
    let label = labels[row];
    let valid = label < p.classes;
    // Clamped so an invalid label never reads past the row; its results are replaced.
    let y_label = pred[base + min(label, p.classes - 1u)];
    let n = f32(p.n);

    // One sweep: the residual's square, the label's rank, and the gradient (which needs
    // nothing from the other classes, so it is written as soon as it is known).
    var sq = 0.0;
    var rank = 0u;
    for (var j = t; j < p.classes; j += WG) {
        let y = pred[base + j];
        let d = y - select(0.0, 1.0, j == label);
        sq += d * d;
        rank += u32(y > y_label || (y == y_label && j < label));
        if (GRAD) {
            dpred[base + j] = select(p.invalid, d / n, valid);
        }
    }
    red_sum[t] = sq;
    red_top1[t] = rank;
    // Unused by this pass; zeroed so the tree adds defined values.
    red_top5[t] = 0u;
    workgroupBarrier();
    tree_sum(t);
    if (t == 0u) {
        row_loss[row] = select(p.invalid, 0.5 * red_sum[0], valid);
        label_rank[row] = select(NO_INDEX, red_top1[0], valid);
    }
}

@compute @workgroup_size(WG)
fn finish(@builtin(local_invocation_id) lid: vec3<u32>) {
    let t = lid.x;
    var sum = 0.0;
    var top1 = 0u;
    var top5 = 0u;
    for (var r = t; r < p.n; r += WG) {
        sum += finish_row_loss[r];
        let rank = finish_label_rank[r];
        top1 += u32(rank == 0u);
        top5 += u32(rank < 5u);
    }
    red_sum[t] = sum;
    red_top1[t] = top1;
    red_top5[t] = top5;
    workgroupBarrier();
    tree_sum(t);
    if (t == 0u) {
        loss[0] = red_sum[0] / f32(p.n);
        correct[0] = red_top1[0];
        correct[1] = red_top5[0];
    }
}
