//! Pooling against the CPU reference: max (with argmax) and average (both divisor rules)
//! over overlapping, padded, non-square and degenerate windows, forward and backward;
//! global average pooling; every backward reference checked against central differences
//! of its forward reference; bad parameters rejected with a clear error.

mod common;

use common::*;
use wgtrain_device::kernels::pool::{GlobalAvgPool, Pool2d, PoolKind};
use wgtrain_device::reference::pool as reference;

/// Shapes covering AlexNet (3×3 s2, overlapping), ResNet's stem (3×3 s2 p1), plain 2×2
/// s2, non-square windows with unequal strides, 1×1 and whole-input windows, odd channel
/// counts and batch 1, and windows that tile the input exactly (LeNet's 2×2 s2 on 24×24,
/// a 2×3 s(2,3)) whose max backward scatters per window.
fn shapes(kind: PoolKind) -> Vec<Pool2d> {
    let mk = |n, h, w, c, window, stride, pad| match kind {
        PoolKind::Max => Pool2d::max(n, h, w, c, window, stride, pad),
        PoolKind::Avg => Pool2d::avg(n, h, w, c, window, stride, pad),
    };
    let mut odd = mk(2, 9, 10, 5, 3, 1, 1);
    (odd.s, odd.stride_w, odd.pad_w) = (2, 2, 1);
    let mut tall = mk(1, 7, 4, 3, 5, 2, 2);
    (tall.s, tall.stride_w, tall.pad_w) = (1, 1, 0);
    // Windows tiling the input exactly, non-square: max pooling's scatter backward.
    let mut tiles = mk(2, 6, 9, 8, 2, 2, 0);
    (tiles.s, tiles.stride_w) = (3, 3);
    vec![
        mk(2, 13, 13, 5, 3, 2, 0),
        mk(1, 12, 11, 3, 3, 2, 1),
        mk(3, 8, 9, 7, 2, 2, 0),
        mk(1, 1, 1, 1, 1, 1, 0),
        mk(2, 5, 5, 4, 5, 1, 0),
        mk(1, 6, 6, 1, 4, 3, 2),
        odd,
        tall,
        // C % 4 == 0: the vec4 entries (3-D grid).
        mk(1, 24, 24, 16, 2, 2, 0),
        mk(2, 11, 9, 8, 3, 2, 1),
        mk(1, 5, 7, 12, 3, 1, 1),
        mk(3, 8, 8, 260, 2, 2, 0),
        tiles,
    ]
}

fn gpu_forward(p: &Pool2d, x: &[f32]) -> (Vec<f32>, Vec<u32>) {
    let len_y = p.output_len() as usize;
    let (dx_in, dy_out) = (upload(x), output(len_y));
    let argmax = upload_u32(&vec![u32::MAX; len_y]);
    let arg = (p.kind == PoolKind::Max).then_some(&*argmax);
    let d = p
        .prepare_forward(gpu(), &dx_in, &dy_out, arg)
        .expect("prepare forward");
    run(&[&d]);
    let y = download(&dy_out, len_y);
    let a = if arg.is_some() {
        gpu().download::<u32>(&argmax, len_y).expect("download")
    } else {
        vec![]
    };
    (y, a)
}

fn gpu_backward(p: &Pool2d, dy: &[f32], argmax: &[u32]) -> Vec<f32> {
    let len_x = p.input_len() as usize;
    let (d_dy, d_arg, d_dx) = (upload(dy), upload_u32(argmax), output(len_x));
    let arg = (p.kind == PoolKind::Max).then_some(&*d_arg);
    let d = p
        .prepare_backward(gpu(), &d_dy, arg, &d_dx)
        .expect("prepare backward");
    run(&[&d]);
    download(&d_dx, len_x)
}

/// GPU forward and backward against the reference for one shape.
fn check_gpu(p: Pool2d, seed: u64) {
    let mut rng = Rng::new(seed);
    let x = rng.vec(p.input_len() as usize);
    let dy = rng.vec(p.output_len() as usize);
    let (want_y, want_arg) = reference::pool2d_forward(&p, &x);
    let (y, arg) = gpu_forward(&p, &x);
    // Max pooling copies a value: exact. Averages of a few cells: a few ulps.
    assert_close(&format!("pool forward {p:?}"), &y, &want_y, 1e-6, 1e-7);
    assert_eq!(arg, want_arg, "argmax {p:?}");
    let want_dx = reference::pool2d_backward(&p, &dy, Some(&want_arg));
    let dx = gpu_backward(&p, &dy, &want_arg);
    assert_close(&format!("pool backward {p:?}"), &dx, &want_dx, 1e-6, 1e-7);
}

