//! Matmul against the CPU reference: transposes, batches, bias + ReLU epilogue,
//! accumulation, awkward sizes; and both backward products, which are themselves
//! checked against finite differences of the reference.

mod common;

use common::*;
use wgtrain_device::kernels::matmul::{Matmul, MatmulVariant};
use wgtrain_device::reference;

fn check_forward(p: Matmul, seed: u64) {
    check_forward_with(p, None, seed);
}

/// `variant`: a chosen kernel; `None`: the one `prepare` picks.
fn check_forward_with(p: Matmul, variant: Option<MatmulVariant>, seed: u64) {
    let mut rng = Rng::new(seed);
    let (ea, eb, ec) = p.footprint();
    let a = rng.vec(ea as usize);
    let b = rng.vec(eb as usize);
    let bias = rng.vec(p.n as usize);
    let c0 = rng.vec(ec as usize);
    let (da, db, dbias) = (upload(&a), upload(&b), upload(&bias));
    let dc = upload(&c0);
    let bias_buf = p.bias.then_some(&*dbias);
    let d = match variant {
        Some(v) => p.prepare_variant(gpu(), v, &da, &db, bias_buf, &dc),
        None => p.prepare(gpu(), &da, &db, bias_buf, &dc),
    }
    .expect("prepare");
    run(&[&d]);
    let got = download(&dc, ec as usize);
    let want = reference::matmul::matmul(&p, &a, &b, p.bias.then_some(&bias[..]), &c0);
    let tol = 1e-5 * (p.k as f32).sqrt();
    assert_close(
        &format!("matmul {p:?} ({variant:?})"),
        &got,
        &want,
        tol,
        tol,
    );
}

#[test]
fn forward_awkward_sizes_and_all_transposes() {
    let shapes = [
        (1, 1, 1),
        (1, 7, 3),
        (5, 1, 9),
        (17, 13, 31),
        (33, 65, 7),
        (64, 64, 64),
        (100, 37, 129),
    ];
    for (i, &(m, n, k)) in shapes.iter().enumerate() {
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            let mut p = Matmul::new(m, n, k);
            p.trans_a = ta;
            p.trans_b = tb;
            check_forward(p, i as u64 * 10 + ta as u64 * 2 + tb as u64);
        }
    }
}

#[test]
fn forward_batched_broadcast_bias_relu_accumulate() {
    check_forward(Matmul::new(9, 11, 5).batched(3), 1);
    check_forward(
        Matmul::new(9, 11, 5).batched(4).broadcast_b().transpose_b(),
        2,
    );
    check_forward(Matmul::new(23, 19, 40).with_bias(), 3);
    check_forward(
        Matmul::new(23, 19, 40)
            .with_bias()
            .with_relu()
            .transpose_b(),
        4,
    );
    check_forward(Matmul::new(6, 10, 3).accumulating(), 5);
    check_forward(
        Matmul::new(6, 10, 3)
            .batched(2)
            .transpose_a()
            .accumulating()
            .with_relu(),
        6,
    );
}

/// Shapes that take the vec4 path (K % 4 == 0, and M or N as the transposes need),
/// including partial blocks at the edges of M and N.
#[test]
fn forward_vec4_path_all_transposes() {
    let shapes = [
        (4, 4, 4),
        (36, 44, 28),
        (68, 12, 20),
        (8, 100, 64),
        (132, 36, 8),
    ];
    for (i, &(m, n, k)) in shapes.iter().enumerate() {
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            let mut p = Matmul::new(m, n, k).batched(2);
            p.trans_a = ta;
            p.trans_b = tb;
            assert!(p.vec4_eligible(), "{p:?}");
            check_forward(p, 200 + i as u64);
            check_forward(p.with_bias().with_relu(), 300 + i as u64);
            check_forward(p.accumulating(), 400 + i as u64);
        }
    }
}

