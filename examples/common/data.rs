//! `--data DIR`: CIFAR-10 binary, MNIST IDX or an image folder, as a training set and a
//! held-out set. Anything else is an error naming the directory and what was looked for.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Result, bail};
use wgtrain::models::data::cifar::Cifar10;
use wgtrain::models::data::folder::{ImageFolder, NonImage};
use wgtrain::models::data::idx::Mnist;
use wgtrain::models::data::{Dataset, Subset};

use super::thousands;

/// Which kind of data a run trains on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataKind {
    /// The embedded synthetic shapes (no `--data`).
    Synthetic,
    Cifar10,
    Mnist,
    Folder,
}

/// A training set and a held-out set.
pub struct Split {
    pub train: Arc<dyn Dataset>,
    pub eval: Arc<dyn Dataset>,
    pub kind: DataKind,
    /// One line saying what was loaded from where.
    pub description: String,
}

impl Split {
    /// Caps both sets at `--train-samples` / `--eval-samples` (their first images).
    pub fn limit(mut self, train: Option<usize>, eval: Option<usize>) -> Self {
        if let Some(n) = train.filter(|&n| n < self.train.len()) {
            self.description += &format!("; training on the first {}", thousands(n));
            self.train = Arc::new(Subset::new(self.train, 0, n));
        }
        if let Some(n) = eval.filter(|&n| n < self.eval.len()) {
            self.description += &format!("; evaluating on the first {}", thousands(n));
            self.eval = Arc::new(Subset::new(self.eval, 0, n));
        }
        self
    }

    /// Number of classes.
    pub fn classes(&self) -> usize {
        self.train.classes()
    }
}

/// How to read what `--data` holds.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Side the images of an image folder are resized to.
    pub folder_size: usize,
    /// MNIST pixels in [0, 1] (`ToTensor()`) rather than standardised.
    pub mnist_unit_range: bool,
}

/// Loads `--data DIR`:
/// - CIFAR-10 binary: trains on `data_batch_*.bin`, holds out `test_batch.bin`;
/// - MNIST IDX: trains on train-*, holds out t10k-*; with only one of them, its first 80%
///   trains and the last 20% is held out (data/mnist/README.md's split of the test set);
/// - an image folder: `train/` and `val/` (or `test/`) folders of class folders, or one
///   folder of class folders of which every fifth image is held out.
pub fn load(dir: &Path, options: Options) -> Result<Split> {
    check_dir(dir)?;
    let nested = dir.join("cifar-10-batches-bin");
    if nested.is_dir() {
        return load(&nested, options);
    }
    if dir.join("data_batch_1.bin").exists() || dir.join("test_batch.bin").exists() {
        return cifar(dir);
    }
    let train = mnist_pair(dir, "train", options)?;
    let test = mnist_pair(dir, "t10k", options)?;
    match (train, test) {
        (Some(train), Some(test)) => Ok(Split {
            description: format!(
                "MNIST IDX in {}: {} train (train-*), {} held out (t10k-*)",
                dir.display(),
                thousands(train.len()),
                thousands(test.len())
            ),
            train: Arc::new(train),
            eval: Arc::new(test),
            kind: DataKind::Mnist,
        }),
        (Some(one), None) => Ok(split_mnist(dir, "train", one)),
        (None, Some(one)) => Ok(split_mnist(dir, "t10k", one)),
        (None, None) if has_subfolders(dir)? => folder(dir, options.folder_size),
        (None, None) => bail!(
            "--data {}: found neither CIFAR-10 binary (data_batch_1.bin … test_batch.bin), \
             MNIST IDX (train-images-idx3-ubyte[.gz], t10k-images-idx3-ubyte[.gz] and their \
             labels) nor an image folder (one sub-folder of JPEG/PNG images per class)",
            dir.display()
        ),
    }
}

