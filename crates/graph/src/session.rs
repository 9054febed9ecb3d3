//! [`Session`]: runs a graph on a [`Gpu`]. It owns the persistent tensors (parameters,
//! state, optimizer state) and a cache of compiled plans, one per (mode, feed shapes,
//! fetched values), so a smaller last batch compiles once and is then reused.
//!
//! ## Design
//!
//! Compiling a plan allocates its buffers from the pool and builds every dispatch — and
//! so every bind group — once. A run then writes the feeds and the per-step uniforms
//! (learning rate, step, dropout seed) with `Queue::write_buffer`, records every dispatch
//! into one compute pass, copies the fetched values into the plan's staging buffers,
//! submits once, and reads back only those values. Nothing is allocated in the steady
//! state: the pool's statistics do not move after a plan's first run.

use std::collections::HashMap;
use std::sync::Arc;

use wgtrain_device::{Dispatch, Gpu, PooledBuffer, wgpu};

use crate::error::{GraphError, Result};
use crate::graph::{Graph, NodeId, ValueKind};
use crate::init::Rng;
use crate::op::{LowerCtx, Mode, StepInfo};
use crate::plan::{Layout, PlanReport, Storage, explain_buffer, infer_types, plan};
use crate::tensor::{DType, TensorType, Value};

mod nonfinite;
mod sync;
pub use nonfinite::{NonFiniteNode, VariableSnapshot};
pub use sync::{Reducer, SyncStats};

/// One input for a run: name, shape (batch first) and data.
#[derive(Clone, Debug)]
pub struct Feed<'a> {
    pub name: &'a str,
    pub shape: Vec<usize>,
    pub data: FeedData<'a>,
}

/// The elements of a [`Feed`].
#[derive(Clone, Copy, Debug)]
pub enum FeedData<'a> {
    F32(&'a [f32]),
    U32(&'a [u32]),
}

impl<'a> Feed<'a> {
    pub fn f32(name: &'a str, shape: &[usize], data: &'a [f32]) -> Self {
        Self {
            name,
            shape: shape.to_vec(),
            data: FeedData::F32(data),
        }
    }

    pub fn u32(name: &'a str, shape: &[usize], data: &'a [u32]) -> Self {
        Self {
            name,
            shape: shape.to_vec(),
            data: FeedData::U32(data),
        }
    }

    fn ty(&self) -> TensorType {
        match self.data {
            FeedData::F32(_) => TensorType::f32(&self.shape),
            FeedData::U32(_) => TensorType::u32(&self.shape),
        }
    }

    fn bytes(&self) -> &'a [u8] {
        match self.data {
            FeedData::F32(d) => bytemuck::cast_slice(d),
            FeedData::U32(d) => bytemuck::cast_slice(d),
        }
    }
}

/// Values read back from a run, as raw 4-byte words.
#[derive(Clone, Debug, Default)]
pub struct Fetched {
    values: Vec<(Value, Vec<u32>)>,
}

impl Fetched {
    fn words(&self, value: Value) -> &[u32] {
        self.values
            .iter()
            .find(|(v, _)| *v == value)
            .map(|(_, w)| w.as_slice())
            .unwrap_or_else(|| panic!("value {value:?} was not fetched by this run"))
    }

    /// A fetched f32 tensor. Panics if `value` was not fetched (a programming error).
    pub fn f32(&self, value: Value) -> Vec<f32> {
        bytemuck::cast_slice(self.words(value)).to_vec()
    }

    /// A fetched u32 tensor.
    pub fn u32(&self, value: Value) -> Vec<u32> {
        self.words(value).to_vec()
    }

