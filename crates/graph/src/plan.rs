//! The planner: which nodes a run needs, in what order, which ReLUs fuse into their
//! producers, which values share storage (aliases, in-place ops), how long each storage
//! lives, and which pooled buffer holds it.
//!
//! ## Design
//!
//! Nodes are already in topological order, so the schedule is the needed nodes in graph
//! order. Every value maps to a *storage root*: itself, or the root of the value it
//! aliases (reshape, fused ReLU, dropout in evaluation) or overwrites (an in-place op
//! whose input dies at that op). A root lives from its producer to its last reader;
//! inputs live from the start (they are written before the first dispatch) and fetched
//! values to the end (they are copied out after the last). Roots are packed into
//! buffers best-fit in schedule order: a buffer is free again right after its last
//! reader, so later values reuse it. Variables (parameters and state) are persistent and
//! never planned.

use std::collections::HashSet;

use wgtrain_device::DeviceError;

use crate::error::{GraphError, Result};
use crate::graph::{Graph, NodeId, ValueKind};
use crate::op::Mode;
use crate::tensor::{TensorType, Value};

/// What a compiled plan costs, for humans and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PlanReport {
    /// Nodes that run (leaves excluded).
    pub nodes: usize,
    /// Kernel dispatches per run.
    pub dispatches: usize,
    /// ReLUs fused into the kernel that produced their input (one dispatch each saved).
    pub fused_relus: usize,
    /// Ops that overwrite their input instead of taking a new buffer.
    pub in_place: usize,
    /// Buffers the plan allocates for inputs and intermediates.
    pub buffers: usize,
    /// Bytes of those buffers: the planned peak of transient memory.
    pub planned_bytes: u64,
    /// What giving every input and intermediate its own buffer would take.
    pub naive_bytes: u64,
    /// The most bytes live at once in this schedule: the floor for any assignment of
    /// these values to buffers (`planned_bytes` above it is fragmentation).
    pub live_peak_bytes: u64,
    /// Parameters, state and optimizer state (allocated once per session).
    pub persistent_bytes: u64,
}

impl std::fmt::Display for PlanReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        write!(
            f,
            "{} nodes, {} dispatches ({} ReLUs fused, {} in place), {} buffers: planned \
             {:.2} MiB (live peak {:.2}) vs {:.2} MiB naive ({:.1}x less); persistent {:.2} MiB",
            self.nodes,
            self.dispatches,
            self.fused_relus,
            self.in_place,
            self.buffers,
            mib(self.planned_bytes),
            mib(self.live_peak_bytes),
            mib(self.naive_bytes),
            self.naive_bytes as f64 / self.planned_bytes.max(1) as f64,
            mib(self.persistent_bytes),
        )
    }
}

/// Where a value lives during a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Storage {
    /// A persistent variable (index into `Graph::variables`).
    Variable(usize),
    /// A planned buffer (index into `Layout::buffer_bytes`).
    Buffer(usize),
}

/// The result of planning: schedule, storage of every value, buffer sizes.
#[derive(Debug)]
pub(crate) struct Layout {
    pub types: Vec<TensorType>,
    pub schedule: Vec<NodeId>,
    pub storage: Vec<Option<Storage>>,
    pub buffer_bytes: Vec<u64>,
    /// Producers whose output 0 gets a fused ReLU epilogue.
    pub fused_producers: HashSet<NodeId>,
    /// Nodes that emit no dispatch (aliases, fused ReLUs).
    pub silent: HashSet<NodeId>,
    /// Nodes whose output 0 overwrites an input.
    pub in_place: HashSet<NodeId>,
    pub report: PlanReport,
}

