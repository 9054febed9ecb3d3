//! Trains AlexNet. With no arguments it needs no download: it trains on the embedded
//! synthetic shapes (ten classes of procedurally drawn shapes and textures) and prints the
//! loss falling and the held-out accuracy rising, epoch by epoch.
//!
//! On a GPU it trains the 224×224 network (the 2012 paper's by default). On a CPU adapter
//! such as lavapipe it trains AlexNet's 32×32 layer pattern at 1/8 of the channels, and
//! says why: the 224×224 network's first fully connected weight (4096 × 9216 floats,
//! 151 MB) is over lavapipe's 128 MiB binding limit, and even the full-width 32×32
//! network runs at about 16 images/s there — far too slow to learn within minutes.
//!
//! ```text
//! cargo run --release --example train_alexnet
//! cargo run --release --example train_alexnet -- --data ~/data/cifar-10-batches-bin
//! cargo run --release --example train_alexnet -- --checkpoint alexnet.safetensors --max-steps 50
//! cargo run --release --example train_alexnet -- --checkpoint alexnet.safetensors --resume
//! ```

mod common;

use std::sync::Arc;

use anyhow::{Result, bail};
use clap::{Parser, ValueEnum};
use common::data::{self, DataKind, Split};
use common::{OptimizerKind, RunConfig, TrainFlags, say, thousands};
use wgtrain::graph::{Graph, TensorType};
use wgtrain::models::data::Loader;
use wgtrain::models::data::loader::Augment;
use wgtrain::models::data::synthetic::Synthetic;
use wgtrain::models::layers::{Layer, Sequential};
use wgtrain::models::zoo::{self, AlexNet, Model};
use wgtrain::prelude::Gpu;

/// Train AlexNet: the embedded synthetic data by default; CIFAR-10, MNIST or an image
/// folder with --data.
#[derive(Debug, Parser)]
#[command(
    after_help = "On a CPU adapter (lavapipe) the default is --variant cifar-narrow, \
    small enough to learn the synthetic shapes in about a minute.\n\
    Stop any time and go on later: --checkpoint PATH, then --checkpoint PATH --resume."
)]
struct Cli {
    /// Which AlexNet [default: paper on a GPU (cifar with 32x32 data); cifar-narrow on a
    /// CPU adapter]
    #[arg(long, value_enum)]
    variant: Option<Variant>,
    #[command(flatten)]
    train: TrainFlags,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Variant {
    /// Krizhevsky et al. 2012: LRN, two-group convolutions; 224x224 input
    Paper,
    /// torchvision's alexnet: one group, no LRN; 224x224 input
    Torchvision,
    /// The same layer pattern for 32x32 input (CIFAR-sized)
    Cifar,
    /// cifar with 1/8 of the channels (8-24-48-32-32, a 128-wide classifier)
    CifarNarrow,
}

impl Variant {
    /// The name `--variant` takes.
    fn flag(self) -> String {
        self.to_possible_value()
            .map_or_else(String::new, |v| v.get_name().to_owned())
    }

    /// Side of the input images.
    fn image(self) -> usize {
        match self {
            Variant::Paper | Variant::Torchvision => 224,
            Variant::Cifar | Variant::CifarNarrow => 32,
        }
    }

    fn build(self, classes: usize, batch: usize) -> Result<Model> {
        Ok(match self {
            Variant::Paper => zoo::alexnet(AlexNet::Paper, classes, 224, batch)?,
            Variant::Torchvision => zoo::alexnet(AlexNet::Torchvision, classes, 224, batch)?,
            Variant::Cifar => zoo::alexnet(AlexNet::Cifar, classes, 32, batch)?,
            Variant::CifarNarrow => alexnet_cifar_narrow(classes, batch)?,
        })
    }

