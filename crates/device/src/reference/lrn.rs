//! Reference for [`Lrn`]: cross-channel local response normalisation, NHWC, in f64.
//!
//! `s_c = k + alpha/size · Σ_{c' ∈ win(c)} a_{c'}²`, `b_c = a_c · s_c^(−beta)`,
//! `win(c) = [c − size/2, c + (size−1)/2] ∩ [0, C)`.
//! Backward: `da_c = db_c · s_c^(−beta) − 2·beta·alpha/size · a_c · Σ_{j : c ∈ win(j)}
//! db_j · a_j · s_j^(−beta−1)`.

use crate::kernels::lrn::Lrn;

/// The channels of `win(c)`, clipped to `[0, C)`.
fn window(p: &Lrn, c: usize) -> std::ops::RangeInclusive<usize> {
    let size = p.size as usize;
    c.saturating_sub(size / 2)..=(c + (size - 1) / 2).min(p.c as usize - 1)
}

/// The scales `s_c` of one pixel's channels `a`.
fn scales(p: &Lrn, a: &[f64]) -> Vec<f64> {
    let coef = p.alpha as f64 / p.size as f64;
    (0..a.len())
        .map(|c| p.k as f64 + coef * window(p, c).map(|j| a[j] * a[j]).sum::<f64>())
        .collect()
}

fn pixel(x: &[f32], row: usize, c: usize) -> Vec<f64> {
    x[row * c..(row + 1) * c]
        .iter()
        .map(|&v| v as f64)
        .collect()
}

/// Forward: `y [rows, c]`.
pub fn lrn_forward(p: &Lrn, x: &[f32]) -> Vec<f32> {
    let c = p.c as usize;
    let mut y = Vec::with_capacity(p.len() as usize);
    for row in 0..p.rows as usize {
        let a = pixel(x, row, c);
        let s = scales(p, &a);
        y.extend((0..c).map(|ch| (a[ch] * s[ch].powf(-p.beta as f64)) as f32));
    }
    y
}

/// Backward: `dx [rows, c]` from the forward's input `x` and `dy`.
pub fn lrn_backward(p: &Lrn, x: &[f32], dy: &[f32]) -> Vec<f32> {
    let c = p.c as usize;
    let (beta, coef) = (p.beta as f64, p.alpha as f64 / p.size as f64);
    let mut dx = Vec::with_capacity(p.len() as usize);
    for row in 0..p.rows as usize {
        let a = pixel(x, row, c);
        let g = pixel(dy, row, c);
        let s = scales(p, &a);
        // d_j = db_j · a_j · s_j^(−beta−1): what channel j passes to every c in win(j).
        let d: Vec<f64> = (0..c)
            .map(|j| g[j] * a[j] * s[j].powf(-beta - 1.0))
            .collect();
        let mut cross = vec![0.0f64; c];
        for (j, dj) in d.iter().enumerate() {
            for ch in window(p, j) {
                cross[ch] += dj;
            }
        }
        dx.extend(
            (0..c).map(|ch| {
                (g[ch] * s[ch].powf(-beta) - 2.0 * beta * coef * a[ch] * cross[ch]) as f32
            }),
        );
    }
    dx
}
