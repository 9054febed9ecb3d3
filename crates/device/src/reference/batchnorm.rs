//! Reference for [`BatchNorm`](crate::kernels::batchnorm::BatchNorm): `x` is `[M, C]`
//! (NHWC rows), statistics per channel. The `_f64` functions do the work in f64 (so
//! finite differences of the forward are accurate); the others wrap them for f32 data.

use crate::kernels::batchnorm::BatchNorm;

/// Results of the training forward.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainForward<T> {
    /// `[M, C]`
    pub y: Vec<T>,
    /// Batch mean `[C]`.
    pub mean: Vec<T>,
    /// `1 / sqrt(biased variance + eps)`, `[C]`.
    pub invstd: Vec<T>,
    /// Updated running mean `[C]`.
    pub running_mean: Vec<T>,
    /// Updated running variance `[C]` (from the unbiased batch variance).
    pub running_var: Vec<T>,
}

/// Gradients of the training forward.
#[derive(Clone, Debug, PartialEq)]
pub struct Backward<T> {
    /// `[M, C]`
    pub dx: Vec<T>,
    /// `Σ_rows dy · xhat`, `[C]`
    pub dgamma: Vec<T>,
    /// `Σ_rows dy`, `[C]`
    pub dbeta: Vec<T>,
}

fn widen(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

fn narrow(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

/// `y = gamma · (x - mean) · invstd + beta`, then ReLU when `p.relu`.
fn affine(
    p: &BatchNorm,
    x: &[f64],
    mean: &[f64],
    invstd: &[f64],
    gamma: &[f64],
    beta: &[f64],
) -> Vec<f64> {
    let c = p.c as usize;
    x.iter()
        .enumerate()
        .map(|(i, &v)| {
            let ch = i % c;
            let y = gamma[ch] * (v - mean[ch]) * invstd[ch] + beta[ch];
            if p.relu { super::relu(y) } else { y }
        })
        .collect()
}

/// Training forward in f64: `mean = Σ x / M`, `var = Σ (x - mean)² / M` (two passes),
/// `invstd = 1 / sqrt(var + eps)`, `y = gamma · (x - mean) · invstd + beta` (ReLU),
/// `running_mean ← (1 - momentum) · running_mean + momentum · mean`,
/// `running_var ← (1 - momentum) · running_var + momentum · var · M / (M - 1)`.
pub fn train_forward_f64(
    p: &BatchNorm,
    x: &[f64],
    gamma: &[f64],
    beta: &[f64],
    running_mean: &[f64],
    running_var: &[f64],
) -> TrainForward<f64> {
    let (m, c) = (p.m as usize, p.c as usize);
    let mut mean = vec![0.0; c];
    for row in x[..m * c].chunks_exact(c) {
        mean.iter_mut().zip(row).for_each(|(s, &v)| *s += v);
    }
    mean.iter_mut().for_each(|s| *s /= m as f64);
    let mut sq = vec![0.0; c];
    for row in x[..m * c].chunks_exact(c) {
        for ((s, &v), &mu) in sq.iter_mut().zip(row).zip(&mean) {
            *s += (v - mu) * (v - mu);
        }
    }
    let invstd: Vec<f64> = sq
        .iter()
        .map(|&s| 1.0 / (s / m as f64 + p.eps as f64).sqrt())
        .collect();
    let mom = p.momentum as f64;
    let running_mean = running_mean
        .iter()
        .zip(&mean)
        .map(|(&r, &b)| (1.0 - mom) * r + mom * b)
        .collect();
    let unbiased = sq.iter().map(|&s| s / (m as f64 - 1.0));
    let running_var = running_var
        .iter()
        .zip(unbiased)
        .map(|(&r, b)| (1.0 - mom) * r + mom * b)
        .collect();
    let y = affine(p, &x[..m * c], &mean, &invstd, gamma, beta);
    TrainForward {
        y,
        mean,
        invstd,
        running_mean,
        running_var,
    }
}

/// [`train_forward_f64`] on f32 data.
pub fn train_forward(
    p: &BatchNorm,
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    running_mean: &[f32],
    running_var: &[f32],
) -> TrainForward<f32> {
    let r = train_forward_f64(
        p,
        &widen(x),
        &widen(gamma),
        &widen(beta),
        &widen(running_mean),
        &widen(running_var),
    );
    TrainForward {
        y: narrow(&r.y),
        mean: narrow(&r.mean),
        invstd: narrow(&r.invstd),
        running_mean: narrow(&r.running_mean),
        running_var: narrow(&r.running_var),
    }
}

/// Inference forward: `y = gamma · (x - running_mean) / sqrt(running_var + eps) + beta`
/// (then ReLU).
pub fn eval_forward(
    p: &BatchNorm,
    x: &[f32],
    gamma: &[f32],
    beta: &[f32],
    running_mean: &[f32],
    running_var: &[f32],
) -> Vec<f32> {
    let invstd: Vec<f64> = running_var
        .iter()
        .map(|&v| 1.0 / (v as f64 + p.eps as f64).sqrt())
        .collect();
    let n = p.len() as usize;
    narrow(&affine(
        p,
        &widen(&x[..n]),
        &widen(running_mean),
        &invstd,
        &widen(gamma),
        &widen(beta),
    ))
}

/// Backward of the training forward in f64, from the saved `mean` and `invstd`:
/// `xhat = (x - mean) · invstd`, `dbeta = Σ dy`, `dgamma = Σ dy · xhat`,
/// `dx = gamma · invstd / M · (M · dy - dbeta - xhat · dgamma)`. With `p.relu`, `dy` is
/// the gradient already masked by the ReLU (`dy · [y > 0]`).
pub fn backward_f64(
    p: &BatchNorm,
    x: &[f64],
    dy: &[f64],
    gamma: &[f64],
    mean: &[f64],
    invstd: &[f64],
) -> Backward<f64> {
    let (m, c) = (p.m as usize, p.c as usize);
    let xhat = |i: usize| (x[i] - mean[i % c]) * invstd[i % c];
    let (mut dgamma, mut dbeta) = (vec![0.0; c], vec![0.0; c]);
    for i in 0..m * c {
        dbeta[i % c] += dy[i];
        dgamma[i % c] += dy[i] * xhat(i);
    }
    let mf = m as f64;
    let dx = (0..m * c)
        .map(|i| {
            let ch = i % c;
            gamma[ch] * invstd[ch] / mf * (mf * dy[i] - dbeta[ch] - xhat(i) * dgamma[ch])
        })
        .collect();
    Backward { dx, dgamma, dbeta }
}

/// [`backward_f64`] on f32 data.
pub fn backward(
    p: &BatchNorm,
    x: &[f32],
    dy: &[f32],
    gamma: &[f32],
    mean: &[f32],
    invstd: &[f32],
) -> Backward<f32> {
    let r = backward_f64(
        p,
        &widen(x),
        &widen(dy),
        &widen(gamma),
        &widen(mean),
        &widen(invstd),
    );
    Backward {
        dx: narrow(&r.dx),
        dgamma: narrow(&r.dgamma),
        dbeta: narrow(&r.dbeta),
    }
}
