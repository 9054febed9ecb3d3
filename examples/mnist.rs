//! Trains a small network on real handwritten digits: the MNIST test set vendored in
//! `data/mnist/` (first 8,000 to train, last 2,000 held out, as its README splits it),
//! with the recipes whose PyTorch accuracies that README records.
//!
//! ```text
//! cargo run --release --example mnist                     # LeNet-style CNN
//! cargo run --release --example mnist -- --model mlp128
//! cargo run --release --example mnist -- --model mlp15    # the textbook sigmoid network
//! cargo run --release --example mnist -- --data ~/data/mnist   # train-* and t10k-* files
//! ```

mod common;

use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Parser, ValueEnum};
use common::data::{self, DataKind, Split};
use common::{RunConfig, TrainFlags, say, thousands};
use wgtrain::graph::{Optimizer, Schedule};
use wgtrain::models::data::idx::{Mnist, vendored_dir};
use wgtrain::models::data::{Dataset, Loader, Subset};
use wgtrain::models::zoo::{self, Model};

/// Train an MLP or a LeNet-style CNN on MNIST (the vendored real digits by default).
#[derive(Debug, Parser)]
struct Cli {
    /// Which network
    #[arg(long, value_enum, default_value_t = Net::Lenet)]
    model: Net,
    /// Standardise pixels with MNIST's mean and deviation instead of scaling them to
    /// [0, 1] as the README's recipes (PyTorch's ToTensor) do
    #[arg(long)]
    normalize: bool,
    #[command(flatten)]
    train: TrainFlags,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Net {
    /// 784-15-10, sigmoid units and the quadratic cost (the classic textbook network)
    Mlp15,
    /// 784-128-10, ReLU, softmax cross-entropy
    Mlp128,
    /// conv5x5(16)-ReLU-maxpool2-conv5x5(32)-ReLU-maxpool2-linear(512->10)
    Lenet,
}

/// A training recipe from data/mnist/README.md, and the accuracy PyTorch reached with it.
struct Recipe {
    optimizer: Optimizer,
    lr: f32,
    batch: usize,
    epochs: usize,
    reference: &'static str,
}

impl Net {
    fn recipe(self) -> Recipe {
        let momentum = Optimizer::sgd_momentum(0.9, 0.0, false);
        match self {
            Net::Mlp15 => Recipe {
                optimizer: Optimizer::sgd(),
                lr: 3.0,
                batch: 10,
                epochs: 30,
                reference: "94.1%",
            },
            Net::Mlp128 => Recipe {
                optimizer: momentum,
                lr: 0.05,
                batch: 32,
                epochs: 10,
                reference: "96.3%",
            },
            Net::Lenet => Recipe {
                optimizer: momentum,
                lr: 0.02,
                batch: 32,
                epochs: 10,
                reference: "98.75%",
            },
        }
    }

    fn build(self, batch: usize) -> Result<Model> {
        let input = [28, 28, 1];
        Ok(match self {
            Net::Mlp15 => zoo::mlp_sigmoid_mse(input, &[15], 10, batch)?,
            Net::Mlp128 => zoo::mlp(input, &[128], 10, batch)?,
            Net::Lenet => zoo::lenet5(10, batch)?,
        })
    }
}

/// The vendored test set, split as data/mnist/README.md says.
fn vendored(unit_range: bool) -> Result<Split> {
    let set = Mnist::vendored_test_set().context("loading the vendored data/mnist")?;
    let set = Arc::new(if unit_range { set.unit_range() } else { set });
    Ok(Split {
        description: format!(
            "MNIST test set vendored in {}: first 8,000 to train, last 2,000 held out",
            data::tidy(vendored_dir()).display()
        ),
        train: Arc::new(Subset::new(set.clone(), 0, 8_000)),
        eval: Arc::new(Subset::new(set, 8_000, 2_000)),
        kind: DataKind::Mnist,
    })
}

fn main() -> std::process::ExitCode {
    common::exit_on_error(train(Cli::parse()))
}

fn train(cli: Cli) -> Result<()> {
    let flags = &cli.train;
    let name = format!("mnist-{:?}.svg", cli.model).to_lowercase();
    let plot = flags.plot_path(&name);
    flags.check_paths(plot.as_deref())?;
    let split = match &flags.data {
        Some(dir) => {
            let options = data::Options {
                folder_size: 28,
                mnist_unit_range: !cli.normalize,
            };
            data::load(dir, options)?
        }
        None => vendored(!cli.normalize)?,
    };
    if split.kind != DataKind::Mnist || split.train.image_shape() != [28, 28, 1] {
        bail!(
            "this example trains on 28x28 MNIST digits, and --data holds {} (train_alexnet and \
             train_resnet take CIFAR-10 and image folders)",
            split.description
        );
    }
    let split = split.limit(flags.train_samples, flags.eval_samples);
    let gpu = common::open_gpu()?;
    say("adapter", common::adapter_line(&gpu));
    let recipe = cli.model.recipe();
    let batch = flags.batch_size.unwrap_or(recipe.batch);
    let epochs = flags.epochs.unwrap_or(recipe.epochs);
    let (optimizer, lr) = match flags.optimizer {
        Some(kind) => flags.optimizer(kind, 0.0, (recipe.lr, 1e-3)),
        None => (recipe.optimizer, flags.lr.unwrap_or(recipe.lr)),
    };
    let model = cli.model.build(batch)?;
    say(
        "model",
        format!(
            "{}: {} parameters",
            model.name,
            thousands(model.graph.parameter_count())
        ),
    );
    let pixels = match cli.normalize {
        true => "standardised (mean 0.1307, deviation 0.3081)",
        false => "scaled to [0, 1] (--normalize standardises them)",
    };
    say("data", format!("{}; pixels {pixels}", split.description));
    let train = Loader::new(split.train, batch)?.shuffled(flags.seed);
    let eval = Loader::new(split.eval, 500)?;
    let schedule = Schedule::constant(lr);
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
    say(
        "reference",
        format!(
            "PyTorch reaches {} held out with this model's default recipe on this split \
             (data/mnist/README.md)",
            recipe.reference
        ),
    );
    common::say_outputs(flags, plot.as_deref());
    let run = RunConfig {
        epochs,
        optimizer,
        schedule,
        plot,
        classes: 10,
    };
    common::run(gpu, model, flags, run, &train, &eval)?;
    Ok(())
}
