//! [`Graph`]: a model as a list of nodes in topological order (every node's inputs
//! exist before it), with inputs, variables (parameters and persistent state such as
//! batch-norm running statistics) and scope names for error messages and parameter
//! names.
//!
//! ## Design
//!
//! Building runs shape inference at once, so a mismatch fails where the user wrote it,
//! naming the op, the layer and both shapes. Autodiff ([`Graph::backward`]) appends the
//! gradient nodes to the same list, so planning and execution see one graph; nodes are
//! never removed, and a plan keeps only the nodes its outputs need.

use std::sync::Arc;

use crate::error::{GraphError, Result};
use crate::init::Init;
use crate::op::Op;
use crate::tensor::{TensorType, Value};

/// Index of a node in its graph.
pub type NodeId = usize;

/// One operation applied to values, producing values.
#[derive(Debug, Clone)]
pub struct Node {
    pub(crate) op: Arc<dyn Op>,
    pub(crate) inputs: Vec<Value>,
    pub(crate) outputs: Vec<Value>,
    pub(crate) scope: String,
}

/// Where a value's storage comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ValueKind {
    /// Fed by the caller at every run.
    Input(String),
    /// A persistent tensor (parameter or state), by index into `Graph::variables`.
    Variable(usize),
    /// Computed by a node.
    Computed,
}

#[derive(Clone, Debug)]
pub(crate) struct ValueInfo {
    pub ty: TensorType,
    pub node: NodeId,
    pub kind: ValueKind,
}

/// A persistent tensor: a trainable parameter or a state buffer.
#[derive(Clone, Debug)]
pub struct Variable {
    /// Full name, e.g. `features.0.weight` (torchvision's `state_dict` key).
    pub name: String,
    pub ty: TensorType,
    pub init: Init,
    /// Parameters get gradients and optimizer updates; state does not.
    pub trainable: bool,
    /// Optimizer state (momentum buffers, Adam moments): saved in checkpoints, but not
    /// part of the model's PyTorch `state_dict`.
    pub optimizer_state: bool,
    /// How the tensor is laid out, where that differs from PyTorch's layout.
    pub layout: Layout,
    /// Updated without weight decay (batch-norm and bias parameters in the large-batch
    /// recipe; see [`Graph::no_decay_on_norms_and_biases`]).
    pub no_decay: bool,
    pub(crate) value: Value,
}

/// The memory layout of a variable, for converting to and from PyTorch's layouts.
///
/// wgtrain runs NHWC activations, so two kinds of weights differ from PyTorch: convolution
/// weights (KRSC here, OIHW in PyTorch) and the weight of a linear layer that reads a
/// flattened feature map (its input columns are in `(h, w, c)` order here and `(c, h, w)`
/// in PyTorch, which flattens NCHW). The graph records both as the model is built.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Layout {
    /// Same as PyTorch (biases, batch-norm tensors, other linear weights).
    #[default]
    Plain,
    /// A convolution weight `[K, R, S, C/groups]` (PyTorch: `[K, C/groups, R, S]`).
    ConvKrsc,
    /// A linear weight `[out, h·w·c]` whose input is an NHWC map of `h × w × c` flattened.
    LinearOverNhwc { h: usize, w: usize, c: usize },
}

/// A model under construction (and, after [`Graph::backward`], its gradients).
#[derive(Debug, Default, Clone)]
pub struct Graph {
    pub(crate) nodes: Vec<Node>,
    pub(crate) values: Vec<ValueInfo>,
    pub(crate) variables: Vec<Variable>,
    pub(crate) scope: Vec<String>,
    /// Bucket ids handed out to host all-reduce nodes so far.
    pub(crate) reduce_buckets: u32,
}

/// Leaf op for inputs and variables: no dispatch, a fixed type.
#[derive(Debug)]
pub(crate) struct Leaf {
    pub ty: TensorType,
}

impl Op for Leaf {
    fn name(&self) -> &'static str {
        "leaf"
    }
    fn infer(&self, _: &[&TensorType]) -> Result<Vec<TensorType>, String> {
        Ok(vec![self.ty.clone()])
    }
    fn lower(&self, _: &crate::op::LowerCtx<'_>) -> Result<Vec<wgtrain_device::Dispatch>> {
        Ok(Vec::new())
    }
}

