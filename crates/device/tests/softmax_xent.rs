//! Softmax cross-entropy against the f64 reference on awkward sizes (1 to 1000 classes,
//! 1 to 64 rows, and a grid wider than one row per class), huge logits, exact argmax,
//! ranks and hit counts, ties, invalid labels, the reference gradient against finite
//! differences of the mean loss, and parameter errors.

mod common;

use common::*;
use wgtrain_device::PooledBuffer;
use wgtrain_device::kernels::softmax_xent::{
    SoftmaxCrossEntropy, SoftmaxXentBuffers, check_labels,
};
use wgtrain_device::reference::softmax_xent::{SoftmaxXentOutputs, softmax_xent as reference};

/// Everything the kernel writes, downloaded.
struct GpuOutputs {
    dlogits: Vec<f32>,
    row_loss: Vec<f32>,
    argmax: Vec<u32>,
    label_rank: Vec<u32>,
    loss: f32,
    correct: Vec<u32>,
}

fn u32_output(len: usize) -> PooledBuffer {
    upload_u32(&vec![0xdead_beef; len.max(1)])
}

fn run_gpu(p: SoftmaxCrossEntropy, logits: &[f32], labels: &[u32], grad: bool) -> GpuOutputs {
    let (n, elems) = (p.n as usize, logits.len());
    let (bl, blab) = (upload(logits), upload_u32(labels));
    let (dlogits, row_loss, loss) = (output(elems), output(n), output(1));
    let (argmax, label_rank, correct) = (u32_output(n), u32_output(n), u32_output(2));
    let buffers = SoftmaxXentBuffers {
        logits: &bl,
        labels: &blab,
        dlogits: grad.then_some(&*dlogits),
        row_loss: &row_loss,
        argmax: &argmax,
        label_rank: &label_rank,
        loss: &loss,
        correct: &correct,
    };
    let ks = p.prepare(gpu(), &buffers).expect("prepare");
    run(&ks.iter().collect::<Vec<_>>());
    let g = gpu();
    GpuOutputs {
        dlogits: download(&dlogits, elems),
        row_loss: download(&row_loss, n),
        argmax: g.download(&argmax, n).expect("download"),
        label_rank: g.download(&label_rank, n).expect("download"),
        loss: download(&loss, 1)[0],
        correct: g.download(&correct, 2).expect("download"),
    }
}

