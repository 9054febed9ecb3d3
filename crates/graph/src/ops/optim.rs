//! Optimizers as graph nodes: each parameter's update runs on the GPU inside the
//! training step's submission, in place on the parameter and its optimizer state. The
//! learning rate and step live in the update's uniform buffer and are rewritten before
//! every run, so a schedule never recompiles. [`Graph::minimize`] wires it all up.

use wgtrain_device::kernels::optimizer::{Adam, Sgd};
use wgtrain_device::{Dispatch, Gpu};

use crate::autodiff::Gradients;
use crate::error::{GraphError, Result};
use crate::graph::{Graph, NodeId};
use crate::op::{LowerCtx, Mode, Op, StepInfo, expect};
use crate::ops::clip::{ClipGrad, GradNorm};
use crate::ops::finite::CountNonFinite;
use crate::ops::loss::CORRECT;
use crate::ops::sync::{AllReduce, Copy, Reduction};
use crate::tensor::{DType, TensorType, Value};

/// An optimizer and its hyper-parameters (PyTorch's semantics and defaults).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Optimizer {
    /// `torch.optim.SGD`.
    Sgd {
        momentum: f32,
        dampening: f32,
        weight_decay: f32,
        nesterov: bool,
    },
    /// `torch.optim.Adam`, or `AdamW` when `decoupled`.
    Adam {
        beta1: f32,
        beta2: f32,
        eps: f32,
        weight_decay: f32,
        decoupled: bool,
    },
}

impl Optimizer {
    /// Plain SGD.
    pub fn sgd() -> Self {
        Optimizer::Sgd {
            momentum: 0.0,
            dampening: 0.0,
            weight_decay: 0.0,
            nesterov: false,
        }
    }

    /// SGD with momentum (and optionally Nesterov) and weight decay.
    pub fn sgd_momentum(momentum: f32, weight_decay: f32, nesterov: bool) -> Self {
        Optimizer::Sgd {
            momentum,
            dampening: 0.0,
            weight_decay,
            nesterov,
        }
    }

    /// This optimizer without weight decay.
    pub fn without_weight_decay(self) -> Self {
        match self {
            Optimizer::Sgd {
                momentum,
                dampening,
                nesterov,
                ..
            } => Optimizer::Sgd {
                momentum,
                dampening,
                weight_decay: 0.0,
                nesterov,
            },
            Optimizer::Adam {
                beta1,
                beta2,
                eps,
                decoupled,
                ..
            } => Optimizer::Adam {
                beta1,
                beta2,
                eps,
                weight_decay: 0.0,
                decoupled,
            },
        }
    }

    /// Adam with PyTorch's defaults.
    pub fn adam() -> Self {
        Optimizer::Adam {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            decoupled: false,
        }
    }

    /// AdamW with the given decoupled weight decay.
    pub fn adamw(weight_decay: f32) -> Self {
        Optimizer::Adam {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay,
            decoupled: true,
        }
    }
}

/// The in-place update of one parameter. Inputs: `param`, `grad`, then the optimizer
/// state (SGD: the momentum buffer when momentum ≠ 0; Adam: `exp_avg`, `exp_avg_sq`),
/// then, with a `nonfinite_slot`, the `[k]` u32 counts of a fused
/// [`CountNonFinite`], into whose slot the update counts the gradient's NaN and ±Inf
/// elements.
#[derive(Debug, Clone, Copy)]
pub struct Update {
    pub optimizer: Optimizer,
    pub nonfinite_slot: Option<u32>,
}

impl Update {
    fn sgd(&self, count: u32) -> Option<Sgd> {
        match self.optimizer {
            Optimizer::Sgd {
                momentum,
                dampening,
                weight_decay,
                nesterov,
            } => Some(Sgd {
                count,
                lr: 0.0,
                momentum,
                dampening,
                weight_decay,
                nesterov,
                nonfinite_slot: self.nonfinite_slot,
            }),
            Optimizer::Adam { .. } => None,
        }
    }

