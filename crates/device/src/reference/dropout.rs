//! Reference for [`Dropout`]: the same counter-based hash as `shaders/dropout.wgsl`, so the
//! mask matches the GPU's bit for bit.
//!
//! `bits(seed, i) = pcg(pcg(i ^ pcg(seed)) + seed)` (wrapping u32 arithmetic), `u = (bits >>
//! 8) / 2²⁴ ∈ [0, 1)`, `keep = u ≥ p`; forward `y = keep ? x · scale : 0` with `scale =
//! 1/(1 − p)` in f32; backward `dx = keep ? dy · scale : 0`.

use crate::kernels::dropout::Dropout;

/// The PCG hash of Jarzynski & Olano (JCGT 2020), as in the shader.
pub fn pcg_hash(v: u32) -> u32 {
    let state = v.wrapping_mul(747_796_405).wrapping_add(2_891_336_453);
    let word = ((state >> ((state >> 28) + 4)) ^ state).wrapping_mul(277_803_737);
    (word >> 22) ^ word
}

/// 32 random bits for element `i` under `seed`.
pub fn random_bits(seed: u32, i: u32) -> u32 {
    pcg_hash(pcg_hash(i ^ pcg_hash(seed)).wrapping_add(seed))
}

/// Uniform in `[0, 1)` from the top 24 bits (exact in f32).
pub fn uniform01(seed: u32, i: u32) -> f32 {
    (random_bits(seed, i) >> 8) as f32 * (1.0 / 16_777_216.0)
}

/// Which elements survive: `keep[i] = uniform01(seed, i) ≥ p`.
pub fn keep_mask(d: &Dropout) -> Vec<bool> {
    (0..d.count).map(|i| uniform01(d.seed, i) >= d.p).collect()
}

/// Forward: `y = x · keep · scale` (dropped elements are exactly 0).
pub fn dropout_forward(d: &Dropout, x: &[f32]) -> Vec<f32> {
    let scale = d.scale();
    keep_mask(d)
        .iter()
        .zip(x)
        .map(|(&keep, &v)| if keep { v * scale } else { 0.0 })
        .collect()
}

/// Backward: `dx = dy · keep · scale`, the mask regenerated from the seed.
pub fn dropout_backward(d: &Dropout, dy: &[f32]) -> Vec<f32> {
    dropout_forward(d, dy)
}
