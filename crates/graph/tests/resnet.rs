//! A residual block with a projection shortcut — two 3×3 convolutions with batch norm
//! and ReLU, a strided 1×1 convolution + batch norm on the shortcut, the sum, a ReLU —
//! checked against finite differences through the whole graph, and the memory plan of
//! a ResNet-style stack of such blocks.

mod common;

use common::*;
use wgtrain_graph::ops::conv::Conv2dAttrs;
use wgtrain_graph::{
    Feed, Graph, Init, Mode, Optimizer, Rng, Session, TensorType, Training, Value,
};

fn conv(g: &mut Graph, name: &str, x: Value, c: usize, k: usize, r: usize, stride: usize) -> Value {
    g.scoped(name, |g| {
        let w = g.param(
            "weight",
            &[k, r, r, c],
            Init::KaimingNormal { fan_in: c * r * r },
        )?;
        let attrs = Conv2dAttrs::new()
            .stride(stride, stride)
            .padding(r / 2, r / 2);
        g.conv2d(x, w, None, attrs)
    })
    .unwrap()
}

fn bn(g: &mut Graph, name: &str, x: Value) -> Value {
    g.scoped(name, |g| g.batch_norm(x)).unwrap()
}

/// torchvision's BasicBlock with `downsample` = 1×1 conv (stride) + BN.
fn block(g: &mut Graph, name: &str, x: Value, c: usize, k: usize, stride: usize) -> Value {
    g.scoped(name, |g| {
        let y = conv(g, "conv1", x, c, k, 3, stride);
        let y = bn(g, "bn1", y);
        let y = g.relu(y)?;
        let y = conv(g, "conv2", y, k, k, 3, 1);
        let y = bn(g, "bn2", y);
        let shortcut = if stride != 1 || c != k {
            let s = conv(g, "downsample.0", x, c, k, 1, stride);
            bn(g, "downsample.1", s)
        } else {
            x
        };
        let sum = g.add(y, shortcut)?;
        g.relu(sum)
    })
    .unwrap()
}

fn network(
    batch: usize,
    side: usize,
    stages: &[(usize, usize)],
    classes: usize,
) -> (Graph, Training) {
    let mut g = Graph::new();
    let x = g
        .input("images", TensorType::f32(&[batch, side, side, 3]))
        .unwrap();
    let labels = g.input("labels", TensorType::u32(&[batch])).unwrap();
    let mut y = conv(&mut g, "conv1", x, 3, stages[0].0, 3, 1);
    let mut c = stages[0].0;
    for (i, &(k, stride)) in stages.iter().enumerate() {
        y = block(&mut g, &format!("layer{}.0", i + 1), y, c, k, stride);
        y = block(&mut g, &format!("layer{}.1", i + 1), y, k, k, 1);
        c = k;
    }
    let pooled = g.global_avg_pool(y).unwrap();
    let logits = g
        .scoped("fc", |g| {
            let w = g.param("weight", &[classes, c], Init::TorchDefault { fan_in: c })?;
            let b = g.param("bias", &[classes], Init::Constant(0.0))?;
            g.linear(pooled, w, Some(b))
        })
        .unwrap();
    let (loss, _) = g.softmax_cross_entropy(logits, labels).unwrap();
    let training = g.minimize(loss, Optimizer::sgd()).unwrap();
    (g, training)
}

#[test]
fn residual_block_with_projection_matches_finite_differences() {
    let mut g = Graph::new();
    let x = g.input("images", TensorType::f32(&[3, 6, 6, 4])).unwrap();
    let label_input = g.input("labels", TensorType::u32(&[3])).unwrap();
    let y = block(&mut g, "layer1.0", x, 4, 6, 2);
    let pooled = g.global_avg_pool(y).unwrap();
    let logits = g
        .scoped("fc", |g| {
            let w = g.param(
                "weight",
                &[3, 6],
                Init::Uniform {
                    low: -1.0,
                    high: 1.0,
                },
            )?;
            g.linear(pooled, w, None)
        })
        .unwrap();
    let (loss, _) = g.softmax_cross_entropy(logits, label_input).unwrap();
    let training = g.minimize(loss, Optimizer::sgd()).unwrap();
    let mut session = Session::new(gpu(), g, 21).unwrap();
    let mut rng = Rng::new(5);
    let images: Vec<f32> = uniform(&mut rng, 3 * 6 * 6 * 4)
        .iter()
        .map(|v| 2.0 * v)
        .collect();
    let y = labels(&mut rng, 3, 3);
    let feeds = [
        Feed::f32("images", &[3, 6, 6, 4], &images),
        Feed::u32("labels", &[3], &y),
    ];
    // Every parameter of the block (both convs, all three batch norms, the projection)
    // and the head get a gradient; each is checked along a random direction.
    let (_, grads) = session.gradients(&training, &feeds).unwrap();
    assert_eq!(
        grads.len(),
        1 + 3 + 2 * 3,
        "{:?}",
        grads.iter().map(|g| &g.0).collect::<Vec<_>>()
    );
    check_gradients(&mut session, &training, &feeds, 3e-3, 2e-2);
}

#[test]
fn resnet_style_plan_is_well_below_the_naive_sum() {
    // Four stages of two basic blocks (64, 128, 256, 512 channels), ResNet-18's layout,
    // on 64×64 inputs at batch 8: forward, backward and SGD in one plan.
    let (batch, side) = (8, 64);
    let (g, training) = network(batch, side, &[(64, 1), (128, 2), (256, 2), (512, 2)], 10);
    let mut session = Session::new(gpu(), g, 1).unwrap();
    let feeds = [
        ("images", TensorType::f32(&[batch, side, side, 3])),
        ("labels", TensorType::u32(&[batch])),
    ];
    let fetch = [training.loss];
    let report = session
        .plan_report(Mode::Train, &feeds, &fetch, &training.updates)
        .unwrap();
    println!("ResNet-style, batch {batch}, {side}x{side}: {report}");
    // Training keeps the activations the backward pass reads (conv inputs, BN inputs,
    // ReLU outputs, pooling indices) alive until then: that live set, not the packing,
    // bounds the plan. Packing must stay within 15% of it, and well below naive.
    assert!(
        report.planned_bytes * 100 <= report.live_peak_bytes * 115,
        "{report}"
    );
    assert!(
        report.planned_bytes * 5 < report.naive_bytes * 3,
        "{report}"
    );
    let eval = session
        .plan_report(Mode::Eval, &feeds, &fetch, &[])
        .unwrap();
    println!("same graph, evaluation: {eval}");
    assert!(eval.planned_bytes * 4 < eval.naive_bytes, "{eval}");
}