    fn adam(&self, count: u32) -> Option<Adam> {
        match self.optimizer {
            Optimizer::Adam {
                beta1,
                beta2,
                eps,
                weight_decay,
                decoupled,
            } => Some(Adam {
                count,
                lr: 0.0,
                beta1,
                beta2,
                eps,
                weight_decay,
                decoupled,
                nonfinite_slot: self.nonfinite_slot,
            }),
            Optimizer::Sgd { .. } => None,
        }
    }
}

impl Op for Update {
    fn name(&self) -> &'static str {
        "optimizer_update"
    }

    fn infer(&self, inputs: &[&TensorType]) -> Result<Vec<TensorType>, String> {
        let param = inputs[0];
        let tensors = match self.nonfinite_slot {
            Some(slot) => {
                let counts = inputs[inputs.len() - 1];
                expect(
                    counts.dtype == DType::U32 && counts.len() > slot as usize,
                    || format!("non-finite counts {counts} have no slot {slot}"),
                )?;
                &inputs[1..inputs.len() - 1]
            }
            None => &inputs[1..],
        };
        for t in tensors {
            expect(*t == param, || format!("parameter {param} and {t} differ"))?;
        }
        Ok(Vec::new())
    }

    fn lower(&self, ctx: &LowerCtx<'_>) -> Result<Vec<Dispatch>> {
        let count = ctx.inputs[0].len() as u32;
        let (b, counts) = match self.nonfinite_slot {
            Some(_) => {
                let (last, rest) = ctx.in_bufs.split_last().expect("infer saw the counts");
                (rest, Some(*last))
            }
            None => (ctx.in_bufs, None),
        };
        let d = if let Some(k) = self.sgd(count) {
            k.prepare_counting(ctx.gpu, b[0], b[1], b.get(2).copied(), counts)?
        } else if let Some(k) = self.adam(count) {
            k.prepare_counting(ctx.gpu, b[0], b[1], b[2], b[3], counts)?
        } else {
            unreachable!("every optimizer is SGD or Adam")
        };
        Ok(vec![d])
    }

    fn mutates(&self, _: Mode) -> &'static [usize] {
        &[0, 2, 3]
    }

    fn update(
        &self,
        gpu: &Gpu,
        dispatches: &[Dispatch],
        inputs: &[TensorType],
        step: &StepInfo,
    ) -> Result<()> {
        let (Some(d), step_no) = (dispatches.first(), step.step.max(1)) else {
            return Ok(());
        };
        // The uniform holds the element count too: rebuild it from this plan's shape.
        let count = inputs[0].len() as u32;
        if let Some(k) = self.sgd(count) {
            k.write_step(gpu, d, step_no, step.lr)?;
        } else if let Some(k) = self.adam(count) {
            k.write_step(gpu, d, step_no, step.lr)?;
        }
        Ok(())
    }
}

/// What [`Graph::minimize`] built: the loss, accuracy counts, gradients and updates.
#[derive(Debug, Clone)]
pub struct Training {
    pub loss: Value,
    /// `[2]` u32: top-1 and top-5 hits, when the loss is a softmax cross-entropy.
    pub correct: Option<Value>,
    pub gradients: Gradients,
    /// The update nodes, one per trainable parameter with a gradient.
    pub updates: Vec<NodeId>,
    /// `[k]` u32: how many elements of each (unclipped) gradient are NaN or ±Inf, in the
    /// order of [`Gradients::iter`]; checked on the GPU in every training step.
    pub nonfinite: Value,
    /// The gradient all-reduce buckets of [`Graph::minimize_synced`], in the order
    /// backward completes them (empty for a single-replica graph).
    pub buckets: Vec<GradBucket>,
}

