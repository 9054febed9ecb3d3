//! Batch normalisation against the CPU reference: training forward (batch statistics,
//! running-stat updates, fused ReLU), inference forward, and backward, on awkward NHWC
//! shapes from M = 2 to M > 100k and channel counts that are not multiples of 4; the
//! reference backward is checked against f64 central differences of the reference forward.

mod common;

use common::*;
use wgtrain_device::PooledBuffer;
use wgtrain_device::kernels::batchnorm::{
    BatchNorm, BatchNormBackwardBuffers, BatchNormTrainBuffers,
};
use wgtrain_device::reference::batchnorm as reference;

/// Host-side inputs of one batch-norm layer.
struct Inputs {
    x: Vec<f32>,
    gamma: Vec<f32>,
    beta: Vec<f32>,
    running_mean: Vec<f32>,
    running_var: Vec<f32>,
}

impl Inputs {
    /// `x` off-centre (mean ≈ 3) so a variance without a pivot would lose digits; running
    /// var > 0.
    fn random(p: &BatchNorm, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let c = p.c as usize;
        Inputs {
            x: rng
                .vec(p.len() as usize)
                .iter()
                .map(|v| 3.0 + 2.0 * v)
                .collect(),
            gamma: rng.vec(c).iter().map(|v| 1.0 + 0.5 * v).collect(),
            beta: rng.vec(c),
            running_mean: rng.vec(c),
            running_var: rng.vec(c).iter().map(|v| 1.5 + v).collect(),
        }
    }
}

/// Device buffers of the training forward.
struct TrainBuffers {
    x: PooledBuffer,
    gamma: PooledBuffer,
    beta: PooledBuffer,
    running_mean: PooledBuffer,
    running_var: PooledBuffer,
    mean: PooledBuffer,
    invstd: PooledBuffer,
    y: PooledBuffer,
}

fn upload_train(p: &BatchNorm, i: &Inputs) -> TrainBuffers {
    TrainBuffers {
        x: upload(&i.x),
        gamma: upload(&i.gamma),
        beta: upload(&i.beta),
        running_mean: upload(&i.running_mean),
        running_var: upload(&i.running_var),
        mean: output(p.c as usize),
        invstd: output(p.c as usize),
        y: output(p.len() as usize),
    }
}

/// Runs the training forward `steps` times on the same buffers, with a caller-provided
/// scratch buffer of exactly `scratch_elems()` (as the graph planner sizes it).
fn run_train(p: &BatchNorm, b: &TrainBuffers, steps: usize) {
    let scratch = output(p.scratch_elems() as usize);
    let buffers = BatchNormTrainBuffers {
        x: &b.x,
        gamma: &b.gamma,
        beta: &b.beta,
        running_mean: &b.running_mean,
        running_var: &b.running_var,
        save_mean: &b.mean,
        save_invstd: &b.invstd,
        y: &b.y,
        scratch: &scratch,
    };
    let dispatches = p
        .prepare_train_with_scratch(gpu(), &buffers)
        .expect("prepare_train_with_scratch");
    assert_eq!(dispatches.len(), 3);
    for _ in 0..steps {
        run(&dispatches.iter().collect::<Vec<_>>());
    }
}

/// Tolerance of per-element results: statistics are f32 sums over `m` rows, whose error
/// grows slowly (two-level chunked sums), so a small floor plus a gentle growth suffices.
fn tol(m: u32) -> f32 {
    5e-6 + 2e-8 * (m as f32).sqrt()
}

fn check_train(p: BatchNorm, seed: u64) {
    let inputs = Inputs::random(&p, seed);
    let b = upload_train(&p, &inputs);
    run_train(&p, &b, 1);
    let want = reference::train_forward(
        &p,
        &inputs.x,
        &inputs.gamma,
        &inputs.beta,
        &inputs.running_mean,
        &inputs.running_var,
    );
    let (c, t) = (p.c as usize, tol(p.m));
    assert_close(
        &format!("bn mean {p:?}"),
        &download(&b.mean, c),
        &want.mean,
        t,
        t,
    );
    assert_close(
        &format!("bn invstd {p:?}"),
        &download(&b.invstd, c),
        &want.invstd,
        t,
        t,
    );
    let got_rm = download(&b.running_mean, c);
    assert_close(
        &format!("bn running_mean {p:?}"),
        &got_rm,
        &want.running_mean,
        t,
        t,
    );
    let got_rv = download(&b.running_var, c);
    assert_close(
        &format!("bn running_var {p:?}"),
        &got_rv,
        &want.running_var,
        t,
        t,
    );
    let got_y = download(&b.y, p.len() as usize);
    assert_close(&format!("bn y {p:?}"), &got_y, &want.y, t, t);
}

