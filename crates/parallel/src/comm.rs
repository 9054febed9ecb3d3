//! The [`Communicator`] trait: what replicas need from each other — rank, world size,
//! collectives (all-reduce, broadcast, barrier) and point-to-point messages — and its
//! error type.

use std::time::Duration;

/// Errors of a collective or a message. Each names the rank that failed or is missing.
#[derive(Debug, thiserror::Error)]
pub enum CommError {
    /// Another rank stopped (its thread ended, failed or panicked) before reaching the
    /// collective this rank waits in.
    #[error("rank {rank} stopped ({reason}) while rank {me} waited in {op}")]
    PeerFailed {
        rank: usize,
        me: usize,
        op: &'static str,
        reason: String,
    },
    /// The collective did not complete in time.
    #[error("rank {me}: {op} timed out after {} s waiting for rank(s) {missing:?}", timeout.as_secs())]
    Timeout {
        me: usize,
        op: &'static str,
        missing: Vec<usize>,
        timeout: Duration,
    },
    /// The ranks called different collectives, or with different lengths.
    #[error("rank {me}: {message}")]
    Mismatch { me: usize, message: String },
    /// A bad argument (a rank past the world size).
    #[error("{0}")]
    Invalid(String),
}

/// A group of `world_size` replicas, each holding one `Communicator` with its `rank`.
///
/// Collectives must be called by every rank in the same order. Reductions are
/// deterministic: element by element, in rank order (`((x₀ + x₁) + x₂) + …`), so every
/// rank gets bit-identical results and two runs are bit-identical; the local and the
/// MPI implementations give the same bits.
pub trait Communicator {
    /// This replica's rank, `0..world_size`.
    fn rank(&self) -> usize;

    /// Number of replicas.
    fn world_size(&self) -> usize;

    /// Sums `data` element-wise over all ranks, in rank order, in place.
    fn all_reduce_sum(&self, data: &mut [f32]) -> Result<(), CommError>;

    /// Replaces `data` with `root`'s `data` (every rank passes the same length).
    fn broadcast(&self, data: &mut [f32], root: usize) -> Result<(), CommError>;

    /// Replaces `data` with `root`'s bytes (lengths may differ; `data` is resized).
    fn broadcast_bytes(&self, data: &mut Vec<u8>, root: usize) -> Result<(), CommError>;

    /// Waits until every rank has called it.
    fn barrier(&self) -> Result<(), CommError>;

    /// Sends `data` to rank `to` with `tag` (does not wait for the receiver in the local
    /// implementation; MPI may, for large messages).
    fn send(&self, to: usize, tag: u32, data: &[f32]) -> Result<(), CommError>;

    /// Receives the next message with `tag` from `from` (any rank when `None`):
    /// `(source rank, data)`.
    fn recv(&self, from: Option<usize>, tag: u32) -> Result<(usize, Vec<f32>), CommError>;

    /// Receives the next message with `tag` from any rank of `from` (a parameter server
    /// waiting for whichever worker pushes first). Unlike `recv(None, ..)`, it fails as
    /// soon as one rank of `from` is gone, naming it, rather than waiting on the others.
    fn recv_any_of(&self, from: &[usize], tag: u32) -> Result<(usize, Vec<f32>), CommError>;

    /// Tells the other ranks that this one is stopping with `reason`, so that they fail
    /// promptly instead of waiting (the MPI implementation aborts the job).
    fn abort(&self, reason: &str);

    /// A short name of the implementation (`local`, `mpi`), for reports.
    fn kind(&self) -> &'static str;
}

/// `data[i] = Σ_r parts[r][i]`, adding in rank order: the one reduction every
/// implementation uses.
pub(crate) fn sum_in_rank_order<'a>(parts: impl IntoIterator<Item = &'a [f32]>, out: &mut [f32]) {
    let mut parts = parts.into_iter();
    match parts.next() {
        Some(first) => out.copy_from_slice(first),
        None => return,
    }
    for p in parts {
        for (o, x) in out.iter_mut().zip(p) {
            *o += *x;
        }
    }
}
