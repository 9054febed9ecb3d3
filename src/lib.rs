//! # wgtrain
//!
//! Deep-learning training on any GPU through wgpu compute shaders. This facade
//! re-exports the workspace's crates:
//!
//! - [`device`]: the GPU context ([`Gpu`](device::Gpu)), the buffer pool and the kernel
//!   library with its CPU references;
//! - [`graph`]: graphs with shape inference, autodiff, memory planning, and a
//!   [`Session`](graph::Session) that runs a training step in one submission;
//! - [`models`]: layers, the model zoo, data loading and the training loop;
//! - [`parallel`]: communicators between replicas (threads with one device each, or
//!   processes under `mpirun` with the `mpi` feature) and synchronous data parallelism.
//!
//! ```no_run
//! use wgtrain::prelude::*;
//!
//! let gpu = Gpu::new()?;
//! println!("{}", gpu.describe());
//! # Ok::<(), DeviceError>(())
//! ```

pub use wgtrain_device as device;
pub use wgtrain_graph as graph;
pub use wgtrain_models as models;
pub use wgtrain_parallel as parallel;

/// The names most programs need.
pub mod prelude {
    pub use wgtrain_device::kernels;
    pub use wgtrain_device::{DeviceError, Dispatch, Gpu, PooledBuffer, encode_all};
    pub use wgtrain_graph::{
        Feed, Graph, GraphError, Init, Mode, Optimizer, Schedule, Session, TensorType, Training,
        Value,
    };
}

/// The README's Rust snippets, compiled and run as doctests so they cannot rot.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
