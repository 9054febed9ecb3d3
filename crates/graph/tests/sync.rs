//! Runs with host reductions (`minimize_synced`, `Session::run_synced`), without any
//! communicator: the reducer is a closure, so the cut-and-write-back machinery is checked
//! on its own.
//!
//! - every bucket reaches the reducer once per step, in the order backward completes
//!   them, with its gradients back to back;
//! - what the reducer writes is what the update applies: doubling every gradient equals
//!   plain SGD at twice the learning rate, bit for bit;
//! - a reducer that fails leaves the session usable for the next step;
//! - a plain `train_step` treats the reductions as the identity.

mod common;

use common::{gpu, labels, uniform};
use wgtrain_graph::{
    Feed, Graph, GraphError, HostReduce, Init, Optimizer, Reduction, Rng, Session, TensorType,
    Training, Value,
};

const BATCH: usize = 5;

/// A 3-layer MLP (weights and biases in 6 gradients) with its training step.
fn mlp(synced: Option<u64>) -> (Graph, Training) {
    let mut g = Graph::new();
    let x = g.input("x", TensorType::f32(&[BATCH, 13])).unwrap();
    let y = g.input("y", TensorType::u32(&[BATCH])).unwrap();
    let mut h: Value = x;
    for (i, (fan_in, out)) in [(13, 17), (17, 11), (11, 4)].into_iter().enumerate() {
        h = g
            .scoped(&format!("fc{i}"), |g| {
                let w = g.param("weight", &[out, fan_in], Init::KaimingUniform { fan_in })?;
                let b = g.param("bias", &[out], Init::TorchDefault { fan_in })?;
                let z = g.linear(h, w, Some(b))?;
                if i < 2 { g.relu(z) } else { Ok(z) }
            })
            .unwrap();
    }
    let (loss, _) = g.softmax_cross_entropy(h, y).unwrap();
    let opt = Optimizer::sgd();
    let training = match synced {
        Some(bytes) => g.minimize_synced(loss, opt, None, bytes).unwrap(),
        None => g.minimize(loss, opt).unwrap(),
    };
    (g, training)
}

fn data() -> (Vec<f32>, Vec<u32>) {
    let mut rng = Rng::stream(3, 0);
    (uniform(&mut rng, BATCH * 13), labels(&mut rng, BATCH, 4))
}

fn feeds<'a>(x: &'a [f32], y: &'a [u32]) -> [Feed<'a>; 2] {
    [Feed::f32("x", &[BATCH, 13], x), Feed::u32("y", &[BATCH], y)]
}

fn params(s: &Session) -> Vec<Vec<f32>> {
    s.graph()
        .variables()
        .iter()
        .map(|v| s.read_variable(&v.name).unwrap())
        .collect()
}

#[test]
fn buckets_reach_the_reducer_in_backward_order() {
    // 300-byte buckets: the 17x13 weight (884 bytes) gets one of its own.
    let (g, training) = mlp(Some(300));
    assert!(training.buckets.len() >= 4, "{:?}", training.buckets);
    let mut session = Session::new(gpu(), g, 1).unwrap();
    let (x, y) = data();
    let mut seen: Vec<(HostReduce, usize)> = Vec::new();
    let mut record = |what: HostReduce, d: &mut [f32]| {
        seen.push((what, d.len()));
        Ok(())
    };
    let (out, stats) = session
        .train_step_synced(&training, &feeds(&x, &y), 0.1, &mut record)
        .unwrap();
    assert!(out.loss.is_finite());
    let want: Vec<(u32, usize)> = training
        .buckets
        .iter()
        .map(|b| (b.id, (b.bytes / 4) as usize))
        .collect();
    let got: Vec<(u32, usize)> = seen.iter().map(|(w, n)| (w.bucket, *n)).collect();
    assert_eq!(got, want);
    assert!(
        seen.iter()
            .all(|(w, _)| w.reduction == Reduction::BatchMean)
    );
    // The output layer's gradients are produced first by backward.
    let first = &training.buckets[0];
    let names: Vec<&str> = first
        .slots
        .iter()
        .map(|&s| training.gradient_name(session.graph(), s).unwrap())
        .collect();
    assert!(names.iter().all(|n| n.starts_with("fc2")), "{names:?}");
    assert_eq!(stats.buckets, training.buckets.len());
    assert!(stats.submissions > 1, "the step was cut at the buckets");
}

