//! # wgtrain-parallel
//!
//! Training on many devices: a [`Communicator`] between replicas — threads of one
//! process with one wgpu device each ([`LocalComm`]), or processes launched by
//! `mpirun` ([`MpiComm`], cargo feature `mpi`) — and synchronous data parallelism on
//! top of the graph crate's [`Session`](wgtrain_graph::Session):
//!
//! - the model is built with [`Graph::minimize_synced`](wgtrain_graph::Graph::minimize_synced),
//!   which puts every gradient through an all-reduce, in buckets, in the order backward
//!   produces them;
//! - [`broadcast_variables`] gives every replica rank 0's weights;
//! - [`train_step`] runs one step: each bucket is copied out and reduced (the mean over
//!   the global batch, in a fixed order: bit-identical across runs) while backward goes
//!   on, and every replica applies the same update.
//!
//! And asynchronous SGD through a parameter server ([`ps`]): rank 0 holds the weights
//! and applies each worker's pushed gradient as it comes, with delay compensation
//! (DC-ASGD-c / DC-ASGD-a, Zheng et al. 2017) on its GPU.
//!
//! Dependencies point one way: models → parallel → graph → device.

pub mod comm;
pub mod devices;
pub mod local;
#[cfg(feature = "mpi")]
pub mod mpi;
pub mod ps;
pub mod replica;

pub use comm::{CommError, Communicator};
pub use devices::DeviceSpec;
pub use local::LocalComm;
#[cfg(feature = "mpi")]
pub use mpi::MpiComm;
pub use ps::{AsyncConfig, Compensation, ParameterServer, PushOrder, ServerStats};
pub use replica::{ReplicaStats, broadcast_state, broadcast_variables, reduce_metrics, train_step};

/// PyTorch DDP's default bucket size: 25 MiB.
pub const DEFAULT_BUCKET_BYTES: u64 = 25 * 1024 * 1024;

/// Errors of setting up parallel training.
#[derive(Debug, thiserror::Error)]
pub enum ParallelError {
    /// A bad option (`--devices`, the world size and the batch...).
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Comm(#[from] CommError),
    #[error(transparent)]
    Graph(#[from] wgtrain_graph::GraphError),
}

/// Whether this build can run under `mpirun` (the `mpi` feature).
pub const MPI_SUPPORT: bool = cfg!(feature = "mpi");

/// What a build without the `mpi` feature says to `--distributed`.
pub const NO_MPI: &str = "--distributed needs MPI support, which this build lacks: rebuild \
    with `--features mpi` (needs OpenMPI: `apt-get install openmpi-bin libopenmpi-dev \
    libclang-dev`), then start it with `mpirun -np N`";
