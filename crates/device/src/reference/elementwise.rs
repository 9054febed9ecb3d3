//! Reference for the [`elementwise`](crate::kernels::elementwise) kernels. Everything is
//! in f64 (callers widen f32 inputs), so finite differences of these functions are exact
//! up to f64 rounding.

use crate::kernels::elementwise::{Axpy, BiasAdd, Binary, BinaryOp, Relu, Scale, Sigmoid};

/// `z[i] = x[i] + y[i]` or `x[i] * y[i]`.
pub fn binary(p: &Binary, x: &[f64], y: &[f64]) -> Vec<f64> {
    let n = p.count as usize;
    let f = match p.op {
        BinaryOp::Add => |a: f64, b: f64| a + b,
        BinaryOp::Multiply => |a: f64, b: f64| a * b,
    };
    x[..n].iter().zip(&y[..n]).map(|(&a, &b)| f(a, b)).collect()
}

/// `y[i] = alpha · x[i]`.
pub fn scale(p: &Scale, x: &[f64]) -> Vec<f64> {
    x[..p.count as usize]
        .iter()
        .map(|&v| p.alpha as f64 * v)
        .collect()
}

/// `y[i] + alpha · x[i]` (the new `y`).
pub fn axpy(p: &Axpy, x: &[f64], y: &[f64]) -> Vec<f64> {
    let n = p.count as usize;
    x[..n]
        .iter()
        .zip(&y[..n])
        .map(|(&a, &b)| b + p.alpha as f64 * a)
        .collect()
}

/// `y[i] = max(x[i], 0)`.
pub fn relu(p: &Relu, x: &[f64]) -> Vec<f64> {
    x[..p.count as usize]
        .iter()
        .map(|&v| super::relu(v))
        .collect()
}

/// `dx[i] = dy[i]` where the forward output `y[i] > 0`, else 0.
pub fn relu_backward(p: &Relu, y: &[f64], dy: &[f64]) -> Vec<f64> {
    let n = p.count as usize;
    y[..n]
        .iter()
        .zip(&dy[..n])
        .map(|(&y, &g)| if y > 0.0 { g } else { 0.0 })
        .collect()
}

/// `y[i] = 1 / (1 + exp(-x[i]))`, as `e / (1 + e)` with `e = exp(x[i])` for negative
/// inputs so that no `exp` overflows.
pub fn sigmoid(p: &Sigmoid, x: &[f64]) -> Vec<f64> {
    x[..p.count as usize]
        .iter()
        .map(|&v| {
            let e = (-v.abs()).exp();
            if v >= 0.0 {
                1.0 / (1.0 + e)
            } else {
                e / (1.0 + e)
            }
        })
        .collect()
}

/// `dx[i] = dy[i] · y[i] · (1 - y[i])` from the forward output `y`.
pub fn sigmoid_backward(p: &Sigmoid, y: &[f64], dy: &[f64]) -> Vec<f64> {
    let n = p.count as usize;
    y[..n]
        .iter()
        .zip(&dy[..n])
        .map(|(&y, &g)| g * y * (1.0 - y))
        .collect()
}

/// `y[r, c] = x[r, c] + bias[c]` over a row-major `[rows, C]` tensor.
pub fn bias_add(p: &BiasAdd, x: &[f64], bias: &[f64]) -> Vec<f64> {
    let c = p.c as usize;
    x[..p.rows as usize * c]
        .iter()
        .enumerate()
        .map(|(i, &v)| v + bias[i % c])
        .collect()
}

/// `db[c] = db_in[c] + Σ_r dy[r, c]`, with `db_in` all zeros unless accumulating.
pub fn bias_grad(p: &BiasAdd, dy: &[f64], db_in: &[f64]) -> Vec<f64> {
    let c = p.c as usize;
    let mut db = db_in[..c].to_vec();
    for row in dy[..p.rows as usize * c].chunks_exact(c) {
        for (acc, &g) in db.iter_mut().zip(row) {
            *acc += g;
        }
    }
    db
}
