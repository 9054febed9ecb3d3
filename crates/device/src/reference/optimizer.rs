//! Reference for [`Sgd`] and [`Adam`]: PyTorch's single-tensor `torch.optim` loops
//! (`_single_tensor_sgd`, `_single_tensor_adam`) in f64, state kept in f64 by the caller.

use crate::kernels::optimizer::{Adam, Sgd};

/// One SGD step (`step` from 1) at learning rate `lr`, in place on `param` and `buf`
/// (`buf` is unused and may be empty when `momentum == 0`):
/// `g = grad + weight_decay · param`; with momentum, `buf = g` on step 1, else
/// `buf = momentum · buf + (1 - dampening) · g`, then `g = g + momentum · buf`
/// (Nesterov) or `g = buf`; finally `param -= lr · g`.
pub fn sgd_step(p: &Sgd, step: u32, lr: f32, param: &mut [f64], grad: &[f32], buf: &mut [f64]) {
    let (lr, momentum, dampening) = (lr as f64, p.momentum as f64, p.dampening as f64);
    for i in 0..p.count as usize {
        let mut g = grad[i] as f64 + p.weight_decay as f64 * param[i];
        if momentum != 0.0 {
            buf[i] = if step == 1 {
                g
            } else {
                momentum * buf[i] + (1.0 - dampening) * g
            };
            g = if p.nesterov {
                g + momentum * buf[i]
            } else {
                buf[i]
            };
        }
        param[i] -= lr * g;
    }
}

/// One Adam / AdamW step (`step` from 1) at learning rate `lr`, in place on `param`,
/// `exp_avg` (m) and `exp_avg_sq` (v). AdamW first scales `param` by
/// `1 - lr · weight_decay`; Adam adds `weight_decay · param` to the gradient. Then
/// `m = b1 · m + (1 - b1) · g`, `v = b2 · v + (1 - b2) · g²`,
/// `param -= lr / (1 - b1^t) · m / (sqrt(v) / sqrt(1 - b2^t) + eps)`.
pub fn adam_step(
    p: &Adam,
    step: u32,
    lr: f32,
    param: &mut [f64],
    grad: &[f32],
    exp_avg: &mut [f64],
    exp_avg_sq: &mut [f64],
) {
    let (lr, b1, b2, wd) = (
        lr as f64,
        p.beta1 as f64,
        p.beta2 as f64,
        p.weight_decay as f64,
    );
    let step_size = lr / (1.0 - b1.powi(step as i32));
    let bias_correction2_sqrt = (1.0 - b2.powi(step as i32)).sqrt();
    for i in 0..p.count as usize {
        let mut g = grad[i] as f64;
        if p.decoupled {
            param[i] *= 1.0 - lr * wd;
        } else {
            g += wd * param[i];
        }
        exp_avg[i] = b1 * exp_avg[i] + (1.0 - b1) * g;
        exp_avg_sq[i] = b2 * exp_avg_sq[i] + (1.0 - b2) * g * g;
        let denom = exp_avg_sq[i].sqrt() / bias_correction2_sqrt + p.eps as f64;
        param[i] -= step_size * exp_avg[i] / denom;
    }
}

/// [`DcAsgd`](crate::kernels::optimizer::DcAsgd)'s update in f64: `param`, `ms` (when
/// adaptive) and `vel` (with a momentum; may be empty otherwise) in place.
pub fn dc_asgd_step(
    p: &crate::kernels::optimizer::DcAsgd,
    param: &mut [f64],
    grad: &[f32],
    backup: &[f32],
    ms: &mut [f64],
    vel: &mut [f64],
) {
    let momentum = p.momentum as f64;
    for i in 0..param.len() {
        let g = grad[i] as f64;
        let lambda = match p.adaptive {
            Some((m, eps)) => {
                ms[i] = m as f64 * ms[i] + (1.0 - m as f64) * g * g;
                p.lambda as f64 / (ms[i] + eps as f64).sqrt()
            }
            None => p.lambda as f64,
        };
        let w = param[i];
        let mut d = g + lambda * g * g * (w - backup[i] as f64) + p.weight_decay as f64 * w;
        if momentum > 0.0 {
            vel[i] = momentum * vel[i] + d;
            d = if p.nesterov {
                d + momentum * vel[i]
            } else {
                vel[i]
            };
        }
        param[i] = w - p.lr as f64 * d;
    }
}
