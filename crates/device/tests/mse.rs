//! The quadratic cost against the f64 reference on awkward sizes (1 to 1000 classes, 1 to
//! 64 rows, and more rows than one grid dimension holds), a hand-computed case that pins
//! the formula (and its difference from PyTorch's `MSELoss`), exact ranks and hit counts,
//! ties, invalid labels, bitwise determinism, the reference gradient against finite
//! differences of the mean cost, and parameter errors.

mod common;

use common::*;
use wgtrain_device::PooledBuffer;
use wgtrain_device::kernels::mse::{MeanSquaredError, MseBuffers};
use wgtrain_device::reference::mse::{MseOutputs, mse as reference};

/// Everything the kernel writes, downloaded.
struct GpuOutputs {
    dpred: Vec<f32>,
    row_loss: Vec<f32>,
    label_rank: Vec<u32>,
    loss: f32,
    correct: Vec<u32>,
}

fn u32_output(len: usize) -> PooledBuffer {
    upload_u32(&vec![0xdead_beef; len.max(1)])
}

fn run_gpu(p: MeanSquaredError, pred: &[f32], labels: &[u32], grad: bool) -> GpuOutputs {
    let (n, elems) = (p.n as usize, pred.len());
    let (bp, blab) = (upload(pred), upload_u32(labels));
    let (dpred, row_loss, loss) = (output(elems), output(n), output(1));
    let (label_rank, correct) = (u32_output(n), u32_output(2));
    let buffers = MseBuffers {
        pred: &bp,
        labels: &blab,
        dpred: grad.then_some(&*dpred),
        row_loss: &row_loss,
        label_rank: &label_rank,
        loss: &loss,
        correct: &correct,
    };
    let ks = p.prepare(gpu(), &buffers).expect("prepare");
    run(&ks.iter().collect::<Vec<_>>());
    let g = gpu();
    GpuOutputs {
        dpred: download(&dpred, elems),
        row_loss: download(&row_loss, n),
        label_rank: g.download(&label_rank, n).expect("download"),
        loss: download(&loss, 1)[0],
        correct: g.download(&correct, 2).expect("download"),
    }
}