/// One bucket of gradients reduced across replicas as a single message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GradBucket {
    /// The bucket id of its [`AllReduce`] nodes.
    pub id: u32,
    /// Its gradients' bytes in all.
    pub bytes: u64,
    /// Its gradients, as slots of [`Training::gradients`] (variable order).
    pub slots: Vec<usize>,
}

impl Training {
    /// What [`Session::train_step`](crate::Session::train_step) fetches, in its order:
    /// the loss, the hit counts (if any) and the non-finite counts. Pass it to
    /// [`Session::plan_report`](crate::Session::plan_report) to see the step's plan.
    pub fn step_fetch(&self) -> Vec<Value> {
        std::iter::once(self.loss)
            .chain(self.correct)
            .chain([self.nonfinite])
            .collect()
    }

    /// The name of the parameter whose gradient is slot `slot` of
    /// [`nonfinite`](Self::nonfinite).
    pub fn gradient_name<'g>(&self, graph: &'g Graph, slot: usize) -> Option<&'g str> {
        let &(var, _) = self.gradients.by_variable.get(slot)?;
        graph.variables.get(var).map(|v| v.name.as_str())
    }
}

impl Graph {
    /// Differentiates `loss` and appends an `optimizer` update for every trainable
    /// parameter it depends on, creating the optimizer state tensors (zeros) as
    /// `<param>.momentum_buffer`, `<param>.exp_avg`, `<param>.exp_avg_sq`.
    pub fn minimize(&mut self, loss: Value, optimizer: Optimizer) -> Result<Training> {
        self.minimize_with(loss, optimizer, None)
    }

    /// [`minimize`](Self::minimize), first clipping the gradients to a global L2 norm of
    /// at most `clip_grad_norm` (as `torch.nn.utils.clip_grad_norm_`), on the GPU in the
    /// same submission. [`Training::gradients`] are the unclipped gradients.
    pub fn minimize_with(
        &mut self,
        loss: Value,
        optimizer: Optimizer,
        clip_grad_norm: Option<f32>,
    ) -> Result<Training> {
        self.minimize_impl(loss, optimizer, clip_grad_norm, None)
    }

    /// [`minimize_with`](Self::minimize_with) for data-parallel replicas: every gradient
    /// is all-reduced across replicas ([`Reduction::BatchMean`]) before clipping and the
    /// update. Gradients are grouped into buckets of at most `bucket_bytes` (a larger
    /// gradient gets a bucket of its own) in the order backward produces them, so a
    /// bucket can travel while backward goes on. Run it with
    /// [`Session::train_step_synced`](crate::Session::train_step_synced); a plain
    /// `train_step` treats the reductions as the identity (one replica).
    pub fn minimize_synced(
        &mut self,
        loss: Value,
        optimizer: Optimizer,
        clip_grad_norm: Option<f32>,
        bucket_bytes: u64,
    ) -> Result<Training> {
        self.minimize_impl(loss, optimizer, clip_grad_norm, Some(bucket_bytes.max(1)))
    }

