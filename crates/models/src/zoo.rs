//! The model zoo: MLPs, a LeNet-style CNN, AlexNet (the 2012 paper's network, the
//! torchvision variant, and a 32×32 variant), ResNet-18…152 for ImageNet-sized inputs,
//! and the CIFAR ResNets of He et al. 2015 §4.2 (20, 32, 44, 56, 110 layers).
//!
//! Every builder returns a [`Model`]: the graph with its `images [N, H, W, C]` and
//! `labels [N]` inputs, the logits, and a softmax cross-entropy loss attached — except
//! [`mlp_sigmoid_mse`], the textbook sigmoid network with the quadratic cost.

use wgtrain_graph::{Graph, TensorType, Value};

use crate::error::Result;
use crate::layers::{
    Layer, Sequential, Shortcut, basic_block, basic_block_with, bottleneck, config, conv2d, linear,
};

/// A model ready to train: graph, inputs, logits, loss and hit counts.
#[derive(Debug, Clone)]
pub struct Model {
    pub name: String,
    pub graph: Graph,
    pub images: Value,
    pub labels: Value,
    /// The outputs the loss reads: logits, or the output sigmoids of [`mlp_sigmoid_mse`].
    pub logits: Value,
    pub loss: Value,
    /// `[2]` u32: top-1 and top-5 hits of the batch.
    pub correct: Value,
    /// `[H, W, C]` of one input image.
    pub input: [usize; 3],
    pub classes: usize,
}

impl Model {
    /// Starts every residual block as the identity on its main path: the γ (`weight`) of
    /// the last batch norm in each block (`bn2` of a basic block, `bn3` of a bottleneck)
    /// is initialised to 0, as Goyal et al. 2017 (§5.1) and torchvision's
    /// `zero_init_residual`. Returns the names set. A model without residual blocks is
    /// left as it is (an empty list).
    pub fn zero_init_residual(&mut self) -> Result<Vec<String>> {
        // Block prefixes (`layer2.0`) and the highest batch-norm index in each.
        let mut last: Vec<(String, u32)> = Vec::new();
        for v in self.graph.variables() {
            let Some(rest) = v.name.strip_suffix(".weight") else {
                continue;
            };
            let Some((block, bn)) = rest.rsplit_once(".bn") else {
                continue;
            };
            let (Ok(index), true) = (bn.parse::<u32>(), block.starts_with("layer")) else {
                continue;
            };
            match last.iter_mut().find(|(b, _)| b == block) {
                Some(entry) => entry.1 = entry.1.max(index),
                None => last.push((block.to_owned(), index)),
            }
        }
        let names: Vec<String> = last
            .into_iter()
            .map(|(block, bn)| format!("{block}.bn{bn}.weight"))
            .collect();
        for name in &names {
            self.graph
                .set_init(name, wgtrain_graph::Init::Constant(0.0))?;
        }
        Ok(names)
    }

    /// This model with every batch norm synchronised across data-parallel replicas
    /// (statistics of the global batch; see
    /// [`Graph::with_sync_batch_norm`](wgtrain_graph::Graph::with_sync_batch_norm)).
    /// Same parameter names and initial values.
    pub fn with_sync_batch_norm(self) -> Result<Model> {
        let (graph, map) = self.graph.with_sync_batch_norm()?;
        let moved = |v: Value| {
            map.get(v)
                .ok_or_else(|| config(format!("{}: value {v:?} was removed", self.name)))
        };
        Ok(Model {
            images: moved(self.images)?,
            labels: moved(self.labels)?,
            logits: moved(self.logits)?,
            loss: moved(self.loss)?,
            correct: moved(self.correct)?,
            graph,
            ..self
        })
    }
}