    /// The optimizer each variant learns with out of the box, and its learning rates
    /// for (SGD, Adam). The 2012 recipe for the 224×224 networks; Adam for the 32×32
    /// ones, which on these short runs stay at chance for hundreds of SGD steps (no batch
    /// norm, PyTorch's default initialisation) while Adam gets them moving at once.
    fn recipe(self) -> (OptimizerKind, (f32, f32)) {
        match self {
            Variant::Paper | Variant::Torchvision => (OptimizerKind::Sgd, (0.01, 1e-4)),
            Variant::Cifar => (OptimizerKind::Adam, (0.01, 3e-4)),
            Variant::CifarNarrow => (OptimizerKind::Adam, (0.01, 1e-3)),
        }
    }
}

/// AlexNet::Cifar's layer pattern with 1/8 of its channels. The zoo has no width option,
/// so the layers are spelled out here, named as the zoo names them.
fn alexnet_cifar_narrow(classes: usize, batch: usize) -> Result<Model> {
    use Layer::{Dropout, Linear, Relu};
    let pool = || Layer::MaxPool2d {
        kernel: 3,
        stride: 2,
        padding: 0,
    };
    let mut g = Graph::new();
    let images = g.input("images", TensorType::f32(&[batch, 32, 32, 3]))?;
    let labels = g.input("labels", TensorType::u32(&[batch]))?;
    let features = Sequential(vec![
        Layer::conv(3, 8, 5, 1, 2),
        Relu,
        pool(),
        Layer::conv(8, 24, 5, 1, 2),
        Relu,
        pool(),
        Layer::conv(24, 48, 3, 1, 1),
        Relu,
        Layer::conv(48, 32, 3, 1, 1),
        Relu,
        Layer::conv(32, 32, 3, 1, 1),
        Relu,
        pool(),
    ]);
    let x = features.build(&mut g, "features", images)?; // [N, 3, 3, 32]
    let x = g.flatten(x)?;
    let classifier = Sequential(vec![
        Dropout { p: 0.5 },
        Linear {
            in_f: 32 * 3 * 3,
            out_f: 128,
        },
        Relu,
        Dropout { p: 0.5 },
        Linear {
            in_f: 128,
            out_f: 128,
        },
        Relu,
        Linear {
            in_f: 128,
            out_f: classes,
        },
    ]);
    let logits = classifier.build(&mut g, "classifier", x)?;
    let (loss, correct) = g.softmax_cross_entropy(logits, labels)?;
    Ok(Model {
        name: "alexnet-cifar-narrow-32".to_owned(),
        graph: g,
        images,
        labels,
        logits,
        loss,
        correct,
        input: [32, 32, 3],
        classes,
    })
}

/// What this run trains on, and the defaults that go with it.
struct Setup {
    variant: Variant,
    split: Split,
    augment: Augment,
    batch: usize,
    epochs: usize,
}

/// The embedded synthetic shapes at the variant's input size. The CPU sizes learn
/// visibly within about a minute on lavapipe with two cores.
fn synthetic(gpu: &Gpu, variant: Variant, flags: &TrainFlags) -> Setup {
    let (train, eval, batch, epochs) = match (variant, gpu.is_cpu()) {
        (Variant::CifarNarrow, _) => (4_096, 512, 16, 3),
        (Variant::Cifar, true) => (1_024, 256, 16, 3),
        (Variant::Cifar, false) => (10_240, 1_024, 128, 10),
        (_, _) => (12_800, 1_280, 128, 10),
    };
    let (train, eval) = (
        flags.train_samples.unwrap_or(train),
        flags.eval_samples.unwrap_or(eval),
    );
    let image = variant.image();
    let split = Split {
        // Different seeds: the held-out images are not the training images.
        train: Arc::new(Synthetic::new(train, image, 10, 1)),
        eval: Arc::new(Synthetic::new(eval, image, 10, 2)),
        kind: DataKind::Synthetic,
        description: format!(
            "synthetic shapes (embedded, no download), 10 classes, {image}x{image}: {} train, \
             {} held out",
            thousands(train),
            thousands(eval)
        ),
    };
    Setup {
        variant,
        split,
        augment: Augment::default(),
        batch,
        epochs,
    }
}

/// `--data`: CIFAR-10 or MNIST take a 32×32 network (the 224×224 ones would be wasted on
/// them); image folders are resized to the variant's input.
fn real(gpu: &Gpu, cli: &Cli, dir: &std::path::Path, variant: Variant) -> Result<Setup> {
    let options = data::Options {
        folder_size: variant.image(),
        mnist_unit_range: false,
    };
    let split = data::load(dir, options)?;
    let small = split.kind != DataKind::Folder;
    let variant = match (cli.variant, small && variant.image() != 32) {
        (Some(v), true) => bail!(
            "--variant {} takes 224x224 images; {} holds 32x32 ones: use --variant cifar or \
             cifar-narrow",
            v.flag(),
            dir.display()
        ),
        (None, true) => Variant::Cifar,
        (_, false) => variant,
    };
    let split = data::as_rgb32(split).limit(cli.train.train_samples, cli.train.eval_samples);
    let augment = match split.kind {
        DataKind::Cifar10 => Augment {
            flip: true,
            crop_padding: 4,
        },
        DataKind::Folder => Augment {
            flip: true,
            crop_padding: 0,
        },
        DataKind::Mnist | DataKind::Synthetic => Augment::default(),
    };
    Ok(Setup {
        variant,
        split,
        augment,
        batch: if gpu.is_cpu() { 32 } else { 128 },
        epochs: if gpu.is_cpu() { 2 } else { 30 },
    })
}

/// Why a CPU adapter gets the narrow network (sizes measured from the zoo's models).
fn cpu_note(gpu: &Gpu) -> Result<Vec<String>> {
    let paper = zoo::alexnet(AlexNet::Paper, 10, 224, 1)?;
    let (name, bytes) = common::largest_variable(&paper);
    Ok(vec![
        "this is a CPU adapter, so this run trains AlexNet's 32x32 layer pattern with 1/8".into(),
        "of the channels (--variant cifar-narrow) on 32x32 images: the 224x224 network's".into(),
        format!(
            "{name} alone is {:.0} MB, over this adapter's {} MiB binding limit,",
            bytes as f64 / 1e6,
            gpu.limits().max_storage_buffer_binding_size >> 20
        ),
        "and the full-width 32x32 network (--variant cifar) trains at about 16 images/s on".into(),
        "a 2-core lavapipe, too slow to learn anything within minutes.".into(),
    ])
}

fn main() -> std::process::ExitCode {
    common::exit_on_error(train(Cli::parse()))
}

fn train(cli: Cli) -> Result<()> {
    let flags = &cli.train;
    let plot = flags.plot_path("alexnet.svg");
    flags.check_paths(plot.as_deref())?;
    let gpu = common::open_gpu()?;
    say("adapter", common::adapter_line(&gpu));
    let variant = cli.variant.unwrap_or(if gpu.is_cpu() {
        Variant::CifarNarrow
    } else {
        Variant::Paper
    });
    let setup = match &flags.data {
        Some(dir) => real(&gpu, &cli, dir, variant)?,
        None => synthetic(&gpu, variant, flags),
    };
    match (gpu.is_cpu(), cli.variant) {
        (true, None) => common::say_lines("note", &cpu_note(&gpu)?),
        (true, Some(Variant::Cifar)) => say(
            "note",
            "the full-width 32x32 network trains at about 16 images/s on a 2-core lavapipe",
        ),
        _ => {}
    }
    let batch = flags.batch_size.unwrap_or(setup.batch);
    let epochs = flags.epochs.unwrap_or(setup.epochs);
    let classes = setup.split.classes();
    let model = setup.variant.build(classes, batch)?;
    common::check_fits(
        &gpu,
        &model,
        "on this adapter use --variant cifar-narrow or cifar",
    )?;
    say(
        "model",
        format!(
            "{} (--variant {}): {} parameters",
            model.name,
            setup.variant.flag(),
            thousands(model.graph.parameter_count())
        ),
    );
    say("data", &setup.split.description);
    let train = Loader::new(setup.split.train, batch)?
        .shuffled(flags.seed)
        .augmented(setup.augment);
    let eval = Loader::new(setup.split.eval, batch)?;
    let (default_optimizer, lrs) = setup.variant.recipe();
    // The paper's weight decay 5e-4 (for SGD); a cosine decay instead of its
    // divide-by-ten-on-plateau, so that a short run ends at a small learning rate.
    let (optimizer, lr) = flags.optimizer(default_optimizer, 5e-4, lrs);
    let schedule = common::cosine(lr, epochs, train.batches_per_epoch());
    say(
        "training",
        format!(
            "{} of {} of {batch}, {}, seed {}",
            common::count(epochs, "epoch", "epochs"),
            common::count(train.batches_per_epoch(), "batch", "batches"),
            common::describe_optimizer(optimizer, schedule),
            flags.seed
        ),
    );
    say("augment", augment_line(setup.augment));
    common::say_outputs(flags, plot.as_deref());
    let run = RunConfig {
        epochs,
        optimizer,
        schedule,
        plot,
        classes,
    };
    common::run(gpu, model, flags, run, &train, &eval)?;
    Ok(())
}

fn augment_line(a: Augment) -> String {
    match (a.flip, a.crop_padding) {
        (false, 0) => "none".to_owned(),
        (true, 0) => "random horizontal flip".to_owned(),
        (false, pad) => format!("random crop (zero padding {pad})"),
        (true, pad) => format!("random crop (zero padding {pad}) and horizontal flip"),
    }
}