/// Every kernel variant the adapter offers (on lavapipe: scalar, vec4 and the four
/// subgroup tile heights) on shapes with partial tiles at every edge, all transposes,
/// batches, broadcast B, and each epilogue.
#[test]
fn every_variant_matches_the_reference() {
    // (m, n, k): m is a multiple of 4 where A is transposed (the vec4 conditions).
    let shapes = [
        (4, 4, 4),
        (12, 36, 8),
        (44, 20, 12),
        (76, 68, 36),
        (140, 36, 16),
    ];
    let mut tried = std::collections::BTreeSet::new();
    for (i, &(m, n, k)) in shapes.iter().enumerate() {
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            let mut p = Matmul::new(m, n, k).batched(2);
            p.trans_a = ta;
            p.trans_b = tb;
            let seed = 500 + 10 * i as u64 + 2 * ta as u64 + tb as u64;
            for v in p.variants(gpu()) {
                tried.insert(v.to_string());
                check_forward_with(p, Some(v), seed);
                check_forward_with(p.with_bias().with_relu(), Some(v), seed + 1);
                check_forward_with(p.accumulating(), Some(v), seed + 2);
                check_forward_with(p.broadcast_b(), Some(v), seed + 3);
            }
        }
    }
    eprintln!("variants checked: {tried:?}");
    assert!(tried.contains("vec4"), "{tried:?}");
    // An M that is not a multiple of 4 with A untransposed, and N not a multiple of 4
    // with B transposed: still vec4-eligible, edge rows and columns clamp.
    for p in [
        Matmul::new(37, 40, 12),
        Matmul::new(40, 37, 12).transpose_b(),
    ] {
        for v in p.variants(gpu()) {
            check_forward_with(p, Some(v), 600);
        }
    }
}

/// A variant that does not apply is an error, not a wrong result.
#[test]
fn inapplicable_variant_is_refused() {
    let p = Matmul::new(5, 7, 3);
    assert_eq!(
        p.variants(gpu()),
        vec![MatmulVariant::Scalar, MatmulVariant::Tiled]
    );
    let buf = upload(&[0.0f32; 64]);
    let out = upload(&[0.0f32; 64]);
    let Err(err) = p.prepare_variant(gpu(), MatmulVariant::Vec4, &buf, &buf, None, &out) else {
        panic!("vec4 on K = 3 must be refused");
    };
    assert!(err.to_string().contains("does not apply"), "{err}");
}

#[test]
fn forward_large_enough_to_span_many_workgroups() {
    check_forward(Matmul::new(257, 300, 150), 7);
}

