//! An MLP end to end: gradients against finite differences through the whole graph,
//! training that learns, one submission per step, and no allocation after the first.

mod common;

use common::*;
use wgtrain_graph::{Feed, Graph, Init, Optimizer, Rng, Session, TensorType, Training};

fn mlp(
    batch: usize,
    inputs: usize,
    hidden: usize,
    classes: usize,
    opt: Optimizer,
) -> (Graph, Training) {
    let mut g = Graph::new();
    let x = g.input("x", TensorType::f32(&[batch, inputs])).unwrap();
    let y = g.input("labels", TensorType::u32(&[batch])).unwrap();
    let h = g
        .scoped("fc1", |g| {
            let w = g.param(
                "weight",
                &[hidden, inputs],
                Init::KaimingUniform { fan_in: inputs },
            )?;
            let b = g.param("bias", &[hidden], Init::TorchDefault { fan_in: inputs })?;
            let z = g.linear(x, w, Some(b))?;
            g.relu(z)
        })
        .unwrap();
    let logits = g
        .scoped("fc2", |g| {
            let w = g.param(
                "weight",
                &[classes, hidden],
                Init::TorchDefault { fan_in: hidden },
            )?;
            let b = g.param("bias", &[classes], Init::TorchDefault { fan_in: hidden })?;
            g.linear(h, w, Some(b))
        })
        .unwrap();
    let (loss, _) = g.softmax_cross_entropy(logits, y).unwrap();
    let training = g.minimize(loss, opt).unwrap();
    (g, training)
}

#[test]
fn mlp_gradients_match_finite_differences() {
    let (g, training) = mlp(8, 13, 11, 5, Optimizer::sgd());
    let mut session = Session::new(gpu(), g, 1).unwrap();
    let mut rng = Rng::new(3);
    let x = uniform(&mut rng, 8 * 13);
    let y = labels(&mut rng, 8, 5);
    let feeds = [Feed::f32("x", &[8, 13], &x), Feed::u32("labels", &[8], &y)];
    check_gradients(&mut session, &training, &feeds, 1e-2, 2e-2);
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

#[test]
fn mlp_learns_in_one_submission_per_step_without_allocating() {
    let (batch, inputs, classes) = (64, 784, 10);
    let (g, training) = mlp(
        batch,
        inputs,
        128,
        classes,
        Optimizer::sgd_momentum(0.9, 0.0, false),
    );
    // A private GPU: tests running in parallel must not add to its counters.
    let gpu = std::sync::Arc::new(wgtrain_graph::device::Gpu::new().expect("adapter"));
    let mut session = Session::new(gpu.clone(), g, 2).unwrap();
    let mut rng = Rng::new(4);
    let protos: Vec<Vec<f32>> = (0..classes).map(|_| uniform(&mut rng, inputs)).collect();
    let mut losses = Vec::new();
    let mut after_first = None;
    for step in 0..60 {
        let (x, y) = synthetic_batch(&mut rng, &protos, batch);
        let feeds = [
            Feed::f32("x", &[batch, inputs], &x),
            Feed::u32("labels", &[batch], &y),
        ];
        let before = gpu.submissions();
        let out = session.train_step(&training, &feeds, 0.01).unwrap();
        assert_eq!(
            gpu.submissions() - before,
            1,
            "step {step} took more than one submission"
        );
        losses.push(out.loss);
        if step == 0 {
            after_first = Some(gpu.pool().stats());
        } else {
            let now = gpu.pool().stats();
            let first = after_first.unwrap();
            assert_eq!(
                now.allocations, first.allocations,
                "step {step} allocated a buffer"
            );
            assert_eq!(
                now.live_bytes, first.live_bytes,
                "step {step} changed live bytes"
            );
        }
    }
    let (first, last) = (
        losses[..5].iter().sum::<f32>() / 5.0,
        losses[55..].iter().sum::<f32>() / 5.0,
    );
    println!("loss: first 5 steps {first:.4}, last 5 steps {last:.4}");
    assert!(last < 0.5 * first, "loss did not fall: {first} -> {last}");
    // Held-out batch in evaluation mode.
    let (x, y) = synthetic_batch(&mut rng, &protos, batch);
    let feeds = [
        Feed::f32("x", &[batch, inputs], &x),
        Feed::u32("labels", &[batch], &y),
    ];
    let eval = session.evaluate(&training, &feeds).unwrap();
    let acc = eval.correct.unwrap()[0] as f32 / batch as f32;
    println!("held-out accuracy {acc:.3}");
    assert!(acc > 0.8, "held-out accuracy {acc}");
}

#[test]
fn a_smaller_last_batch_gets_its_own_plan() {
    let (g, training) = mlp(16, 6, 8, 3, Optimizer::adam());
    let mut session = Session::new(gpu(), g, 5).unwrap();
    let mut rng = Rng::new(6);
    for batch in [16usize, 16, 5, 16, 5] {
        let x = uniform(&mut rng, batch * 6);
        let y = labels(&mut rng, batch, 3);
        let feeds = [
            Feed::f32("x", &[batch, 6], &x),
            Feed::u32("labels", &[batch], &y),
        ];
        let out = session.train_step(&training, &feeds, 1e-3).unwrap();
        assert!(out.loss.is_finite());
    }
    assert_eq!(session.plans(), 2);
}

#[test]
fn shape_mismatch_names_the_layer_and_both_shapes() {
    let mut g = Graph::new();
    let x = g.input("x", TensorType::f32(&[4, 10])).unwrap();
    let err = g
        .scoped("classifier.1", |g| {
            let w = g.param("weight", &[3, 12], Init::Constant(0.0))?;
            g.linear(x, w, None)
        })
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("classifier.1") && err.contains("[4, 10]") && err.contains("[3, 12]"),
        "{err}"
    );
}

