//! # wgtrain-device
//!
//! The GPU runtime of wgtrain: [`Gpu`] (adapter choice, device, limits, features), a
//! [`BufferPool`], and the kernel library — one WGSL file per family in the workspace's
//! `shaders/`, one Rust module per family in [`kernels`] — with a CPU reference for every
//! kernel in [`reference`].
//!
//! Kernels never submit: each wrapper validates shapes and buffer sizes, then returns a
//! [`Dispatch`] that records into a caller-owned command encoder.
//!
//! Layout conventions: activations are NHWC (channels contiguous, the natural layout
//! for implicit-GEMM convolution); convolution weights are KRSC (`[K, R, S, C/groups]`).
//! [`layout`] converts from and to PyTorch's NCHW / OIHW at the edges.

pub mod autotune;
pub mod error;
pub mod gpu;
pub mod kernels;
pub mod layout;
pub mod log;
pub mod pipeline;
pub mod pool;
pub mod reference;
pub mod shaders;

pub use error::{DeviceError, Result};
pub use gpu::Gpu;
pub use pipeline::{Dispatch, encode_all};
pub use pool::{BufferPool, PoolStats, PooledBuffer};
pub use wgpu;
