//! Reference for [`MeanSquaredError`](crate::kernels::mse::MeanSquaredError), in f64
//! (callers widen f32 predictions), so its cost can be finite-differenced precisely.

use crate::kernels::mse::MeanSquaredError;

/// Everything the GPU kernel writes.
#[derive(Clone, Debug, PartialEq)]
pub struct MseOutputs {
    /// `½ Σ_j (x[r, j] - [j == label[r]])²`, NaN for a label `>= classes`.
    pub row_loss: Vec<f64>,
    /// Mean of `row_loss`.
    pub loss: f64,
    /// `(x[r, j] - [j == label[r]]) / n`, `[n, classes]`: `∂loss/∂x[r, j]`.
    pub dpred: Vec<f64>,
    /// `#{j : x[r, j] > x[r, l] or (x[r, j] == x[r, l] and j < l)}` for `l = label[r]`,
    /// `u32::MAX` for an invalid label.
    pub label_rank: Vec<u32>,
    /// Rows with `label_rank == 0` (the first argmax is the label) and `< 5`.
    pub top1: u32,
    pub top5: u32,
}

/// The quadratic cost of row-major `pred [n, classes]` against one-hot targets:
/// `loss = (1/n) Σ_r ½ Σ_j (x[r, j] - [j == label[r]])²` (the textbook
/// `C = 1/(2n) Σ ||y - a||²`; PyTorch's `MSELoss` would divide the plain sum of squares
/// by `n · classes` instead).
pub fn mse(p: &MeanSquaredError, pred: &[f64], labels: &[u32]) -> MseOutputs {
    let (n, k) = (p.n as usize, p.classes as usize);
    let mut out = MseOutputs {
        row_loss: Vec::with_capacity(n),
        loss: 0.0,
        dpred: Vec::with_capacity(n * k),
        label_rank: Vec::with_capacity(n),
        top1: 0,
        top5: 0,
    };
    for (row, &label) in pred[..n * k].chunks_exact(k).zip(&labels[..n]) {
        let l = label as usize;
        if l >= k {
            out.row_loss.push(f64::NAN);
            out.dpred.extend(std::iter::repeat_n(f64::NAN, k));
            out.label_rank.push(u32::MAX);
            continue;
        }
        let residual = |j: usize, v: f64| v - if j == l { 1.0 } else { 0.0 };
        let sq: f64 = row
            .iter()
            .enumerate()
            .map(|(j, &v)| residual(j, v).powi(2))
            .sum();
        out.row_loss.push(0.5 * sq);
        out.dpred.extend(
            row.iter()
                .enumerate()
                .map(|(j, &v)| residual(j, v) / n as f64),
        );
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