fn start(batch: usize, input: [usize; 3]) -> Result<(Graph, Value, Value)> {
    if batch == 0 {
        return Err(config("batch size must be at least 1"));
    }
    let mut g = Graph::new();
    let [h, w, c] = input;
    let images = g.input("images", TensorType::f32(&[batch, h, w, c]))?;
    let labels = g.input("labels", TensorType::u32(&[batch]))?;
    Ok((g, images, labels))
}

fn finish(
    name: String,
    mut graph: Graph,
    images: Value,
    labels: Value,
    logits: Value,
    input: [usize; 3],
    classes: usize,
) -> Result<Model> {
    let (loss, correct) = graph.softmax_cross_entropy(logits, labels)?;
    Ok(Model {
        name,
        graph,
        images,
        labels,
        logits,
        loss,
        correct,
        input,
        classes,
    })
}

/// The nonlinearity an MLP applies after its layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Activation {
    Relu,
    Sigmoid,
}

/// Flattens `images` and applies `fc1`, `fc2`, … of widths `hidden` followed by `act`,
/// then the output layer (without activation). Returns the output and the layer widths
/// for the model's name (`784-15-10`).
fn mlp_layers(
    g: &mut Graph,
    images: Value,
    input: [usize; 3],
    hidden: &[usize],
    classes: usize,
    act: Activation,
) -> Result<(Value, String)> {
    let mut x = g.flatten(images)?;
    let mut width = input.iter().product::<usize>();
    let dims: Vec<String> = std::iter::once(width)
        .chain(hidden.iter().copied())
        .chain(std::iter::once(classes))
        .map(|d| d.to_string())
        .collect();
    for (i, &h) in hidden.iter().enumerate() {
        let z = g.scoped(&format!("fc{}", i + 1), |g| linear(g, x, width, h))?;
        x = match act {
            Activation::Relu => g.relu(z)?,
            Activation::Sigmoid => g.sigmoid(z)?,
        };
        width = h;
    }
    let out = g.scoped(&format!("fc{}", hidden.len() + 1), |g| {
        linear(g, x, width, classes)
    })?;
    Ok((out, dims.join("-")))
}

/// A multilayer perceptron over flattened images: `hidden` sizes with ReLU between, then
/// `classes` outputs (`fc1`, `fc2`, … named as in the classic examples).
pub fn mlp(input: [usize; 3], hidden: &[usize], classes: usize, batch: usize) -> Result<Model> {
    let (mut g, images, labels) = start(batch, input)?;
    let (logits, dims) = mlp_layers(&mut g, images, input, hidden, classes, Activation::Relu)?;
    finish(
        format!("mlp-{dims}"),
        g,
        images,
        labels,
        logits,
        input,
        classes,
    )
}

/// The textbook network of Nielsen's *Neural Networks and Deep Learning* (ch. 1; 784-15-10
/// or 784-30-10 on MNIST): a sigmoid after every layer, the output layer included, and
/// the quadratic cost `C = 1/(2N) Σ_r ||a[r] - onehot(label[r])||²` instead of softmax
/// cross-entropy (see [`Graph::mse_loss`]). Parameters are named `fc1`, `fc2`, … as in
/// [`mlp`]; the model's `logits` are the output sigmoids (in (0, 1)), whose largest entry
/// is the predicted class. Trained with plain SGD at lr 3.0 and batches of 10 in the book.
pub fn mlp_sigmoid_mse(
    input: [usize; 3],
    hidden: &[usize],
    classes: usize,
    batch: usize,
) -> Result<Model> {
    let (mut g, images, labels) = start(batch, input)?;
    let (z, dims) = mlp_layers(&mut g, images, input, hidden, classes, Activation::Sigmoid)?;
    let out = g.scoped(&format!("fc{}", hidden.len() + 1), |g| g.sigmoid(z))?;
    let (loss, correct) = g.mse_loss(out, labels)?;
    Ok(Model {
        name: format!("mlp-sigmoid-mse-{dims}"),
        graph: g,
        images,
        labels,
        logits: out,
        loss,
        correct,
        input,
        classes,
    })
}

