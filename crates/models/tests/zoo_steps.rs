//! One forward + backward + SGD step of every zoo model on the GPU at a small batch,
//! the ImageNet models at a reduced input size (32×32; AlexNet 64×64), checking that
//! the loss is finite and every parameter moved.

mod common;
use common::gpu;

use wgtrain_graph::{Feed, Optimizer, Session};
use wgtrain_models::zoo::{self, AlexNet, Model};

fn one_step(model: Model, batch: usize) {
    let Model {
        name,
        mut graph,
        loss,
        input,
        classes,
        ..
    } = model;
    let training = graph
        .minimize(loss, Optimizer::sgd_momentum(0.9, 1e-4, false))
        .unwrap();
    let params: Vec<String> = graph
        .variables()
        .iter()
        .filter(|v| v.trainable)
        .map(|v| v.name.clone())
        .collect();
    let mut session = Session::new(gpu(), graph, 3).unwrap();
    let [h, w, c] = input;
    let images: Vec<f32> = (0..batch * h * w * c)
        .map(|i| ((i * 7919) % 255) as f32 / 127.0 - 1.0)
        .collect();
    let labels: Vec<u32> = (0..batch as u32).map(|i| i % classes as u32).collect();
    let feeds = [
        Feed::f32("images", &[batch, h, w, c], &images),
        Feed::u32("labels", &[batch], &labels),
    ];
    let before: Vec<Vec<f32>> = params
        .iter()
        .map(|p| session.read_variable(p).unwrap())
        .collect();
    let out = session.train_step(&training, &feeds, 0.01).unwrap();
    assert!(out.loss.is_finite(), "{name}: loss {}", out.loss);
    for (p, old) in params.iter().zip(&before) {
        let new = session.read_variable(p).unwrap();
        assert!(
            new.iter().zip(old).any(|(a, b)| a != b),
            "{name}: {p} did not move"
        );
    }
    println!(
        "{name}: batch {batch}, loss {:.4}, {} parameters updated",
        out.loss,
        params.len()
    );
}

#[test]
fn small_models_take_a_step() {
    one_step(zoo::mlp([28, 28, 1], &[15], 10, 4).unwrap(), 4);
    one_step(zoo::mlp([28, 28, 1], &[128], 10, 4).unwrap(), 4);
    one_step(zoo::lenet5(10, 4).unwrap(), 4);
}

#[test]
fn alexnets_take_a_step() {
    one_step(zoo::alexnet(AlexNet::Paper, 10, 64, 2).unwrap(), 2);
    one_step(zoo::alexnet(AlexNet::Torchvision, 10, 64, 2).unwrap(), 2);
    one_step(zoo::alexnet(AlexNet::Cifar, 10, 32, 2).unwrap(), 2);
}

#[test]
fn imagenet_resnets_take_a_step() {
    for depth in [18, 34, 50, 101, 152] {
        one_step(zoo::resnet(depth, 10, 32, 2).unwrap(), 2);
    }
}

#[test]
fn cifar_resnets_take_a_step() {
    for depth in [20, 32, 44, 56, 110] {
        one_step(zoo::cifar_resnet(depth, 10, 2).unwrap(), 2);
    }
}
