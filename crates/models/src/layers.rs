//! Layers, named as torchvision names its modules so that parameter names match a
//! PyTorch `state_dict` (`features.0.weight`, `layer1.0.downsample.1.running_mean`).
//! A [`Sequential`] numbers its layers from 0 like `nn.Sequential`; residual blocks name
//! their parts `conv1`, `bn1`, …, `downsample.0` / `downsample.1`.
//!
//! Weights are stored for the NHWC kernels: convolutions as KRSC `[K, R, S, C/groups]`
//! (PyTorch: OIHW), linear layers as `[out, in]` (as PyTorch).

use wgtrain_graph::ops::conv::Conv2dAttrs;
use wgtrain_graph::ops::norm::LocalResponseNorm;
use wgtrain_graph::ops::pool::Pool2dAttrs;
use wgtrain_graph::{Graph, Init, TensorType, Value};

use crate::error::{ModelError, Result};

/// One layer of a [`Sequential`].
#[derive(Debug, Clone, PartialEq)]
pub enum Layer {
    /// `nn.Conv2d(in, out, kernel, stride, padding, groups, bias)`.
    Conv2d {
        in_c: usize,
        out_c: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        groups: usize,
        bias: bool,
    },
    /// `nn.Linear(in, out)`.
    Linear { in_f: usize, out_f: usize },
    /// `nn.BatchNorm2d(c)` (also over `[N, C]`).
    BatchNorm2d,
    /// `nn.MaxPool2d(kernel, stride, padding)`.
    MaxPool2d {
        kernel: usize,
        stride: usize,
        padding: usize,
    },
    /// `nn.AvgPool2d(kernel, stride)`.
    AvgPool2d { kernel: usize, stride: usize },
    /// `nn.AdaptiveAvgPool2d(out)`: supported when the input size is a multiple of `out`
    /// (an average pool with window input/out), which covers every zoo model.
    AdaptiveAvgPool2d { out: usize },
    /// `nn.LocalResponseNorm(size, alpha, beta, k)`.
    LocalResponseNorm {
        size: u32,
        alpha: f32,
        beta: f32,
        k: f32,
    },
    /// `nn.Dropout(p)`.
    Dropout { p: f32 },
    /// `nn.ReLU()`.
    Relu,
    /// `nn.Flatten()`.
    Flatten,
}

impl Layer {
    /// A bias-carrying convolution with PyTorch's default initialisation.
    pub fn conv(in_c: usize, out_c: usize, kernel: usize, stride: usize, padding: usize) -> Self {
        Layer::Conv2d {
            in_c,
            out_c,
            kernel,
            stride,
            padding,
            groups: 1,
            bias: true,
        }
    }

    /// Builds this layer under scope `name` (its index in a `Sequential`).
    pub fn build(&self, g: &mut Graph, name: &str, x: Value) -> Result<Value> {
        let y = g.scoped(name, |g| -> wgtrain_graph::Result<Value> {
            match *self {
                Layer::Conv2d {
                    in_c,
                    out_c,
                    kernel,
                    stride,
                    padding,
                    groups,
                    bias,
                } => conv2d(g, x, in_c, out_c, kernel, stride, padding, groups, bias),
                Layer::Linear { in_f, out_f } => linear(g, x, in_f, out_f),
                Layer::BatchNorm2d => g.batch_norm(x),
                Layer::MaxPool2d {
                    kernel,
                    stride,
                    padding,
                } => g.max_pool2d(x, Pool2dAttrs::new(kernel, stride).padding(padding)),
                Layer::AvgPool2d { kernel, stride } => {
                    g.avg_pool2d(x, Pool2dAttrs::new(kernel, stride))
                }
                Layer::AdaptiveAvgPool2d { out } => adaptive_avg_pool(g, x, out),
                Layer::LocalResponseNorm {
                    size,
                    alpha,
                    beta,
                    k,
                } => g.local_response_norm(
                    x,
                    LocalResponseNorm {
                        size,
                        alpha,
                        beta,
                        k,
                    },
                ),
                // p = 0 is the identity, as in PyTorch: no dispatch at all.
                Layer::Dropout { p: 0.0 } => Ok(x),
                Layer::Dropout { p } => g.dropout(x, p),
                Layer::Relu => g.relu(x),
                Layer::Flatten => g.flatten(x),
            }
        })?;
        Ok(y)
    }
}