/// LeNet-style CNN for 28×28×1: conv5×5(16)-ReLU-maxpool2-conv5×5(32)-ReLU-maxpool2-
/// linear(512→classes).
pub fn lenet5(classes: usize, batch: usize) -> Result<Model> {
    let input = [28, 28, 1];
    let (mut g, images, labels) = start(batch, input)?;
    let features = Sequential(vec![
        Layer::conv(1, 16, 5, 1, 0),
        Layer::Relu,
        Layer::MaxPool2d {
            kernel: 2,
            stride: 2,
            padding: 0,
        },
        Layer::conv(16, 32, 5, 1, 0),
        Layer::Relu,
        Layer::MaxPool2d {
            kernel: 2,
            stride: 2,
            padding: 0,
        },
        Layer::Flatten,
    ]);
    let x = features.build(&mut g, "features", images)?;
    let logits = g.scoped("classifier", |g| linear(g, x, 512, classes))?;
    finish("lenet5".into(), g, images, labels, logits, input, classes)
}

/// Which AlexNet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlexNet {
    /// Krizhevsky et al. 2012: 96 filters of 11×11 stride 4, LRN, overlapping 3×3/2
    /// pooling, two-group convolutions in layers 2, 4 and 5 (60,965,224 parameters with
    /// 1000 classes at 224×224).
    Paper,
    /// torchvision's `alexnet` (one group, no LRN; 61,100,840 parameters).
    Torchvision,
    /// A 32×32-input variant for CIFAR-sized data (same layer pattern, smaller kernels).
    Cifar,
}

/// A narrower AlexNet with the same topology, for tests and PyTorch parity fixtures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reduced {
    /// Every convolution's channel count is divided by this (1: the published widths).
    pub divisor: usize,
    /// Width of the two hidden linear layers (4096 in the papers, 1024 for `Cifar`).
    pub hidden: usize,
    /// Dropout probability before the hidden linear layers (0.5 in the papers).
    pub dropout: f32,
}

impl Reduced {
    /// The published widths of `variant`.
    pub fn full(variant: AlexNet) -> Self {
        let hidden = if variant == AlexNet::Cifar {
            1024
        } else {
            4096
        };
        Self {
            divisor: 1,
            hidden,
            dropout: 0.5,
        }
    }
}

fn alexnet_features(variant: AlexNet, divisor: usize) -> Sequential {
    use Layer::*;
    let conv = |i: usize, o: usize, k, s, p, groups| Conv2d {
        in_c: if i == 3 { 3 } else { i / divisor },
        out_c: o / divisor,
        kernel: k,
        stride: s,
        padding: p,
        groups,
        bias: true,
    };
    let pool = MaxPool2d {
        kernel: 3,
        stride: 2,
        padding: 0,
    };
    let lrn = LocalResponseNorm {
        size: 5,
        alpha: 1e-4,
        beta: 0.75,
        k: 2.0,
    };
    let layers = match variant {
        AlexNet::Paper => vec![
            conv(3, 96, 11, 4, 2, 1),
            Relu,
            lrn.clone(),
            pool.clone(),
            conv(96, 256, 5, 1, 2, 2),
            Relu,
            lrn,
            pool.clone(),
            conv(256, 384, 3, 1, 1, 1),
            Relu,
            conv(384, 384, 3, 1, 1, 2),
            Relu,
            conv(384, 256, 3, 1, 1, 2),
            Relu,
            pool,
        ],
        AlexNet::Torchvision => vec![
            conv(3, 64, 11, 4, 2, 1),
            Relu,
            pool.clone(),
            conv(64, 192, 5, 1, 2, 1),
            Relu,
            pool.clone(),
            conv(192, 384, 3, 1, 1, 1),
            Relu,
            conv(384, 256, 3, 1, 1, 1),
            Relu,
            conv(256, 256, 3, 1, 1, 1),
            Relu,
            pool,
        ],
        AlexNet::Cifar => vec![
            conv(3, 64, 5, 1, 2, 1),
            Relu,
            pool.clone(),
            conv(64, 192, 5, 1, 2, 1),
            Relu,
            pool.clone(),
            conv(192, 384, 3, 1, 1, 1),
            Relu,
            conv(384, 256, 3, 1, 1, 1),
            Relu,
            conv(256, 256, 3, 1, 1, 1),
            Relu,
            pool,
        ],
    };
    Sequential(layers)
}

