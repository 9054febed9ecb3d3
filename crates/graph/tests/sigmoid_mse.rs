//! Sigmoid activations and the quadratic cost (the textbook MNIST network's pieces):
//! gradients of linear-sigmoid-linear-sigmoid-MSE against finite differences through the
//! whole graph, the forward against the device crate's CPU references, both sigmoids
//! and their backwards planned in place, SGD at the textbook rate learning, and a shape
//! error naming the layer and both shapes.

mod common;

use common::*;
use wgtrain_graph::device::kernels::elementwise::Sigmoid;
use wgtrain_graph::device::kernels::mse::MeanSquaredError;
use wgtrain_graph::device::reference;
use wgtrain_graph::{Feed, Graph, Init, Mode, Optimizer, Rng, Session, TensorType, Training};

/// The textbook network: `x -> fc1 -> sigmoid -> fc2 -> sigmoid -> quadratic cost`.
/// Returns the graph, its training and the output activations.
fn sigmoid_mlp(
    batch: usize,
    inputs: usize,
    hidden: usize,
    classes: usize,
) -> (Graph, Training, wgtrain_graph::Value) {
    let mut g = Graph::new();
    let x = g.input("x", TensorType::f32(&[batch, inputs])).unwrap();
    let y = g.input("labels", TensorType::u32(&[batch])).unwrap();
    let layer = |g: &mut Graph, name: &str, x, fan_in, out| {
        g.scoped(name, |g| {
            let w = g.param("weight", &[out, fan_in], Init::TorchDefault { fan_in })?;
            let b = g.param("bias", &[out], Init::TorchDefault { fan_in })?;
            let z = g.linear(x, w, Some(b))?;
            g.sigmoid(z)
        })
        .unwrap()
    };
    let h = layer(&mut g, "fc1", x, inputs, hidden);
    let out = layer(&mut g, "fc2", h, hidden, classes);
    let (loss, _) = g.mse_loss(out, y).unwrap();
    let training = g.minimize(loss, Optimizer::sgd()).unwrap();
    (g, training, out)
}

#[test]
fn sigmoid_mse_gradients_match_finite_differences() {
    let (g, training, _) = sigmoid_mlp(8, 13, 11, 5);
    let mut session = Session::new(gpu(), g, 1).unwrap();
    let mut rng = Rng::new(3);
    // Inputs spread to ±3 so that the sigmoids see their curved range, not just 0.
    let x: Vec<f32> = uniform(&mut rng, 8 * 13).iter().map(|v| 3.0 * v).collect();
    let y = labels(&mut rng, 8, 5);
    let feeds = [Feed::f32("x", &[8, 13], &x), Feed::u32("labels", &[8], &y)];
    let worst = check_gradients(&mut session, &training, &feeds, 1e-2, 1e-2);
    println!("worst grad-check rel err {worst:.2e}");
}

/// `x · Wᵀ + b` in f64 for row-major `x [n, k]`, `w [m, k]`.
fn linear_f64(x: &[f64], w: &[f32], b: &[f32], k: usize) -> Vec<f64> {
    let m = b.len();
    x.chunks_exact(k)
        .flat_map(|row| {
            (0..m).map(move |j| {
                let dot: f64 = (0..k).map(|i| row[i] * w[j * k + i] as f64).sum();
                dot + b[j] as f64
            })
        })
        .collect()
}

#[test]
fn forward_matches_the_cpu_references() {
    let (n, inputs, hidden, classes) = (12, 20, 15, 10);
    let (g, training, out) = sigmoid_mlp(n, inputs, hidden, classes);
    let mut session = Session::new(gpu(), g, 2).unwrap();
    let mut rng = Rng::new(5);
    let x = uniform(&mut rng, n * inputs);
    let y = labels(&mut rng, n, classes as u32);
    let feeds = [
        Feed::f32("x", &[n, inputs], &x),
        Feed::u32("labels", &[n], &y),
    ];
    let step = wgtrain_graph::StepInfo {
        step: 1,
        lr: 0.0,
        seed: 0,
    };
    let fetch = [training.loss, training.correct.unwrap(), out];
    let got = session.run(Mode::Eval, &feeds, &fetch, &[], step).unwrap();
    let var = |name: &str| session.read_variable(name).unwrap();
    let sig = |v: Vec<f64>| {
        reference::elementwise::sigmoid(
            &Sigmoid {
                count: v.len() as u32,
            },
            &v,
        )
    };
    let xs: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    let h = sig(linear_f64(
        &xs,
        &var("fc1.weight"),
        &var("fc1.bias"),
        inputs,
    ));
    let pred = sig(linear_f64(&h, &var("fc2.weight"), &var("fc2.bias"), hidden));
    let p = MeanSquaredError::new(n as u32, classes as u32);
    let want = reference::mse::mse(&p, &pred, &y);
    let max_err = |a: &[f32], b: &[f64]| {
        a.iter()
            .zip(b)
            .map(|(&a, &b)| (a as f64 - b).abs())
            .fold(0.0, f64::max)
    };
    let (e_out, e_loss) = (
        max_err(&got.f32(out), &pred),
        max_err(&[got.scalar(training.loss)], &[want.loss]),
    );
    println!("forward max abs err: outputs {e_out:.2e}, loss {e_loss:.2e}");
    assert!(
        e_out < 2e-6 && e_loss < 2e-6,
        "outputs {e_out}, loss {e_loss}"
    );
    let correct = got.u32(training.correct.unwrap());
    assert_eq!(correct, [want.top1, want.top5]);
}