#[test]
fn train_forward_awkward_shapes() {
    let shapes = [
        (2, 1, 1, 1),
        (1, 1, 2, 3),
        (1, 2, 1, 67),
        (3, 5, 7, 1),
        (2, 3, 5, 67),
        (4, 7, 7, 3),
    ];
    for (i, &(n, h, w, c)) in shapes.iter().enumerate() {
        check_train(BatchNorm::nhwc(n, h, w, c).unwrap(), i as u64);
    }
    check_train(BatchNorm::nhwc(2, 9, 9, 5).unwrap().with_relu(), 10);
    check_train(
        BatchNorm::nhwc(8, 4, 4, 130)
            .unwrap()
            .with_momentum(0.3)
            .with_eps(1e-3),
        11,
    );
}

/// Columns whose mean is large against their spread (1000 ± 1, -300 ± 1): the one-pass
/// moments are taken about each column's first value, so the variance does not cancel
/// away as E[x²] - E[x]² would. The statistics keep the usual tolerance; `y` gets one
/// for `x - mean` in f32 at |x| ~ 1000 (ulp 6e-5), as any f32 implementation has.
#[test]
fn train_forward_columns_with_large_means() {
    let p = BatchNorm::nhwc(4, 16, 16, 6).unwrap();
    let mut inputs = Inputs::random(&p, 40);
    let c = p.c as usize;
    for (i, v) in inputs.x.iter_mut().enumerate() {
        *v += [1000.0, -300.0, 0.0, 50.0, 1000.0, 5.0][i % c];
    }
    let b = upload_train(&p, &inputs);
    run_train(&p, &b, 1);
    let want = reference::train_forward(
        &p,
        &inputs.x,
        &inputs.gamma,
        &inputs.beta,
        &inputs.running_mean,
        &inputs.running_var,
    );
    let t = tol(p.m);
    for (what, got, want) in [
        ("mean", download(&b.mean, c), &want.mean),
        ("invstd", download(&b.invstd, c), &want.invstd),
        (
            "running_var",
            download(&b.running_var, c),
            &want.running_var,
        ),
    ] {
        assert_close(&format!("bn {what}, large means"), &got, want, t, t);
    }
    let y = download(&b.y, p.len() as usize);
    assert_close("bn y, large means", &y, &want.y, 0.0, 1e-3);
}

#[test]
fn train_forward_large_m() {
    check_train(BatchNorm::nhwc(2, 240, 240, 3).unwrap(), 20);
    check_train(BatchNorm::nhwc(1, 330, 330, 1).unwrap(), 21);
    check_train(BatchNorm::nhwc(4, 64, 64, 7).unwrap(), 22);
}

#[test]
fn running_stats_update_in_place_over_steps_and_results_are_deterministic() {
    let p = BatchNorm::nhwc(3, 11, 13, 19).unwrap().with_momentum(0.25);
    let inputs = Inputs::random(&p, 30);
    let b = upload_train(&p, &inputs);
    run_train(&p, &b, 3);
    let (mut rm, mut rv) = (inputs.running_mean.clone(), inputs.running_var.clone());
    for _ in 0..3 {
        let r = reference::train_forward(&p, &inputs.x, &inputs.gamma, &inputs.beta, &rm, &rv);
        (rm, rv) = (r.running_mean, r.running_var);
    }
    let c = p.c as usize;
    assert_close(
        "bn running_mean after 3 steps",
        &download(&b.running_mean, c),
        &rm,
        1e-5,
        1e-5,
    );
    assert_close(
        "bn running_var after 3 steps",
        &download(&b.running_var, c),
        &rv,
        1e-5,
        1e-5,
    );

    // Same inputs, fresh buffers: bit-identical statistics and output.
    let again = upload_train(&p, &inputs);
    run_train(&p, &again, 1);
    let first = upload_train(&p, &inputs);
    run_train(&p, &first, 1);
    let bits = |b: &PooledBuffer, n: usize| -> Vec<u32> {
        download(b, n).iter().map(|v| v.to_bits()).collect()
    };
    assert_eq!(bits(&first.mean, c), bits(&again.mean, c));
    assert_eq!(bits(&first.invstd, c), bits(&again.invstd, c));
    assert_eq!(
        bits(&first.y, p.len() as usize),
        bits(&again.y, p.len() as usize)
    );
}