impl Graph {
    pub fn new() -> Self {
        Self::default()
    }

    /// The current scope as a dotted prefix (`""` at top level).
    pub fn scope_name(&self) -> String {
        self.scope.join(".")
    }

    fn qualified(&self, name: &str) -> String {
        let prefix = self.scope_name();
        if prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{prefix}.{name}")
        }
    }

    /// Runs `build` inside scope `name`: parameter names and error messages get the
    /// prefix `name.` (nested scopes join with dots, like PyTorch module paths).
    pub fn scoped<T>(&mut self, name: &str, build: impl FnOnce(&mut Self) -> T) -> T {
        self.scope.push(name.to_owned());
        let out = build(self);
        self.scope.pop();
        out
    }

    pub(crate) fn add_leaf(&mut self, ty: TensorType, kind: ValueKind) -> Value {
        let value = Value(self.values.len());
        let node = self.nodes.len();
        self.values.push(ValueInfo {
            ty: ty.clone(),
            node,
            kind,
        });
        self.nodes.push(Node {
            op: Arc::new(Leaf { ty }),
            inputs: Vec::new(),
            outputs: vec![value],
            scope: self.scope_name(),
        });
        value
    }

    /// An input fed at every run (e.g. `images` `[N, H, W, C]`, `labels` `[N]` u32). Its
    /// first dimension may change between runs (a smaller last batch).
    pub fn input(&mut self, name: &str, ty: TensorType) -> Result<Value> {
        if self.inputs().any(|(n, _)| n == name) {
            return Err(GraphError::Invalid(format!(
                "input `{name}` is defined twice"
            )));
        }
        Ok(self.add_leaf(ty, ValueKind::Input(name.to_owned())))
    }

    /// A trainable parameter named `scope.name`, initialised by `init`.
    pub fn param(&mut self, name: &str, shape: &[usize], init: Init) -> Result<Value> {
        self.variable(name, TensorType::f32(shape), init, true)
    }

    /// A persistent, non-trainable tensor (e.g. `running_mean`).
    pub fn state(&mut self, name: &str, ty: TensorType, init: Init) -> Result<Value> {
        self.variable(name, ty, init, false)
    }

    /// Optimizer state for a parameter (zero-initialised, not trainable, marked so that
    /// PyTorch exports leave it out).
    pub(crate) fn optimizer_state(&mut self, name: &str, ty: TensorType) -> Result<Value> {
        let value = self.variable(name, ty, Init::Constant(0.0), false)?;
        let index = self.variables.len() - 1;
        self.variables[index].optimizer_state = true;
        Ok(value)
    }

    /// Records the layout of `value` when it is a variable (see [`Layout`]).
    pub(crate) fn set_layout(&mut self, value: Value, layout: Layout) {
        if let ValueKind::Variable(index) = self.values[value.0].kind {
            self.variables[index].layout = layout;
        }
    }

    /// The NHWC map `[h, w, c]` that `x` is a flattening of, looking through ops that keep
    /// the shape (dropout, ReLU), or `None` when `x` is not a flattened map.
    pub(crate) fn flattened_map(&self, mut x: Value) -> Option<[usize; 3]> {
        loop {
            let info = &self.values[x.0];
            if info.kind != ValueKind::Computed {
                return None;
            }
            let node = &self.nodes[info.node];
            let input = *node.inputs.first()?;
            let in_shape = &self.values[input.0].ty.shape;
            if node.op.name() == "reshape" && in_shape.len() == 4 && info.ty.shape.len() == 2 {
                return Some([in_shape[1], in_shape[2], in_shape[3]]);
            }
            if *in_shape != info.ty.shape || node.outputs.first() != Some(&x) {
                return None;
            }
            x = input;
        }
    }

    fn variable(
        &mut self,
        name: &str,
        ty: TensorType,
        init: Init,
        trainable: bool,
    ) -> Result<Value> {
        let name = self.qualified(name);
        if self.variables.iter().any(|v| v.name == name) {
            return Err(GraphError::Param {
                name,
                message: "defined twice".to_owned(),
            });
        }
        let index = self.variables.len();
        let value = self.add_leaf(ty.clone(), ValueKind::Variable(index));
        self.variables.push(Variable {
            name,
            ty,
            init,
            trainable,
            optimizer_state: false,
            layout: Layout::Plain,
            no_decay: false,
            value,
        });
        Ok(value)
    }

    /// Applies `op` to `inputs`, inferring the output types now. Returns every output
    /// (ops with one result return one value; some add scratch or saved tensors).
    pub fn apply(&mut self, op: impl Op + 'static, inputs: &[Value]) -> Result<Vec<Value>> {
        self.apply_arc(Arc::new(op), inputs)
    }

    pub(crate) fn apply_arc(&mut self, op: Arc<dyn Op>, inputs: &[Value]) -> Result<Vec<Value>> {
        let types: Vec<&TensorType> = inputs.iter().map(|v| &self.values[v.0].ty).collect();
        let outputs = op.infer(&types).map_err(|message| GraphError::Shape {
            op: op.name(),
            layer: self.scope_name(),
            message,
        })?;
        let node = self.nodes.len();
        let values: Vec<Value> = outputs
            .into_iter()
            .map(|ty| {
                let v = Value(self.values.len());
                self.values.push(ValueInfo {
                    ty,
                    node,
                    kind: ValueKind::Computed,
                });
                v
            })
            .collect();
        self.nodes.push(Node {
            op,
            inputs: inputs.to_vec(),
            outputs: values.clone(),
            scope: self.scope_name(),
        });
        Ok(values)
    }

    /// Applies a single-output op (the first output of `apply`).
    pub fn apply1(&mut self, op: impl Op + 'static, inputs: &[Value]) -> Result<Value> {
        Ok(self.apply(op, inputs)?[0])
    }

    /// The type of `value` as built.
    pub fn ty(&self, value: Value) -> &TensorType {
        &self.values[value.0].ty
    }

    /// The inputs by name, in creation order.
    pub fn inputs(&self) -> impl Iterator<Item = (&str, Value)> {
        self.values
            .iter()
            .enumerate()
            .filter_map(|(i, v)| match &v.kind {
                ValueKind::Input(name) => Some((name.as_str(), Value(i))),
                _ => None,
            })
    }

    /// Parameters and state, in creation order.
    pub fn variables(&self) -> &[Variable] {
        &self.variables
    }

    /// The variable named `name`.
    pub fn variable_named(&self, name: &str) -> Option<&Variable> {
        self.variables.iter().find(|v| v.name == name)
    }

    /// Changes how the variable `name` is initialised (before a session is made).
    pub fn set_init(&mut self, name: &str, init: Init) -> Result<()> {
        let v = self
            .variables
            .iter_mut()
            .find(|v| v.name == name)
            .ok_or_else(|| GraphError::Param {
                name: name.to_owned(),
                message: "no such parameter or state".to_owned(),
            })?;
        v.init = init;
        Ok(())
    }

    /// Exempts the batch-norm parameters (γ and β of every batch norm) and the biases
    /// (`*.bias`) from weight decay, as in Goyal et al. 2017 (§5.1); call before
    /// `minimize`. Returns their names.
    pub fn no_decay_on_norms_and_biases(&mut self) -> Vec<String> {
        let mut norm_params: Vec<Value> = Vec::new();
        for node in &self.nodes {
            if node.op.as_batch_norm().is_some() {
                norm_params.extend([node.inputs[1], node.inputs[2]]);
            }
        }
        let mut names = Vec::new();
        for v in self.variables.iter_mut().filter(|v| v.trainable) {
            if norm_params.contains(&v.value) || v.name.ends_with(".bias") || v.name == "bias" {
                v.no_decay = true;
                names.push(v.name.clone());
            }
        }
        names
    }

    /// Number of trainable scalars.
    pub fn parameter_count(&self) -> usize {
        self.variables
            .iter()
            .filter(|v| v.trainable)
            .map(|v| v.ty.len())
            .sum()
    }

    /// Number of nodes (leaves included).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True for a graph with no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub(crate) fn producer(&self, value: Value) -> NodeId {
        self.values[value.0].node
    }
}
