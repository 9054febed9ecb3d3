//! # wgtrain-models
//!
//! Status: **not built yet.** This crate will hold the layers, the model zoo (MLP,
//! LeNet, AlexNet, ResNet-18…152 and the CIFAR ResNets), data loading and the training
//! loop (issue 4). It depends on the graph crate, which does not exist yet either, so
//! it offers nothing of its own today.

pub use wgtrain_graph as graph;