    /// The first element of a fetched f32 tensor (a loss).
    pub fn scalar(&self, value: Value) -> f32 {
        f32::from_bits(self.words(value)[0])
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct PlanKey {
    mode: Mode,
    feeds: Vec<(String, TensorType)>,
    fetch: Vec<Value>,
    effects: Vec<NodeId>,
}

struct Plan {
    layout: Layout,
    /// Keeps the planned buffers alive as long as the dispatches that bind them.
    buffers: Vec<PooledBuffer>,
    /// Per running node: its dispatches and its input types (for per-run updates).
    lowered: Vec<(NodeId, Vec<Dispatch>, Vec<TensorType>)>,
    staging: Vec<(Value, wgpu::Buffer, u64)>,
    report: PlanReport,
    /// The cuts for host reductions, when the schedule holds any.
    sync: Option<sync::SyncPlan>,
}

/// Runs a [`Graph`] on a GPU.
pub struct Session {
    gpu: Arc<Gpu>,
    graph: Graph,
    variables: Vec<PooledBuffer>,
    plans: HashMap<PlanKey, Plan>,
    seed: u64,
    fixed_seed: Option<u32>,
    optimizer_steps: u32,
}

impl Session {
    /// Allocates and initialises every variable of `graph` (deterministically from
    /// `seed`).
    pub fn new(gpu: Arc<Gpu>, graph: Graph, seed: u64) -> Result<Self> {
        let mut variables = Vec::with_capacity(graph.variables.len());
        for (i, v) in graph.variables.iter().enumerate() {
            // Acquire first: a variable past the adapter's limit is refused before its
            // initial values are computed on the host.
            let buf = gpu.pool().acquire(v.ty.bytes().max(4), &v.name)?;
            let values = v.init.values(v.ty.len(), &mut Rng::stream(seed, i as u64));
            match v.ty.dtype {
                DType::F32 => gpu.write(&buf, &values),
                DType::U32 => {
                    gpu.write(&buf, &values.iter().map(|&x| x as u32).collect::<Vec<_>>())
                }
            }
            variables.push(buf);
        }
        Ok(Self {
            gpu,
            graph,
            variables,
            plans: HashMap::new(),
            seed,
            fixed_seed: None,
            optimizer_steps: 0,
        })
    }

    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    pub fn gpu(&self) -> &Arc<Gpu> {
        &self.gpu
    }

    /// Uses `seed` for every random op at every run (reproducible dropout masks, e.g. for
    /// gradient checks); `None` (the default) derives the seed from the session seed and
    /// the optimizer step, so a resumed run draws the same masks as an uninterrupted one.
    pub fn fix_random_seed(&mut self, seed: Option<u32>) {
        self.fixed_seed = seed;
    }

    /// Runs the graph: computes `fetch` (and the side-effect nodes `effects`, such as
    /// optimizer updates) from `feeds`, in one submission.
    pub fn run(
        &mut self,
        mode: Mode,
        feeds: &[Feed<'_>],
        fetch: &[Value],
        effects: &[NodeId],
        step: StepInfo,
    ) -> Result<Fetched> {
        Ok(self.run_with(mode, feeds, fetch, effects, step, None)?.0)
    }

    /// [`run`](Self::run), or [`run_synced`](Self::run_synced) with `reduce`.
    fn run_with(
        &mut self,
        mode: Mode,
        feeds: &[Feed<'_>],
        fetch: &[Value],
        effects: &[NodeId],
        step: StepInfo,
        reduce: Option<&mut sync::Reducer<'_>>,
    ) -> Result<(Fetched, SyncStats)> {
        let key = PlanKey {
            mode,
            feeds: feeds.iter().map(|f| (f.name.to_owned(), f.ty())).collect(),
            fetch: fetch.to_vec(),
            effects: effects.to_vec(),
        };
        if !self.plans.contains_key(&key) {
            let plan = self.compile(&key)?;
            self.plans.insert(key.clone(), plan);
        }
        let seed = self.step_seed(step.step);
        let plan = &self.plans[&key];
        let step = StepInfo { seed, ..step };
        match (&plan.sync, reduce) {
            (Some(sync), Some(reduce)) => self.execute_synced(plan, sync, feeds, step, reduce),
            _ => Ok((self.execute(plan, feeds, step)?, SyncStats::default())),
        }
    }

    /// The seed of the random ops at optimizer step `step`.
    fn step_seed(&self, step: u32) -> u32 {
        self.fixed_seed
            .unwrap_or_else(|| Rng::stream(self.seed ^ 0x5EED, step as u64).next_u64() as u32)
    }

    /// The report of the plan `run` would use for these arguments (compiling it if new).
    pub fn plan_report(
        &mut self,
        mode: Mode,
        feeds: &[(&str, TensorType)],
        fetch: &[Value],
        effects: &[NodeId],
    ) -> Result<PlanReport> {
        let key = PlanKey {
            mode,
            feeds: feeds
                .iter()
                .map(|(n, t)| (n.to_string(), t.clone()))
                .collect(),
            fetch: fetch.to_vec(),
            effects: effects.to_vec(),
        };
        if !self.plans.contains_key(&key) {
            let plan = self.compile(&key)?;
            self.plans.insert(key.clone(), plan);
        }
        Ok(self.plans[&key].report.clone())
    }

    /// Sets the optimizer step counter (when resuming from a checkpoint): the next
    /// training step is `steps + 1`, with the same learning-rate step and dropout seed as
    /// in the run that wrote the checkpoint.
    pub fn set_optimizer_steps(&mut self, steps: u32) {
        self.optimizer_steps = steps;
    }

    /// Counts one more optimizer step and returns its 1-based number.
    pub(crate) fn next_optimizer_step(&mut self) -> u32 {
        self.optimizer_steps += 1;
        self.optimizer_steps
    }

    /// Optimizer steps taken so far.
    pub fn optimizer_steps(&self) -> u32 {
        self.optimizer_steps
    }

    /// Number of compiled plans.
    pub fn plans(&self) -> usize {
        self.plans.len()
    }

    fn compile(&self, key: &PlanKey) -> Result<Plan> {
        let types = infer_types(&self.graph, &key.feeds)?;
        let layout = plan(&self.graph, types, &key.fetch, &key.effects, key.mode)?;
        let pool = self.gpu.pool();
        let buffers = layout
            .buffer_bytes
            .iter()
            .enumerate()
            .map(|(i, &bytes)| {
                pool.acquire(bytes, &format!("plan.buffer{i}"))
                    .map_err(|e| explain_buffer(&self.graph, &layout, i, e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut lowered = Vec::new();
        let mut lowered_positions = Vec::new();
        for (position, &id) in layout.schedule.iter().enumerate() {
            let node = &self.graph.nodes[id];
            if node.inputs.is_empty() || layout.silent.contains(&id) {
                continue;
            }
            let buf = |v: &Value| -> &wgpu::Buffer {
                match layout.storage[v.0].expect("every scheduled value has storage") {
                    Storage::Variable(i) => &self.variables[i],
                    Storage::Buffer(b) => &buffers[b],
                }
            };
            let in_bufs: Vec<&wgpu::Buffer> = node.inputs.iter().map(buf).collect();
            let out_bufs: Vec<&wgpu::Buffer> = node.outputs.iter().map(buf).collect();
            let inputs: Vec<TensorType> = node
                .inputs
                .iter()
                .map(|v| layout.types[v.0].clone())
                .collect();
            let outputs: Vec<TensorType> = node
                .outputs
                .iter()
                .map(|v| layout.types[v.0].clone())
                .collect();
            let ctx = LowerCtx {
                gpu: &self.gpu,
                mode: key.mode,
                inputs: &inputs,
                outputs: &outputs,
                in_bufs: &in_bufs,
                out_bufs: &out_bufs,
                fused_relu: layout.fused_producers.contains(&id),
                in_place: layout.in_place.contains(&id),
                layer: &node.scope,
            };
            let dispatches = node.op.lower(&ctx).map_err(|e| match e {
                GraphError::Device(d) => GraphError::Invalid(format!(
                    "{} in layer `{}`: {d}",
                    node.op.name(),
                    node.scope
                )),
                other => other,
            })?;
            lowered.push((id, dispatches, inputs));
            lowered_positions.push(position);
        }
        let sync = sync::plan_sync(&self.gpu, &self.graph, &layout, &lowered_positions)?;
        let staging = key
            .fetch
            .iter()
            .map(|&v| {
                let bytes = layout.types[v.0].bytes().max(4);
                let buffer = self.gpu.device().create_buffer(&wgpu::BufferDescriptor {
                    label: Some("plan.fetch"),
                    size: bytes,
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
                (v, buffer, bytes)
            })
            .collect();
        let mut report = layout.report.clone();
        report.dispatches = lowered.iter().map(|(_, d, _)| d.len()).sum();
        Ok(Plan {
            layout,
            buffers,
            lowered,
            staging,
            report,
            sync,
        })
    }

    /// Writes the feeds into `plan`'s input buffers and every op's per-run uniforms.
    fn write_inputs(&self, plan: &Plan, feeds: &[Feed<'_>], step: &StepInfo) -> Result<()> {
        let gpu = &self.gpu;
        for (name, value) in self.graph.inputs() {
            let Some(Storage::Buffer(b)) = plan.layout.storage[value.0] else {
                continue;
            };
            let feed = feeds
                .iter()
                .find(|f| f.name == name)
                .ok_or_else(|| GraphError::Feed {
                    name: name.to_owned(),
                    message: "this run needs it but it was not fed".to_owned(),
                })?;
            let want = plan.layout.types[value.0].len();
            let have = feed.bytes().len() / 4;
            if want != have {
                return Err(GraphError::Feed {
                    name: name.to_owned(),
                    message: format!("shape {:?} needs {want} elements, got {have}", feed.shape),
                });
            }
            gpu.write(&plan.buffers[b], feed.bytes());
        }
        for (id, dispatches, inputs) in &plan.lowered {
            self.graph.nodes[*id]
                .op
                .update(gpu, dispatches, inputs, step)?;
        }
        Ok(())
    }

    fn execute(&self, plan: &Plan, feeds: &[Feed<'_>], step: StepInfo) -> Result<Fetched> {
        let gpu = &self.gpu;
        self.write_inputs(plan, feeds, &step)?;
        let mut encoder = gpu.encoder("wgtrain.run");
        wgtrain_device::encode_all(
            &mut encoder,
            "wgtrain.run",
            plan.lowered.iter().flat_map(|(_, d, _)| d.iter()),
        );
        self.copy_fetched(plan, &mut encoder);
        gpu.submit(encoder);
        self.read_fetched(plan)
    }

    /// Records the copies of the fetched values into the plan's staging buffers.
    fn copy_fetched(&self, plan: &Plan, encoder: &mut wgpu::CommandEncoder) {
        for (value, staging, bytes) in &plan.staging {
            let src: &wgpu::Buffer = match plan.layout.storage[value.0] {
                Some(Storage::Buffer(b)) => &plan.buffers[b],
                Some(Storage::Variable(i)) => &self.variables[i],
                None => unreachable!("fetched values are planned"),
            };
            encoder.copy_buffer_to_buffer(src, 0, staging, 0, *bytes);
        }
    }

    /// Waits for the run's last submission and reads the fetched values back.
    fn read_fetched(&self, plan: &Plan) -> Result<Fetched> {
        for (_, staging, _) in &plan.staging {
            staging.slice(..).map_async(wgpu::MapMode::Read, |_| {});
        }
        self.gpu.sync()?;
        let mut fetched = Fetched::default();
        for (value, staging, bytes) in &plan.staging {
            let words = {
                let view = staging.slice(..).get_mapped_range().map_err(|e| {
                    GraphError::Invalid(format!("reading back value {value:?}: {e}"))
                })?;
                let len = plan.layout.types[value.0].len().min(*bytes as usize / 4);
                bytemuck::cast_slice::<u8, u32>(&view)[..len].to_vec()
            };
            staging.unmap();
            fetched.values.push((*value, words));
        }
        Ok(fetched)
    }

    /// Runs the plan `run` would use once more, but with one submission per node, timing
    /// each: `(op name, layer, dispatches, milliseconds)` in schedule order. A profile
    /// costs more than a step (every node waits for the GPU); use it to find the
    /// expensive nodes, not to measure the step.
    pub fn profile(
        &mut self,
        mode: Mode,
        feeds: &[Feed<'_>],
        fetch: &[Value],
        effects: &[NodeId],
        step: StepInfo,
    ) -> Result<Vec<(&'static str, String, usize, f64)>> {
        self.run(mode, feeds, fetch, effects, step)?; // compiles, writes the feeds
        let key = PlanKey {
            mode,
            feeds: feeds.iter().map(|f| (f.name.to_owned(), f.ty())).collect(),
            fetch: fetch.to_vec(),
            effects: effects.to_vec(),
        };
        let plan = &self.plans[&key];
        let mut out = Vec::with_capacity(plan.lowered.len());
        for (id, dispatches, _) in &plan.lowered {
            let node = &self.graph.nodes[*id];
            let start = std::time::Instant::now();
            let mut encoder = self.gpu.encoder("wgtrain.profile");
            wgtrain_device::encode_all(&mut encoder, node.op.name(), dispatches.iter());
            self.gpu.submit(encoder);
            self.gpu.sync()?;
            let ms = start.elapsed().as_secs_f64() * 1e3;
            out.push((node.op.name(), node.scope.clone(), dispatches.len(), ms));
        }
        Ok(out)
    }

    /// The current value of the variable named `name` (a separate, synchronous read).
    pub fn read_variable(&self, name: &str) -> Result<Vec<f32>> {
        let (i, v) = self.variable_index(name)?;
        Ok(self.gpu.download(&self.variables[i], v.ty.len())?)
    }

    /// Overwrites the variable named `name`; `data` must have exactly its length.
    pub fn write_variable(&self, name: &str, data: &[f32]) -> Result<()> {
        let (i, v) = self.variable_index(name)?;
        if data.len() != v.ty.len() {
            return Err(GraphError::Param {
                name: name.to_owned(),
                message: format!(
                    "has shape {} ({} elements), got {}",
                    v.ty,
                    v.ty.len(),
                    data.len()
                ),
            });
        }
        self.gpu.write(&self.variables[i], data);
        Ok(())
    }

    fn variable_index(&self, name: &str) -> Result<(usize, &crate::graph::Variable)> {
        self.graph
            .variables
            .iter()
            .enumerate()
            .find(|(_, v)| v.name == name)
            .ok_or_else(|| GraphError::Param {
                name: name.to_owned(),
                message: "no such parameter or state".to_owned(),
            })
    }

    /// True if `value` is fed by the caller.
    pub fn is_input(&self, value: Value) -> bool {
        matches!(self.graph.values[value.0].kind, ValueKind::Input(_))
    }
}