#[test]
fn sigmoids_and_their_backwards_run_in_place() {
    let (g, training, _) = sigmoid_mlp(10, 30, 15, 10);
    let mut session = Session::new(gpu(), g, 3).unwrap();
    let feeds = [
        ("x", TensorType::f32(&[10, 30])),
        ("labels", TensorType::u32(&[10])),
    ];
    let report = session
        .plan_report(Mode::Train, &feeds, &[training.loss], &training.updates)
        .unwrap();
    println!("{report}");
    // Each sigmoid overwrites its linear output (the backward needs only the sigmoid's
    // output), each sigmoid backward its incoming gradient.
    assert!(report.in_place >= 4, "{report}");
}

/// Class k's inputs are centred on a fixed random prototype: learnable, not trivial.
fn synthetic_batch(rng: &mut Rng, protos: &[Vec<f32>], batch: usize) -> (Vec<f32>, Vec<u32>) {
    let mut x = Vec::with_capacity(batch * protos[0].len());
    let mut y = Vec::with_capacity(batch);
    for _ in 0..batch {
        let k = (rng.next_u64() % protos.len() as u64) as usize;
        x.extend(protos[k].iter().map(|&p| p + 0.8 * rng.normal() as f32));
        y.push(k as u32);
    }
    (x, y)
}

/// The textbook recipe (plain SGD at lr 3.0, batches of 10) on a 64-15-4 network.
#[test]
fn textbook_sgd_learns() {
    let (batch, inputs, classes) = (10, 64, 4);
    let (g, training, _) = sigmoid_mlp(batch, inputs, 15, classes);
    let mut session = Session::new(gpu(), g, 4).unwrap();
    let mut rng = Rng::new(6);
    let protos: Vec<Vec<f32>> = (0..classes).map(|_| uniform(&mut rng, inputs)).collect();
    let mut losses = Vec::new();
    for _ in 0..200 {
        let (x, y) = synthetic_batch(&mut rng, &protos, batch);
        let feeds = [
            Feed::f32("x", &[batch, inputs], &x),
            Feed::u32("labels", &[batch], &y),
        ];
        losses.push(session.train_step(&training, &feeds, 3.0).unwrap().loss);
    }
    let mean = |v: &[f32]| v.iter().sum::<f32>() / v.len() as f32;
    let (first, last) = (mean(&losses[..10]), mean(&losses[190..]));
    println!("loss: first 10 steps {first:.4}, last 10 steps {last:.4}");
    assert!(last < 0.25 * first, "loss did not fall: {first} -> {last}");
    let (mut hits, mut seen) = (0, 0);
    for _ in 0..10 {
        let (x, y) = synthetic_batch(&mut rng, &protos, batch);
        let feeds = [
            Feed::f32("x", &[batch, inputs], &x),
            Feed::u32("labels", &[batch], &y),
        ];
        hits += session
            .evaluate(&training, &feeds)
            .unwrap()
            .correct
            .unwrap()[0];
        seen += batch as u32;
    }
    let acc = hits as f32 / seen as f32;
    println!("held-out accuracy {acc:.3}");
    assert!(acc > 0.9, "held-out accuracy {acc}");
}

#[test]
fn mse_shape_mismatch_names_the_layer_and_both_shapes() {
    let mut g = Graph::new();
    let pred = g.input("pred", TensorType::f32(&[4, 10])).unwrap();
    let labels = g.input("labels", TensorType::u32(&[5])).unwrap();
    let err = g
        .scoped("head", |g| g.mse_loss(pred, labels))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("head") && err.contains("[4, 10]") && err.contains("[5]"),
        "{err}"
    );
}
