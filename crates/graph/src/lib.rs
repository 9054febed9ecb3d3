//! # wgtrain-graph
//!
//! Status: **not built yet.** This crate will hold graph building with shape inference,
//! reverse-mode autodiff, the liveness-based memory planner and the one-submission
//! executor (see `docs/ARCHITECTURE.md`, issue 3). Until then it only re-exports the
//! device crate it will be built on, and offers no graph API of its own.

pub use wgtrain_device as device;