/// `nn.Conv2d` with PyTorch's default initialisation (uniform, bound 1/sqrt(fan_in)) when
/// it has a bias, Kaiming normal (fan_out, as torchvision's ResNet) when it has none.
#[allow(clippy::too_many_arguments)]
pub fn conv2d(
    g: &mut Graph,
    x: Value,
    in_c: usize,
    out_c: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    groups: usize,
    bias: bool,
) -> wgtrain_graph::Result<Value> {
    let fan_in = in_c / groups.max(1) * kernel * kernel;
    let init = if bias {
        Init::TorchDefault { fan_in }
    } else {
        Init::KaimingNormal {
            fan_in: out_c * kernel * kernel,
        }
    };
    let w = g.param(
        "weight",
        &[out_c, kernel, kernel, in_c / groups.max(1)],
        init,
    )?;
    let b = if bias {
        Some(g.param("bias", &[out_c], Init::TorchDefault { fan_in })?)
    } else {
        None
    };
    let attrs = Conv2dAttrs::new()
        .stride(stride, stride)
        .padding(padding, padding)
        .groups(groups);
    g.conv2d(x, w, b, attrs)
}

/// `nn.Linear(in_f, out_f)` with PyTorch's default initialisation.
pub fn linear(g: &mut Graph, x: Value, in_f: usize, out_f: usize) -> wgtrain_graph::Result<Value> {
    let w = g.param(
        "weight",
        &[out_f, in_f],
        Init::TorchDefault { fan_in: in_f },
    )?;
    let b = g.param("bias", &[out_f], Init::TorchDefault { fan_in: in_f })?;
    g.linear(x, w, Some(b))
}

fn adaptive_avg_pool(g: &mut Graph, x: Value, out: usize) -> wgtrain_graph::Result<Value> {
    let shape = g.ty(x).shape.clone();
    let (h, w) = (shape[1], shape[2]);
    if out == 1 {
        let pooled = g.global_avg_pool(x)?;
        let c = shape[3];
        return g.apply1(
            wgtrain_graph::ops::elementwise::Reshape {
                tail: vec![1, 1, c],
            },
            &[pooled],
        );
    }
    if h == out && w == out {
        return Ok(x);
    }
    if h % out != 0 || w % out != 0 {
        return Err(wgtrain_graph::GraphError::Shape {
            op: "adaptive_avg_pool2d",
            layer: g.scope_name(),
            message: format!("input {h}x{w} is not a multiple of the output {out}x{out}"),
        });
    }
    let window = h / out;
    g.avg_pool2d(x, Pool2dAttrs::new(window, window))
}

/// `nn.Sequential`: layers applied in order, named by index under `name`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sequential(pub Vec<Layer>);

impl Sequential {
    pub fn build(&self, g: &mut Graph, name: &str, x: Value) -> Result<Value> {
        g.scoped(name, |g| {
            self.0
                .iter()
                .enumerate()
                .try_fold(x, |x, (i, layer)| layer.build(g, &i.to_string(), x))
        })
    }
}

/// The shortcut of a residual block when its shape changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shortcut {
    /// torchvision: 1×1 convolution (no bias) + batch norm, as `downsample.0/1`.
    Projection,
    /// He et al. 2015 option A (CIFAR): subsample by the stride and pad channels with
    /// zeros; parameter-free (a fixed 1×1 identity convolution held as state).
    ZeroPad,
}

/// torchvision's `BasicBlock` (two 3×3 convolutions, expansion 1).
pub fn basic_block(
    g: &mut Graph,
    name: &str,
    x: Value,
    in_c: usize,
    out_c: usize,
    stride: usize,
    shortcut: Shortcut,
) -> Result<Value> {
    basic_block_with(g, name, x, in_c, out_c, stride, shortcut, true)
}

