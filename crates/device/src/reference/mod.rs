//! CPU references: plain loops with f64 accumulation, one module per kernel family,
//! taking the same parameter structs as the GPU kernels. They exist to be read and to
//! check the GPU kernels (tests, `cargo xtask bench`), not to be fast.

pub mod batchnorm;
pub mod clip;
pub mod conv2d;
pub mod dropout;
pub mod elementwise;
pub mod finite;
pub mod lrn;
pub mod matmul;
pub mod mse;
pub mod optimizer;
pub mod pool;
pub mod reduce;
pub mod softmax_xent;

/// ReLU as PyTorch computes it: negative values become 0, a NaN stays NaN (`f32::max`
/// would turn it into 0 and hide it).
pub fn relu<T: PartialOrd + Default>(x: T) -> T {
    if x < T::default() { T::default() } else { x }
}

/// Maximum relative error of `got` against `want`, where the denominator is floored at
/// `1e-3 · max|want|` so that elements near zero do not dominate.
pub fn max_relative_error(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len(), "compared slices differ in length");
    let scale = want.iter().fold(0.0f64, |m, &w| m.max((w as f64).abs()));
    let floor = (scale * 1e-3).max(f64::MIN_POSITIVE);
    got.iter()
        .zip(want)
        .map(|(&g, &w)| {
            let (g, w) = (g as f64, w as f64);
            if g.is_nan() != w.is_nan() {
                f64::INFINITY
            } else if g == w {
                0.0
            } else {
                (g - w).abs() / w.abs().max(floor)
            }
        })
        .fold(0.0, f64::max)
}
