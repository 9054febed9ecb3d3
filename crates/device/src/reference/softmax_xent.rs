//! Reference for [`SoftmaxCrossEntropy`](crate::kernels::softmax_xent::SoftmaxCrossEntropy),
//! in f64 (callers widen f32 logits), so its loss can be finite-differenced precisely.

use crate::kernels::softmax_xent::SoftmaxCrossEntropy;

/// Everything the GPU kernel writes.
#[derive(Clone, Debug, PartialEq)]
pub struct SoftmaxXentOutputs {
    /// `logsumexp(x[r]) - x[r, label[r]]`, NaN for a label `>= classes`.
    pub row_loss: Vec<f64>,
    /// Mean of `row_loss`.
    pub loss: f64,
    /// `(softmax(x[r])[j] - [j == label[r]]) / n`, `[n, classes]`: `∂loss/∂x[r, j]`.
    pub dlogits: Vec<f64>,
    /// First index of each row's largest logit.
    pub argmax: Vec<u32>,
    /// `#{j : x[r, j] > x[r, l] or (x[r, j] == x[r, l] and j < l)}` for `l = label[r]`,
    /// `u32::MAX` for an invalid label.
    pub label_rank: Vec<u32>,
    /// Rows with `label_rank == 0` (argmax is the label) and `< 5`.
    pub top1: u32,
    pub top5: u32,
}

/// Softmax cross-entropy of row-major `logits [n, classes]` against `labels [n]`:
/// `loss = (1/n) Σ_r (log Σ_j exp(x[r, j]) - x[r, label[r]])`, with the maximum
/// subtracted before `exp` for stability.
pub fn softmax_xent(p: &SoftmaxCrossEntropy, logits: &[f64], labels: &[u32]) -> SoftmaxXentOutputs {
    let (n, k) = (p.n as usize, p.classes as usize);
    let mut out = SoftmaxXentOutputs {
        row_loss: Vec::with_capacity(n),
        loss: 0.0,
        dlogits: Vec::with_capacity(n * k),
        argmax: Vec::with_capacity(n),
        label_rank: Vec::with_capacity(n),
        top1: 0,
        top5: 0,
    };
    for (row, &label) in logits[..n * k].chunks_exact(k).zip(&labels[..n]) {
        let l = label as usize;
        let valid = l < k;
        let mut arg = 0;
        for (j, &v) in row.iter().enumerate() {
            if v > row[arg] {
                arg = j;
            }
        }
        let m = row[arg];
        let total: f64 = row.iter().map(|&v| (v - m).exp()).sum();
        out.argmax.push(arg as u32);
        if !valid {
            out.row_loss.push(f64::NAN);
            out.dlogits.extend(std::iter::repeat_n(f64::NAN, k));
            out.label_rank.push(u32::MAX);
            continue;
        }
        out.row_loss.push(total.ln() + m - row[l]);
        for (j, &v) in row.iter().enumerate() {
            let onehot = if j == l { 1.0 } else { 0.0 };
            out.dlogits
                .push(((v - m).exp() / total - onehot) / n as f64);
        }
        let rank = row
            .iter()
            .enumerate()
            .filter(|&(j, &v)| v > row[l] || (v == row[l] && j < l))
            .count() as u32;
        out.label_rank.push(rank);
        out.top1 += (rank == 0) as u32;
        out.top5 += (rank < 5) as u32;
    }
    out.loss = out.row_loss.iter().sum::<f64>() / n as f64;
    out
}