#[test]
fn max_pool_forward_and_backward_match_reference() {
    for (i, p) in shapes(PoolKind::Max).into_iter().enumerate() {
        check_gpu(p, 10 + i as u64);
    }
}

#[test]
fn avg_pool_forward_and_backward_match_reference_for_both_divisors() {
    for (i, mut p) in shapes(PoolKind::Avg).into_iter().enumerate() {
        for include in [true, false] {
            p.count_include_pad = include;
            check_gpu(p, 30 + i as u64);
        }
    }
}

#[test]
fn max_pool_ties_pick_the_first_cell_and_padding_never_wins() {
    // All-negative input with padding: a padded zero must not be chosen. Equal values:
    // the first cell in row-major order wins, on the GPU as in the reference. C = 2 takes
    // the 1-D entry, C = 8 the vec4 one.
    for c in [2, 8] {
        let p = Pool2d::max(1, 4, 4, c, 3, 2, 1);
        let x: Vec<f32> = (0..p.input_len())
            .map(|i| {
                if i % 3 == 0 {
                    -0.5
                } else {
                    -1.0 - (i % 2) as f32
                }
            })
            .collect();
        let (want_y, want_arg) = reference::pool2d_forward(&p, &x);
        let (y, arg) = gpu_forward(&p, &x);
        assert!(y.iter().all(|&v| v < 0.0), "padding leaked into max: {y:?}");
        assert_close("pool forward ties", &y, &want_y, 0.0, 0.0);
        assert_eq!(arg, want_arg);
    }
}

#[test]
fn large_pool_spans_many_workgroups() {
    check_gpu(Pool2d::max(4, 55, 55, 24, 3, 2, 0), 50);
    check_gpu(Pool2d::avg(2, 56, 56, 33, 3, 2, 1), 51);
    check_gpu(Pool2d::avg(2, 56, 56, 32, 3, 2, 1), 52);
    // n·rows beyond the 65535 workgroups of grid z: the 1-D entries take over.
    check_gpu(Pool2d::max(1, 66_000, 2, 4, 1, 1, 0), 53);
    check_gpu(Pool2d::avg(1, 66_000, 2, 4, 1, 1, 0), 54);
}

#[test]
fn global_avg_pool_matches_reference() {
    for (i, &(n, h, w, c)) in [(1, 1, 1, 1), (2, 7, 7, 5), (3, 4, 9, 64), (1, 13, 3, 3)]
        .iter()
        .enumerate()
    {
        let g = GlobalAvgPool::new(n, h, w, c);
        let mut rng = Rng::new(70 + i as u64);
        let x = rng.vec(g.input_len() as usize);
        let dy = rng.vec(g.output_len() as usize);
        let (dx_in, dy_out) = (upload(&x), output(g.output_len() as usize));
        let (d_dy, d_dx) = (upload(&dy), output(g.input_len() as usize));
        let k1 = g.prepare_forward(gpu(), &dx_in, &dy_out).expect("forward");
        let k2 = g.prepare_backward(gpu(), &d_dy, &d_dx).expect("backward");
        run(&[&k1, &k2]);
        let tol = 1e-6 * ((h * w) as f32).sqrt();
        let want_y = reference::global_avg_pool_forward(&g, &x);
        assert_close(
            &format!("global avg forward {g:?}"),
            &download(&dy_out, want_y.len()),
            &want_y,
            tol,
            tol,
        );
        let want_dx = reference::global_avg_pool_backward(&g, &dy);
        assert_close(
            &format!("global avg backward {g:?}"),
            &download(&d_dx, want_dx.len()),
            &want_dx,
            1e-6,
            1e-7,
        );
    }
}

/// Central differences of `L(x) = Σ forward(x) ⊙ g` in f64 at every input element,
/// against `grad`. The step is divided by its f32-rounded size, so the only errors are the
/// outputs' f32 rounding over 2h (pooling is piecewise linear: no truncation error). The
/// step 4e-3 stays below the spacing of [`distinct_values`] for up to 500 elements.
fn check_finite_differences(
    what: &str,
    forward: impl Fn(&[f32]) -> Vec<f32>,
    x: &[f32],
    g: &[f32],
    grad: &[f32],
) {
    let loss = |x: &[f32]| -> f64 {
        forward(x)
            .iter()
            .zip(g)
            .map(|(&y, &g)| y as f64 * g as f64)
            .sum()
    };
    let h = 4e-3f32;
    for i in 0..x.len() {
        let (mut xp, mut xm) = (x.to_vec(), x.to_vec());
        xp[i] += h;
        xm[i] -= h;
        let fd = (loss(&xp) - loss(&xm)) / (xp[i] as f64 - xm[i] as f64);
        let err = (fd - grad[i] as f64).abs();
        assert!(
            err < 2e-4 * (1.0 + fd.abs()),
            "{what}: dx[{i}]: fd {fd} vs reference {}",
            grad[i]
        );
    }
}

