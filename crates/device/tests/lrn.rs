//! Local response normalisation against the CPU reference: AlexNet's settings, large
//! alpha (so the backward's cross-channel term is a large part of the gradient), fewer
//! channels than the window (C = 1, 2, 3), even and unit window sizes; the backward
//! reference against central differences of the forward reference.

mod common;

use common::*;
use wgtrain_device::kernels::lrn::Lrn;
use wgtrain_device::reference::lrn as reference;

fn configs() -> Vec<Lrn> {
    vec![
        Lrn::alexnet(3 * 5 * 7, 96),
        Lrn::alexnet(4, 3),
        Lrn::new(17, 1, 5, 1.0, 0.75, 2.0),
        Lrn::new(9, 2, 5, 1.0, 0.75, 2.0),
        Lrn::new(11, 3, 5, 0.5, 0.75, 2.0),
        Lrn::new(8, 13, 4, 0.5, 0.75, 1.0),
        Lrn::new(5, 7, 1, 1.0, 0.5, 1.0),
        Lrn::new(6, 10, 11, 1.0, 1.5, 0.5),
        Lrn::new(1, 64, 5, 1.0, 0.75, 2.0),
    ]
}

/// Inputs in [-2, 2): with alpha ≥ 0.5 the sum of squares then changes the scale a lot.
fn inputs(len: usize, seed: u64) -> (Vec<f32>, Vec<f32>) {
    let mut rng = Rng::new(seed);
    let x = rng.vec(len).into_iter().map(|v| 2.0 * v).collect();
    (x, rng.vec(len))
}

fn check_gpu(p: Lrn, seed: u64) {
    let len = p.len() as usize;
    let (x, dy) = inputs(len, seed);
    let (d_x, d_dy) = (upload(&x), upload(&dy));
    let (d_y, d_dx) = (output(len), output(len));
    let k1 = p.prepare_forward(gpu(), &d_x, &d_y).expect("forward");
    let k2 = p
        .prepare_backward(gpu(), &d_x, &d_dy, &d_dx)
        .expect("backward");
    run(&[&k1, &k2]);
    // pow() on a GPU is exp2(log2(·)): a few ulps, hence 2e-6 rather than 1e-7.
    let want_y = reference::lrn_forward(&p, &x);
    assert_close(
        &format!("lrn forward {p:?}"),
        &download(&d_y, len),
        &want_y,
        2e-6,
        1e-7,
    );
    let want_dx = reference::lrn_backward(&p, &x, &dy);
    assert_close(
        &format!("lrn backward {p:?}"),
        &download(&d_dx, len),
        &want_dx,
        1e-5,
        1e-6,
    );
}

#[test]
fn forward_and_backward_match_reference() {
    for (i, p) in configs().into_iter().enumerate() {
        check_gpu(p, 200 + i as u64);
    }
}

#[test]
fn large_tensor_spans_many_workgroups() {
    check_gpu(Lrn::alexnet(2 * 27 * 27, 96), 220);
}

/// L = Σ y ⊙ g with y from the reference forward; central differences in f64 over every
/// element (the step divided by its exact f32 size). h = 1e-2 balances the O(h²)
/// truncation against the outputs' f32 rounding over 2h.
#[test]
fn backward_reference_matches_finite_differences() {
    for (i, p) in configs().into_iter().skip(1).enumerate() {
        let len = p.len() as usize;
        let (x, g) = inputs(len, 300 + i as u64);
        let grad = reference::lrn_backward(&p, &x, &g);
        let loss = |x: &[f32]| -> f64 {
            reference::lrn_forward(&p, x)
                .iter()
                .zip(&g)
                .map(|(&y, &g)| y as f64 * g as f64)
                .sum()
        };
        let h = 1e-2f32;
        for j in 0..len {
            let (mut xp, mut xm) = (x.clone(), x.clone());
            xp[j] += h;
            xm[j] -= h;
            let fd = (loss(&xp) - loss(&xm)) / (xp[j] as f64 - xm[j] as f64);
            let err = (fd - grad[j] as f64).abs();
            assert!(
                err < 3e-4 * (1.0 + fd.abs()),
                "{p:?}: dx[{j}]: fd {fd} vs reference {}",
                grad[j]
            );
        }
    }
}

/// With alpha = 1 the cross-channel term is a large share of the gradient; were it
/// dropped, the finite-difference test above would fail. This guards that test's
/// strength: the term must not be negligible for the configurations it runs.
#[test]
fn cross_channel_term_is_not_negligible_with_large_alpha() {
    let p = Lrn::new(9, 8, 5, 1.0, 0.75, 2.0);
    let (x, g) = inputs(p.len() as usize, 400);
    let full = reference::lrn_backward(&p, &x, &g);
    // The own-channel term alone: dy · s^(−beta) = dy · y / x.
    let y = reference::lrn_forward(&p, &x);
    let own: Vec<f32> = g
        .iter()
        .zip(&y)
        .zip(&x)
        .map(|((&g, &y), &x)| g * y / x)
        .collect();
    let diff = full
        .iter()
        .zip(&own)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(diff > 0.05, "cross-channel term only {diff}");
}

#[test]
fn bad_params_are_errors_not_panics() {
    let buf = upload(&[0.0; 64]);
    let out = output(64);
    let err = |p: Lrn| {
        p.prepare_forward(gpu(), &buf, &out)
            .unwrap_err()
            .to_string()
    };
    let e = err(Lrn::new(4, 4, 0, 1e-4, 0.75, 2.0));
    assert!(e.contains("size must be positive"), "{e}");
    let e = err(Lrn::new(4, 4, 5, 1e-4, 0.75, 0.0));
    assert!(e.contains("k must be positive"), "{e}");
    let e = err(Lrn::new(4, 4, 5, -1.0, 0.75, 2.0));
    assert!(e.contains("alpha must be non-negative"), "{e}");
    let e = err(Lrn::alexnet(8, 16));
    assert!(e.contains("binding `x`"), "{e}");
    let e = Lrn::alexnet(4, 4)
        .prepare_backward(gpu(), &buf, &buf, &buf)
        .unwrap_err()
        .to_string();
    assert!(e.contains("same buffer"), "{e}");
}
