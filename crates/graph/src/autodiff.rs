//! Reverse-mode automatic differentiation over a [`Graph`]: walks the nodes that lead
//! to the loss backwards, asks each op for its input gradients (new nodes appended to
//! the graph), and sums the gradients of values used more than once.

use std::collections::HashMap;

use crate::error::{GraphError, Result};
use crate::graph::Graph;
use crate::ops::elementwise::Add;
use crate::tensor::Value;

/// The gradient of the loss for each trainable variable that influences it.
#[derive(Clone, Debug, Default)]
pub struct Gradients {
    /// `(variable index, gradient value)`, in variable order.
    pub(crate) by_variable: Vec<(usize, Value)>,
}

impl Gradients {
    /// The gradient value of the variable named `name`, if it has one.
    pub fn of(&self, graph: &Graph, name: &str) -> Option<Value> {
        self.by_variable
            .iter()
            .find(|(i, _)| graph.variables[*i].name == name)
            .map(|&(_, v)| v)
    }

    /// `(variable name, gradient value)` pairs.
    pub fn iter<'a>(&'a self, graph: &'a Graph) -> impl Iterator<Item = (&'a str, Value)> + 'a {
        self.by_variable
            .iter()
            .map(|&(i, v)| (graph.variables[i].name.as_str(), v))
    }

    pub fn len(&self) -> usize {
        self.by_variable.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_variable.is_empty()
    }
}

impl Graph {
    /// Appends the backward pass of `loss` — a scalar produced by a loss op (e.g.
    /// softmax cross-entropy), seeded with gradient 1 — and returns the gradient of
    /// every trainable variable it depends on.
    pub fn backward(&mut self, loss: Value) -> Result<Gradients> {
        let end = self.producer(loss);
        let loss_node = &self.nodes[end];
        if !loss_node.op.is_loss() || loss_node.outputs[0] != loss {
            return Err(GraphError::Invalid(format!(
                "backward needs the loss output of a loss op, but the value comes from {} \
                 in layer `{}`",
                loss_node.op.name(),
                loss_node.scope
            )));
        }
        let needs = self.requires_grad(end);
        let mut grads: HashMap<Value, Value> = HashMap::new();
        grads.insert(loss, loss); // the seed: d loss / d loss = 1
        for id in (0..=end).rev() {
            let node = self.nodes[id].clone();
            if node.inputs.is_empty() || !node.inputs.iter().any(|v| needs[v.0]) {
                continue;
            }
            let out_grads: Vec<Option<Value>> =
                node.outputs.iter().map(|o| grads.get(o).copied()).collect();
            if out_grads.iter().all(Option::is_none) {
                continue;
            }
            let in_grads = self.scoped_at(&node.scope, |g| node.op.backward(g, id, &out_grads))?;
            for (input, grad) in node.inputs.iter().zip(in_grads) {
                let Some(grad) = grad else { continue };
                if !needs[input.0] {
                    continue;
                }
                let total = match grads.get(input) {
                    Some(&earlier) => {
                        self.scoped_at(&node.scope, |g| g.apply1(Add, &[earlier, grad]))?
                    }
                    None => grad,
                };
                grads.insert(*input, total);
            }
        }
        let by_variable = self
            .variables
            .iter()
            .enumerate()
            .filter(|(_, v)| v.trainable)
            .filter_map(|(i, v)| grads.get(&v.value).map(|&g| (i, g)))
            .collect();
        Ok(Gradients { by_variable })
    }

    /// Which values depend on a trainable variable, up to node `end`.
    fn requires_grad(&self, end: usize) -> Vec<bool> {
        let mut needs = vec![false; self.values.len()];
        for v in &self.variables {
            needs[v.value.0] = v.trainable;
        }
        for node in &self.nodes[..=end] {
            if node.inputs.iter().any(|v| needs[v.0]) {
                for o in &node.outputs {
                    needs[o.0] = true;
                }
            }
        }
        needs
    }

    /// Runs `f` with the scope set to `scope` (gradient nodes carry their forward
    /// node's layer name, so errors in the backward pass name the layer too).
    fn scoped_at<T>(&mut self, scope: &str, f: impl FnOnce(&mut Self) -> T) -> T {
        if scope.is_empty() {
            f(self)
        } else {
            self.scoped(scope, f)
        }
    }
}
