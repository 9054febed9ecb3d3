//! Finding where a numerical fault starts: [`Session::first_nonfinite_node`] re-runs one
//! batch node by node and reads each node's output back, naming the first one that holds
//! a NaN or ±Inf; [`Session::snapshot_variables`] and [`Session::restore_variables`]
//! keep a GPU-side copy of every variable so that re-run can start from the weights the
//! faulty step saw (its update has already written the bad gradients into them).

use std::fmt;

use wgtrain_device::{PooledBuffer, wgpu};

use super::{Feed, PlanKey, Session};
use crate::error::Result;
use crate::graph::NodeId;
use crate::op::{Mode, StepInfo};
use crate::plan::Storage;
use crate::tensor::{DType, Value};

/// A copy of every variable of a session, in GPU memory.
pub struct VariableSnapshot {
    buffers: Vec<PooledBuffer>,
}

/// The first node of a run whose output holds a NaN or ±Inf.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NonFiniteNode {
    pub node: NodeId,
    /// The op's name (`linear`, `conv2d`, `conv2d_backward_filter`...).
    pub op: &'static str,
    /// The scope (layer) the node was built in.
    pub layer: String,
    /// Shape of the node's output 0, the one checked.
    pub shape: Vec<usize>,
    /// Non-finite elements in that output, and its length.
    pub count: usize,
    pub len: usize,
}

impl fmt::Display for NonFiniteNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} in layer `{}` (node {}), output {:?} with {} of {} elements non-finite",
            self.op, self.layer, self.node, self.shape, self.count, self.len
        )
    }
}

impl Session {
    /// Copies every variable into `reuse` (a snapshot taken earlier from this session)
    /// or into new pooled buffers. One submission; the copy is ordered before the next
    /// run, so nothing waits for it.
    pub fn snapshot_variables(&self, reuse: Option<VariableSnapshot>) -> Result<VariableSnapshot> {
        let buffers = match reuse {
            Some(s) if s.buffers.len() == self.variables.len() => s.buffers,
            _ => self
                .variables
                .iter()
                .map(|v| self.gpu.pool().acquire(v.size(), "snapshot"))
                .collect::<Result<Vec<_>, _>>()?,
        };
        let mut encoder = self.gpu.encoder("wgtrain.snapshot");
        for (src, dst) in self.variables.iter().zip(&buffers) {
            encoder.copy_buffer_to_buffer(src, 0, dst, 0, src.size());
        }
        self.gpu.submit(encoder);
        Ok(VariableSnapshot { buffers })
    }

    /// Writes every variable back from `snapshot` (taken from this session).
    pub fn restore_variables(&self, snapshot: &VariableSnapshot) {
        let mut encoder = self.gpu.encoder("wgtrain.restore");
        for (dst, src) in self.variables.iter().zip(&snapshot.buffers) {
            encoder.copy_buffer_to_buffer(src, 0, dst, 0, dst.size());
        }
        self.gpu.submit(encoder);
    }

    /// Runs the nodes needed for `fetch` (no side effects: no optimizer update) one
    /// submission per node, reading each node's output 0 back right after it ran, and
    /// returns the first that holds a NaN or ±Inf (`None` if every output is finite).
    /// `step` gives the learning rate and the step whose dropout seed is used. Slow by
    /// design: it is the diagnosis after a fault, not a training step. Batch-norm
    /// running statistics are updated once more by a training-mode re-run.
    pub fn first_nonfinite_node(
        &mut self,
        mode: Mode,
        feeds: &[Feed<'_>],
        fetch: &[Value],
        step: StepInfo,
    ) -> Result<Option<NonFiniteNode>> {
        let key = PlanKey {
            mode,
            feeds: feeds.iter().map(|f| (f.name.to_owned(), f.ty())).collect(),
            fetch: fetch.to_vec(),
            effects: Vec::new(),
        };
        if !self.plans.contains_key(&key) {
            let plan = self.compile(&key)?;
            self.plans.insert(key.clone(), plan);
        }
        let seed = self.step_seed(step.step);
        let plan = &self.plans[&key];
        self.write_inputs(plan, feeds, &StepInfo { seed, ..step })?;
        for (id, dispatches, _) in &plan.lowered {
            let node = &self.graph.nodes[*id];
            let mut encoder = self.gpu.encoder("wgtrain.nonfinite");
            wgtrain_device::encode_all(&mut encoder, node.op.name(), dispatches.iter());
            self.gpu.submit(encoder);
            let Some(&out) = node.outputs.first() else {
                continue;
            };
            let ty = &plan.layout.types[out.0];
            let buffer: &wgpu::Buffer = match plan.layout.storage[out.0] {
                Some(Storage::Buffer(b)) => &plan.buffers[b],
                Some(Storage::Variable(i)) => &self.variables[i],
                None => continue,
            };
            if ty.dtype != DType::F32 || ty.is_empty() {
                continue;
            }
            let values: Vec<f32> = self.gpu.download(buffer, ty.len())?;
            let count = values.iter().filter(|v| !v.is_finite()).count();
            if count > 0 {
                return Ok(Some(NonFiniteNode {
                    node: *id,
                    op: node.op.name(),
                    layer: node.scope.clone(),
                    shape: ty.shape.clone(),
                    count,
                    len: ty.len(),
                }));
            }
        }
        Ok(None)
    }
}