fn wide(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

fn narrow(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

/// Predictions uniform in `[centre - spread, centre + spread)` and random labels.
fn random_case(p: MeanSquaredError, centre: f32, spread: f32, seed: u64) -> (Vec<f32>, Vec<u32>) {
    let mut rng = Rng::new(seed);
    let pred = rng
        .vec((p.n * p.classes) as usize)
        .iter()
        .map(|v| centre + v * spread)
        .collect();
    let labels = (0..p.n).map(|_| rng.below(p.classes)).collect();
    (pred, labels)
}

/// GPU against the reference: the costs within f32 summation tolerances (a sum of
/// `classes` squares, then of `n` rows, each in a tree of depth log2), the gradient to a
/// couple of roundings, ranks and counts exactly.
fn check(p: MeanSquaredError, pred: &[f32], labels: &[u32]) -> MseOutputs {
    let want = reference(&p, &wide(pred), labels);
    let got = run_gpu(p, pred, labels, true);
    let depth = |k: u32| (k as f32).log2().max(1.0);
    let tol = 2e-7 * (depth(p.classes) + depth(p.n));
    let name = format!("mse n {} classes {}", p.n, p.classes);
    let row_loss = narrow(&want.row_loss);
    assert_close(
        &format!("{name} row_loss"),
        &got.row_loss,
        &row_loss,
        tol,
        0.0,
    );
    assert_close(
        &format!("{name} loss"),
        &[got.loss],
        &[want.loss as f32],
        tol,
        0.0,
    );
    // y - onehot and the division by n: two roundings (WGSL's division may be 2.5 ulp).
    let dpred = narrow(&want.dpred);
    assert_close(&format!("{name} dpred"), &got.dpred, &dpred, 4e-7, 0.0);
    assert_eq!(got.label_rank, want.label_rank, "{name} label_rank");
    assert_eq!(got.correct, [want.top1, want.top5], "{name} top-1, top-5");
    want
}

#[test]
fn awkward_sizes_match_the_reference() {
    let mut seed = 0;
    for classes in [1, 2, 3, 10, 33, 257, 1000] {
        for n in [1, 7, 64] {
            let p = MeanSquaredError::new(n, classes);
            // Sigmoid outputs in (0, 1), and unbounded ones (a linear output layer).
            for (centre, spread) in [(0.5, 0.5), (0.0, 4.0)] {
                seed += 1;
                let (pred, labels) = random_case(p, centre, spread, seed);
                check(p, &pred, &labels);
            }
        }
    }
}

#[test]
fn many_rows_and_few_classes() {
    // More rows (workgroups) than one grid dimension holds: the grid spreads over y.
    let p = MeanSquaredError::new(70_001, 10);
    let (pred, labels) = random_case(p, 0.5, 0.5, 99);
    let want = check(p, &pred, &labels);
    assert!(
        want.top1 > 0 && want.top5 > want.top1,
        "counts exercised: top-1 {} top-5 {}",
        want.top1,
        want.top5
    );
}

/// Two rows of three classes, worked by hand. Squared residuals: row 0 (label 0)
/// 0.25 + 0.04 + 0.01 = 0.30, row 1 (label 1) 0.01 + 0.01 + 0.09 = 0.11; the cost is
/// (0.30 + 0.11) / (2·2) = 0.1025. PyTorch's `MSELoss()` on the one-hot targets would
/// give 0.41 / 6 ≈ 0.0683 instead (mean over all N·classes elements, no ½).
#[test]
fn hand_computed_textbook_cost() {
    let p = MeanSquaredError::new(2, 3);
    let pred = [0.5, 0.2, 0.1, 0.1, 0.9, 0.3];
    let got = run_gpu(p, &pred, &[0, 1], true);
    assert_close("hand row_loss", &got.row_loss, &[0.15, 0.055], 2e-7, 0.0);
    assert_close("hand loss", &[got.loss], &[0.1025], 2e-7, 0.0);
    let dpred = [-0.25, 0.1, 0.05, 0.05, -0.05, 0.15];
    assert_close("hand dpred", &got.dpred, &dpred, 3e-7, 0.0);
    assert_eq!(got.label_rank, [0, 0]);
    assert_eq!(got.correct, [2, 2]);
}

#[test]
fn ties_pick_the_first_index() {
    // Every row constant 0.25: the label's rank is its index; each row's cost is
    // ½ (6 · 0.25² + 0.75²) = 0.46875, exactly representable.
    let p = MeanSquaredError::new(6, 7);
    let pred = vec![0.25f32; 42];
    let labels = [0, 1, 4, 5, 6, 3];
    let got = run_gpu(p, &pred, &labels, false);
    assert_eq!(got.label_rank, labels);
    assert_eq!(got.correct, [1, 4]);
    assert_eq!(got.row_loss, [0.46875; 6]);
    assert_eq!(got.loss, 0.46875);
    // Without a gradient, dpred is left as it was (NaN here).
    assert!(got.dpred.iter().all(|v| v.is_nan()));
}

#[test]
fn invalid_labels_poison_their_row_and_the_mean() {
    let p = MeanSquaredError::new(4, 5);
    let (pred, mut labels) = random_case(p, 0.5, 0.5, 300);
    labels[2] = 5;
    let got = run_gpu(p, &pred, &labels, true);
    assert!(got.loss.is_nan() && got.row_loss[2].is_nan());
    assert!(got.dpred[10..15].iter().all(|v| v.is_nan()));
    assert!(
        got.dpred[..10]
            .iter()
            .chain(&got.dpred[15..])
            .all(|v| v.is_finite())
    );
    assert_eq!(got.label_rank[2], u32::MAX);
    // The reference agrees: NaN in the same places, the other rows close.
    let want = reference(&p, &wide(&pred), &labels);
    assert!(want.loss.is_nan() && want.row_loss[2].is_nan() && want.dpred[12].is_nan());
    let want_rows = narrow(&want.row_loss);
    let valid = [0, 1, 3];
    let pick = |v: &[f32]| valid.iter().map(|&r| v[r]).collect::<Vec<_>>();
    let label = "invalid label, valid rows";
    assert_close(label, &pick(&got.row_loss), &pick(&want_rows), 1e-6, 0.0);
    assert_eq!(got.correct, [want.top1, want.top5]);
}

#[test]
fn results_are_bitwise_deterministic() {
    let p = MeanSquaredError::new(5_000, 10);
    let (pred, labels) = random_case(p, 0.5, 0.5, 500);
    let (a, b) = (
        run_gpu(p, &pred, &labels, true),
        run_gpu(p, &pred, &labels, true),
    );
    assert_eq!(a.loss.to_bits(), b.loss.to_bits());
    assert_eq!(a.row_loss, b.row_loss);
    assert_eq!(a.dpred, b.dpred);
}

/// The reference gradient of the mean cost against central differences of the
/// reference cost, all in f64. The cost is quadratic, so central differences are exact
/// up to rounding (~1e-16/h).
#[test]
fn gradient_matches_finite_differences() {
    for (n, classes) in [(1, 1), (1, 2), (3, 10), (7, 5)] {
        let p = MeanSquaredError::new(n, classes);
        let (pred, labels) = random_case(p, 0.0, 3.0, 400 + classes as u64);
        let x = wide(&pred);
        let grad = reference(&p, &x, &labels).dpred;
        let h = 1e-4;
        for i in 0..x.len() {
            let (mut xp, mut xm) = (x.clone(), x.clone());
            xp[i] += h;
            xm[i] -= h;
            let fd =
                (reference(&p, &xp, &labels).loss - reference(&p, &xm, &labels).loss) / (2.0 * h);
            assert!(
                (fd - grad[i]).abs() < 1e-10,
                "n {n} classes {classes} d[{i}]: fd {fd} vs {}",
                grad[i]
            );
        }
    }
}

#[test]
fn bad_params_are_errors_not_panics() {
    let small = upload(&[0.0; 4]);
    let (a, b, c, d, e) = (output(4), output(4), output(4), output(4), output(4));
    let buffers = |pred| MseBuffers {
        pred,
        labels: &a,
        dpred: None,
        row_loss: &b,
        label_rank: &c,
        loss: &d,
        correct: &e,
    };
    let p = MeanSquaredError::new(0, 10);
    let err = p.prepare(gpu(), &buffers(&small)).unwrap_err().to_string();
    assert!(err.contains("n 0 classes 10"), "{err}");
    let p = MeanSquaredError::new(1 << 17, 1 << 16);
    let err = p.prepare(gpu(), &buffers(&small)).unwrap_err().to_string();
    assert!(err.contains("n * classes"), "{err}");
    let p = MeanSquaredError::new(2, 1 << 14);
    let err = p.prepare(gpu(), &buffers(&small)).unwrap_err().to_string();
    assert!(err.contains("binding `pred`"), "{err}");
}
