//! Trains a ResNet: torchvision's ResNet-18…152 (`--depth 18|34|50|101|152`) or the CIFAR
//! ResNets of He et al. 2015 (`--depth 20|32|44|56|110`), on the embedded synthetic data
//! by default or on CIFAR-10, MNIST or an image folder with `--data`.
//!
//! The ImageNet depths take 224×224 synthetic images on a GPU; on a CPU adapter such as
//! lavapipe they take 64×64 images (a 224×224 ResNet-18 step is about 12 times the work)
//! and the run says so. The CIFAR depths take 32×32 images everywhere.
//!
//! ```text
//! cargo run --release --example train_resnet -- --depth 20
//! cargo run --release --example train_resnet -- --depth 50 --batch-size 32
//! cargo run --release --example train_resnet -- --depth 56 --data ~/data/cifar-10-batches-bin
//! ```

mod common;

use std::sync::Arc;

use anyhow::Result;
use clap::Parser;
use clap::builder::{PossibleValuesParser, TypedValueParser};
use common::data::{self, DataKind, Split};
use common::{OptimizerKind, RunConfig, TrainFlags, say, thousands};
use wgtrain::models::data::Loader;
use wgtrain::models::data::loader::Augment;
use wgtrain::models::data::synthetic::Synthetic;
use wgtrain::models::zoo;
use wgtrain::prelude::Gpu;

const IMAGENET_DEPTHS: [usize; 5] = [18, 34, 50, 101, 152];

/// Train a ResNet: the embedded synthetic data by default; CIFAR-10, MNIST or an image
/// folder with --data.
#[derive(Debug, Parser)]
#[command(
    after_help = "Depths 18, 34, 50, 101 and 152 are torchvision's ImageNet ResNets \
    (224x224 on a GPU, 64x64 on a CPU adapter); 20, 32, 44, 56 and 110 are the CIFAR \
    ResNets of He et al. 2015 (32x32).\n\
    Stop any time and go on later: --checkpoint PATH --resume."
)]
struct Cli {
    /// Number of layers
    #[arg(long, default_value = "18", value_parser = depths())]
    depth: usize,
    #[command(flatten)]
    train: TrainFlags,
}

fn depths() -> impl TypedValueParser<Value = usize> {
    let names = [
        "18", "34", "50", "101", "152", "20", "32", "44", "56", "110",
    ];
    PossibleValuesParser::new(names).map(|s| s.parse::<usize>().expect("listed depths parse"))
}

/// What this run trains on and with which defaults.
struct Setup {
    image: usize,
    split: Split,
    augment: Augment,
    batch: usize,
    epochs: usize,
    /// Why the image size is what it is, when that needs saying.
    note: Option<String>,
}

fn synthetic(gpu: &Gpu, cli: &Cli, imagenet: bool) -> Setup {
    let cpu = gpu.is_cpu();
    let (image, note) = match (imagenet, cpu) {
        (true, false) => (224, None),
        (true, true) => (
            64,
            Some(
                "this is a CPU adapter, so the ImageNet ResNet trains on 64x64 synthetic images \
                 instead of 224x224 (about 1/12 of the work per image) and a small dataset"
                    .to_owned(),
            ),
        ),
        (false, _) => (32, None),
    };
    let (train_n, eval_n, batch, epochs) = match (imagenet, cpu) {
        (true, false) => (12_800, 1_280, 64, 10),
        (false, false) => (10_240, 2_048, 128, 15),
        (_, true) => (1_024, 256, 32, 3),
    };
    let f = &cli.train;
    let (train_n, eval_n) = (
        f.train_samples.unwrap_or(train_n),
        f.eval_samples.unwrap_or(eval_n),
    );
    let split = Split {
        // Different seeds: the held-out images are not the training images.
        train: Arc::new(Synthetic::new(train_n, image, 10, 1)),
        eval: Arc::new(Synthetic::new(eval_n, image, 10, 2)),
        kind: DataKind::Synthetic,
        description: format!(
            "synthetic shapes (embedded, no download), 10 classes, {image}x{image}: {} train, \
             {} held out",
            thousands(train_n),
            thousands(eval_n)
        ),
    };
    Setup {
        image,
        split,
        augment: Augment::default(),
        batch,
        epochs,
        note,
    }
}