fn narrow(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

fn random_case(p: SoftmaxCrossEntropy, spread: f32, seed: u64) -> (Vec<f32>, Vec<u32>) {
    let mut rng = Rng::new(seed);
    let logits = rng
        .vec((p.n * p.classes) as usize)
        .iter()
        .map(|v| v * spread)
        .collect();
    let labels = (0..p.n).map(|_| rng.below(p.classes)).collect();
    (logits, labels)
}

/// GPU against the reference: losses and gradient within f32 tolerances (the logsumexp
/// of `classes` terms loses about log2(classes) bits, scaled by the logits' magnitude),
/// argmax, ranks and counts exactly.
fn check(p: SoftmaxCrossEntropy, logits: &[f32], labels: &[u32], scale: f32) -> SoftmaxXentOutputs {
    let wide: Vec<f64> = logits.iter().map(|&v| v as f64).collect();
    let want = reference(&p, &wide, labels);
    let got = run_gpu(p, logits, labels, true);
    let tol = 4e-6 * (p.classes as f32).log2().max(1.0) * scale.max(1.0);
    let name = format!("softmax_xent n {} classes {}", p.n, p.classes);
    assert_close(
        &format!("{name} row_loss"),
        &got.row_loss,
        &narrow(&want.row_loss),
        tol,
        tol,
    );
    assert_close(
        &format!("{name} loss"),
        &[got.loss],
        &[want.loss as f32],
        tol,
        tol,
    );
    let gtol = tol / p.n as f32;
    assert_close(
        &format!("{name} dlogits"),
        &got.dlogits,
        &narrow(&want.dlogits),
        tol,
        gtol,
    );
    assert_eq!(got.argmax, want.argmax, "{name} argmax");
    assert_eq!(got.label_rank, want.label_rank, "{name} label_rank");
    assert_eq!(got.correct, [want.top1, want.top5], "{name} top-1, top-5");
    want
}

#[test]
fn awkward_sizes_match_the_reference() {
    let mut seed = 0;
    for classes in [1, 2, 3, 10, 33, 257, 1000] {
        for n in [1, 7, 64] {
            seed += 1;
            let p = SoftmaxCrossEntropy::new(n, classes);
            let (logits, labels) = random_case(p, 4.0, seed);
            check(p, &logits, &labels, 4.0);
        }
    }
}

#[test]
fn many_rows_and_few_classes() {
    // More rows (workgroups) than one grid dimension holds: the grid spreads over y.
    let p = SoftmaxCrossEntropy::new(70_001, 10);
    let (logits, labels) = random_case(p, 3.0, 99);
    let want = check(p, &logits, &labels, 3.0);
    assert!(
        want.top1 > 0 && want.top5 > want.top1,
        "counts exercised: {want:?}"
    );
}

#[test]
fn huge_logits_stay_finite() {
    for (classes, n) in [(2, 7), (10, 64), (1000, 7)] {
        let p = SoftmaxCrossEntropy::new(n, classes);
        let (logits, labels) = random_case(p, 1e4, 200 + classes as u64);
        let got = run_gpu(p, &logits, &labels, true);
        assert!(got.loss.is_finite() && got.row_loss.iter().all(|v| v.is_finite()));
        assert!(
            got.dlogits.iter().all(|v| v.is_finite()),
            "classes {classes}: gradient"
        );
        // The f32 inputs themselves carry an absolute error of ~1e4 · 2^-24 per logit.
        check(p, &logits, &labels, 1e4);
    }
}

#[test]
fn ties_pick_the_first_index() {
    // Every row constant: argmax 0, the label's rank is its index, the loss log(classes).
    let p = SoftmaxCrossEntropy::new(6, 7);
    let logits = vec![0.25f32; 42];
    let labels = [0, 1, 4, 5, 6, 3];
    let got = run_gpu(p, &logits, &labels, false);
    assert_eq!(got.argmax, [0; 6]);
    assert_eq!(got.label_rank, labels);
    assert_eq!(got.correct, [1, 4]);
    let ln7 = (7.0f32).ln();
    assert_close("constant rows loss", &[got.loss], &[ln7], 1e-6, 0.0);
    // Without a gradient, dlogits is left as it was (NaN here).
    assert!(got.dlogits.iter().all(|v| v.is_nan()));
}

#[test]
fn invalid_labels_poison_their_row_and_the_mean() {
    let p = SoftmaxCrossEntropy::new(4, 5);
    let (logits, mut labels) = random_case(p, 2.0, 300);
    labels[2] = 5;
    let err = check_labels(&labels, 5).unwrap_err().to_string();
    assert!(
        err.contains("label 5 of row 2") && err.contains("5 classes"),
        "{err}"
    );
    let got = run_gpu(p, &logits, &labels, true);
    assert!(got.loss.is_nan() && got.row_loss[2].is_nan());
    assert!(got.dlogits[10..15].iter().all(|v| v.is_nan()));
    assert!(
        got.dlogits[..10]
            .iter()
            .chain(&got.dlogits[15..])
            .all(|v| v.is_finite())
    );
    assert_eq!(got.label_rank[2], u32::MAX);
    // The reference agrees: NaN in the same places, the other rows close.
    let wide: Vec<f64> = logits.iter().map(|&v| v as f64).collect();
    let want = reference(&p, &wide, &labels);
    assert!(want.loss.is_nan() && want.row_loss[2].is_nan() && want.dlogits[12].is_nan());
    let (got_rows, want_rows) = (&got.row_loss, narrow(&want.row_loss));
    let valid = [0, 1, 3];
    let pick = |v: &[f32]| valid.iter().map(|&r| v[r]).collect::<Vec<_>>();
    assert_close(
        "invalid label, valid rows",
        &pick(got_rows),
        &pick(&want_rows),
        1e-5,
        1e-5,
    );
    assert_eq!(got.correct, [want.top1, want.top5]);
    assert!(check_labels(&[0, 4, 1], 5).is_ok());
}

/// The reference gradient of the mean loss against central differences of the
/// reference loss, all in f64 (h = 1e-5: truncation ~h², rounding ~1e-16/h).
#[test]
fn gradient_matches_finite_differences() {
    for (n, classes) in [(1, 1), (1, 2), (3, 10), (7, 5)] {
        let p = SoftmaxCrossEntropy::new(n, classes);
        let (logits, labels) = random_case(p, 3.0, 400 + classes as u64);
        let x: Vec<f64> = logits.iter().map(|&v| v as f64).collect();
        let grad = reference(&p, &x, &labels).dlogits;
        let h = 1e-5;
        for i in 0..x.len() {
            let (mut xp, mut xm) = (x.clone(), x.clone());
            xp[i] += h;
            xm[i] -= h;
            let fd =
                (reference(&p, &xp, &labels).loss - reference(&p, &xm, &labels).loss) / (2.0 * h);
            assert!(
                (fd - grad[i]).abs() < 1e-9,
                "n {n} classes {classes} d[{i}]: fd {fd} vs {}",
                grad[i]
            );
        }
    }
}

#[test]
fn bad_params_are_errors_not_panics() {
    let small = upload(&[0.0; 4]);
    let (a, b, c, d) = (output(4), output(4), output(4), output(4));
    let (e, f) = (output(4), output(4));
    let buffers = |logits| SoftmaxXentBuffers {
        logits,
        labels: &a,
        dlogits: None,
        row_loss: &b,
        argmax: &c,
        label_rank: &d,
        loss: &e,
        correct: &f,
    };
    let p = SoftmaxCrossEntropy::new(0, 10);
    let err = p.prepare(gpu(), &buffers(&small)).unwrap_err().to_string();
    assert!(err.contains("n 0 classes 10"), "{err}");
    let p = SoftmaxCrossEntropy::new(1 << 17, 1 << 16);
    let err = p.prepare(gpu(), &buffers(&small)).unwrap_err().to_string();
    assert!(err.contains("n * classes"), "{err}");
    let p = SoftmaxCrossEntropy::new(2, 1 << 14);
    let err = p.prepare(gpu(), &buffers(&small)).unwrap_err().to_string();
    assert!(err.contains("binding `logits`"), "{err}");
}
