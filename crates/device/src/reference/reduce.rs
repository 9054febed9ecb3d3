//! Reference for [`Reduce`](crate::kernels::reduce::Reduce): plain f64 sums.

use crate::kernels::reduce::{Reduce, ReduceOp};

/// `Σ x[i]`, `Σ x[i] / count` or `Σ x[i]²` over `x[0..count]`.
pub fn reduce(p: &Reduce, x: &[f64]) -> f64 {
    let x = &x[..p.count as usize];
    match p.op {
        ReduceOp::Sum => x.iter().sum(),
        ReduceOp::Mean => x.iter().sum::<f64>() / p.count as f64,
        ReduceOp::SumOfSquares => x.iter().map(|v| v * v).sum(),
    }
}
