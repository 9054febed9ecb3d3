//! # wgtrain-graph
//!
//! Models as graphs: build them with shape inference ([`Graph`]), differentiate them
//! ([`Graph::backward`], [`Graph::minimize`]), plan their memory from liveness
//! ([`PlanReport`]), and run a whole training step — forward, backward and optimizer —
//! in one GPU submission ([`Session`]).
//!
//! ```no_run
//! use std::sync::Arc;
//! use wgtrain_device::Gpu;
//! use wgtrain_graph::{Feed, Graph, Init, Optimizer, Session, TensorType};
//!
//! let mut g = Graph::new();
//! let x = g.input("x", TensorType::f32(&[64, 784]))?;
//! let labels = g.input("labels", TensorType::u32(&[64]))?;
//! let w = g.param("fc.weight", &[10, 784], Init::TorchDefault { fan_in: 784 })?;
//! let b = g.param("fc.bias", &[10], Init::TorchDefault { fan_in: 784 })?;
//! let logits = g.linear(x, w, Some(b))?;
//! let (loss, _) = g.softmax_cross_entropy(logits, labels)?;
//! let training = g.minimize(loss, Optimizer::sgd_momentum(0.9, 0.0, false))?;
//! let mut session = Session::new(Arc::new(Gpu::new()?), g, 0)?;
//! let (images, targets) = (vec![0.0f32; 64 * 784], vec![0u32; 64]);
//! let feeds = [Feed::f32("x", &[64, 784], &images), Feed::u32("labels", &[64], &targets)];
//! let step = session.train_step(&training, &feeds, 0.05)?;
//! println!("loss {}", step.loss);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod autodiff;
pub mod error;
pub mod graph;
pub mod init;
pub mod op;
pub mod ops;
pub mod plan;
pub mod schedule;
pub mod session;
pub mod tensor;
mod train;

pub use autodiff::Gradients;
pub use error::{GraphError, Result};
pub use graph::{Graph, Layout, NodeId, Variable};
pub use init::{Init, Rng};
pub use op::{Mode, Op, StepInfo};
pub use ops::optim::{GradBucket, Optimizer, Training};
pub use ops::sync::{HostReduce, Reduction};
pub use plan::PlanReport;
pub use schedule::{Decay, Schedule};
pub use session::{Feed, FeedData, Fetched, Reducer, Session, SyncStats};
pub use tensor::{DType, TensorType, Value};
pub use train::StepOutput;
pub use wgtrain_device as device;
