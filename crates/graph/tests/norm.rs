//! Batch norm, local response norm and dropout as graph ops: gradients against finite
//! differences through composite graphs (incl. a fused BN + ReLU on NHWC data), forward
//! results against the device crate's CPU reference, running statistics in training and
//! evaluation, dropout seeding, and shape errors naming the layer.

mod common;

use common::*;
use wgtrain_graph::device::kernels::batchnorm::BatchNorm as BnKernel;
use wgtrain_graph::device::kernels::dropout::Dropout as DropoutKernel;
use wgtrain_graph::device::reference::{batchnorm as bn_ref, dropout as dropout_ref};
use wgtrain_graph::ops::dropout::{Dropout, layer_seed};
use wgtrain_graph::ops::elementwise::Reshape;
use wgtrain_graph::ops::norm::{BatchNorm, LocalResponseNorm};
use wgtrain_graph::{
    Feed, Graph, GraphError, Init, Mode, Optimizer, Rng, Session, StepInfo, TensorType, Training,
    Value,
};

const STEP: StepInfo = StepInfo {
    step: 1,
    lr: 0.0,
    seed: 0,
};

/// A PyTorch `Linear` in scope `name`: `x [N, inputs] → [N, outputs]`.
fn linear(g: &mut Graph, name: &str, x: Value, outputs: usize, bias: bool) -> Value {
    let inputs = g.ty(x).shape[1];
    g.scoped(name, |g| {
        let w = g.param(
            "weight",
            &[outputs, inputs],
            Init::KaimingUniform { fan_in: inputs },
        )?;
        let b = if bias {
            Some(g.param("bias", &[outputs], Init::TorchDefault { fan_in: inputs })?)
        } else {
            None
        };
        g.linear(x, w, b)
    })
    .unwrap()
}

/// Inputs `x [n, features]` and `labels [n]`.
fn inputs(g: &mut Graph, n: usize, features: usize) -> (Value, Value) {
    let x = g.input("x", TensorType::f32(&[n, features])).unwrap();
    let y = g.input("labels", TensorType::u32(&[n])).unwrap();
    (x, y)
}

/// Random `x [n, features]` and labels in `0..classes`.
fn batch(n: usize, features: usize, classes: u32, seed: u64) -> (Vec<f32>, Vec<u32>) {
    let mut rng = Rng::new(seed);
    (
        uniform(&mut rng, n * features),
        labels(&mut rng, n, classes),
    )
}

/// Gradient check of `training` (plain SGD, so nothing moves) on a random batch.
fn grad_check(g: Graph, training: &Training, n: usize, features: usize, classes: usize) -> f64 {
    let mut session = Session::new(gpu(), g, 5).unwrap();
    session.fix_random_seed(Some(7));
    let (x, y) = batch(n, features, classes as u32, 11);
    let feeds = [
        Feed::f32("x", &[n, features], &x),
        Feed::u32("labels", &[n], &y),
    ];
    check_gradients(&mut session, training, &feeds, 1e-2, 3e-2)
}

/// linear (no bias: batch norm removes it) → batch norm → ReLU → linear → loss, `[N, C]`.
fn bn_mlp(n: usize, features: usize, hidden: usize, classes: usize) -> (Graph, Training) {
    let mut g = Graph::new();
    let (x, y) = inputs(&mut g, n, features);
    let h = linear(&mut g, "fc1", x, hidden, false);
    let h = g.scoped("bn1", |g| g.batch_norm(h)).unwrap();
    let h = g.relu(h).unwrap();
    let logits = linear(&mut g, "fc2", h, classes, true);
    let (loss, _) = g.softmax_cross_entropy(logits, y).unwrap();
    let training = g.minimize(loss, Optimizer::sgd()).unwrap();
    (g, training)
}

#[test]
fn batch_norm_gradients_through_an_mlp() {
    let (g, training) = bn_mlp(12, 9, 7, 5);
    assert!(g.variable_named("bn1.running_var").is_some());
    let worst = grad_check(g, &training, 12, 9, 5);
    println!("batch norm [N, C]: worst relative error {worst:.2e}");
}