/// AlexNet for `image`×`image`×3 inputs. At 224 (paper, torchvision) the features end at
/// 6×6 as in the papers; at a reduced size the adaptive pool keeps the smaller map and
/// the first linear layer shrinks to match (used to test the topology on small inputs).
pub fn alexnet(variant: AlexNet, classes: usize, image: usize, batch: usize) -> Result<Model> {
    alexnet_reduced(variant, classes, image, batch, Reduced::full(variant))
}

/// [`alexnet`] with the widths and dropout of `size` (same layers, same names).
pub fn alexnet_reduced(
    variant: AlexNet,
    classes: usize,
    image: usize,
    batch: usize,
    size: Reduced,
) -> Result<Model> {
    let widths = [64, 96, 192, 256, 384];
    if size.divisor == 0 || widths.iter().any(|w| w % size.divisor != 0) || size.hidden == 0 {
        return Err(config(format!(
            "AlexNet width divisor {} must divide the layer widths, hidden width {} must be > 0",
            size.divisor, size.hidden
        )));
    }
    let input = [image, image, 3];
    let (mut g, images, labels) = start(batch, input)?;
    let features = alexnet_features(variant, size.divisor);
    let x = features.build(&mut g, "features", images)?;
    let side = g.ty(x).shape[1];
    let out = if side >= 6 && side % 6 == 0 { 6 } else { side };
    let x = Layer::AdaptiveAvgPool2d { out }.build(&mut g, "avgpool", x)?;
    let c = g.ty(x).shape[3];
    let flat = g.flatten(x)?;
    let hidden = size.hidden;
    let classifier = Sequential(vec![
        Layer::Dropout { p: size.dropout },
        Layer::Linear {
            in_f: c * out * out,
            out_f: hidden,
        },
        Layer::Relu,
        Layer::Dropout { p: size.dropout },
        Layer::Linear {
            in_f: hidden,
            out_f: hidden,
        },
        Layer::Relu,
        Layer::Linear {
            in_f: hidden,
            out_f: classes,
        },
    ]);
    let logits = classifier.build(&mut g, "classifier", flat)?;
    let mut name = format!("alexnet-{variant:?}-{image}").to_lowercase();
    if size != Reduced::full(variant) {
        name += &format!("-d{}-h{}", size.divisor, size.hidden);
    }
    finish(name, g, images, labels, logits, input, classes)
}

/// torchvision's ResNet-`depth` (18, 34, 50, 101, 152) for `image`×`image`×3 inputs.
pub fn resnet(depth: usize, classes: usize, image: usize, batch: usize) -> Result<Model> {
    resnet_width(depth, classes, image, batch, 64)
}

