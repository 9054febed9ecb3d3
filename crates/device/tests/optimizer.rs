//! Optimizer updates against the PyTorch formulas of the f64 reference, over several
//! steps with a learning-rate schedule written into the uniform between steps: SGD with
//! every momentum / dampening / Nesterov / weight-decay combination, Adam and AdamW, at
//! awkward lengths; and PyTorch's parameter validation.

mod common;

use common::*;
use wgtrain_device::kernels::optimizer::{Adam, DcAsgd, Sgd};
use wgtrain_device::reference::optimizer as reference;

const STEPS: u32 = 5;

fn widen(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

fn narrow(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

/// A decaying schedule, so every step after the first rewrites the uniform's lr.
fn schedule(lr: f32, step: u32) -> f32 {
    lr * 0.8f32.powi(step as i32 - 1)
}

fn check_sgd(p: Sgd, steps: u32, seed: u64) {
    let mut rng = Rng::new(seed);
    let n = p.count as usize;
    let param0 = rng.vec(n);
    let dparam = upload(&param0);
    let dgrad = output(n);
    // NaN: PyTorch's first step ignores (creates) the buffer, so must the kernel.
    let dbuf = (p.momentum != 0.0).then(|| output(n));
    let update = p
        .prepare(gpu(), &dparam, &dgrad, dbuf.as_deref())
        .expect("prepare sgd");
    let (mut param, mut buf) = (widen(&param0), vec![0.0; n]);
    for step in 1..=steps {
        let grad = rng.vec(n);
        gpu().write(&dgrad, &grad);
        let lr = schedule(p.lr, step);
        // A fresh dispatch holds step 1 at p.lr: only later steps need a rewrite.
        if step > 1 {
            p.write_step(gpu(), &update, step, lr).expect("write_step");
        }
        run(&[&update]);
        reference::sgd_step(&p, step, lr, &mut param, &grad, &mut buf);
    }
    let what = format!("sgd param n={n} {p:?}");
    assert_close(&what, &download(&dparam, n), &narrow(&param), 2e-6, 2e-6);
    if let Some(dbuf) = &dbuf {
        assert_close(
            &format!("sgd momentum_buf n={n}"),
            &download(dbuf, n),
            &narrow(&buf),
            2e-6,
            2e-6,
        );
    }
}

#[test]
fn sgd_matches_reference_over_steps() {
    let combos = [
        Sgd::new(0, 0.1),
        Sgd::new(0, 0.1).with_weight_decay(0.05),
        Sgd::new(0, 0.1).with_momentum(0.9),
        Sgd::new(0, 0.1)
            .with_momentum(0.9)
            .with_dampening(0.3)
            .with_weight_decay(0.01),
        Sgd::new(0, 0.1).with_momentum(0.8).with_nesterov(),
        Sgd::new(0, 0.05)
            .with_momentum(0.9)
            .with_nesterov()
            .with_weight_decay(0.1),
    ];
    for (i, combo) in combos.into_iter().enumerate() {
        for count in [1, 3, 1000, 4099] {
            check_sgd(Sgd { count, ..combo }, STEPS, 10 * i as u64 + count as u64);
        }
    }
}

struct AdamRun {
    param: Vec<f32>,
    exp_avg: Vec<f32>,
    exp_avg_sq: Vec<f32>,
}

/// `steps` GPU steps of `p` from seeded inputs; checked against the reference.
fn run_adam(p: Adam, steps: u32, seed: u64) -> AdamRun {
    let mut rng = Rng::new(seed);
    let n = p.count as usize;
    let param0 = rng.vec(n);
    let (dparam, dgrad) = (upload(&param0), output(n));
    let (dm, dv) = (upload(&vec![0.0; n]), upload(&vec![0.0; n]));
    let update = p
        .prepare(gpu(), &dparam, &dgrad, &dm, &dv)
        .expect("prepare adam");
    let (mut param, mut m, mut v) = (widen(&param0), vec![0.0; n], vec![0.0; n]);
    for step in 1..=steps {
        let grad = rng.vec(n);
        gpu().write(&dgrad, &grad);
        let lr = schedule(p.lr, step);
        if step > 1 {
            p.write_step(gpu(), &update, step, lr).expect("write_step");
        }
        run(&[&update]);
        reference::adam_step(&p, step, lr, &mut param, &grad, &mut m, &mut v);
    }
    let got = AdamRun {
        param: download(&dparam, n),
        exp_avg: download(&dm, n),
        exp_avg_sq: download(&dv, n),
    };
    let name = if p.decoupled { "adamw" } else { "adam" };
    assert_close(
        &format!("{name} param n={n} {p:?}"),
        &got.param,
        &narrow(&param),
        2e-6,
        2e-6,
    );
    assert_close(
        &format!("{name} exp_avg n={n}"),
        &got.exp_avg,
        &narrow(&m),
        2e-6,
        1e-7,
    );
    assert_close(
        &format!("{name} exp_avg_sq n={n}"),
        &got.exp_avg_sq,
        &narrow(&v),
        2e-6,
        1e-9,
    );
    got
}

#[test]
fn adam_and_adamw_match_reference_over_steps() {
    let combos = [
        Adam::new(0, 0.01),
        Adam::new(0, 0.01).with_weight_decay(0.1),
        Adam::new(0, 0.02).with_betas(0.5, 0.9).with_eps(1e-3),
        Adam::adamw(0, 0.01),
        Adam::adamw(0, 0.01)
            .with_weight_decay(0.3)
            .with_betas(0.0, 0.5),
    ];
    for (i, combo) in combos.into_iter().enumerate() {
        for count in [1, 3, 1000, 4099] {
            run_adam(
                Adam { count, ..combo },
                STEPS,
                100 + 10 * i as u64 + count as u64,
            );
        }
    }
}

#[test]
fn adam_and_adamw_differ_only_with_weight_decay() {
    let n = 513;
    let decayed_adam = run_adam(Adam::new(n, 0.01).with_weight_decay(0.1), 3, 7);
    let decayed_adamw = run_adam(Adam::adamw(n, 0.01).with_weight_decay(0.1), 3, 7);
    let diff = decayed_adam
        .param
        .iter()
        .zip(&decayed_adamw.param)
        .map(|(a, b)| (a - b).abs());
    let max_diff = diff.fold(0.0f32, f32::max);
    assert!(
        max_diff > 1e-4,
        "Adam and AdamW with weight decay 0.1 agree to {max_diff}"
    );

    let plain_adam = run_adam(Adam::new(n, 0.01), 3, 7);
    let plain_adamw = run_adam(Adam::adamw(n, 0.01).with_weight_decay(0.0), 3, 7);
    assert_eq!(
        plain_adam.param, plain_adamw.param,
        "without weight decay they are the same"
    );
}

#[test]
fn long_parameter_vectors() {
    let count = 1_000_003;
    check_sgd(
        Sgd::new(count, 0.1)
            .with_momentum(0.9)
            .with_nesterov()
            .with_weight_decay(0.01),
        3,
        1,
    );
    run_adam(Adam::adamw(count, 0.01), 3, 2);
}

#[test]
fn bad_params_are_errors_not_panics() {
    let (w, g, s1, s2) = (upload(&[0.0; 8]), upload(&[0.0; 8]), output(8), output(8));
    let sgd =
        |p: Sgd, buf: Option<&wgpu::Buffer>| p.prepare(gpu(), &w, &g, buf).unwrap_err().to_string();
    let adam = |p: Adam| p.prepare(gpu(), &w, &g, &s1, &s2).unwrap_err().to_string();
    let expect = |err: String, words: &[&str]| {
        assert!(
            words.iter().all(|w| err.contains(w)),
            "{err:?} should contain {words:?}"
        );
    };
    expect(sgd(Sgd::new(8, -0.1), None), &["learning rate", "-0.1"]);
    expect(sgd(Sgd::new(8, f32::NAN), None), &["learning rate", "NaN"]);
    expect(
        sgd(Sgd::new(8, 0.1).with_nesterov(), None),
        &["Nesterov", "momentum 0"],
    );
    let damped = Sgd::new(8, 0.1)
        .with_momentum(0.9)
        .with_dampening(0.1)
        .with_nesterov();
    expect(sgd(damped, Some(&s1)), &["Nesterov", "dampening 0.1"]);
    expect(
        sgd(Sgd::new(8, 0.1).with_momentum(-0.5), None),
        &["momentum", "-0.5"],
    );
    expect(
        sgd(Sgd::new(8, 0.1).with_weight_decay(-1.0), None),
        &["weight_decay", "-1"],
    );
    expect(
        sgd(Sgd::new(8, 0.1).with_momentum(0.9), None),
        &["momentum buffer", "not given"],
    );
    expect(
        sgd(Sgd::new(8, 0.1), Some(&s1)),
        &["momentum buffer", "given"],
    );
    expect(sgd(Sgd::new(0, 0.1), None), &["count", "positive"]);
    expect(adam(Adam::new(8, -1.0)), &["Adam:", "learning rate"]);
    expect(
        adam(Adam::new(8, 0.1).with_betas(1.0, 0.999)),
        &["beta parameter at index 0", "1"],
    );
    expect(
        adam(Adam::adamw(8, 0.1).with_betas(0.9, -0.1)),
        &["AdamW", "index 1", "-0.1"],
    );
    expect(adam(Adam::new(8, 0.1).with_eps(-1e-8)), &["epsilon"]);
    expect(
        adam(Adam::adamw(8, 0.1).with_weight_decay(-0.01)),
        &["weight_decay"],
    );
    // 128 parameters need 512 bytes; the buffers hold 8 floats (256 bytes pooled).
    expect(adam(Adam::new(128, 0.1)), &["binding `param`", "512"]);
    let ok = Adam::new(8, 0.1);
    expect(
        ok.uniform_bytes(0, 0.1).unwrap_err().to_string(),
        &["step 0"],
    );
    expect(
        ok.uniform_bytes(1, -2.0).unwrap_err().to_string(),
        &["learning rate", "-2"],
    );
    let update = ok.prepare(gpu(), &w, &g, &s1, &s2).expect("valid adam");
    let wrong = Sgd::new(8, 0.1)
        .write_step(gpu(), &update, 2, 0.1)
        .unwrap_err()
        .to_string();
    expect(wrong, &["uniform buffer of 32 bytes"]);
}

/// With a non-finite slot, every update counts its gradient's NaN and ±Inf elements into
/// that slot of a shared counts buffer (after the step of many updates), and updates
/// exactly as without counting.
#[test]
fn updates_count_nonfinite_gradient_elements() {
    let n = 1000usize;
    let mut rng = Rng::new(77);
    let mut grad = rng.vec(n);
    for (i, bad) in [
        (3, f32::NAN),
        (400, f32::INFINITY),
        (999, f32::NEG_INFINITY),
    ] {
        grad[i] = bad;
    }
    let clean = rng.vec(n);
    // Three updates, counting into slots 2, 0 and 1 of one buffer.
    let counts = upload_u32(&[5, 5, 5]);
    gpu().write(&counts, &[0u32, 0, 0]);
    let sgd = Sgd {
        nonfinite_slot: Some(2),
        ..Sgd::new(n as u32, 0.1)
    };
    let momentum = Sgd {
        nonfinite_slot: Some(0),
        ..Sgd::new(n as u32, 0.1).with_momentum(0.9)
    };
    let adam = Adam {
        nonfinite_slot: Some(1),
        ..Adam::adamw(n as u32, 0.01)
    };
    let (p1, p2, p3) = (
        upload(&rng.vec(n)),
        upload(&rng.vec(n)),
        upload(&rng.vec(n)),
    );
    let (g_bad, g_clean) = (upload(&grad), upload(&clean));
    let (buf, m, v) = (output(n), output(n), output(n));
    let d1 = sgd
        .prepare_counting(gpu(), &p1, &g_bad, None, Some(&counts))
        .unwrap();
    let d2 = momentum
        .prepare_counting(gpu(), &p2, &g_clean, Some(&buf), Some(&counts))
        .unwrap();
    let d3 = adam
        .prepare_counting(gpu(), &p3, &g_bad, &m, &v, Some(&counts))
        .unwrap();
    run(&[&d1, &d2, &d3]);
    let got: Vec<u32> = gpu().download(&counts, 3).unwrap();
    assert_eq!(got, vec![0, 3, 3]);

    // The counting update computes what the plain one does.
    let clean_param = rng.vec(n);
    let (a, b) = (upload(&clean_param), upload(&clean_param));
    let counting = Sgd {
        nonfinite_slot: Some(0),
        ..Sgd::new(n as u32, 0.1).with_weight_decay(0.01)
    };
    let plain = Sgd::new(n as u32, 0.1).with_weight_decay(0.01);
    let da = counting
        .prepare_counting(gpu(), &a, &g_clean, None, Some(&counts))
        .unwrap();
    let db = plain.prepare(gpu(), &b, &g_clean, None).unwrap();
    run(&[&da, &db]);
    assert_eq!(download(&a, n), download(&b, n));

    // A slot without a buffer (or the reverse) is an error, not a panic.
    assert!(counting.prepare(gpu(), &a, &g_clean, None).is_err());
    assert!(
        plain
            .prepare_counting(gpu(), &a, &g_clean, None, Some(&counts))
            .is_err()
    );
}

/// One DC-ASGD update on the GPU: `param` after it, `ms` (when adaptive) and `vel` (with
/// a momentum).
fn run_dc(
    p: &DcAsgd,
    param: &[f32],
    grad: &[f32],
    backup: &[f32],
    ms: &[f32],
    vel: &[f32],
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (w, g, b, m, v) = (
        upload(param),
        upload(grad),
        upload(backup),
        upload(ms),
        upload(vel),
    );
    let d = p
        .prepare(
            gpu(),
            &w,
            &g,
            &b,
            p.adaptive.map(|_| &*m),
            (p.momentum > 0.0).then_some(&*v),
        )
        .unwrap();
    run(&[&d]);
    (
        download(&w, param.len()),
        download(&m, ms.len()),
        download(&v, vel.len()),
    )
}

/// Hand-computed steps, with w = [1, −2], g = [0.5, 1], w_bak = [0.5, −1], lr 0.1:
/// DC-ASGD-c, λ = 2: g + λ·g²·(w − w_bak) = [0.5 + 2·0.25·0.5, 1 + 2·1·(−1)] = [0.75, −1],
/// so w = [1 − 0.075, −2 + 0.1] = [0.925, −1.9].
/// DC-ASGD-a, λ0 = 2, m = 0.95, eps = 1e-7, ms = 0: ms = 0.05·g² = [0.0125, 0.05],
/// λ = 2/√(ms + eps) = [17.888536, 8.944263], the bracket [2.736067, −7.944263], so
/// w = [0.7263933, −1.2055737].
#[test]
fn dc_asgd_hand_computed_steps() {
    let (w, g, b) = ([1.0f32, -2.0], [0.5f32, 1.0], [0.5f32, -1.0]);
    let c = DcAsgd::new(2, 0.1, 2.0);
    let (got, _, _) = run_dc(&c, &w, &g, &b, &[0.0; 2], &[0.0; 1]);
    assert_close("dc-asgd-c", &got, &[0.925, -1.9], 1e-6, 1e-6);
    let a = DcAsgd {
        adaptive: Some((0.95, 1e-7)),
        ..c
    };
    let (got, ms, _) = run_dc(&a, &w, &g, &b, &[0.0; 2], &[0.0; 1]);
    assert_close("dc-asgd-a ms", &ms, &[0.0125, 0.05], 1e-6, 1e-6);
    assert_close("dc-asgd-a", &got, &[0.7263933, -1.2055737], 1e-6, 1e-6);
}

/// λ = 0 is plain asynchronous SGD: the same bits as the SGD kernel.
#[test]
fn dc_asgd_without_compensation_is_sgd() {
    let mut rng = Rng::new(5);
    let n = 1031;
    let (w, g, b) = (rng.vec(n), rng.vec(n), rng.vec(n));
    let dc = DcAsgd::new(n as u32, 0.07, 0.0);
    let (got, _, _) = run_dc(&dc, &w, &g, &b, &[0.0; 1], &[0.0; 1]);
    let (param, grad) = (upload(&w), upload(&g));
    let sgd = Sgd::new(n as u32, 0.07)
        .prepare(gpu(), &param, &grad, None)
        .unwrap();
    run(&[&sgd]);
    assert_eq!(got, download(&param, n));
}

/// Both variants against the f64 reference over several pushes with changing backups,
/// on a length that is no multiple of the workgroup.
#[test]
fn dc_asgd_matches_reference_over_pushes() {
    let variants = [
        (None, 0.0, false, 0.0),
        (Some((0.95f32, 1e-7f32)), 0.0, false, 0.0),
        (None, 0.9, false, 1e-3),
        (Some((0.95, 1e-7)), 0.9, true, 5e-4),
    ];
    for (adaptive, momentum, nesterov, weight_decay) in variants {
        let mut rng = Rng::new(11);
        let n = 4099;
        let p = DcAsgd {
            adaptive,
            momentum,
            nesterov,
            weight_decay,
            ..DcAsgd::new(n as u32, 0.05, 0.8)
        };
        let mut w = rng.vec(n);
        let (mut ms, mut vel) = (vec![0.0f32; n], vec![0.0f32; n]);
        let (mut want_w, mut want_ms, mut want_vel) = (widen(&w), vec![0.0f64; n], vec![0.0f64; n]);
        for _ in 0..4 {
            let (g, b) = (rng.vec(n), rng.vec(n));
            let (got_w, got_ms, got_vel) = run_dc(&p, &w, &g, &b, &ms, &vel);
            reference::dc_asgd_step(&p, &mut want_w, &g, &b, &mut want_ms, &mut want_vel);
            let what = format!("dc-asgd {p:?}");
            assert_close(&what, &got_w, &narrow(&want_w), 1e-5, 1e-5);
            if adaptive.is_some() {
                assert_close(&what, &got_ms, &narrow(&want_ms), 1e-5, 1e-6);
            }
            if momentum > 0.0 {
                assert_close(&what, &got_vel, &narrow(&want_vel), 1e-5, 1e-5);
            }
            (w, ms, vel) = (got_w, got_ms, got_vel);
            (want_w, want_ms, want_vel) = (widen(&w), widen(&ms), widen(&vel));
        }
    }
    let x = upload(&[0.0; 4]);
    let bad = DcAsgd::new(4, 0.1, -1.0);
    let err = bad
        .prepare(gpu(), &x, &x, &x, None, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("invalid lambda"), "{err}");
    let no_velocity = DcAsgd {
        momentum: 0.9,
        ..DcAsgd::new(4, 0.1, 0.0)
    };
    let err = no_velocity
        .prepare(gpu(), &x, &x, &x, None, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("velocity"), "{err}");
}

/// With a momentum and λ = 0, the server's update is `torch.optim.SGD`'s with the same
/// momentum over the same gradient sequence (the velocity starting at zero is PyTorch's
/// first step), to the last bit.
#[test]
fn dc_asgd_with_momentum_is_sgd_with_momentum() {
    let mut rng = Rng::new(17);
    let n = 777;
    let w0 = rng.vec(n);
    for nesterov in [false, true] {
        let dc = DcAsgd {
            momentum: 0.9,
            nesterov,
            weight_decay: 1e-2,
            ..DcAsgd::new(n as u32, 0.03, 0.0)
        };
        let sgd = Sgd {
            weight_decay: 1e-2,
            nesterov,
            ..Sgd::new(n as u32, 0.03).with_momentum(0.9)
        };
        let (w_dc, vel, back) = (upload(&w0), upload(&vec![0.0f32; n]), upload(&w0));
        let (w_sgd, buf) = (upload(&w0), upload(&vec![0.0f32; n]));
        for step in 1..=3u32 {
            let g = upload(&rng.vec(n));
            let a = dc
                .prepare(gpu(), &w_dc, &g, &back, None, Some(&vel))
                .unwrap();
            let b = sgd.prepare(gpu(), &w_sgd, &g, Some(&buf)).unwrap();
            sgd.write_step(gpu(), &b, step, 0.03).unwrap();
            run(&[&a, &b]);
            assert_eq!(download(&w_dc, n), download(&w_sgd, n), "step {step}");
        }
    }
}
