//! Runs with host reductions: a plan whose graph holds [`AllReduce`] nodes is cut into
//! segments, one submission each, so that a bucket's values can travel between replicas
//! while the GPU computes the rest of the step.
//!
//! ## Design
//!
//! For each bucket the compiled plan knows two points in its dispatch list: where the
//! bucket is *ready* (after the last producer of its values) and where it is *needed*
//! (before the first reader of the reduced values, usually the optimizer updates). The
//! cuts at those points give the segments. A run submits segment by segment; the
//! segment that makes a bucket ready also copies its values into the bucket's staging
//! buffer and maps it. After each submission the buckets made ready by *earlier*
//! segments are reduced on the host (the GPU is busy with the segment just submitted:
//! that time is overlapped), and a bucket needed by the next segment is reduced before
//! that segment is submitted (that time is exposed). Reduced values are written back
//! with `Queue::write_buffer`, which is ordered before the next submission. Buckets are
//! always reduced in the order they became ready, so every replica calls its
//! collectives in the same order.
//!
//! [`AllReduce`]: crate::ops::sync::AllReduce

use std::collections::VecDeque;
use std::time::Instant;

use wgtrain_device::{Gpu, wgpu};

use super::{Fetched, Plan, Session};
use crate::error::{GraphError, Result};
use crate::graph::Graph;
use crate::op::{Mode, StepInfo};
use crate::ops::optim::Training;
use crate::ops::sync::{HostReduce, Reduction};
use crate::plan::{Layout, Storage};
use crate::tensor::Value;
use crate::train::StepOutput;

/// The caller's reduction: combine `data` (one bucket, its values back to back) with
/// the other replicas' in place.
pub type Reducer<'a> = dyn FnMut(HostReduce, &mut [f32]) -> Result<()> + 'a;

/// Where the time of a synced run went.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SyncStats {
    /// Submissions of the run (segments that held work).
    pub submissions: usize,
    /// Buckets reduced, and their bytes in all.
    pub buckets: usize,
    pub bytes: u64,
    /// Waiting for the GPU to finish the work before a bucket's copy (backward compute
    /// the host had nothing else to do during).
    pub gpu_wait_s: f64,
    /// Reading a finished bucket's copy back (GPU → host).
    pub copy_out_s: f64,
    /// In the caller's reduction, in all.
    pub reduce_s: f64,
    /// The part of `reduce_s` spent while no later segment was queued on the GPU (the
    /// step waited for it); the rest overlapped with backward.
    pub exposed_s: f64,
    /// Writing reduced values back (host → GPU queue).
    pub copy_in_s: f64,
    /// From the submission of the segment that first reads the reduced gradients (the
    /// optimizer updates) to the end of the run: the update, on an idle GPU.
    pub update_s: f64,
}

impl SyncStats {
    /// The fraction of the reduction time hidden behind GPU work (1 when nothing was
    /// reduced).
    pub fn overlapped(&self) -> f64 {
        if self.reduce_s <= 0.0 {
            1.0
        } else {
            1.0 - self.exposed_s / self.reduce_s
        }
    }

    /// Adds `other` (e.g. to total a run's steps).
    pub fn add(&mut self, other: &SyncStats) {
        self.submissions += other.submissions;
        self.buckets += other.buckets;
        self.bytes += other.bytes;
        self.gpu_wait_s += other.gpu_wait_s;
        self.copy_out_s += other.copy_out_s;
        self.reduce_s += other.reduce_s;
        self.exposed_s += other.exposed_s;
        self.copy_in_s += other.copy_in_s;
        self.update_s += other.update_s;
    }
}

/// Buckets copied out and not yet reduced: (bucket, its segment, its submission).
type Pending = VecDeque<(usize, usize, wgpu::SubmissionIndex)>;

/// One bucket of a plan.
pub(super) struct BucketPlan {
    what: HostReduce,
    /// `(storage, bytes)` of each value, packed back to back in the staging buffer.
    parts: Vec<(Storage, u64)>,
    bytes: u64,
    staging: wgpu::Buffer,
    /// Segment after whose dispatches the bucket is copied out, and the segment before
    /// which it must be written back.
    ready: usize,
    needed: usize,
}