/// Loss L = Σ C ⊙ G for a fixed G, so dL/dC = G and dL/dA, dL/dB follow from the
/// backward products. Checks (1) the reference backward against central differences
/// of the reference forward in f64, and (2) the GPU backward against the reference.
fn check_backward(p: Matmul, seed: u64) {
    let mut rng = Rng::new(seed);
    let (ea, eb, ec) = p.footprint();
    let a = rng.vec(ea as usize);
    let b = rng.vec(eb as usize);
    let g = rng.vec(ec as usize);
    let zeros_a = vec![0.0; ea as usize];
    let zeros_b = vec![0.0; eb as usize];
    let (ga_p, gb_p) = (p.grad_a(false), p.grad_b(false));
    let ref_ga = if p.trans_a {
        reference::matmul::matmul(&ga_p, &b, &g, None, &zeros_a)
    } else {
        reference::matmul::matmul(&ga_p, &g, &b, None, &zeros_a)
    };
    let ref_gb = if p.trans_b {
        reference::matmul::matmul(&gb_p, &g, &a, None, &zeros_b)
    } else {
        reference::matmul::matmul(&gb_p, &a, &g, None, &zeros_b)
    };

    // (1) Finite differences in f64 of L(A, B) = Σ (A·B) ⊙ G. The product is bilinear,
    // so the central difference is exact up to rounding: a tight tolerance holds.
    let zeros_c = vec![0.0; ec as usize];
    let loss = |a: &[f32], b: &[f32]| -> f64 {
        let c = reference::matmul::matmul(&p, a, b, None, &zeros_c);
        c.iter().zip(&g).map(|(&c, &g)| c as f64 * g as f64).sum()
    };
    let h = 1e-2f32;
    for idx in [0, ea as usize / 2, ea as usize - 1] {
        let (mut ap, mut am) = (a.clone(), a.clone());
        ap[idx] += h;
        am[idx] -= h;
        let fd = (loss(&ap, &b) - loss(&am, &b)) / (2.0 * h as f64);
        assert!(
            (fd - ref_ga[idx] as f64).abs() < 1e-3 * (1.0 + fd.abs()),
            "dA[{idx}]: fd {fd} vs {}",
            ref_ga[idx]
        );
    }
    for idx in [0, eb as usize / 2, eb as usize - 1] {
        let (mut bp, mut bm) = (b.clone(), b.clone());
        bp[idx] += h;
        bm[idx] -= h;
        let fd = (loss(&a, &bp) - loss(&a, &bm)) / (2.0 * h as f64);
        assert!(
            (fd - ref_gb[idx] as f64).abs() < 1e-3 * (1.0 + fd.abs()),
            "dB[{idx}]: fd {fd} vs {}",
            ref_gb[idx]
        );
    }

    // (2) GPU backward against the reference.
    let (da, db, dg) = (upload(&a), upload(&b), upload(&g));
    let (dga, dgb) = (output(ea as usize), output(eb as usize));
    let k1 = p
        .prepare_grad_a(gpu(), &dg, &db, &dga, false)
        .expect("grad_a");
    let k2 = p
        .prepare_grad_b(gpu(), &da, &dg, &dgb, false)
        .expect("grad_b");
    run(&[&k1, &k2]);
    let tol = 1e-5 * ((p.m.max(p.n).max(p.k)) as f32).sqrt();
    assert_close(
        &format!("matmul grad_a {p:?}"),
        &download(&dga, ea as usize),
        &ref_ga,
        tol,
        tol,
    );
    assert_close(
        &format!("matmul grad_b {p:?}"),
        &download(&dgb, eb as usize),
        &ref_gb,
        tol,
        tol,
    );
}

#[test]
fn backward_all_transposes_and_batches() {
    for (i, (ta, tb)) in [(false, false), (true, false), (false, true), (true, true)]
        .into_iter()
        .enumerate()
    {
        // The last two take the subgroup kernels where the adapter has them.
        let shapes = [
            (1, 1, 1, 1),
            (7, 5, 3, 1),
            (13, 9, 21, 2),
            (33, 17, 8, 3),
            (68, 12, 8, 1),
            (200, 4, 8, 1),
        ];
        for &(m, n, k, batch) in &shapes {
            let mut p = Matmul::new(m, n, k).batched(batch);
            p.trans_a = ta;
            p.trans_b = tb;
            check_backward(p, 100 + i as u64);
        }
    }
}

#[test]
fn bad_shapes_are_errors_not_panics() {
    let small = upload(&[0.0; 4]);
    let big = upload(&[0.0; 64]);
    let out = upload(&[0.0; 64]);
    let err = Matmul::new(16, 16, 16)
        .prepare(gpu(), &small, &big, None, &out)
        .unwrap_err()
        .to_string();
    assert!(err.contains("binding `a`") && err.contains("1024"), "{err}");
    let err = Matmul::new(0, 8, 8)
        .prepare(gpu(), &big, &big, None, &small)
        .unwrap_err()
        .to_string();
    assert!(err.contains("positive"), "{err}");
    let err = Matmul::new(2, 2, 2)
        .prepare(gpu(), &big, &big, None, &big)
        .unwrap_err()
        .to_string();
    assert!(err.contains("same buffer"), "{err}");
    let err = Matmul::new(2, 2, 2)
        .with_bias()
        .prepare(gpu(), &big, &small, None, &big)
        .unwrap_err()
        .to_string();
    assert!(err.contains("bias"), "{err}");
}