/// `x [N, F]` → linear → `[N, H, W, C]` → batch norm → ReLU (fused) → flatten → linear →
/// loss. Returns the graph, its training, and the batch norm's output.
fn bn_nhwc(n: usize, hwc: [usize; 3], features: usize, classes: usize) -> (Graph, Training, Value) {
    let [h, w, c] = hwc;
    let mut g = Graph::new();
    let (x, y) = inputs(&mut g, n, features);
    let z = linear(&mut g, "proj", x, h * w * c, false);
    let z = g
        .apply1(
            Reshape {
                tail: vec![h, w, c],
            },
            &[z],
        )
        .unwrap();
    let bn = g.scoped("bn", |g| g.batch_norm(z)).unwrap();
    let a = g.relu(bn).unwrap();
    let a = g.flatten(a).unwrap();
    let logits = linear(&mut g, "fc", a, classes, true);
    let (loss, _) = g.softmax_cross_entropy(logits, y).unwrap();
    let training = g.minimize(loss, Optimizer::sgd()).unwrap();
    (g, training, bn)
}

#[test]
fn batch_norm_nhwc_with_fused_relu_gradients() {
    let (n, f, classes) = (4, 6, 3);
    let (g, training, _) = bn_nhwc(n, [3, 2, 5], f, classes);
    let worst = grad_check(g, &training, n, f, classes);
    println!("batch norm NHWC + fused ReLU: worst relative error {worst:.2e}");
}

#[test]
fn batch_norm_relu_fuses_and_saves_a_dispatch() {
    let (n, f) = (4, 6);
    let (g, training, bn) = bn_nhwc(n, [3, 2, 5], f, 3);
    let mut session = Session::new(gpu(), g, 5).unwrap();
    let feeds = [
        ("x", TensorType::f32(&[n, f])),
        ("labels", TensorType::u32(&[n])),
    ];
    let fused = session
        .plan_report(Mode::Train, &feeds, &[training.loss], &training.updates)
        .unwrap();
    // Fetching the batch norm's own output keeps the ReLU out of its kernel.
    let unfused = session
        .plan_report(Mode::Train, &feeds, &[training.loss, bn], &training.updates)
        .unwrap();
    println!("fused:   {fused}\nunfused: {unfused}");
    assert!(fused.fused_relus >= 1, "{fused}");
    assert_eq!(unfused.fused_relus + 1, fused.fused_relus);
    assert_eq!(fused.dispatches + 1, unfused.dispatches);
    let eval = session
        .plan_report(Mode::Eval, &feeds, &[training.loss], &[])
        .unwrap();
    assert!(eval.fused_relus >= 1, "{eval}");
}

#[test]
fn local_response_norm_gradients_with_a_large_alpha() {
    let (n, f, classes) = (3, 5, 4);
    let mut g = Graph::new();
    let (x, y) = inputs(&mut g, n, f);
    let z = linear(&mut g, "conv", x, 2 * 2 * 7, true);
    let z = g
        .apply1(
            Reshape {
                tail: vec![2, 2, 7],
            },
            &[z],
        )
        .unwrap();
    let lrn = LocalResponseNorm {
        size: 5,
        alpha: 0.5,
        beta: 0.75,
        k: 2.0,
    };
    let z = g.scoped("lrn", |g| g.local_response_norm(z, lrn)).unwrap();
    let z = g.flatten(z).unwrap();
    let logits = linear(&mut g, "fc", z, classes, true);
    let (loss, _) = g.softmax_cross_entropy(logits, y).unwrap();
    let training = g.minimize(loss, Optimizer::sgd()).unwrap();
    let worst = grad_check(g, &training, n, f, classes);
    println!("local response norm: worst relative error {worst:.2e}");
}

#[test]
fn dropout_gradients_with_a_fixed_seed() {
    let (n, f, classes) = (8, 10, 4);
    let mut g = Graph::new();
    let (x, y) = inputs(&mut g, n, f);
    let h = linear(&mut g, "fc1", x, 16, true);
    let h = g.dropout(h, 0.3).unwrap();
    let h = g.relu(h).unwrap();
    let h = g.dropout(h, 0.5).unwrap();
    let logits = linear(&mut g, "fc2", h, classes, true);
    let (loss, _) = g.softmax_cross_entropy(logits, y).unwrap();
    let training = g.minimize(loss, Optimizer::sgd()).unwrap();
    let worst = grad_check(g, &training, n, f, classes);
    println!("dropout: worst relative error {worst:.2e}");
}

