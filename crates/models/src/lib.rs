//! # wgtrain-models
//!
//! What users touch: layers named as torchvision names them ([`layers`]), the model zoo
//! ([`zoo`]: MLP, LeNet, AlexNet, ResNet-18…152, CIFAR ResNets), and data loading
//! ([`data`]: MNIST IDX, CIFAR-10 binary, a synthetic dataset that needs no download, a
//! shuffling, augmenting, prefetching loader).
//!
//! Training: [`train::Trainer`] runs epochs of one-submission steps with a schedule,
//! evaluation, a progress bar, exact-resume checkpoints ([`checkpoint`]) and a chart
//! ([`plot`]).

pub mod checkpoint;
pub mod data;
pub mod error;
pub mod layers;
pub mod plot;
pub mod torch;
pub mod train;
pub mod zoo;

pub use error::{ModelError, Result};
pub use wgtrain_graph as graph;