/// Fails unless `dir` is an existing directory.
pub fn check_dir(dir: &Path) -> Result<()> {
    if !dir.exists() {
        bail!("--data {}: no such directory", dir.display());
    }
    if !dir.is_dir() {
        bail!(
            "--data {}: is a file; --data takes the directory that holds the dataset",
            dir.display()
        );
    }
    Ok(())
}

fn cifar(dir: &Path) -> Result<Split> {
    let train = Cifar10::load_dir(dir, true)?;
    let eval = Cifar10::load_dir(dir, false)?;
    let description = format!(
        "CIFAR-10 in {}: {} train (data_batch_1…5.bin), {} held out (test_batch.bin)",
        dir.display(),
        thousands(train.len()),
        thousands(eval.len())
    );
    Ok(Split {
        train: Arc::new(train),
        eval: Arc::new(eval),
        kind: DataKind::Cifar10,
        description,
    })
}

/// The images and labels files of MNIST's `prefix` set, if its images file is there.
fn mnist_pair(dir: &Path, prefix: &str, options: Options) -> Result<Option<Mnist>> {
    let find = |kind: &str| {
        let dotted = kind.replacen("-idx", ".idx", 1); // Kaggle's spelling
        [kind, &dotted]
            .into_iter()
            .flat_map(|k| [format!("{prefix}-{k}"), format!("{prefix}-{k}.gz")])
            .map(|name| dir.join(name))
            .find(|p| p.is_file())
    };
    let Some(images) = find("images-idx3-ubyte") else {
        return Ok(None);
    };
    let Some(labels) = find("labels-idx1-ubyte") else {
        bail!(
            "--data {}: found {} but no {prefix}-labels-idx1-ubyte[.gz] beside it",
            dir.display(),
            images.display()
        );
    };
    let set = Mnist::load(images, labels)?;
    Ok(Some(if options.mnist_unit_range {
        set.unit_range()
    } else {
        set
    }))
}

fn split_mnist(dir: &Path, prefix: &str, set: Mnist) -> Split {
    let n = set.len();
    let train = n * 4 / 5;
    let set = Arc::new(set);
    Split {
        description: format!(
            "MNIST IDX in {} ({prefix}-* only): first {} to train, last {} held out",
            dir.display(),
            thousands(train),
            thousands(n - train)
        ),
        train: Arc::new(Subset::new(set.clone(), 0, train)),
        eval: Arc::new(Subset::new(set, train, n - train)),
        kind: DataKind::Mnist,
    }
}

fn has_subfolders(dir: &Path) -> Result<bool> {
    let entries = std::fs::read_dir(dir).map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
    Ok(entries.flatten().any(|e| e.path().is_dir()))
}

/// An image folder: `train/` + `val/` (or `validation/`, `test/`), else one folder of
/// class folders with every fifth image held out. Files that are not JPEG or PNG are
/// skipped and counted.
fn folder(dir: &Path, size: usize) -> Result<Split> {
    let held_out_dir = ["val", "validation", "test"]
        .iter()
        .map(|name| dir.join(name))
        .find(|p| p.is_dir());
    let train_dir = dir.join("train");
    if let (true, Some(val_dir)) = (train_dir.is_dir(), held_out_dir) {
        let train = ImageFolder::open(&train_dir, size, NonImage::Skip)?;
        let eval = ImageFolder::open(&val_dir, size, NonImage::Skip)?;
        if train.class_names() != eval.class_names() {
            bail!(
                "--data {}: {} and {} hold different class folders ({} and {})",
                dir.display(),
                train_dir.display(),
                val_dir.display(),
                train.class_names().len(),
                eval.class_names().len()
            );
        }
        let skipped = train.skipped().len() + eval.skipped().len();
        return Ok(Split {
            description: format!(
                "image folders {} ({} images) and {} ({} held out), {} classes, resized to \
                 {size}x{size}{}",
                train_dir.display(),
                thousands(train.len()),
                val_dir.display(),
                thousands(eval.len()),
                train.classes(),
                skipped_note(skipped, &train_dir)
            ),
            train: Arc::new(train),
            eval: Arc::new(eval),
            kind: DataKind::Folder,
        });
    }
    let all = Arc::new(ImageFolder::open(dir, size, NonImage::Skip)?);
    let indices = |held_out: bool| -> Vec<usize> {
        (0..all.len())
            .filter(|i| (i % 5 == 4) == held_out)
            .collect()
    };
    let train = Indexed(all.clone(), indices(false));
    let eval = Indexed(all.clone(), indices(true));
    Ok(Split {
        description: format!(
            "image folder {}: {} classes, {} images of which every fifth ({}) is held out, \
             resized to {size}x{size}{}",
            dir.display(),
            all.classes(),
            thousands(all.len()),
            thousands(eval.1.len()),
            skipped_note(all.skipped().len(), dir)
        ),
        train: Arc::new(train),
        eval: Arc::new(eval),
        kind: DataKind::Folder,
    })
}

