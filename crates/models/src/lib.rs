//! # wgtrain-models
//!
//! What users touch: data loading (MNIST IDX, CIFAR-10 binary, a synthetic dataset that
//! needs no download, a shuffling, augmenting, prefetching loader).
//!
//! Status: the layers, the model zoo, the training loop and the examples (issue 4) are
//! not built yet.

pub mod data;
pub mod error;

pub use error::{ModelError, Result};
pub use wgtrain_graph as graph;