/// [`resnet`] with `base` channels in the stem and the first stage (64 in torchvision;
/// the stages double it), for tests and PyTorch parity fixtures.
pub fn resnet_width(
    depth: usize,
    classes: usize,
    image: usize,
    batch: usize,
    base: usize,
) -> Result<Model> {
    if base == 0 {
        return Err(config("ResNet base width must be at least 1"));
    }
    let (blocks, bottlenecks): ([usize; 4], bool) = match depth {
        18 => ([2, 2, 2, 2], false),
        34 => ([3, 4, 6, 3], false),
        50 => ([3, 4, 6, 3], true),
        101 => ([3, 4, 23, 3], true),
        152 => ([3, 8, 36, 3], true),
        _ => {
            return Err(config(format!(
                "no ImageNet ResNet of depth {depth}: use 18, 34, 50, 101 or 152"
            )));
        }
    };
    let input = [image, image, 3];
    let (mut g, images, labels) = start(batch, input)?;
    let x = g.scoped("conv1", |g| conv2d(g, images, 3, base, 7, 2, 3, 1, false))?;
    let x = g.scoped("bn1", |g| g.batch_norm(x))?;
    let x = g.relu(x)?;
    let mut x = Layer::MaxPool2d {
        kernel: 3,
        stride: 2,
        padding: 1,
    }
    .build(&mut g, "maxpool", x)?;
    let mut in_c = base;
    for (stage, &n) in blocks.iter().enumerate() {
        let width = base << stage;
        let layer = format!("layer{}", stage + 1);
        for b in 0..n {
            let stride = if b == 0 && stage > 0 { 2 } else { 1 };
            let name = format!("{layer}.{b}");
            x = if bottlenecks {
                bottleneck(&mut g, &name, x, in_c, width, stride)?
            } else {
                basic_block(&mut g, &name, x, in_c, width, stride, Shortcut::Projection)?
            };
            in_c = if bottlenecks { width * 4 } else { width };
        }
    }
    let pooled = g.global_avg_pool(x)?;
    let logits = g.scoped("fc", |g| linear(g, pooled, in_c, classes))?;
    let suffix = if base == 64 {
        String::new()
    } else {
        format!("-w{base}")
    };
    finish(
        format!("resnet{depth}-{image}{suffix}"),
        g,
        images,
        labels,
        logits,
        input,
        classes,
    )
}

/// The CIFAR ResNets of He et al. 2015 §4.2: depth 6n+2 (20, 32, 44, 56, 110), three
/// stages of n basic blocks at 16, 32, 64 channels, option-A (zero-padding) shortcuts.
pub fn cifar_resnet(depth: usize, classes: usize, batch: usize) -> Result<Model> {
    cifar_resnet_with(depth, classes, batch, true)
}

/// [`cifar_resnet`] without batch norm (convolutions with biases instead): the same
/// function of the weights whatever the batch is split into, for data-parallel
/// equivalence checks.
pub fn cifar_resnet_without_bn(depth: usize, classes: usize, batch: usize) -> Result<Model> {
    cifar_resnet_with(depth, classes, batch, false)
}

fn cifar_resnet_with(depth: usize, classes: usize, batch: usize, bn: bool) -> Result<Model> {
    if depth < 8 || (depth - 2) % 6 != 0 {
        return Err(config(format!(
            "CIFAR ResNet depth must be 6n+2 (20, 32, 44, 56, 110), got {depth}"
        )));
    }
    let n = (depth - 2) / 6;
    let input = [32, 32, 3];
    let (mut g, images, labels) = start(batch, input)?;
    let x = g.scoped("conv1", |g| conv2d(g, images, 3, 16, 3, 1, 1, 1, !bn))?;
    let x = match bn {
        true => g.scoped("bn1", |g| g.batch_norm(x))?,
        false => x,
    };
    let mut x = g.relu(x)?;
    let mut in_c = 16;
    for stage in 0..3 {
        let width = 16 << stage;
        for b in 0..n {
            let stride = if b == 0 && stage > 0 { 2 } else { 1 };
            let name = format!("layer{}.{b}", stage + 1);
            x = basic_block_with(&mut g, &name, x, in_c, width, stride, Shortcut::ZeroPad, bn)?;
            in_c = width;
        }
    }
    let pooled = g.global_avg_pool(x)?;
    let logits = g.scoped("fc", |g| linear(g, pooled, in_c, classes))?;
    finish(
        format!("resnet{depth}-cifar{}", if bn { "" } else { "-nobn" }),
        g,
        images,
        labels,
        logits,
        input,
        classes,
    )
}