/// `--data`: CIFAR-10 and MNIST (padded to 32×32 RGB) at 32×32; image folders at 224×224
/// on a GPU for the ImageNet depths, else 32×32.
fn real(gpu: &Gpu, cli: &Cli, dir: &std::path::Path, imagenet: bool) -> Result<Setup> {
    let folder_size = if imagenet && !gpu.is_cpu() { 224 } else { 32 };
    let options = data::Options {
        folder_size,
        mnist_unit_range: false,
    };
    let split = data::as_rgb32(data::load(dir, options)?);
    let split = split.limit(cli.train.train_samples, cli.train.eval_samples);
    let image = split.train.image_shape()[0];
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
    let note = match (imagenet, image, gpu.is_cpu()) {
        (true, 32, _) => Some(
            "torchvision's ResNet on 32x32 images ends at a 1x1 feature map; the CIFAR \
             ResNets (--depth 20, 32, 44, 56, 110) are made for this size"
                .to_owned(),
        ),
        (_, _, true) => Some(
            "this is a CPU adapter: a full epoch of real data takes a long time here; \
             --train-samples N and --eval-samples N train and evaluate on fewer images"
                .to_owned(),
        ),
        _ => None,
    };
    Ok(Setup {
        image,
        split,
        augment,
        batch: if gpu.is_cpu() { 32 } else { 128 },
        epochs: if gpu.is_cpu() { 2 } else { 30 },
        note,
    })
}

fn main() -> std::process::ExitCode {
    common::exit_on_error(train(Cli::parse()))
}

fn train(cli: Cli) -> Result<()> {
    let flags = &cli.train;
    let plot = flags.plot_path(&format!("resnet{}.svg", cli.depth));
    flags.check_paths(plot.as_deref())?;
    let imagenet = IMAGENET_DEPTHS.contains(&cli.depth);
    let gpu = common::open_gpu()?;
    say("adapter", common::adapter_line(&gpu));
    let setup = match &flags.data {
        Some(dir) => real(&gpu, &cli, dir, imagenet)?,
        None => synthetic(&gpu, &cli, imagenet),
    };
    if let Some(note) = &setup.note {
        say("note", note);
    }
    let batch = flags.batch_size.unwrap_or(setup.batch);
    let epochs = flags.epochs.unwrap_or(setup.epochs);
    // He et al.: lr 0.1 at batch 128 (CIFAR) or 256 (ImageNet), scaled linearly with the
    // batch (Goyal et al. 2017) when --batch-size changes it.
    let reference_batch = if imagenet { 256.0 } else { 128.0 };
    let scaled_lr = 0.1 * batch as f32 / reference_batch;
    let (optimizer, lr) = flags.optimizer(OptimizerKind::Sgd, 1e-4, (scaled_lr, 1e-3));
    let classes = setup.split.classes();
    let model = if imagenet {
        zoo::resnet(cli.depth, classes, setup.image, batch)?
    } else {
        zoo::cifar_resnet(cli.depth, classes, batch)?
    };
    say(
        "model",
        format!(
            "{}: {} parameters",
            model.name,
            thousands(model.graph.parameter_count())
        ),
    );
    say("data", &setup.split.description);
    let train = Loader::new(setup.split.train, batch)?
        .shuffled(flags.seed)
        .augmented(setup.augment);
    let eval = Loader::new(setup.split.eval, batch)?;
    let schedule = common::cosine(lr, epochs, train.batches_per_epoch());
    let lr_rule = match (flags.lr, flags.optimizer) {
        (None, None | Some(OptimizerKind::Sgd)) => {
            format!("; lr = 0.1 x {batch}/{reference_batch}")
        }
        _ => String::new(),
    };
    say(
        "training",
        format!(
            "{} of {} of {batch}, {}{lr_rule}, seed {}",
            common::count(epochs, "epoch", "epochs"),
            common::count(train.batches_per_epoch(), "batch", "batches"),
            common::describe_optimizer(optimizer, schedule),
            flags.seed
        ),
    );
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