#[test]
fn eval_forward_uses_running_stats() {
    for (i, p) in [
        BatchNorm::new(1, 1),
        BatchNorm::nhwc(1, 3, 3, 67).unwrap(),
        BatchNorm::nhwc(2, 5, 5, 6).unwrap().with_relu(),
        BatchNorm::nhwc(3, 50, 50, 5).unwrap(),
    ]
    .into_iter()
    .enumerate()
    {
        let inputs = Inputs::random(&p, 40 + i as u64);
        let b = upload_train(&p, &inputs);
        let d = p
            .prepare_eval(
                gpu(),
                &b.x,
                &b.gamma,
                &b.beta,
                &b.running_mean,
                &b.running_var,
                &b.y,
            )
            .expect("prepare_eval");
        run(&[&d]);
        let want = reference::eval_forward(
            &p,
            &inputs.x,
            &inputs.gamma,
            &inputs.beta,
            &inputs.running_mean,
            &inputs.running_var,
        );
        let got = download(&b.y, p.len() as usize);
        assert_close(&format!("bn eval y {p:?}"), &got, &want, 1e-5, 1e-5);
        let rm = download(&b.running_mean, p.c as usize);
        assert_eq!(
            rm, inputs.running_mean,
            "eval must not touch the running mean"
        );
    }
}

/// GPU backward against the reference, both fed the reference's saved statistics.
fn check_backward(p: BatchNorm, seed: u64) {
    let inputs = Inputs::random(&p, seed);
    let dy = Rng::new(seed + 1000).vec(p.len() as usize);
    let fwd = reference::train_forward(
        &p,
        &inputs.x,
        &inputs.gamma,
        &inputs.beta,
        &inputs.running_mean,
        &inputs.running_var,
    );
    let want = reference::backward(&p, &inputs.x, &dy, &inputs.gamma, &fwd.mean, &fwd.invstd);
    let (c, n) = (p.c as usize, p.len() as usize);
    let (dx, dgamma, dbeta) = (output(n), output(c), output(c));
    let (bx, bdy, bgamma) = (upload(&inputs.x), upload(&dy), upload(&inputs.gamma));
    let (bmean, binvstd) = (upload(&fwd.mean), upload(&fwd.invstd));
    let scratch = output(p.scratch_elems() as usize);
    let buffers = BatchNormBackwardBuffers {
        x: &bx,
        dy: &bdy,
        gamma: &bgamma,
        save_mean: &bmean,
        save_invstd: &binvstd,
        dgamma: &dgamma,
        dbeta: &dbeta,
        dx: &dx,
        scratch: &scratch,
    };
    let dispatches = p
        .prepare_backward_with_scratch(gpu(), &buffers)
        .expect("prepare_backward_with_scratch");
    run(&dispatches.iter().collect::<Vec<_>>());
    // dbeta and dgamma are sums of M terms of size ~1: scale the absolute tolerance.
    let sum_tol = tol(p.m) * (p.m as f32).sqrt();
    assert_close(
        &format!("bn dbeta {p:?}"),
        &download(&dbeta, c),
        &want.dbeta,
        tol(p.m),
        sum_tol,
    );
    let got_dgamma = download(&dgamma, c);
    assert_close(
        &format!("bn dgamma {p:?}"),
        &got_dgamma,
        &want.dgamma,
        tol(p.m),
        sum_tol,
    );
    let t = tol(p.m);
    assert_close(&format!("bn dx {p:?}"), &download(&dx, n), &want.dx, t, t);
}

#[test]
fn backward_awkward_shapes() {
    let shapes = [
        (2, 1, 1, 1),
        (1, 1, 2, 3),
        (1, 2, 1, 67),
        (3, 5, 7, 1),
        (2, 3, 5, 67),
        (5, 6, 7, 9),
    ];
    for (i, &(n, h, w, c)) in shapes.iter().enumerate() {
        check_backward(BatchNorm::nhwc(n, h, w, c).unwrap(), 50 + i as u64);
    }
    check_backward(BatchNorm::nhwc(2, 240, 240, 3).unwrap(), 60);
    check_backward(BatchNorm::nhwc(1, 330, 330, 1).unwrap(), 61);
}