/// Shape inference for `feeds` (input name → type) over the whole graph.
pub(crate) fn infer_types(
    graph: &Graph,
    feeds: &[(String, TensorType)],
) -> Result<Vec<TensorType>> {
    let mut types: Vec<TensorType> = graph.values.iter().map(|v| v.ty.clone()).collect();
    for (name, ty) in feeds {
        let (_, value) =
            graph
                .inputs()
                .find(|(n, _)| n == name)
                .ok_or_else(|| GraphError::Feed {
                    name: name.clone(),
                    message: format!(
                        "the graph has no such input (inputs: {})",
                        graph
                            .inputs()
                            .map(|(n, _)| n)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                })?;
        let built = &graph.values[value.0].ty;
        let same_rank_and_tail = built.shape.len() == ty.shape.len()
            && built.shape[1..] == ty.shape[1..]
            && built.dtype == ty.dtype;
        if !same_rank_and_tail {
            return Err(GraphError::Feed {
                name: name.clone(),
                message: format!("built as {built}, fed {ty}: only the batch dimension may change"),
            });
        }
        types[value.0] = ty.clone();
    }
    for node in &graph.nodes {
        if node.inputs.is_empty() {
            continue;
        }
        let inputs: Vec<&TensorType> = node.inputs.iter().map(|v| &types[v.0]).collect();
        let outputs = node
            .op
            .infer(&inputs)
            .map_err(|message| GraphError::Shape {
                op: node.op.name(),
                layer: node.scope.clone(),
                message,
            })?;
        for (v, ty) in node.outputs.iter().zip(outputs) {
            types[v.0] = ty;
        }
    }
    Ok(types)
}

/// Plans a run that computes `fetch` and runs the side-effect nodes `effects` (e.g.
/// optimizer updates), with everything they need.
pub(crate) fn plan(
    graph: &Graph,
    types: Vec<TensorType>,
    fetch: &[Value],
    effects: &[NodeId],
    mode: Mode,
) -> Result<Layout> {
    let schedule = needed_nodes(graph, fetch, effects);
    let end = schedule.len();
    let fetched: HashSet<Value> = fetch.iter().copied().collect();

    // Consumers of each value within the schedule, and its last reader.
    let mut readers = vec![0usize; graph.values.len()];
    let mut last_read = vec![None::<usize>; graph.values.len()];
    for (pos, &id) in schedule.iter().enumerate() {
        for v in &graph.nodes[id].inputs {
            readers[v.0] += 1;
            last_read[v.0] = Some(pos);
        }
    }
    for v in fetch {
        last_read[v.0] = Some(end);
    }

    // Fusion: a ReLU whose input is the sole-reader output 0 of an op with an epilogue.
    let mut fused_producers = HashSet::new();
    let mut silent = HashSet::new();
    for &id in &schedule {
        let node = &graph.nodes[id];
        if !node.op.is_relu() {
            continue;
        }
        let input = node.inputs[0];
        let producer = graph.producer(input);
        let p = &graph.nodes[producer];
        if p.op.accepts_relu_epilogue()
            && p.outputs[0] == input
            && readers[input.0] == 1
            && !fetched.contains(&input)
        {
            fused_producers.insert(producer);
            silent.insert(id);
        }
    }

    // Storage roots: aliases and in-place outputs share their input's root.
    let mut root: Vec<usize> = (0..graph.values.len()).collect();
    let mut root_last: Vec<Option<usize>> = last_read.clone();
    let mut in_place = HashSet::new();
    for (pos, &id) in schedule.iter().enumerate() {
        let node = &graph.nodes[id];
        let Some(&out) = node.outputs.first() else {
            continue;
        };
        let share = if silent.contains(&id) || node.op.alias(mode) {
            Some(0)
        } else {
            node.op.in_place().filter(|&i| {
                let r = root[node.inputs[i].0];
                let read_twice = node
                    .inputs
                    .iter()
                    .enumerate()
                    .any(|(j, v)| j != i && root[v.0] == r);
                root_last[r] == Some(pos)
                    && !read_twice
                    && graph.values[r].kind == ValueKind::Computed
                    && types[r].bytes() == types[out.0].bytes()
            })
        };
        if let Some(i) = share {
            let r = root[node.inputs[i].0];
            root[out.0] = r;
            root_last[r] = root_last[r].max(last_read[out.0]);
            if !silent.contains(&id) && !node.op.alias(mode) {
                in_place.insert(id);
            } else {
                silent.insert(id);
            }
        }
    }

    // Buffer assignment, best fit, in schedule order.
    let mut storage: Vec<Option<Storage>> = vec![None; graph.values.len()];
    let mut buffer_bytes: Vec<u64> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut release_at: Vec<Vec<usize>> = vec![Vec::new(); end + 1];
    let mut naive_bytes = 0u64;
    // Bytes that become live at (and die after) each position, for the live peak.
    let mut born = vec![0u64; end + 1];
    let mut dies = vec![0u64; end + 1];
    let mut assign =
        |r: usize, bytes: u64, storage: &mut Vec<Option<Storage>>, free: &mut Vec<usize>| {
            let best = free
                .iter()
                .enumerate()
                .filter(|&(_, &b)| buffer_bytes[b] >= bytes)
                .min_by_key(|&(_, &b)| buffer_bytes[b])
                .or_else(|| {
                    free.iter()
                        .enumerate()
                        .max_by_key(|&(_, &b)| buffer_bytes[b])
                })
                .map(|(i, _)| i);
            let b = match best {
                Some(i) => free.swap_remove(i),
                None => {
                    buffer_bytes.push(0);
                    buffer_bytes.len() - 1
                }
            };
            buffer_bytes[b] = buffer_bytes[b].max(bytes);
            storage[r] = Some(Storage::Buffer(b));
            b
        };
    // Inputs first: they are written before the first dispatch.
    let mut start_roots: Vec<usize> = Vec::new();
    for (v, info) in graph.values.iter().enumerate() {
        match info.kind {
            ValueKind::Variable(i) => storage[v] = Some(Storage::Variable(i)),
            ValueKind::Input(_) if last_read[v].is_some() => start_roots.push(v),
            _ => {}
        }
    }
    for &r in &start_roots {
        let bytes = types[r].bytes().max(4);
        naive_bytes += bytes;
        let b = assign(r, bytes, &mut storage, &mut free);
        let last = root_last[r].unwrap_or(0).min(end);
        release_at[last].push(b);
        born[0] += bytes;
        dies[last] += bytes;
    }
    for (pos, &id) in schedule.iter().enumerate() {
        for &out in &graph.nodes[id].outputs {
            let r = root[out.0];
            if r != out.0 || graph.values[r].kind != ValueKind::Computed {
                continue; // shares an earlier root's storage, or is an input or variable
            }
            let bytes = types[r].bytes().max(4);
            naive_bytes += bytes;
            let b = assign(r, bytes, &mut storage, &mut free);
            let last = root_last[r].unwrap_or(pos).max(pos).min(end);
            release_at[last].push(b);
            born[pos] += bytes;
            dies[last] += bytes;
        }
        free.append(&mut release_at[pos]);
    }
    for v in 0..graph.values.len() {
        if storage[v].is_none() && root[v] != v {
            storage[v] = storage[root[v]];
        }
    }
    let (mut live, mut live_peak_bytes) = (0u64, 0u64);
    for pos in 0..=end {
        live += born[pos];
        live_peak_bytes = live_peak_bytes.max(live);
        live -= dies[pos];
    }
    let persistent_bytes = graph.variables.iter().map(|v| v.ty.bytes()).sum();
    let report = PlanReport {
        nodes: schedule
            .iter()
            .filter(|&&id| !graph.nodes[id].inputs.is_empty())
            .count(),
        dispatches: 0,
        fused_relus: fused_producers.len(),
        in_place: in_place.len(),
        buffers: buffer_bytes.len(),
        planned_bytes: buffer_bytes.iter().sum(),
        naive_bytes,
        live_peak_bytes,
        persistent_bytes,
    };
    Ok(Layout {
        types,
        schedule,
        storage,
        buffer_bytes,
        fused_producers,
        silent,
        in_place,
        report,
    })
}

/// Adds to a pool's refusal of planned buffer `b` what the buffer is for — its largest
/// value (an input by name, else the op and layer producing it) with its shape — and the
/// whole step's planned bytes, so the user sees which tensor is too large.
pub(crate) fn explain_buffer(
    graph: &Graph,
    layout: &Layout,
    b: usize,
    err: DeviceError,
) -> DeviceError {
    let DeviceError::TooLarge { what, bytes, limit } = err else {
        return err;
    };
    let largest = (0..layout.storage.len())
        .filter(|&v| layout.storage[v] == Some(Storage::Buffer(b)))
        // An input and its reshapes share a buffer: on a tie, name the input the user feeds.
        .max_by_key(|&v| {
            let input = matches!(graph.values[v].kind, ValueKind::Input(_));
            (layout.types[v].bytes(), input)
        });
    let what = match largest {
        Some(v) => {
            let info = &graph.values[v];
            let node = &graph.nodes[info.node];
            let tensor = match &info.kind {
                ValueKind::Input(name) => format!("input `{name}`"),
                _ if node.scope.is_empty() => format!("output of {}", node.op.name()),
                _ => format!("output of {} in layer `{}`", node.op.name(), node.scope),
            };
            format!(
                "{what} ({tensor} {}; this step plans {:.1} MiB of buffers in all)",
                layout.types[v],
                layout.report.planned_bytes as f64 / 1048576.0
            )
        }
        None => what,
    };
    DeviceError::TooLarge { what, bytes, limit }
}

/// The nodes needed for `fetch` and `effects`, in graph (topological) order.
fn needed_nodes(graph: &Graph, fetch: &[Value], effects: &[NodeId]) -> Vec<NodeId> {
    let mut needed = vec![false; graph.nodes.len()];
    let mut stack: Vec<NodeId> = fetch.iter().map(|&v| graph.producer(v)).collect();
    stack.extend_from_slice(effects);
    while let Some(id) = stack.pop() {
        if std::mem::replace(&mut needed[id], true) {
            continue;
        }
        stack.extend(graph.nodes[id].inputs.iter().map(|&v| graph.producer(v)));
    }
    (0..graph.nodes.len()).filter(|&id| needed[id]).collect()
}
