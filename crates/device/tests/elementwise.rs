//! Elementwise kernels against the f64 reference: add / multiply (out of place and in
//! place), scale, axpy, ReLU and sigmoid forward and backward (sigmoid also at huge |x|),
//! bias add and its column-sum gradient
//! (one and two passes, accumulating or not), on awkward sizes and on a grid large enough
//! to spill into y; backward references checked against finite differences.

mod common;

use common::*;
use wgtrain_device::kernels::elementwise::{Axpy, BiasAdd, Binary, Relu, Scale, Sigmoid};
use wgtrain_device::reference::elementwise as reference;

const SIZES: [u32; 7] = [1, 3, 255, 256, 257, 1000, 70_001];

fn wide(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

fn narrow(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

#[test]
fn add_and_multiply_out_of_place_and_in_place() {
    for (i, &n) in SIZES.iter().enumerate() {
        let mut rng = Rng::new(i as u64);
        let (x, y) = (rng.vec(n as usize), rng.vec(n as usize));
        for p in [Binary::add(n), Binary::multiply(n)] {
            let want = narrow(&reference::binary(&p, &wide(&x), &wide(&y)));
            let (dx, dy, dz) = (upload(&x), upload(&y), output(n as usize));
            let out_of_place = p.prepare(gpu(), &dx, &dy, &dz).expect("prepare");
            let in_place = p
                .prepare_in_place(gpu(), &dx, &dy)
                .expect("prepare in place");
            run(&[&out_of_place, &in_place]);
            // One correctly rounded f32 operation: exact.
            assert_close(
                &format!("{p:?}"),
                &download(&dz, n as usize),
                &want,
                0.0,
                0.0,
            );
            let label = format!("{p:?} in place");
            assert_close(&label, &download(&dx, n as usize), &want, 0.0, 0.0);
        }
    }
}

#[test]
fn scale_and_axpy() {
    for (i, &n) in SIZES.iter().enumerate() {
        let mut rng = Rng::new(10 + i as u64);
        let (x, y) = (rng.vec(n as usize), rng.vec(n as usize));
        let alpha = -1.75 + rng.uniform();
        let scale = Scale { count: n, alpha };
        let axpy = Axpy { count: n, alpha };
        let want_scale = narrow(&reference::scale(&scale, &wide(&x)));
        let want_axpy = narrow(&reference::axpy(&axpy, &wide(&x), &wide(&y)));
        let (dx, dy, ds, dv) = (upload(&x), upload(&y), output(n as usize), upload(&x));
        let k1 = scale.prepare(gpu(), &dx, &ds).expect("scale");
        let k2 = scale.prepare_in_place(gpu(), &dv).expect("scale in place");
        let k3 = axpy.prepare(gpu(), &dx, &dy).expect("axpy");
        run(&[&k1, &k2, &k3]);
        assert_close(
            &format!("{scale:?}"),
            &download(&ds, n as usize),
            &want_scale,
            0.0,
            0.0,
        );
        let got = download(&dv, n as usize);
        assert_close(&format!("{scale:?} in place"), &got, &want_scale, 0.0, 0.0);
        // WGSL's fma need not be fused (lavapipe rounds the product first), so the error is
        // up to an ulp of alpha·x, not of the result.
        let got = download(&dy, n as usize);
        assert_close(&format!("{axpy:?}"), &got, &want_axpy, 1.2e-7, 4e-7);
    }
}

#[test]
fn relu_forward_and_backward() {
    for (i, &n) in SIZES.iter().enumerate() {
        let mut rng = Rng::new(20 + i as u64);
        let mut x = rng.vec(n as usize);
        x[0] = 0.0; // the kink: forward 0, backward 0
        let dy = rng.vec(n as usize);
        let p = Relu { count: n };
        let y = reference::relu(&p, &wide(&x));
        let dx = narrow(&reference::relu_backward(&p, &y, &wide(&dy)));
        let y = narrow(&y);
        let (bx, bdy) = (upload(&x), upload(&dy));
        let (by, bdx, bxi, bdyi) = (
            output(n as usize),
            output(n as usize),
            upload(&x),
            upload(&dy),
        );
        let fwd = p.prepare(gpu(), &bx, &by).expect("relu");
        let fwd_in_place = p.prepare_in_place(gpu(), &bxi).expect("relu in place");
        let bwd = p
            .prepare_backward(gpu(), &by, &bdy, &bdx)
            .expect("relu backward");
        let bwd_in_place = p
            .prepare_backward_in_place(gpu(), &bxi, &bdyi)
            .expect("in place");
        run(&[&fwd, &fwd_in_place, &bwd, &bwd_in_place]);
        let n = n as usize;
        assert_close(&format!("relu {n}"), &download(&by, n), &y, 0.0, 0.0);
        assert_close(
            &format!("relu in place {n}"),
            &download(&bxi, n),
            &y,
            0.0,
            0.0,
        );
        assert_close(
            &format!("relu backward {n}"),
            &download(&bdx, n),
            &dx,
            0.0,
            0.0,
        );
        let label = format!("relu backward in place {n}");
        assert_close(&label, &download(&bdyi, n), &dx, 0.0, 0.0);
    }
}

/// Runs the sigmoid forward (out of place and in place) on `x` and checks both against
/// the reference within `rtol`; outputs below f32's smallest normal may be flushed to 0.
fn check_sigmoid_forward(name: &str, x: &[f32], rtol: f32) -> Vec<f32> {
    let n = x.len();
    let p = Sigmoid { count: n as u32 };
    let want = narrow(&reference::sigmoid(&p, &wide(x)));
    let (bx, by, bxi) = (upload(x), output(n), upload(x));
    let fwd = p.prepare(gpu(), &bx, &by).expect("sigmoid");
    let fwd_in_place = p.prepare_in_place(gpu(), &bxi).expect("sigmoid in place");
    run(&[&fwd, &fwd_in_place]);
    let atol = f32::MIN_POSITIVE;
    let got = download(&by, n);
    assert_close(&format!("sigmoid {name}"), &got, &want, rtol, atol);
    let label = format!("sigmoid in place {name}");
    assert_close(&label, &download(&bxi, n), &want, rtol, atol);
    got
}

#[test]
fn sigmoid_forward_and_backward() {
    for (i, &n) in SIZES.iter().enumerate() {
        let mut rng = Rng::new(90 + i as u64);
        // Spread over [-8, 8): the whole curved part of the sigmoid and both tails.
        let x: Vec<f32> = rng.vec(n as usize).iter().map(|v| 8.0 * v).collect();
        let dy = rng.vec(n as usize);
        // WGSL allows exp(a) an error of 3 + 2·|a| ulp: 19 ulp ≈ 2.3e-6 at |a| = 8, plus
        // the rounding of 1 / (1 + e).
        check_sigmoid_forward(&n.to_string(), &x, 2.5e-6);
        // The backward from the reference's (rounded) output, so it is checked on its
        // own: three roundings of f32 products.
        let p = Sigmoid { count: n };
        let y = narrow(&reference::sigmoid(&p, &wide(&x)));
        let want = narrow(&reference::sigmoid_backward(&p, &wide(&y), &wide(&dy)));
        let (by, bdy, bdx, bdyi) = (upload(&y), upload(&dy), output(n as usize), upload(&dy));
        let bwd = p
            .prepare_backward(gpu(), &by, &bdy, &bdx)
            .expect("backward");
        let bwd_in_place = p
            .prepare_backward_in_place(gpu(), &by, &bdyi)
            .expect("backward in place");
        run(&[&bwd, &bwd_in_place]);
        let n = n as usize;
        let label = format!("sigmoid backward {n}");
        assert_close(&label, &download(&bdx, n), &want, 4e-7, 0.0);
        let label = format!("sigmoid backward in place {n}");
        assert_close(&label, &download(&bdyi, n), &want, 4e-7, 0.0);
    }
}

/// Inputs far beyond where `exp(-x)` overflows f32 (|x| > 88.7) give 1, or 0 up to a
/// subnormal, never NaN or infinity; the derivative there vanishes the same way.
#[test]
fn sigmoid_is_finite_and_saturates_for_huge_inputs() {
    let big = [
        0.0,
        1e-30,
        15.0,
        17.0,
        20.0,
        50.0,
        87.0,
        88.0,
        89.0,
        100.0,
        104.0,
        1e4,
        1e30,
        f32::MAX,
    ];
    let x: Vec<f32> = big.iter().flat_map(|&v| [v, -v]).collect();
    // Where the output is not 0 or 1, |x| <= 104: exp's allowed error is 3 + 2·104 ulp.
    let y = check_sigmoid_forward("huge |x|", &x, 211.0 * f32::EPSILON);
    assert_eq!((y[0], y[1]), (0.5, 0.5));
    for (&a, &s) in x.iter().zip(&y) {
        assert!((0.0..=1.0).contains(&s), "sigmoid({a}) = {s}");
        if a >= 20.0 {
            assert_eq!(s, 1.0, "sigmoid({a})");
        }
        if a <= -88.0 {
            assert!(s < f32::MIN_POSITIVE, "sigmoid({a}) = {s}");
        }
    }
    let p = Sigmoid {
        count: x.len() as u32,
    };
    let (by, bdy, bdx) = (upload(&y), upload(&vec![1.0; x.len()]), output(x.len()));
    let k = p
        .prepare_backward(gpu(), &by, &bdy, &bdx)
        .expect("backward");
    run(&[&k]);
    let dx = download(&bdx, x.len());
    for (&a, &d) in x.iter().zip(&dx) {
        assert!((0.0..=0.25).contains(&d), "sigmoid'({a}) = {d}");
        if a.abs() >= 88.0 {
            assert!(d < f32::MIN_POSITIVE, "sigmoid'({a}) = {d}");
        }
    }
}

/// 65535 · 256 + 5 elements: more workgroups than one grid dimension holds, so the grid
/// spreads over y and the shader must rebuild the flat index from both.
#[test]
fn relu_in_place_on_a_grid_spread_over_y() {
    let n = 65_535 * 256 + 5;
    let mut rng = Rng::new(30);
    let x = rng.vec(n as usize);
    let want: Vec<f32> = x.iter().map(|&v| v.max(0.0)).collect();
    let bx = upload(&x);
    let k = Relu { count: n }
        .prepare_in_place(gpu(), &bx)
        .expect("relu");
    assert!(
        k.workgroups()[1] > 1,
        "grid {:?} did not spill into y",
        k.workgroups()
    );
    run(&[&k]);
    assert_close(
        "relu in place, 2-D grid",
        &download(&bx, n as usize),
        &want,
        0.0,
        0.0,
    );
}

#[test]
fn bias_add_out_of_place_and_in_place() {
    for (i, &(rows, c)) in [(1, 1), (5, 1), (7, 3), (33, 10), (1000, 64), (3, 257)]
        .iter()
        .enumerate()
    {
        let p = BiasAdd::new(rows, c);
        let mut rng = Rng::new(40 + i as u64);
        let x = rng.vec((rows * c) as usize);
        let bias = rng.vec(c as usize);
        let want = narrow(&reference::bias_add(&p, &wide(&x), &wide(&bias)));
        let (bx, bb, by, bxi) = (upload(&x), upload(&bias), output(x.len()), upload(&x));
        let k1 = p.prepare(gpu(), &bx, &bb, &by).expect("bias add");
        let k2 = p
            .prepare_in_place(gpu(), &bxi, &bb)
            .expect("bias add in place");
        run(&[&k1, &k2]);
        assert_close(&format!("{p:?}"), &download(&by, x.len()), &want, 0.0, 0.0);
        assert_close(
            &format!("{p:?} in place"),
            &download(&bxi, x.len()),
            &want,
            0.0,
            0.0,
        );
    }
}

fn check_bias_grad(p: BiasAdd, accumulate: bool, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    let dy = rng.vec((p.rows * p.c) as usize);
    let db0 = if accumulate {
        rng.vec(p.c as usize)
    } else {
        vec![f32::NAN; p.c as usize]
    };
    let zeros = vec![0.0; p.c as usize];
    let start = if accumulate { wide(&db0) } else { zeros };
    let want = narrow(&reference::bias_grad(&p, &wide(&dy), &start));
    let (bdy, bdb) = (upload(&dy), upload(&db0));
    let scratch = output(p.grad_scratch_elems() as usize);
    let ks = p
        .prepare_grad(gpu(), &bdy, Some(&scratch), &bdb, accumulate)
        .expect("bias grad");
    assert_eq!(ks.len(), if p.chunks() > 1 { 2 } else { 1 }, "{p:?}");
    run(&ks.iter().collect::<Vec<_>>());
    let got = download(&bdb, p.c as usize);
    // Rows of values in [-1, 1): the f32 sum's error grows with the chunk lengths.
    let tol = 1e-6 * (p.rows_per_chunk() + p.chunks()) as f32;
    assert_close(
        &format!("bias grad {p:?} accumulate {accumulate}"),
        &got,
        &want,
        tol,
        tol,
    );
    got
}

#[test]
fn bias_grad_one_and_two_passes() {
    let shapes = [
        (1, 1),
        (7, 3),
        (16, 5),
        (17, 5),
        (300, 5),
        (4096, 10),
        (20_000, 3),
        (999, 130),
    ];
    for (i, &(rows, c)) in shapes.iter().enumerate() {
        for accumulate in [false, true] {
            check_bias_grad(BiasAdd::new(rows, c), accumulate, 50 + i as u64);
        }
    }
}

#[test]
fn bias_grad_is_bitwise_deterministic() {
    let p = BiasAdd::new(12_345, 7);
    assert_eq!(check_bias_grad(p, false, 60), check_bias_grad(p, false, 60));
}

/// L = Σ y ⊙ g with y = ReLU(x): the reference backward against central differences in
/// f64 (away from the kink, where the map is linear and the difference exact).
#[test]
fn relu_backward_matches_finite_differences() {
    let n = 50;
    let p = Relu { count: n };
    let mut rng = Rng::new(70);
    let x = wide(&rng.vec(n as usize));
    let g = wide(&rng.vec(n as usize));
    let loss = |x: &[f64]| -> f64 {
        reference::relu(&p, x)
            .iter()
            .zip(&g)
            .map(|(y, g)| y * g)
            .sum()
    };
    let dx = reference::relu_backward(&p, &reference::relu(&p, &x), &g);
    let h = 1e-6;
    for i in (0..n as usize).filter(|&i| x[i].abs() > 2.0 * h) {
        let (mut xp, mut xm) = (x.clone(), x.clone());
        xp[i] += h;
        xm[i] -= h;
        let fd = (loss(&xp) - loss(&xm)) / (2.0 * h);
        assert!(
            (fd - dx[i]).abs() < 1e-8,
            "relu dx[{i}]: fd {fd} vs {}",
            dx[i]
        );
    }
}

/// L = Σ sigmoid(x) ⊙ g: the reference backward, fed the forward output, against central
/// differences in f64 (h = 1e-5: truncation ~h²·|σ'''| ≈ 1e-11, rounding ~1e-16/h).
#[test]
fn sigmoid_backward_matches_finite_differences() {
    for n in [1u32, 7, 50] {
        let p = Sigmoid { count: n };
        let mut rng = Rng::new(75 + n as u64);
        let x: Vec<f64> = rng
            .vec(n as usize)
            .iter()
            .map(|&v| 10.0 * v as f64)
            .collect();
        let g = wide(&rng.vec(n as usize));
        let loss = |x: &[f64]| -> f64 {
            reference::sigmoid(&p, x)
                .iter()
                .zip(&g)
                .map(|(y, g)| y * g)
                .sum()
        };
        let dx = reference::sigmoid_backward(&p, &reference::sigmoid(&p, &x), &g);
        let h = 1e-5;
        for i in 0..n as usize {
            let (mut xp, mut xm) = (x.clone(), x.clone());
            xp[i] += h;
            xm[i] -= h;
            let fd = (loss(&xp) - loss(&xm)) / (2.0 * h);
            assert!(
                (fd - dx[i]).abs() < 1e-9,
                "sigmoid dx[{i}] at x {}: fd {fd} vs {}",
                x[i],
                dx[i]
            );
        }
    }
}

/// L = Σ (x + bias) ⊙ g: dL/dbias is the column sum of g, and dL/dx = g.
#[test]
fn bias_grad_matches_finite_differences() {
    for &(rows, c) in &[(1, 1), (9, 4), (40, 3)] {
        let p = BiasAdd::new(rows, c);
        let mut rng = Rng::new(80 + rows as u64);
        let x = wide(&rng.vec((rows * c) as usize));
        let bias = wide(&rng.vec(c as usize));
        let g = wide(&rng.vec((rows * c) as usize));
        let loss = |b: &[f64]| -> f64 {
            reference::bias_add(&p, &x, b)
                .iter()
                .zip(&g)
                .map(|(y, g)| y * g)
                .sum()
        };
        let db = reference::bias_grad(&p, &g, &vec![0.0; c as usize]);
        let h = 1e-3;
        for j in 0..c as usize {
            let (mut bp, mut bm) = (bias.clone(), bias.clone());
            bp[j] += h;
            bm[j] -= h;
            let fd = (loss(&bp) - loss(&bm)) / (2.0 * h);
            assert!(
                (fd - db[j]).abs() < 1e-9 * (1.0 + fd.abs()),
                "db[{j}]: fd {fd} vs {}",
                db[j]
            );
        }
    }
}

#[test]
fn bad_params_are_errors_not_panics() {
    let small = upload(&[0.0; 4]);
    let big = upload(&[0.0; 64]);
    let out = upload(&[0.0; 64]);
    let err = Binary::add(0)
        .prepare(gpu(), &big, &big, &out)
        .unwrap_err()
        .to_string();
    assert!(err.contains("positive"), "{err}");
    let err = Binary::add(1 << 16)
        .prepare(gpu(), &small, &big, &out)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("binding `x`") && err.contains("262144"),
        "{err}"
    );
    let err = Relu { count: 8 }
        .prepare(gpu(), &big, &big)
        .unwrap_err()
        .to_string();
    assert!(err.contains("same buffer"), "{err}");
    let err = Sigmoid { count: 0 }
        .prepare_backward(gpu(), &big, &big, &out)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("sigmoid backward") && err.contains("positive"),
        "{err}"
    );
    let err = BiasAdd::new(4, 0)
        .prepare(gpu(), &big, &big, &out)
        .unwrap_err()
        .to_string();
    assert!(err.contains("C 0"), "{err}");
    let p = BiasAdd::new(1000, 4);
    assert!(p.grad_scratch_elems() > 0);
    let err = p
        .prepare_grad(gpu(), &small, None, &out, false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("scratch"), "{err}");
}