/// L = Σ y ⊙ g. Central differences in f64 of the reference forward against the
/// reference backward for x, gamma and beta. With ReLU, the backward gets g masked by
/// y > 0 (the fused ReLU's backward), and no input sits near a kink for small h.
fn check_finite_differences(p: BatchNorm, seed: u64) {
    let inputs = Inputs::random(&p, seed);
    let w = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<f64>>();
    let (x, gamma, beta) = (w(&inputs.x), w(&inputs.gamma), w(&inputs.beta));
    let g = w(&Rng::new(seed + 7).vec(p.len() as usize));
    let (rm, rv) = (vec![0.0; p.c as usize], vec![1.0; p.c as usize]);
    let loss = |x: &[f64], gamma: &[f64], beta: &[f64]| -> f64 {
        let y = reference::train_forward_f64(&p, x, gamma, beta, &rm, &rv).y;
        y.iter().zip(&g).map(|(y, g)| y * g).sum()
    };
    let fwd = reference::train_forward_f64(&p, &x, &gamma, &beta, &rm, &rv);
    let dy: Vec<f64> = g
        .iter()
        .zip(&fwd.y)
        .map(|(&g, &y)| if p.relu && y <= 0.0 { 0.0 } else { g })
        .collect();
    let grads = reference::backward_f64(&p, &x, &dy, &gamma, &fwd.mean, &fwd.invstd);
    let h = 1e-6;
    let fd = |which: usize, idx: usize| -> f64 {
        let mut args = [x.clone(), gamma.clone(), beta.clone()];
        args[which][idx] += h;
        let up = loss(&args[0], &args[1], &args[2]);
        args[which][idx] -= 2.0 * h;
        let down = loss(&args[0], &args[1], &args[2]);
        (up - down) / (2.0 * h)
    };
    let named = [
        ("dx", &grads.dx),
        ("dgamma", &grads.dgamma),
        ("dbeta", &grads.dbeta),
    ];
    for (which, (name, grad)) in named.into_iter().enumerate() {
        for (idx, &analytic) in grad.iter().enumerate() {
            let numeric = fd(which, idx);
            let err = (numeric - analytic).abs();
            assert!(
                err < 1e-6 * (1.0 + numeric.abs()),
                "{name}[{idx}] {p:?}: fd {numeric} vs {analytic}"
            );
        }
    }
    println!("finite differences agree for {p:?}");
}

#[test]
fn reference_backward_matches_finite_differences() {
    check_finite_differences(BatchNorm::new(2, 1), 70);
    check_finite_differences(BatchNorm::new(6, 3), 71);
    check_finite_differences(BatchNorm::nhwc(2, 3, 2, 5).unwrap(), 72);
    check_finite_differences(BatchNorm::nhwc(2, 3, 2, 5).unwrap().with_relu(), 73);
}

/// The pool-owned convenience path computes the same bits as the caller-scratch path, and
/// a scratch buffer smaller than `scratch_elems()` is an error naming the binding.
#[test]
fn pooled_scratch_path_matches_and_small_scratch_is_an_error() {
    let p = BatchNorm::nhwc(2, 7, 5, 11).unwrap();
    let inputs = Inputs::random(&p, 80);
    let planned = upload_train(&p, &inputs);
    run_train(&p, &planned, 1);
    let pooled = upload_train(&p, &inputs);
    let passes = p
        .prepare_train(
            gpu(),
            &pooled.x,
            &pooled.gamma,
            &pooled.beta,
            &pooled.running_mean,
            &pooled.running_var,
            &pooled.mean,
            &pooled.invstd,
            &pooled.y,
        )
        .expect("prepare_train");
    assert!(passes.scratch_bytes() >= p.scratch_elems() * 4);
    run(&passes.dispatches().iter().collect::<Vec<_>>());
    let n = p.len() as usize;
    let bits =
        |b: &PooledBuffer| -> Vec<u32> { download(b, n).iter().map(|v| v.to_bits()).collect() };
    assert_eq!(bits(&planned.y), bits(&pooled.y));

    let tiny = output(1);
    let buffers = BatchNormTrainBuffers {
        scratch: &tiny,
        x: &planned.x,
        gamma: &planned.gamma,
        beta: &planned.beta,
        running_mean: &planned.running_mean,
        running_var: &planned.running_var,
        save_mean: &planned.mean,
        save_invstd: &planned.invstd,
        y: &planned.y,
    };
    let err = p
        .prepare_train_with_scratch(gpu(), &buffers)
        .unwrap_err()
        .to_string();
    assert!(err.contains("binding `moments`"), "{err}");
}