/// A graph `x [shape]` → batch norm (in scope `bn`), with random weight, bias and
/// running statistics written into the session. Returns the session, `y`, and the
/// host copies `(x, gamma, beta, running_mean, running_var)`.
fn bn_session(shape: &[usize], seed: u64) -> (Session, Value, [Vec<f32>; 5]) {
    let mut g = Graph::new();
    let x = g.input("x", TensorType::f32(shape)).unwrap();
    let y = g.scoped("bn", |g| g.batch_norm(x)).unwrap();
    let session = Session::new(gpu(), g, 1).unwrap();
    let c = shape[shape.len() - 1];
    let mut rng = Rng::new(seed);
    let len = shape.iter().product();
    let x: Vec<f32> = uniform(&mut rng, len)
        .iter()
        .map(|v| 2.0 + 3.0 * v)
        .collect();
    let gamma: Vec<f32> = uniform(&mut rng, c).iter().map(|v| 1.0 + 0.5 * v).collect();
    let beta = uniform(&mut rng, c);
    let mean = uniform(&mut rng, c);
    let var: Vec<f32> = uniform(&mut rng, c).iter().map(|v| 1.5 + v).collect();
    for (name, v) in [
        ("bn.weight", &gamma),
        ("bn.bias", &beta),
        ("bn.running_mean", &mean),
        ("bn.running_var", &var),
    ] {
        session.write_variable(name, v).unwrap();
    }
    (session, y, [x, gamma, beta, mean, var])
}

fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol * (1.0 + w.abs()),
            "{what}[{i}]: got {g}, want {w}"
        );
    }
}

#[test]
fn batch_norm_forward_matches_the_reference_in_both_modes() {
    let shape = [3, 5, 4, 7];
    let (mut session, y, [x, gamma, beta, mean, var]) = bn_session(&shape, 21);
    let p = BnKernel::new(3 * 5 * 4, 7);
    let feeds = [Feed::f32("x", &shape, &x)];
    let got = session.run(Mode::Train, &feeds, &[y], &[], STEP).unwrap();
    let want = bn_ref::train_forward(&p, &x, &gamma, &beta, &mean, &var);
    assert_close("train y", &got.f32(y), &want.y, 1e-5);
    let running_mean = session.read_variable("bn.running_mean").unwrap();
    let running_var = session.read_variable("bn.running_var").unwrap();
    assert_close("running_mean", &running_mean, &want.running_mean, 1e-5);
    assert_close("running_var", &running_var, &want.running_var, 1e-5);

    // Evaluation normalises with the (updated) running statistics and leaves them alone.
    let got = session.run(Mode::Eval, &feeds, &[y], &[], STEP).unwrap();
    let want = bn_ref::eval_forward(&p, &x, &gamma, &beta, &running_mean, &running_var);
    assert_close("eval y", &got.f32(y), &want, 1e-5);
    assert_eq!(
        session.read_variable("bn.running_mean").unwrap(),
        running_mean
    );
    assert_eq!(
        session.read_variable("bn.running_var").unwrap(),
        running_var
    );
}

#[test]
fn running_stats_move_in_training_steps_but_not_in_evaluation() {
    let (n, f, classes) = (16, 9, 5);
    let (g, training) = bn_mlp(n, f, 7, classes);
    let mut session = Session::new(gpu(), g, 3).unwrap();
    let (x, y) = batch(n, f, classes as u32, 4);
    let feeds = [Feed::f32("x", &[n, f], &x), Feed::u32("labels", &[n], &y)];
    let stats = |s: &Session| {
        (
            s.read_variable("bn1.running_mean").unwrap(),
            s.read_variable("bn1.running_var").unwrap(),
        )
    };
    let initial = stats(&session);
    assert_eq!(initial, (vec![0.0; 7], vec![1.0; 7]));
    session.train_step(&training, &feeds, 0.1).unwrap();
    let trained = stats(&session);
    assert_ne!(trained.0, initial.0, "running_mean did not move");
    assert_ne!(trained.1, initial.1, "running_var did not move");
    session.evaluate(&training, &feeds).unwrap();
    assert_eq!(
        stats(&session),
        trained,
        "evaluation changed the running stats"
    );
}

/// `x [4, 50]` → two dropout layers of `p = 0.5` on the same input.
fn dropout_graph() -> (Graph, Value, Value, Value) {
    let mut g = Graph::new();
    let x = g.input("x", TensorType::f32(&[4, 50])).unwrap();
    let a = g.dropout(x, 0.5).unwrap();
    let b = g.dropout(x, 0.5).unwrap();
    (g, x, a, b)
}

fn ones() -> Vec<f32> {
    vec![1.0; 200]
}

/// Runs the dropout graph on ones at optimizer step `step`.
fn run_dropout(session: &mut Session, mode: Mode, fetch: &[Value], step: u32) -> Vec<Vec<f32>> {
    let x = ones();
    let info = StepInfo { step, ..STEP };
    let out = session
        .run(mode, &[Feed::f32("x", &[4, 50], &x)], fetch, &[], info)
        .unwrap();
    fetch.iter().map(|&v| out.f32(v)).collect()
}