/// Distinct values spaced 2/len apart in random order, so that a small step never changes
/// which cell of a window is the maximum.
fn distinct_values(len: usize, rng: &mut Rng) -> Vec<f32> {
    let mut perm: Vec<usize> = (0..len).collect();
    for i in (1..len).rev() {
        perm.swap(i, rng.below(i as u32 + 1) as usize);
    }
    perm.iter()
        .map(|&k| k as f32 * 2.0 / len as f32 - 1.0)
        .collect()
}

#[test]
fn pool_backward_references_match_finite_differences() {
    let small = [
        Pool2d::max(1, 5, 5, 2, 3, 2, 1),
        Pool2d::max(2, 6, 5, 3, 3, 1, 0),
        {
            let mut p = Pool2d::max(1, 7, 6, 2, 3, 2, 1);
            (p.s, p.stride_w, p.pad_w) = (2, 1, 0);
            p
        },
    ];
    for (i, base) in small.into_iter().enumerate() {
        let mut rng = Rng::new(90 + i as u64);
        let x = distinct_values(base.input_len() as usize, &mut rng);
        let g = rng.vec(base.output_len() as usize);
        let (_, argmax) = reference::pool2d_forward(&base, &x);
        let grad = reference::pool2d_backward(&base, &g, Some(&argmax));
        check_finite_differences(
            &format!("{base:?}"),
            |x| reference::pool2d_forward(&base, x).0,
            &x,
            &g,
            &grad,
        );
        for include in [true, false] {
            let p = Pool2d {
                kind: PoolKind::Avg,
                count_include_pad: include,
                ..base
            };
            let grad = reference::pool2d_backward(&p, &g, None);
            check_finite_differences(
                &format!("{p:?}"),
                |x| reference::pool2d_forward(&p, x).0,
                &x,
                &g,
                &grad,
            );
        }
    }
    let gp = GlobalAvgPool::new(2, 3, 4, 3);
    let mut rng = Rng::new(99);
    let (x, g) = (
        rng.vec(gp.input_len() as usize),
        rng.vec(gp.output_len() as usize),
    );
    let grad = reference::global_avg_pool_backward(&gp, &g);
    check_finite_differences(
        "global avg",
        |x| reference::global_avg_pool_forward(&gp, x),
        &x,
        &g,
        &grad,
    );
}

#[test]
fn bad_params_are_errors_not_panics() {
    let buf = upload(&[0.0; 4096]);
    let (y, arg) = (output(4096), upload_u32(&[0; 4096]));
    let err = |p: Pool2d, a: Option<&wgpu::Buffer>| {
        p.prepare_forward(gpu(), &buf, &y, a)
            .unwrap_err()
            .to_string()
    };
    let e = err(Pool2d::max(1, 8, 8, 4, 3, 2, 2), Some(&arg));
    assert!(
        e.contains("padding 2 exceeds half the window height 3"),
        "{e}"
    );
    let e = err(Pool2d::max(1, 2, 8, 4, 5, 1, 1), Some(&arg));
    assert!(
        e.contains("window height 5 exceeds the padded input height 2"),
        "{e}"
    );
    let e = err(Pool2d::max(1, 8, 8, 4, 3, 0, 0), Some(&arg));
    assert!(e.contains("positive"), "{e}");
    let e = err(Pool2d::max(1, 8, 8, 4, 2, 2, 0), None);
    assert!(e.contains("needs an argmax buffer"), "{e}");
    let e = err(Pool2d::avg(1, 8, 8, 4, 2, 2, 0), Some(&arg));
    assert!(e.contains("takes no argmax buffer"), "{e}");
    let e = err(Pool2d::avg(1, 64, 64, 4, 2, 2, 0), None);
    assert!(e.contains("binding `x`"), "{e}");
    let e = GlobalAvgPool::new(0, 2, 2, 2)
        .prepare_forward(gpu(), &buf, &y)
        .unwrap_err()
        .to_string();
    assert!(e.contains("positive"), "{e}");
}