#[test]
fn bad_params_are_errors_not_panics() {
    let (x, y, c1, c2) = (upload(&[0.0; 64]), output(64), output(8), output(8));
    let (c3, c4, c5, c6) = (
        upload(&[1.0; 8]),
        upload(&[0.0; 8]),
        upload(&[0.0; 8]),
        upload(&[1.0; 8]),
    );
    let train = |p: BatchNorm, x: &wgpu::Buffer| {
        p.prepare_train(gpu(), x, &c3, &c4, &c5, &c6, &c1, &c2, &y)
            .unwrap_err()
            .to_string()
    };
    let err = train(BatchNorm::new(1, 8), &x);
    assert!(
        err.contains("more than one value") && err.contains("M = N·H·W = 1"),
        "{err}"
    );
    let err = train(BatchNorm::new(8, 0), &x);
    assert!(err.contains("positive") && err.contains("C 0"), "{err}");
    let err = train(BatchNorm::new(8, 8).with_eps(0.0), &x);
    assert!(err.contains("eps"), "{err}");
    let err = train(BatchNorm::new(8, 8).with_momentum(1.5), &x);
    assert!(err.contains("momentum") && err.contains("1.5"), "{err}");
    // 16 rows of 8 channels need 512 bytes; x holds 64 floats (256 bytes).
    let err = train(BatchNorm::new(16, 8), &x);
    assert!(err.contains("binding `x`") && err.contains("512"), "{err}");
    let err = BatchNorm::new(8, 8)
        .prepare_eval(gpu(), &x, &c3, &c4, &c5, &c6, &x)
        .unwrap_err()
        .to_string();
    assert!(err.contains("same buffer"), "{err}");
    let err = BatchNorm::nhwc(1 << 16, 1 << 16, 2, 1)
        .unwrap_err()
        .to_string();
    assert!(err.contains("N·H·W"), "{err}");
}

