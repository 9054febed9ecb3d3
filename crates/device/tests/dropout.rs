//! Dropout against the CPU reference: the GPU mask equals the reference hash bit for bit;
//! same seed, same mask; other seed, other mask; the dropped fraction is p within a few
//! standard deviations; p = 0 is the identity; the backward regenerates the forward's
//! mask; reseeding through the uniform buffer; bad parameters are errors.

mod common;

use common::*;
use wgtrain_device::kernels::dropout::Dropout;
use wgtrain_device::reference::dropout as reference;

fn gpu_forward(d: &Dropout, x: &[f32]) -> Vec<f32> {
    let (d_x, d_y) = (upload(x), output(x.len()));
    let k = d.prepare_forward(gpu(), &d_x, &d_y).expect("forward");
    run(&[&k]);
    download(&d_y, x.len())
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|v| v.to_bits()).collect()
}

/// The GPU's mask, read from the forward of an all-ones input.
fn gpu_mask(d: &Dropout) -> Vec<bool> {
    gpu_forward(d, &vec![1.0; d.count as usize])
        .iter()
        .map(|&v| v != 0.0)
        .collect()
}

#[test]
fn forward_and_backward_equal_reference_bit_for_bit() {
    for (i, &(count, p, seed)) in [
        (1, 0.5, 0),
        (7, 0.1, 1),
        (1000, 0.5, 42),
        (100_003, 0.9, 7),
        (4099, 0.25, u32::MAX),
    ]
    .iter()
    .enumerate()
    {
        let d = Dropout::new(count, p, seed);
        let mut rng = Rng::new(500 + i as u64);
        let (x, dy) = (rng.vec(count as usize), rng.vec(count as usize));
        let want_y = reference::dropout_forward(&d, &x);
        let y = gpu_forward(&d, &x);
        assert_close(&format!("dropout forward {d:?}"), &y, &want_y, 0.0, 0.0);
        assert_eq!(bits(&y), bits(&want_y), "{d:?}: forward not bit-identical");
        let (d_dy, d_dx) = (upload(&dy), output(count as usize));
        let k = d.prepare_backward(gpu(), &d_dy, &d_dx).expect("backward");
        run(&[&k]);
        let dx = download(&d_dx, count as usize);
        let want_dx = reference::dropout_backward(&d, &dy);
        assert_close(&format!("dropout backward {d:?}"), &dx, &want_dx, 0.0, 0.0);
        assert_eq!(
            bits(&dx),
            bits(&want_dx),
            "{d:?}: backward not bit-identical"
        );
        // The backward drops exactly the forward's elements.
        let same = y.iter().zip(&dx).all(|(&y, &g)| (y == 0.0) == (g == 0.0));
        assert!(same, "{d:?}: backward mask differs from the forward's");
    }
}

#[test]
fn same_seed_same_mask_other_seed_other_mask() {
    let d = Dropout::new(10_000, 0.5, 1234);
    let first = gpu_mask(&d);
    assert_eq!(first, gpu_mask(&d), "same seed gave another mask");
    assert_eq!(first, reference::keep_mask(&d));
    for other in [1235, 0, 1234 ^ 0x8000_0000] {
        let mask = gpu_mask(&Dropout { seed: other, ..d });
        let agree = first.iter().zip(&mask).filter(|(a, b)| a == b).count();
        // Independent masks at p = 0.5 agree on half the elements (σ = 50).
        assert!(
            (agree as f64 - 5000.0).abs() < 300.0,
            "seed {other}: {agree} of 10000 agree"
        );
    }
}

#[test]
fn dropped_fraction_is_p_within_five_sigma() {
    let n = 100_000u32;
    for (p, seed) in [(0.1f32, 3), (0.5, 4), (0.8, 5), (0.01, 6)] {
        let dropped = gpu_mask(&Dropout::new(n, p, seed))
            .iter()
            .filter(|&&k| !k)
            .count();
        let frac = dropped as f64 / n as f64;
        let sigma = (p as f64 * (1.0 - p as f64) / n as f64).sqrt();
        assert!(
            (frac - p as f64).abs() < 5.0 * sigma,
            "p {p}: dropped {frac} (sigma {sigma})"
        );
    }
}

#[test]
fn zero_probability_is_the_identity() {
    let x = Rng::new(600).vec(3001);
    let y = gpu_forward(&Dropout::new(3001, 0.0, 9), &x);
    assert_close("dropout p=0", &y, &x, 0.0, 0.0);
    assert_eq!(bits(&y), bits(&x));
}

/// Dropout is linear in x for a fixed mask, so the central difference of L = Σ y ⊙ g is
/// exact up to rounding: it must equal the reference backward applied to g.
#[test]
fn backward_reference_matches_finite_differences() {
    let d = Dropout::new(257, 0.3, 77);
    let mut rng = Rng::new(700);
    let (x, g) = (rng.vec(257), rng.vec(257));
    let grad = reference::dropout_backward(&d, &g);
    let loss = |x: &[f32]| -> f64 {
        reference::dropout_forward(&d, x)
            .iter()
            .zip(&g)
            .map(|(&y, &g)| y as f64 * g as f64)
            .sum()
    };
    let h = 1e-2f32;
    for i in 0..x.len() {
        let (mut xp, mut xm) = (x.clone(), x.clone());
        xp[i] += h;
        xm[i] -= h;
        let fd = (loss(&xp) - loss(&xm)) / (xp[i] as f64 - xm[i] as f64);
        assert!(
            (fd - grad[i] as f64).abs() < 1e-5 * (1.0 + fd.abs()),
            "dx[{i}]: fd {fd} vs {}",
            grad[i]
        );
    }
}

#[test]
fn reseeding_through_the_uniform_changes_the_mask() {
    let d = Dropout::new(5000, 0.4, 1);
    let x = Rng::new(800).vec(5000);
    let (d_x, d_y) = (upload(&x), output(5000));
    let k = d.prepare_forward(gpu(), &d_x, &d_y).expect("forward");
    let reseeded = Dropout { seed: 2, ..d };
    gpu()
        .queue()
        .write_buffer(k.uniform().expect("uniform"), 0, &reseeded.uniform_bytes());
    run(&[&k]);
    let want = reference::dropout_forward(&reseeded, &x);
    assert_eq!(bits(&download(&d_y, 5000)), bits(&want));
}

#[test]
fn large_count_spans_a_two_dimensional_grid() {
    // More than 65535 workgroups of 256: grid_1d spreads the groups over y as well.
    let count = 65_535 * 256 + 1000;
    let d = Dropout::new(count, 0.5, 11);
    let got = gpu_mask(&d);
    assert_eq!(got, reference::keep_mask(&d));
}

#[test]
fn bad_params_are_errors_not_panics() {
    let buf = upload(&[0.0; 16]);
    let out = output(16);
    for p in [1.0, 1.5, -0.1, f32::NAN] {
        let e = Dropout::new(16, p, 0)
            .prepare_forward(gpu(), &buf, &out)
            .unwrap_err()
            .to_string();
        assert!(e.contains("p must be in [0, 1)"), "{e}");
    }
    let e = Dropout::new(0, 0.5, 0)
        .prepare_forward(gpu(), &buf, &out)
        .unwrap_err()
        .to_string();
    assert!(e.contains("count must be positive"), "{e}");
    let e = Dropout::new(1 << 20, 0.5, 0)
        .prepare_backward(gpu(), &buf, &out)
        .unwrap_err()
        .to_string();
    assert!(e.contains("binding `dy`"), "{e}");
}
