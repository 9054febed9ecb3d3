//! Reference for [`clip`](crate::kernels::clip): `torch.nn.utils.clip_grad_norm_`.

/// Scales every gradient by `min(1, max_norm / (total_norm + 1e-6))` in place and
/// returns the total (pre-clipping) L2 norm over all of them.
pub fn clip_by_global_norm(grads: &mut [Vec<f32>], max_norm: f64) -> f64 {
    let total = grads
        .iter()
        .flat_map(|g| g.iter())
        .map(|&x| (x as f64) * (x as f64))
        .sum::<f64>()
        .sqrt();
    let factor = (max_norm / (total + 1e-6)).min(1.0);
    for g in grads.iter_mut() {
        for x in g.iter_mut() {
            *x = (*x as f64 * factor) as f32;
        }
    }
    total
}