/// Batch norm synchronised across replicas: the rows of `x` split into unequal shards
/// (one "replica" each, M = 1 included), each shard's moments and backward sums from the
/// GPU, combined on the host (`combine_moments`, a plain sum), must give every shard the
/// statistics, `y`, `dx` and — summed over shards — `dgamma`, `dbeta` of the reference
/// over the whole `x`.
#[test]
fn synchronised_shards_equal_the_whole_batch() {
    use wgtrain_device::kernels::batchnorm::combine_moments;
    for (seed, (m, c, cuts)) in [
        (3u32, 1u32, vec![1usize, 2]),
        (57, 67, vec![20, 21, 40]),
        (200, 5, vec![100]),
        (31, 130, vec![1, 16]),
    ]
    .into_iter()
    .enumerate()
    {
        let whole = BatchNorm::new(m, c).with_momentum(0.2);
        let inputs = Inputs::random(&whole, 90 + seed as u64);
        let (m, c) = (m as usize, c as usize);
        let dy: Vec<f32> = Rng::new(7 + seed as u64).vec(m * c);
        let want = reference::train_forward(
            &whole,
            &inputs.x,
            &inputs.gamma,
            &inputs.beta,
            &inputs.running_mean,
            &inputs.running_var,
        );
        let want_bwd = reference::backward(
            &whole,
            &inputs.x,
            &dy,
            &inputs.gamma,
            &want.mean,
            &want.invstd,
        );
        let bounds: Vec<usize> = std::iter::once(0).chain(cuts).chain([m]).collect();
        let shards: Vec<(BatchNorm, std::ops::Range<usize>)> = bounds
            .windows(2)
            .map(|w| {
                (
                    BatchNorm::new((w[1] - w[0]) as u32, c as u32).with_momentum(0.2),
                    w[0]..w[1],
                )
            })
            .collect();
        // Forward: local moments on every shard, combined on the host.
        let stats: Vec<Vec<f32>> = shards
            .iter()
            .map(|(p, rows)| {
                let x = upload(&inputs.x[rows.start * c..rows.end * c]);
                let (scratch, out) = (output(p.scratch_elems() as usize), output(3 * c));
                let d = p.prepare_local_moments(gpu(), &x, &scratch, &out).unwrap();
                run(&d.iter().collect::<Vec<_>>());
                download(&out, 3 * c)
            })
            .collect();
        let global = combine_moments(&stats.iter().map(Vec::as_slice).collect::<Vec<_>>(), c);
        let global_buf = upload(&global);
        let t = tol(m as u32) * 2.0;
        let mut sums = vec![0.0f32; 2 * c];
        let mut per_shard = Vec::new();
        for (p, rows) in &shards {
            let s = rows.start * c..rows.end * c;
            let (x, dyb) = (upload(&inputs.x[s.clone()]), upload(&dy[s.clone()]));
            let b = upload_train(
                p,
                &Inputs {
                    x: inputs.x[s.clone()].to_vec(),
                    ..clone_inputs(&inputs)
                },
            );
            let train = BatchNormTrainBuffers {
                x: &x,
                gamma: &b.gamma,
                beta: &b.beta,
                running_mean: &b.running_mean,
                running_var: &b.running_var,
                save_mean: &b.mean,
                save_invstd: &b.invstd,
                y: &b.y,
                scratch: &global_buf,
            };
            let d = p.prepare_train_global(gpu(), &train, &global_buf).unwrap();
            run(&d.iter().collect::<Vec<_>>());
            let label = format!("sync bn {m}x{c} rows {rows:?}");
            assert_close(
                &format!("{label} mean"),
                &download(&b.mean, c),
                &want.mean,
                t,
                t,
            );
            assert_close(
                &format!("{label} invstd"),
                &download(&b.invstd, c),
                &want.invstd,
                t,
                t,
            );
            assert_close(
                &format!("{label} running_var"),
                &download(&b.running_var, c),
                &want.running_var,
                t,
                t,
            );
            assert_close(
                &format!("{label} y"),
                &download(&b.y, rows.len() * c),
                &want.y[s.clone()],
                t,
                t,
            );
            // Backward, first half: local sums.
            let (scratch, dgamma, dbeta, sums_out, dx) = (
                output(p.scratch_elems() as usize),
                output(c),
                output(c),
                output(2 * c),
                output(rows.len() * c),
            );
            let bwd = BatchNormBackwardBuffers {
                x: &x,
                dy: &dyb,
                gamma: &b.gamma,
                save_mean: &b.mean,
                save_invstd: &b.invstd,
                dgamma: &dgamma,
                dbeta: &dbeta,
                dx: &dx,
                scratch: &scratch,
            };
            let d = p.prepare_backward_local(gpu(), &bwd, &sums_out).unwrap();
            run(&d.iter().collect::<Vec<_>>());
            let local = download(&sums_out, 2 * c);
            assert_eq!(&local[..c], &download(&dbeta, c)[..]);
            assert_eq!(&local[c..], &download(&dgamma, c)[..]);
            sums.iter_mut().zip(&local).for_each(|(a, b)| *a += b);
            per_shard.push((p, rows.clone(), x, dyb, b, dx, scratch, dgamma, dbeta));
        }
        let bt = 20.0 * t;
        assert_close("sync bn dbeta", &sums[..c], &want_bwd.dbeta, bt, bt);
        assert_close("sync bn dgamma", &sums[c..], &want_bwd.dgamma, bt, bt);
        let sums_buf = upload(&sums);
        for (p, rows, x, dyb, b, dx, scratch, dgamma, dbeta) in &per_shard {
            let bwd = BatchNormBackwardBuffers {
                x,
                dy: dyb,
                gamma: &b.gamma,
                save_mean: &b.mean,
                save_invstd: &b.invstd,
                dgamma,
                dbeta,
                dx,
                scratch,
            };
            let d = p
                .prepare_backward_dx_global(gpu(), &bwd, &sums_buf, &global_buf)
                .unwrap();
            run(&[&d]);
            let s = rows.start * c..rows.end * c;
            assert_close(
                "sync bn dx",
                &download(dx, rows.len() * c),
                &want_bwd.dx[s],
                bt,
                bt,
            );
        }
    }
}

fn clone_inputs(i: &Inputs) -> Inputs {
    Inputs {
        x: i.x.clone(),
        gamma: i.gamma.clone(),
        beta: i.beta.clone(),
        running_mean: i.running_mean.clone(),
        running_var: i.running_var.clone(),
    }
}