#[test]
fn what_the_reducer_writes_is_what_the_update_applies() {
    let (x, y) = data();
    let (g, training) = mlp(Some(256));
    let mut synced = Session::new(gpu(), g, 1).unwrap();
    let (g, plain_training) = mlp(None);
    let mut plain = Session::new(gpu(), g, 1).unwrap();
    for _ in 0..3 {
        let mut double = |_: HostReduce, d: &mut [f32]| {
            d.iter_mut().for_each(|v| *v *= 2.0);
            Ok(())
        };
        synced
            .train_step_synced(&training, &feeds(&x, &y), 0.05, &mut double)
            .unwrap();
        plain
            .train_step(&plain_training, &feeds(&x, &y), 0.1)
            .unwrap();
    }
    assert_eq!(params(&synced), params(&plain));
}

#[test]
fn a_failed_reduction_leaves_the_session_usable() {
    let (x, y) = data();
    let (g, training) = mlp(Some(256));
    let mut session = Session::new(gpu(), g, 1).unwrap();
    let mut calls = 0;
    let mut fail_second = |_: HostReduce, _: &mut [f32]| {
        calls += 1;
        match calls {
            2 => Err(GraphError::Collective("rank 1 stopped".into())),
            _ => Ok(()),
        }
    };
    let err = session
        .train_step_synced(&training, &feeds(&x, &y), 0.1, &mut fail_second)
        .unwrap_err();
    assert!(err.to_string().contains("rank 1 stopped"));
    let mut identity = |_: HostReduce, _: &mut [f32]| Ok(());
    let (out, _) = session
        .train_step_synced(&training, &feeds(&x, &y), 0.1, &mut identity)
        .unwrap();
    assert!(out.loss.is_finite());
    session.gpu().take_errors().unwrap();
}

#[test]
fn a_plain_step_treats_the_reductions_as_the_identity() {
    let (x, y) = data();
    let (g, training) = mlp(Some(256));
    let mut synced = Session::new(gpu(), g, 1).unwrap();
    let (g, plain_training) = mlp(None);
    let mut plain = Session::new(gpu(), g, 1).unwrap();
    synced.train_step(&training, &feeds(&x, &y), 0.1).unwrap();
    plain
        .train_step(&plain_training, &feeds(&x, &y), 0.1)
        .unwrap();
    assert_eq!(params(&synced), params(&plain));
}

#[test]
fn a_fetched_reduction_that_nothing_reads_is_reduced() {
    let mut g = Graph::new();
    let x = g.input("x", TensorType::f32(&[BATCH, 13])).unwrap();
    let y = g.relu(x).unwrap();
    let r = g.all_reduce(y, Reduction::Sum).unwrap();
    let mut session = Session::new(gpu(), g, 1).unwrap();
    let (xs, _) = data();
    let mut double = |_: HostReduce, d: &mut [f32]| {
        d.iter_mut().for_each(|v| *v *= 2.0);
        Ok(())
    };
    let step = wgtrain_graph::StepInfo {
        step: 1,
        lr: 0.0,
        seed: 0,
    };
    let feeds = [Feed::f32("x", &[BATCH, 13], &xs)];
    let (out, _) = session
        .run_synced(
            wgtrain_graph::Mode::Train,
            &feeds,
            &[r],
            &[],
            step,
            &mut double,
        )
        .unwrap();
    let want: Vec<f32> = xs.iter().map(|v| 2.0 * v.max(0.0)).collect();
    assert_eq!(out.f32(r), want);
}

#[test]
fn a_reduction_whose_input_is_read_elsewhere_is_refused() {
    let mut g = Graph::new();
    let x = g.input("x", TensorType::f32(&[BATCH, 13])).unwrap();
    let y = g.scoped("act", |g| g.relu(x)).unwrap();
    let r = g
        .scoped("sync", |g| g.all_reduce(y, Reduction::Sum))
        .unwrap();
    let other = g.scoped("other", |g| g.add(y, y)).unwrap();
    let mut session = Session::new(gpu(), g, 1).unwrap();
    let (xs, _) = data();
    let feeds = [Feed::f32("x", &[BATCH, 13], &xs)];
    let step = wgtrain_graph::StepInfo {
        step: 1,
        lr: 0.0,
        seed: 0,
    };
    let err = session
        .run(wgtrain_graph::Mode::Train, &feeds, &[r, other], &[], step)
        .unwrap_err()
        .to_string();
    assert!(err.contains("also read by add in layer `other`"), "{err}");
}
