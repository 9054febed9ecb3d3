// softmax_xent.wgsl — softmax cross-entropy with integer labels, mean over rows (as
// PyTorch's default `reduction="mean"`), its gradient, argmax and top-1/top-5 counts.
//
// Entry point `rows`, one workgroup per row (WG invocations striding over the classes,
// so neighbouring invocations read neighbouring logits):
//   p           uniform Params
//   logits      [N, classes] read
//   labels      u32 [N] read
//   dlogits     [N, classes] read_write, written when GRAD: (softmax - onehot(label)) / N
//   row_loss    [N] read_write: logsumexp(logits[r]) - logits[r, label]
//   argmax      u32 [N] read_write: first index of the row's largest logit
//   label_rank  u32 [N] read_write: how many classes rank before the label (strictly
//               larger logit, or equal with a smaller index); 0 means argmax == label,
//               < 5 means a top-5 hit
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
//
// Numerics: with m the row maximum, logsumexp = m + log(Σ exp(l - m)); every exp has an
// argument <= 0, so logits of any magnitude stay finite.

struct Params {
    n: u32,
    classes: u32,
    // Written for rows whose label is out of range: NaN (a WGSL constant cannot be NaN).
    invalid: f32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> labels: array<u32>;
@group(0) @binding(3) var<storage, read_write> dlogits: array<f32>;
@group(0) @binding(4) var<storage, read_write> row_loss: array<f32>;
@group(0) @binding(5) var<storage, read_write> argmax: array<u32>;
@group(0) @binding(6) var<storage, read_write> label_rank: array<u32>;

@group(0) @binding(1) var<storage, read> finish_row_loss: array<f32>;
@group(0) @binding(2) var<storage, read> finish_label_rank: array<u32>;
@group(0) @binding(3) var<storage, read_write> loss: array<f32>;
@group(0) @binding(4) var<storage, read_write> correct: array<u32>;

// Power of two, at most MAX_WG.
override WG: u32 = 64u;
override GRAD: bool = true;

const MAX_WG: u32 = 256u;
const NO_INDEX: u32 = 0xffffffffu;
const LOWEST: f32 = -3.40282347e38;

var<workgroup> red_value: array<f32, MAX_WG>;
var<workgroup> red_index: array<u32, MAX_WG>;
var<workgroup> red_count: array<u32, MAX_WG>;

// Shared-memory tree over the WG slots: (value, index) keeps the larger value, on a tie
// the smaller index; counts add up. Result in slot 0.
fn tree_max_and_count(t: u32) {
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (t < s) {
            let v = red_value[t + s];
            let j = red_index[t + s];
            if (v > red_value[t] || (v == red_value[t] && j < red_index[t])) {
                red_value[t] = v;
                red_index[t] = j;
            }
            red_count[t] += red_count[t + s];
        }
        workgroupBarrier();
    }
}

fn tree_sum(t: u32) {
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (t < s) {
            red_value[t] += red_value[t + s];
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
    let l_label = logits[base + min(label, p.classes - 1u)];

    // 1. Row maximum with its first index, and the label's rank.
    var best = LOWEST;
    var best_j = NO_INDEX;
    var rank = 0u;
    for (var j = t; j < p.classes; j += WG) {
        let l = logits[base + j];
        if (l > best || best_j == NO_INDEX) {
            best = l;
            best_j = j;
        }
        rank += u32(l > l_label || (l == l_label && j < label));
    }
    red_value[t] = best;
    red_index[t] = best_j;
    red_count[t] = rank;
    workgroupBarrier();
    tree_max_and_count(t);
    let m = red_value[0];
    let arg = red_index[0];
    let label_rank_row = red_count[0];
    // Everyone has read slot 0 before it is reused for the sum.
    workgroupBarrier();

    // 2. Σ exp(l - m).
    var sum = 0.0;
    for (var j = t; j < p.classes; j += WG) {
        sum += exp(logits[base + j] - m);
    }
    red_value[t] = sum;
    workgroupBarrier();
    tree_sum(t);
    let total = red_value[0];

    // 3. Gradient of the mean loss: (softmax - onehot) / N.
    if (GRAD) {
        let n = f32(p.n);
        for (var j = t; j < p.classes; j += WG) {
            let softmax = exp(logits[base + j] - m) / total;
            let g = (softmax - select(0.0, 1.0, j == label)) / n;
            dlogits[base + j] = select(p.invalid, g, valid);
        }
    }
    if (t == 0u) {
        row_loss[row] = select(p.invalid, log(total) + (m - l_label), valid);
        argmax[row] = arg;
        label_rank[row] = select(NO_INDEX, label_rank_row, valid);
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
    red_value[t] = sum;
    red_index[t] = top1;
    red_count[t] = top5;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (t < s) {
            red_value[t] += red_value[t + s];
            red_index[t] += red_index[t + s];
            red_count[t] += red_count[t + s];
        }
        workgroupBarrier();
    }
    if (t == 0u) {
        loss[0] = red_value[0] / f32(p.n);
        correct[0] = red_index[0];
        correct[1] = red_count[0];
    }
}
