//! CPU reference of [`CountNonFinite`](crate::kernels::finite::CountNonFinite):
//! `counts[slot] += |{ i : x[i] is NaN or ±Inf }|`.

use crate::kernels::finite::CountNonFinite;

/// Adds the number of NaN and ±Inf elements of `x[0..p.count]` to `counts[p.slot]`.
pub fn count_nonfinite(p: &CountNonFinite, x: &[f32], counts: &mut [u32]) {
    let n = x[..p.count as usize]
        .iter()
        .filter(|v| !v.is_finite())
        .count();
    counts[p.slot as usize] += n as u32;
}