fn skipped_note(skipped: usize, dir: &Path) -> String {
    match skipped {
        0 => String::new(),
        1 => format!(
            "; 1 file in {} is not JPEG/PNG and was left out",
            dir.display()
        ),
        n => format!(
            "; {n} files in {} are not JPEG/PNG and were left out",
            dir.display()
        ),
    }
}

/// The samples of a dataset at the given indices.
struct Indexed(Arc<ImageFolder>, Vec<usize>);

impl Dataset for Indexed {
    fn len(&self) -> usize {
        self.1.len()
    }
    fn image_shape(&self) -> [usize; 3] {
        self.0.image_shape()
    }
    fn classes(&self) -> usize {
        self.0.classes()
    }
    fn sample(&self, index: usize, out: &mut [f32]) -> u32 {
        self.0.sample(self.1[index], out)
    }
    fn try_sample(&self, index: usize, out: &mut [f32]) -> wgtrain::models::Result<u32> {
        self.0.try_sample(self.1[index], out)
    }
}

/// MNIST's 28×28 grey digits as 32×32 RGB, for the networks that take CIFAR-sized input:
/// two pixels of background on every side (as LeNet-5's paper padded them) and the grey
/// value in all three channels. Expects standardised pixels (not `unit_range`).
pub struct MnistAsRgb32(pub Arc<dyn Dataset>);

impl Dataset for MnistAsRgb32 {
    fn len(&self) -> usize {
        self.0.len()
    }
    fn image_shape(&self) -> [usize; 3] {
        [32, 32, 3]
    }
    fn classes(&self) -> usize {
        self.0.classes()
    }
    fn sample(&self, index: usize, out: &mut [f32]) -> u32 {
        let mut grey = [0.0f32; 28 * 28];
        let label = self.0.sample(index, &mut grey);
        // A black pixel after MNIST's standardisation (mean 0.1307, std 0.3081).
        out.fill(-0.1307 / 0.3081);
        for y in 0..28 {
            for x in 0..28 {
                out[((y + 2) * 32 + x + 2) * 3..][..3].fill(grey[y * 28 + x]);
            }
        }
        label
    }
}

/// `split` as RGB for the networks that take colour images: MNIST padded to 32×32 and
/// coloured grey; CIFAR-10 and image folders as they are.
pub fn as_rgb32(split: Split) -> Split {
    if split.kind != DataKind::Mnist {
        return split;
    }
    Split {
        train: Arc::new(MnistAsRgb32(split.train)),
        eval: Arc::new(MnistAsRgb32(split.eval)),
        description: format!("{}, padded to 32x32 RGB", split.description),
        kind: split.kind,
    }
}

/// Paths shown to people: `data/mnist` rather than `crates/models/../../data/mnist`.
pub fn tidy(path: PathBuf) -> PathBuf {
    path.canonicalize().unwrap_or(path)
}