/// The segments and buckets of a plan with host reductions.
pub(super) struct SyncPlan {
    /// Ranges of `Plan::lowered`, in order; together they cover it.
    segments: Vec<std::ops::Range<usize>>,
    buckets: Vec<BucketPlan>,
    /// The segment where the updates start: the latest that a gradient bucket is needed
    /// by (`None` without gradient buckets).
    update_segment: Option<usize>,
    /// Per segment, the buckets it makes ready (copied out at its end).
    ready_in: Vec<Vec<usize>>,
}

/// Plans the cuts of a run, or `None` when its graph has no host reduction in the
/// schedule.
pub(super) fn plan_sync(
    gpu: &Gpu,
    graph: &Graph,
    layout: &Layout,
    lowered_positions: &[usize],
) -> Result<Option<SyncPlan>> {
    let position_of = |id: usize| layout.schedule.iter().position(|&n| n == id);
    // Number of lowered nodes at schedule positions before `pos`.
    let lowered_before = |pos: usize| lowered_positions.partition_point(|&p| p < pos);
    struct Part {
        what: HostReduce,
        storage: Storage,
        bytes: u64,
        ready: usize,
        needed: usize,
    }
    let mut parts: Vec<Part> = Vec::new();
    for (pos, &id) in layout.schedule.iter().enumerate() {
        let node = &graph.nodes[id];
        let Some(what) = node.op.host_reduce() else {
            continue;
        };
        let input = node.inputs[0];
        // The result is written back into the input's storage: no one else may read it.
        if let Some(other) = layout
            .schedule
            .iter()
            .find(|&&n| n != id && graph.nodes[n].inputs.contains(&input))
        {
            return Err(GraphError::Invalid(format!(
                "all_reduce in layer `{}`: its input is also read by {} in layer `{}`; reduce a \
                 copy (the reduced values are written back into the input's buffer)",
                node.scope,
                graph.nodes[*other].op.name(),
                graph.nodes[*other].scope
            )));
        }
        let produced_at = position_of(graph.producer(input)).unwrap_or(0);
        let output = node.outputs[0];
        let first_reader = layout.schedule[pos + 1..]
            .iter()
            .enumerate()
            .find(|(_, n)| graph.nodes[**n].inputs.contains(&output))
            .map(|(i, _)| pos + 1 + i)
            .unwrap_or(layout.schedule.len());
        parts.push(Part {
            what,
            storage: layout.storage[input.0].expect("a scheduled value has storage"),
            bytes: layout.types[input.0].bytes(),
            ready: lowered_before(produced_at + 1),
            needed: lowered_before(first_reader),
        });
    }
    if parts.is_empty() {
        return Ok(None);
    }
    // Group by bucket, in the order buckets become ready (ties: first seen).
    // (bucket, its parts, ready, needed)
    type Group = (HostReduce, Vec<(Storage, u64)>, usize, usize);
    let mut groups: Vec<Group> = Vec::new();
    for p in &parts {
        match groups.iter_mut().find(|g| g.0 == p.what) {
            Some(g) => {
                g.1.push((p.storage, p.bytes));
                g.2 = g.2.max(p.ready);
                g.3 = g.3.min(p.needed);
            }
            None => groups.push((p.what, vec![(p.storage, p.bytes)], p.ready, p.needed)),
        }
    }
    if let Some(g) = groups.iter().find(|g| g.3 < g.2) {
        return Err(GraphError::Invalid(format!(
            "all_reduce bucket {}: a value is read before the whole bucket is produced",
            g.0.bucket
        )));
    }
    groups.sort_by_key(|g| g.2);
    let total = lowered_positions.len();
    let mut cuts: Vec<usize> = vec![0, total];
    for g in &groups {
        cuts.push(g.2);
        cuts.push(g.3.max(g.2));
    }
    cuts.sort_unstable();
    cuts.dedup();
    // Segment 0 is the empty range before the first dispatch (for a bucket ready at
    // once); segment k ≥ 1 is `cuts[k-1]..cuts[k]`; the last is empty again: it holds
    // the copies of the fetched values, after every bucket's write-back (a bucket that
    // nothing reads is needed there, so a fetch of its reduced value sees it).
    let segments: Vec<std::ops::Range<usize>> = std::iter::once(0..0)
        .chain(cuts.windows(2).map(|w| w[0]..w[1]))
        .chain(std::iter::once(total..total))
        .collect();
    let buckets: Vec<BucketPlan> = groups
        .into_iter()
        .map(|(what, parts, ready, needed)| {
            let bytes: u64 = parts.iter().map(|p| p.1).sum();
            let staging = gpu.device().create_buffer(&wgpu::BufferDescriptor {
                label: Some("plan.all_reduce"),
                size: bytes.max(4),
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            let ready_seg = segments
                .iter()
                .position(|r| r.end == ready && (ready == 0 || !r.is_empty()))
                .expect("a cut ends at every ready point");
            let needed_seg = segments
                .iter()
                .enumerate()
                .skip(ready_seg + 1)
                .find(|(_, r)| r.start >= needed.max(ready))
                .map_or(segments.len() - 1, |(i, _)| i);
            BucketPlan {
                what,
                parts,
                bytes,
                staging,
                ready: ready_seg,
                needed: needed_seg,
            }
        })
        .collect();
    let update_segment = buckets
        .iter()
        .filter(|b| b.what.reduction == Reduction::BatchMean)
        .map(|b| b.needed)
        .max();
    let mut ready_in = vec![Vec::new(); segments.len()];
    for (b, bucket) in buckets.iter().enumerate() {
        ready_in[bucket.ready].push(b);
    }
    Ok(Some(SyncPlan {
        segments,
        buckets,
        update_segment,
        ready_in,
    }))
}

impl Session {
    /// [`run`](Self::run) with host reductions: every [`AllReduce`] bucket of the plan is
    /// handed to `reduce` (in the order backward completes them, identical on every
    /// replica) while the GPU goes on, and its result is written back before anything
    /// reads it. Returns the fetched values and where the time went.
    ///
    /// [`AllReduce`]: crate::ops::sync::AllReduce
    pub fn run_synced(
        &mut self,
        mode: Mode,
        feeds: &[super::Feed<'_>],
        fetch: &[Value],
        effects: &[crate::graph::NodeId],
        step: StepInfo,
        reduce: &mut Reducer<'_>,
    ) -> Result<(Fetched, SyncStats)> {
        self.run_with(mode, feeds, fetch, effects, step, Some(reduce))
    }

    /// [`train_step`](Self::train_step) for a graph built by
    /// [`Graph::minimize_synced`](crate::Graph::minimize_synced): the gradients are
    /// reduced by `reduce` between backward and the update.
    pub fn train_step_synced(
        &mut self,
        training: &Training,
        feeds: &[super::Feed<'_>],
        lr: f32,
        reduce: &mut Reducer<'_>,
    ) -> Result<(StepOutput, SyncStats)> {
        let step = self.next_optimizer_step();
        let fetch = training.step_fetch();
        let (out, stats) = self.run_synced(
            Mode::Train,
            feeds,
            &fetch,
            &training.updates,
            StepInfo { step, lr, seed: 0 },
            reduce,
        )?;
        Ok((training.step_output(&out), stats))
    }

    pub(super) fn execute_synced(
        &self,
        plan: &Plan,
        sync: &SyncPlan,
        feeds: &[super::Feed<'_>],
        step: StepInfo,
        reduce: &mut Reducer<'_>,
    ) -> Result<(Fetched, SyncStats)> {
        self.write_inputs(plan, feeds, &step)?;
        // Buckets copied out and not yet reduced: (bucket, its segment, submission).
        let mut pending: Pending = VecDeque::new();
        let result = self.run_segments(plan, sync, reduce, &mut pending);
        if result.is_err() {
            // A failed reduction (a peer stopped) leaves later buckets mapped: wait for
            // their copies and unmap them, so that the session stays usable.
            for (b, _, index) in pending {
                let _ = self.gpu.wait_for(index);
                sync.buckets[b].staging.unmap();
            }
        }
        let (mut stats, update_start) = result?;
        let fetched = self.read_fetched(plan)?;
        if let Some(start) = update_start {
            stats.update_s = start.elapsed().as_secs_f64();
        }
        Ok((fetched, stats))
    }

    /// Submits the segments, reducing each bucket as described in the module's design.
    fn run_segments(
        &self,
        plan: &Plan,
        sync: &SyncPlan,
        reduce: &mut Reducer<'_>,
        pending: &mut Pending,
    ) -> Result<(SyncStats, Option<Instant>)> {
        let gpu = &self.gpu;
        let mut stats = SyncStats::default();
        let mut update_start = None;
        let last = sync.segments.len() - 1;
        for (s, range) in sync.segments.iter().enumerate() {
            // Reduce (oldest first) until nothing this segment reads is outstanding.
            while let Some(&(b, _, _)) = pending
                .iter()
                .find(|(b, _, _)| sync.buckets[*b].needed == s)
            {
                while let Some((front, _, index)) = pending.pop_front() {
                    self.finish_bucket(
                        plan,
                        &sync.buckets[front],
                        index,
                        true,
                        reduce,
                        &mut stats,
                    )?;
                    if front == b {
                        break;
                    }
                }
            }
            let ready = &sync.ready_in[s];
            if range.is_empty() && ready.is_empty() && s != last {
                continue;
            }
            let mut encoder = gpu.encoder("wgtrain.run");
            if !range.is_empty() {
                wgtrain_device::encode_all(
                    &mut encoder,
                    "wgtrain.run",
                    plan.lowered[range.clone()]
                        .iter()
                        .flat_map(|(_, d, _)| d.iter()),
                );
            }
            for &b in ready {
                let bucket = &sync.buckets[b];
                let mut offset = 0;
                for &(storage, bytes) in &bucket.parts {
                    let src = self.storage_buffer(plan, storage);
                    encoder.copy_buffer_to_buffer(src, 0, &bucket.staging, offset, bytes);
                    offset += bytes;
                }
            }
            if s == last {
                self.copy_fetched(plan, &mut encoder);
            }
            if sync.update_segment == Some(s) {
                update_start = Some(Instant::now());
            }
            let index = gpu.submit(encoder);
            stats.submissions += 1;
            for &b in ready {
                sync.buckets[b]
                    .staging
                    .slice(..)
                    .map_async(wgpu::MapMode::Read, |_| {});
                pending.push_back((b, s, index.clone()));
            }
            // The GPU now has this segment: reduce what earlier segments made ready.
            if s != last {
                while pending.front().is_some_and(|&(_, seg, _)| seg < s) {
                    let (b, _, index) = pending.pop_front().expect("checked");
                    self.finish_bucket(plan, &sync.buckets[b], index, false, reduce, &mut stats)?;
                }
            }
        }
        // Buckets nothing reads in this run (e.g. gradients fetched, not applied): still
        // reduced, so every replica makes the same collective calls.
        while let Some((b, _, index)) = pending.pop_front() {
            self.finish_bucket(plan, &sync.buckets[b], index, true, reduce, &mut stats)?;
        }
        Ok((stats, update_start))
    }

    /// Reads bucket `bucket` back once its copy (in submission `index`) is done, hands it
    /// to `reduce`, and queues the result's write-back.
    fn finish_bucket(
        &self,
        plan: &Plan,
        bucket: &BucketPlan,
        index: wgpu::SubmissionIndex,
        exposed: bool,
        reduce: &mut Reducer<'_>,
        stats: &mut SyncStats,
    ) -> Result<()> {
        let start = Instant::now();
        let waited_for = self.gpu.wait_for(index);
        let waited = Instant::now();
        let read = waited_for.map_err(GraphError::from).and_then(|()| {
            let view =
                bucket.staging.slice(..).get_mapped_range().map_err(|e| {
                    GraphError::Invalid(format!("reading back all-reduce bucket: {e}"))
                })?;
            Ok(bytemuck::cast_slice::<u8, f32>(&view)[..(bucket.bytes / 4) as usize].to_vec())
        });
        // Unmapped whatever happened, so the next run can copy into it again.
        bucket.staging.unmap();
        let mut data = read?;
        let copied = Instant::now();
        reduce(bucket.what, &mut data)?;
        let reduced = Instant::now();
        let mut offset = 0usize;
        for &(storage, bytes) in &bucket.parts {
            let n = (bytes / 4) as usize;
            self.gpu.write(
                self.storage_buffer(plan, storage),
                &data[offset..offset + n],
            );
            offset += n;
        }
        let seconds = |a: Instant, b: Instant| (b - a).as_secs_f64();
        stats.buckets += 1;
        stats.bytes += bucket.bytes;
        stats.gpu_wait_s += seconds(start, waited);
        stats.copy_out_s += seconds(waited, copied);
        stats.reduce_s += seconds(copied, reduced);
        if exposed {
            stats.exposed_s += seconds(copied, reduced);
        }
        stats.copy_in_s += reduced.elapsed().as_secs_f64();
        Ok(())
    }

    fn storage_buffer<'p>(&'p self, plan: &'p Plan, storage: Storage) -> &'p wgpu::Buffer {
        match storage {
            Storage::Buffer(b) => &plan.buffers[b],
            Storage::Variable(i) => &self.variables[i],
        }
    }
}