    fn minimize_impl(
        &mut self,
        loss: Value,
        optimizer: Optimizer,
        clip_grad_norm: Option<f32>,
        bucket_bytes: Option<u64>,
    ) -> Result<Training> {
        let gradients = self.backward(loss)?;
        if gradients.is_empty() {
            return Err(GraphError::Invalid(
                "the loss depends on no trainable parameter".into(),
            ));
        }
        let mut applied: Vec<(usize, Value)> = gradients.by_variable.clone();
        let buckets = match bucket_bytes {
            Some(limit) => self.reduce_gradients(&mut applied, limit)?,
            None => Vec::new(),
        };
        // Before clipping: the check must see the raw gradients, and it must be
        // scheduled before the in-place clip overwrites them.
        let raw: Vec<Value> = applied.iter().map(|&(_, g)| g).collect();
        // Without clipping the updates read the raw gradients, so they count them too
        // (one pass over the gradients fewer); clipping rewrites them first, so there a
        // pass of its own counts them.
        let fused = clip_grad_norm.is_none();
        let nonfinite = self.apply1(CountNonFinite { fused }, &raw)?;
        if let Some(max_norm) = clip_grad_norm {
            let grads: Vec<Value> = applied.iter().map(|&(_, g)| g).collect();
            let norms = self.apply(GradNorm { max_norm }, &grads)?[0];
            for (_, g) in applied.iter_mut() {
                *g = self.apply1(ClipGrad, &[*g, norms])?;
            }
        }
        let mut updates = Vec::with_capacity(applied.len());
        for (slot, &(var, grad)) in applied.iter().enumerate() {
            let (name, ty, param, no_decay) = {
                let v = &self.variables[var];
                (v.name.clone(), v.ty.clone(), v.value, v.no_decay)
            };
            let optimizer = match no_decay {
                true => optimizer.without_weight_decay(),
                false => optimizer,
            };
            let mut inputs = vec![param, grad];
            let state_names: &[&str] = match optimizer {
                Optimizer::Sgd { momentum, .. } if momentum != 0.0 => &["momentum_buffer"],
                Optimizer::Sgd { .. } => &[],
                Optimizer::Adam { .. } => &["exp_avg", "exp_avg_sq"],
            };
            for s in state_names {
                inputs.push(self.optimizer_state(&format!("{name}.{s}"), ty.clone())?);
            }
            let nonfinite_slot = fused.then_some(slot as u32);
            if fused {
                inputs.push(nonfinite);
            }
            self.apply(
                Update {
                    optimizer,
                    nonfinite_slot,
                },
                &inputs,
            )?;
            updates.push(self.nodes.len() - 1);
        }
        let loss_node = self.producer(loss);
        let correct = self.nodes[loss_node].outputs.get(CORRECT).copied();
        Ok(Training {
            loss,
            correct,
            gradients,
            updates,
            nonfinite,
            buckets,
        })
    }

    /// Puts an [`AllReduce`] after every gradient of `applied` (replacing it there),
    /// bucketed in the order the gradients' producers run.
    fn reduce_gradients(
        &mut self,
        applied: &mut [(usize, Value)],
        limit: u64,
    ) -> Result<Vec<GradBucket>> {
        // A gradient that other nodes read too (Add's backward hands one value to both of
        // its inputs), or that stands for several parameters, is reduced in a copy: the
        // write-back must not change what the others see.
        let readers = |g: &Self, v: Value| g.nodes.iter().filter(|n| n.inputs.contains(&v)).count();
        for slot in 0..applied.len() {
            let grad = applied[slot].1;
            let shared = applied.iter().filter(|a| a.1 == grad).count() > 1;
            if shared || readers(self, grad) > 0 {
                let scope = self.variables[applied[slot].0].name.clone();
                applied[slot].1 = self.scoped(&scope, |g| g.apply1(Copy, &[grad]))?;
            }
        }
        let mut order: Vec<usize> = (0..applied.len()).collect();
        order.sort_by_key(|&slot| (self.producer(applied[slot].1), slot));
        let mut buckets: Vec<GradBucket> = Vec::new();
        for slot in order {
            let bytes = self.ty(applied[slot].1).bytes();
            let fits = buckets.last().is_some_and(|b| b.bytes + bytes <= limit);
            if !fits {
                let id = self.new_reduce_bucket();
                buckets.push(GradBucket {
                    id,
                    bytes: 0,
                    slots: Vec::new(),
                });
            }
            let bucket = buckets.last_mut().expect("pushed above");
            bucket.bytes += bytes;
            bucket.slots.push(slot);
            let (var, grad) = applied[slot];
            let scope = self.variables[var].name.clone();
            let reduced = self.scoped(&scope, |g| {
                g.apply1(
                    AllReduce {
                        bucket: bucket.id,
                        reduction: Reduction::BatchMean,
                    },
                    &[grad],
                )
            })?;
            applied[slot].1 = reduced;
        }
        Ok(buckets)
    }
}
