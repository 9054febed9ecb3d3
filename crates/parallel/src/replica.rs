//! Synchronous data parallelism on one replica's [`Session`]: identical weights from
//! rank 0, gradients averaged over the global batch in buckets while backward runs, the
//! same update everywhere.

use std::time::Instant;

use wgtrain_graph::{Feed, GraphError, Reduction, Session, StepOutput, SyncStats, Training};

use wgtrain_graph::device::kernels::batchnorm::combine_moments;

use crate::comm::{CommError, Communicator};

fn collective(e: CommError) -> GraphError {
    GraphError::Collective(e.to_string())
}

/// Where one replica's step went.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ReplicaStats {
    /// The whole step, wall clock.
    pub step_s: f64,
    /// Copy-out, reduction and write-back of the gradient buckets.
    pub sync: SyncStats,
    /// The all-reduce of the step's loss and hit counts.
    pub metrics_s: f64,
}

impl ReplicaStats {
    /// Adds `other`.
    pub fn add(&mut self, other: &ReplicaStats) {
        self.step_s += other.step_s;
        self.sync.add(&other.sync);
        self.metrics_s += other.metrics_s;
    }

    /// The step time not spent exchanging gradients or metrics, nor in the update:
    /// forward and backward on the GPU (waits for it included), plus the host's share.
    pub fn compute_s(&self) -> f64 {
        (self.step_s
            - self.sync.copy_out_s
            - self.sync.exposed_s
            - self.sync.copy_in_s
            - self.sync.update_s
            - self.metrics_s)
            .max(0.0)
    }
}

/// Makes every rank's variables (parameters, state, optimizer state) rank `root`'s, in
/// one broadcast.
pub fn broadcast_variables(
    session: &Session,
    comm: &dyn Communicator,
    root: usize,
) -> Result<(), GraphError> {
    broadcast_where(session, comm, root, |_| true)
}

/// Makes the non-trainable state (batch-norm running statistics) rank `root`'s: with
/// per-replica batch norm they drift apart, so evaluation and checkpoints take rank 0's
/// (as PyTorch DDP broadcasts buffers).
pub fn broadcast_state(
    session: &Session,
    comm: &dyn Communicator,
    root: usize,
) -> Result<(), GraphError> {
    broadcast_where(session, comm, root, |v| !v.trainable && !v.optimizer_state)
}

/// Broadcasts the variables `keep` selects, as one message.
fn broadcast_where(
    session: &Session,
    comm: &dyn Communicator,
    root: usize,
    keep: impl Fn(&wgtrain_graph::Variable) -> bool,
) -> Result<(), GraphError> {
    let names: Vec<String> = session
        .graph()
        .variables()
        .iter()
        .filter(|v| keep(v))
        .map(|v| v.name.clone())
        .collect();
    if comm.world_size() == 1 || names.is_empty() {
        return Ok(());
    }
    let mut flat = Vec::new();
    let mut lens = Vec::with_capacity(names.len());
    for name in &names {
        let data = session.read_variable(name)?;
        lens.push(data.len());
        flat.extend_from_slice(&data);
    }
    comm.broadcast(&mut flat, root).map_err(collective)?;
    let mut offset = 0;
    for (name, len) in names.iter().zip(lens) {
        session.write_variable(name, &flat[offset..offset + len])?;
        offset += len;
    }
    Ok(())
}

/// One synchronous data-parallel step on this replica: forward and backward on its
/// shard (`feeds`), every gradient bucket weighted by `share` (this shard's fraction of
/// the global batch) and summed over replicas while backward goes on, then the update.
/// Returns the global batch's loss and hit counts (identical on every rank) and where
/// the time went. `training` must come from
/// [`Graph::minimize_synced`](wgtrain_graph::Graph::minimize_synced).
pub fn train_step(
    session: &mut Session,
    training: &Training,
    comm: &dyn Communicator,
    feeds: &[Feed<'_>],
    lr: f32,
    share: f32,
) -> Result<(StepOutput, ReplicaStats), GraphError> {
    let start = Instant::now();
    let mut reduce = |what: wgtrain_graph::HostReduce, data: &mut [f32]| match what.reduction {
        Reduction::BatchMean => {
            if share != 1.0 {
                for x in data.iter_mut() {
                    *x *= share;
                }
            }
            comm.all_reduce_sum(data).map_err(collective)
        }
        Reduction::Sum => comm.all_reduce_sum(data).map_err(collective),
        Reduction::Moments => combine_moments_across(comm, data),
    };
    let (out, sync) = session.train_step_synced(training, feeds, lr, &mut reduce)?;
    let metrics = Instant::now();
    let global = reduce_metrics(comm, &out, share)?;
    let metrics_s = metrics.elapsed().as_secs_f64();
    Ok((
        global,
        ReplicaStats {
            step_s: start.elapsed().as_secs_f64(),
            sync,
            metrics_s,
        },
    ))
}

/// The global batch's loss (shares of the replicas' mean losses) and hit counts.
pub fn reduce_metrics(
    comm: &dyn Communicator,
    out: &StepOutput,
    share: f32,
) -> Result<StepOutput, GraphError> {
    if comm.world_size() == 1 {
        return Ok(*out);
    }
    let [top1, top5] = out.correct.unwrap_or([0, 0]);
    let mut m = [out.loss * share, top1 as f32, top5 as f32];
    comm.all_reduce_sum(&mut m).map_err(collective)?;
    Ok(StepOutput {
        loss: m[0],
        correct: out.correct.map(|_| [m[1] as u32, m[2] as u32]),
        ..*out
    })
}

/// Synchronised batch norm's moments `[3, C]` (count, mean, M2) of every rank, combined
/// in rank order: gathered by a sum over a vector where each rank fills its own slot
/// (adding zeros is exact), then combined identically on every rank.
fn combine_moments_across(comm: &dyn Communicator, data: &mut [f32]) -> Result<(), GraphError> {
    let (world, len) = (comm.world_size(), data.len());
    if world == 1 {
        return Ok(());
    }
    let mut slots = vec![0.0f32; world * len];
    slots[comm.rank() * len..][..len].copy_from_slice(data);
    comm.all_reduce_sum(&mut slots).map_err(collective)?;
    let parts: Vec<&[f32]> = slots.chunks(len).collect();
    data.copy_from_slice(&combine_moments(&parts, len / 3));
    Ok(())
}