#[test]
fn clipping_limits_the_update_to_max_norm() {
    // Plain SGD at lr 1: the update is exactly minus the (clipped) gradient, so the
    // parameters move by a vector of norm max_norm when the gradient norm exceeds it.
    let build = |clip| {
        let mut g = Graph::new();
        let x = g.input("x", TensorType::f32(&[4, 6])).unwrap();
        let y = g.input("labels", TensorType::u32(&[4])).unwrap();
        let w = g
            .param(
                "w",
                &[3, 6],
                Init::Uniform {
                    low: -2.0,
                    high: 2.0,
                },
            )
            .unwrap();
        let b = g.param("b", &[3], Init::Constant(0.0)).unwrap();
        let z = g.linear(x, w, Some(b)).unwrap();
        let (loss, _) = g.softmax_cross_entropy(z, y).unwrap();
        let t = g.minimize_with(loss, Optimizer::sgd(), clip).unwrap();
        (g, t)
    };
    let mut rng = Rng::new(9);
    let x: Vec<f32> = uniform(&mut rng, 24).iter().map(|v| v * 5.0).collect();
    let y = labels(&mut rng, 4, 3);
    let feeds = [Feed::f32("x", &[4, 6], &x), Feed::u32("labels", &[4], &y)];
    for (clip, expect_clipped) in [(Some(0.05f32), true), (Some(1e6), false)] {
        let (g, t) = build(clip);
        let mut s = Session::new(gpu(), g, 11).unwrap();
        let (_, grads) = s.gradients(&t, &feeds).unwrap();
        let norm: f64 = grads
            .iter()
            .flat_map(|(_, g)| g)
            .map(|&v| (v as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        let before: Vec<Vec<f32>> = ["w", "b"]
            .iter()
            .map(|n| s.read_variable(n).unwrap())
            .collect();
        s.train_step(&t, &feeds, 1.0).unwrap();
        let after: Vec<Vec<f32>> = ["w", "b"]
            .iter()
            .map(|n| s.read_variable(n).unwrap())
            .collect();
        let moved: f64 = before
            .iter()
            .flatten()
            .zip(after.iter().flatten())
            .map(|(&a, &b)| ((a - b) as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        let want = if expect_clipped { 0.05 } else { norm };
        println!("grad norm {norm:.4}, moved {moved:.6}, want {want:.6}");
        assert!(norm > 0.05, "test needs a gradient norm above the clip");
        assert!(
            (moved - want).abs() < 1e-4 * want.max(1.0),
            "moved {moved}, want {want}"
        );
    }
}