#[test]
fn dropout_is_the_identity_in_evaluation() {
    let (g, _, a, b) = dropout_graph();
    let mut session = Session::new(gpu(), g, 0).unwrap();
    let feeds = [("x", TensorType::f32(&[4, 50]))];
    let report = session
        .plan_report(Mode::Eval, &feeds, &[a, b], &[])
        .unwrap();
    assert_eq!(report.dispatches, 0, "{report}");
    for y in run_dropout(&mut session, Mode::Eval, &[a, b], 1) {
        assert_eq!(y, ones());
    }
}

#[test]
fn dropout_masks_follow_the_seed_and_differ_between_layers() {
    let (g, _, a, b) = dropout_graph();
    let mut session = Session::new(gpu(), g, 0).unwrap();
    session.fix_random_seed(Some(7));
    let first = run_dropout(&mut session, Mode::Train, &[a, b], 1);
    let again = run_dropout(&mut session, Mode::Train, &[a, b], 2);
    assert_eq!(first, again, "the same fixed seed must give the same masks");
    assert_ne!(first[0], first[1], "two layers share a mask");
    for y in &first {
        assert!(y.iter().all(|&v| v == 0.0 || v == 2.0), "{y:?}");
        let kept = y.iter().filter(|&&v| v != 0.0).count();
        assert!((60..=140).contains(&kept), "kept {kept} of 200 at p = 0.5");
    }
    session.fix_random_seed(Some(8));
    let other = run_dropout(&mut session, Mode::Train, &[a, b], 1);
    assert_ne!(first[0], other[0], "seeds 7 and 8 gave the same mask");
    // Unfixed, the session draws a new seed for a new step.
    session.fix_random_seed(None);
    let step1 = run_dropout(&mut session, Mode::Train, &[a], 1);
    let step2 = run_dropout(&mut session, Mode::Train, &[a], 2);
    assert_ne!(step1, step2, "unfixed seeds must change from step to step");
}

#[test]
fn dropout_forward_matches_the_reference_mask() {
    let mut g = Graph::new();
    let x = g.input("x", TensorType::f32(&[6, 33])).unwrap();
    let y = g.apply1(Dropout { p: 0.3, salt: 42 }, &[x]).unwrap();
    let mut session = Session::new(gpu(), g, 0).unwrap();
    session.fix_random_seed(Some(7));
    let data = uniform(&mut Rng::new(9), 6 * 33);
    let out = session
        .run(
            Mode::Train,
            &[Feed::f32("x", &[6, 33], &data)],
            &[y],
            &[],
            STEP,
        )
        .unwrap();
    let kernel = DropoutKernel::new(6 * 33, 0.3, layer_seed(7, 42));
    assert_eq!(out.f32(y), dropout_ref::dropout_forward(&kernel, &data));
}

#[test]
fn shape_errors_name_the_layer_and_both_shapes() {
    let mut g = Graph::new();
    let x = g.input("x", TensorType::f32(&[8, 4])).unwrap();
    let err = g
        .scoped("features.1", |g| {
            let gamma = g.param("weight", &[5], Init::Constant(1.0))?;
            let beta = g.param("bias", &[4], Init::Constant(0.0))?;
            let c = TensorType::f32(&[4]);
            let mean = g.state("running_mean", c.clone(), Init::Constant(0.0))?;
            let var = g.state("running_var", c, Init::Constant(1.0))?;
            g.apply1(BatchNorm::default(), &[x, gamma, beta, mean, var])
        })
        .unwrap_err();
    assert!(matches!(err, GraphError::Shape { .. }), "{err:?}");
    let msg = err.to_string();
    println!("{msg}");
    for part in ["batch_norm", "features.1", "[5]", "[8, 4]"] {
        assert!(msg.contains(part), "`{part}` missing from: {msg}");
    }

    let v = g.input("v", TensorType::f32(&[8])).unwrap();
    let msg = g
        .scoped("lrn1", |g| {
            g.local_response_norm(v, LocalResponseNorm::alexnet())
        })
        .unwrap_err()
        .to_string();
    println!("{msg}");
    for part in ["local_response_norm", "lrn1", "[8]"] {
        assert!(msg.contains(part), "`{part}` missing from: {msg}");
    }
    let msg = g
        .scoped("bn2", |g| g.batch_norm(v))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("bn2") && msg.contains("[8]"), "{msg}");
}