/// [`basic_block`], with batch norm after each convolution only when `batch_norm`
/// (without it the block is two convolutions with biases, as in data-parallel
/// equivalence tests, where per-replica batch statistics would change the math).
#[allow(clippy::too_many_arguments)]
pub fn basic_block_with(
    g: &mut Graph,
    name: &str,
    x: Value,
    in_c: usize,
    out_c: usize,
    stride: usize,
    shortcut: Shortcut,
    batch_norm: bool,
) -> Result<Value> {
    Ok(g.scoped(name, |g| -> wgtrain_graph::Result<Value> {
        let bias = !batch_norm;
        let y = g.scoped("conv1", |g| {
            conv2d(g, x, in_c, out_c, 3, stride, 1, 1, bias)
        })?;
        let y = match batch_norm {
            true => g.scoped("bn1", |g| g.batch_norm(y))?,
            false => y,
        };
        let y = g.relu(y)?;
        let y = g.scoped("conv2", |g| conv2d(g, y, out_c, out_c, 3, 1, 1, 1, bias))?;
        let y = match batch_norm {
            true => g.scoped("bn2", |g| g.batch_norm(y))?,
            false => y,
        };
        let identity = shortcut_path(g, x, in_c, out_c, stride, shortcut)?;
        let sum = g.add(y, identity)?;
        g.relu(sum)
    })?)
}

/// torchvision's `Bottleneck` (1×1, 3×3 with the stride, 1×1; expansion 4).
pub fn bottleneck(
    g: &mut Graph,
    name: &str,
    x: Value,
    in_c: usize,
    width: usize,
    stride: usize,
) -> Result<Value> {
    let out_c = width * 4;
    Ok(g.scoped(name, |g| -> wgtrain_graph::Result<Value> {
        let y = g.scoped("conv1", |g| conv2d(g, x, in_c, width, 1, 1, 0, 1, false))?;
        let y = g.scoped("bn1", |g| g.batch_norm(y))?;
        let y = g.relu(y)?;
        let y = g.scoped("conv2", |g| {
            conv2d(g, y, width, width, 3, stride, 1, 1, false)
        })?;
        let y = g.scoped("bn2", |g| g.batch_norm(y))?;
        let y = g.relu(y)?;
        let y = g.scoped("conv3", |g| conv2d(g, y, width, out_c, 1, 1, 0, 1, false))?;
        let y = g.scoped("bn3", |g| g.batch_norm(y))?;
        let identity = shortcut_path(g, x, in_c, out_c, stride, Shortcut::Projection)?;
        let sum = g.add(y, identity)?;
        g.relu(sum)
    })?)
}

fn shortcut_path(
    g: &mut Graph,
    x: Value,
    in_c: usize,
    out_c: usize,
    stride: usize,
    shortcut: Shortcut,
) -> wgtrain_graph::Result<Value> {
    if stride == 1 && in_c == out_c {
        return Ok(x);
    }
    match shortcut {
        Shortcut::Projection => g.scoped("downsample", |g| {
            let y = g.scoped("0", |g| conv2d(g, x, in_c, out_c, 1, stride, 0, 1, false))?;
            g.scoped("1", |g| g.batch_norm(y))
        }),
        Shortcut::ZeroPad => {
            // Weight [out, 1, 1, in] with w[k, 0, 0, c] = 1 when k == c: output channel k
            // copies input channel k (k < in) and is zero beyond; the stride subsamples.
            let ty = TensorType::f32(&[out_c, 1, 1, in_c]);
            let w = g.state("shortcut", ty, Init::Identity { cols: in_c })?;
            let attrs = Conv2dAttrs::new().stride(stride, stride);
            let y = g.conv2d(x, w, None, attrs)?;
            Ok(y)
        }
    }
}

/// An error for a model setting out of range.
pub(crate) fn config(message: impl Into<String>) -> ModelError {
    ModelError::Config(message.into())
}
