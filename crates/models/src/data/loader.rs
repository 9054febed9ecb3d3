//! The batch loader: shuffles with a seed (a new order per epoch, the same for the same
//! seed and epoch), augments (random crop with zero padding, horizontal flip), and
//! prepares the next batches on a background thread so the GPU never waits on decoding.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use wgtrain_graph::Rng;

use crate::data::Dataset;
use crate::error::{ModelError, Result};

/// One batch: NHWC images and labels.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    pub images: Vec<f32>,
    pub labels: Vec<u32>,
    /// `[N, H, W, C]` (N may be smaller for the last batch of an epoch).
    pub shape: [usize; 4],
    /// Samples in the global batch this one is a shard of (`N` when the loader is not
    /// [sharded](Loader::sharded)).
    pub global: usize,
}

impl Batch {
    /// This batch's fraction of its global batch (1 unless sharded).
    pub fn share(&self) -> f32 {
        self.labels.len() as f32 / self.global.max(1) as f32
    }
}

/// Training-time augmentation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Augment {
    /// Mirror left-right with probability 1/2.
    pub flip: bool,
    /// Shift by up to this many pixels each way, filling with zeros (the padded random
    /// crop of CIFAR training).
    pub crop_padding: usize,
}

/// Produces batches of a dataset, epoch by epoch.
#[derive(Clone)]
pub struct Loader {
    dataset: Arc<dyn Dataset>,
    batch: usize,
    shuffle: bool,
    seed: u64,
    augment: Augment,
    prefetch: usize,
    /// `(rank, world)`: this loader yields shard `rank` of each global batch.
    shard: (usize, usize),
    /// Shards of equal size, every rank at least one sample ([`Loader::sharded`]), or any
    /// split ([`Loader::sharded_for_evaluation`]).
    equal_shards: bool,
    /// `(part, parts)`: this loader yields whole batches `part`, `part + parts`, … of
    /// each epoch ([`Loader::interleaved`]).
    stride: (usize, usize),
}

impl Loader {
    /// Batches of `batch` samples in dataset order, no augmentation, 2 batches prefetched.
    pub fn new(dataset: Arc<dyn Dataset>, batch: usize) -> Result<Self> {
        if batch == 0 {
            return Err(ModelError::Config(
                "batch size must be at least 1".to_owned(),
            ));
        }
        if dataset.is_empty() {
            return Err(ModelError::Config("the dataset is empty".to_owned()));
        }
        Ok(Self {
            dataset,
            batch,
            shuffle: false,
            seed: 0,
            augment: Augment::default(),
            prefetch: 2,
            shard: (0, 1),
            equal_shards: true,
            stride: (0, 1),
        })
    }

    /// Shard `rank` of `world` of every batch: each global batch of this loader's size
    /// (from the same seeded per-epoch shuffle on every rank) is split into `world`
    /// disjoint, contiguous parts, and this loader reads only part `rank`, augmented
    /// exactly as the unsharded loader would. The batch size must be a multiple of
    /// `world`; a last batch smaller than `world` is dropped (every rank needs at least
    /// one sample).
    pub fn sharded(self, rank: usize, world: usize) -> Result<Self> {
        let sharded = self.with_shard(rank, world, true)?;
        if sharded.batch % world != 0 {
            return Err(ModelError::Config(format!(
                "the batch size {} is not a multiple of the world size {world} (each of the \
                 {world} replicas takes an equal share of every batch)",
                sharded.batch
            )));
        }
        Ok(sharded)
    }

    /// Shard `rank` of `world` of every batch for evaluation, where only sums matter:
    /// any batch size, every sample read by exactly one rank (a shard may be empty).
    pub fn sharded_for_evaluation(self, rank: usize, world: usize) -> Result<Self> {
        self.with_shard(rank, world, false)
    }

    /// Whole batches `part`, `part + parts`, `part + 2·parts`, … of every epoch (of the
    /// same seeded shuffle on every part): an asynchronous worker's share, where each of
    /// `parts` workers computes full-size batches and together they read each sample of
    /// an epoch once. Composes with nothing else: the loader must not be sharded.
    pub fn interleaved(mut self, part: usize, parts: usize) -> Result<Self> {
        if parts == 0 || part >= parts {
            return Err(ModelError::Config(format!(
                "part {part} is out of range for {parts} parts"
            )));
        }
        if self.shard.1 > 1 {
            return Err(ModelError::Config(
                "a sharded loader cannot also be interleaved".to_owned(),
            ));
        }
        self.stride = (part, parts);
        Ok(self)
    }

    fn with_shard(mut self, rank: usize, world: usize, equal: bool) -> Result<Self> {
        if world == 0 || rank >= world {
            return Err(ModelError::Config(format!(
                "rank {rank} is out of range for a world of {world}"
            )));
        }
        self.shard = (rank, world);
        self.equal_shards = equal;
        Ok(self)
    }

    /// Samples in global batch `b` of an epoch (before sharding).
    pub fn global_batch_len(&self, b: usize) -> usize {
        self.dataset
            .len()
            .saturating_sub(b * self.batch)
            .min(self.batch)
    }

    /// The global batch size.
    pub fn batch_size(&self) -> usize {
        self.batch
    }

    /// Shuffles every epoch with `seed`.
    pub fn shuffled(mut self, seed: u64) -> Self {
        self.shuffle = true;
        self.seed = seed;
        self
    }

    /// Applies `augment` to every sample (seeded like the shuffle).
    pub fn augmented(mut self, augment: Augment) -> Self {
        self.augment = augment;
        self
    }

    /// Batches per epoch (the last may be smaller).
    pub fn batches_per_epoch(&self) -> usize {
        let all = self.global_batches();
        let (part, parts) = self.stride;
        (all + parts - 1 - part) / parts
    }

    /// Batches per epoch before [interleaving](Self::interleaved).
    fn global_batches(&self) -> usize {
        let all = self.dataset.len().div_ceil(self.batch);
        let world = self.shard.1;
        if world > 1 && self.equal_shards && self.global_batch_len(all - 1) < world {
            all - 1
        } else {
            all
        }
    }

    /// The dataset.
    pub fn dataset(&self) -> &Arc<dyn Dataset> {
        &self.dataset
    }

    /// The batches of `epoch`, starting at batch `skip` (to resume mid-epoch), prepared
    /// on a background thread.
    pub fn epoch(&self, epoch: u64, skip: usize) -> Epoch {
        let order = self.order(epoch);
        let (tx, rx) = sync_channel(self.prefetch);
        let me = self.clone();
        let worker = std::thread::spawn(move || me.produce(epoch, order, skip, tx));
        Epoch {
            rx: Some(rx),
            worker: Some(worker),
        }
    }

    fn order(&self, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.dataset.len()).collect();
        if self.shuffle {
            let mut rng = Rng::stream(self.seed, epoch);
            for i in (1..order.len()).rev() {
                order.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
            }
        }
        order
    }

    fn produce(&self, epoch: u64, order: Vec<usize>, skip: usize, tx: SyncSender<Result<Batch>>) {
        let (rank, world) = self.shard;
        let (part, parts) = self.stride;
        let batches = self.global_batches();
        for (b, chunk) in order
            .chunks(self.batch)
            .enumerate()
            .take(batches)
            .skip(part)
            .step_by(parts)
            .skip(skip)
        {
            let len = chunk.len();
            let (from, to) = (rank * len / world, (rank + 1) * len / world);
            let batch = self
                .assemble(epoch, b, from, &chunk[from..to])
                .map(|batch| Batch {
                    global: len,
                    ..batch
                });
            let failed = batch.is_err();
            if tx.send(batch).is_err() || failed {
                return; // the consumer stopped early, or was handed the error
            }
        }
    }

    /// The samples `chunk`, which start at position `from` of global batch `b`.
    fn assemble(&self, epoch: u64, b: usize, from: usize, chunk: &[usize]) -> Result<Batch> {
        let [h, w, c] = self.dataset.image_shape();
        let per = h * w * c;
        let mut tmp = vec![0.0f32; per];
        let mut images = vec![0.0f32; chunk.len() * per];
        let mut labels = Vec::with_capacity(chunk.len());
        for (j, &index) in chunk.iter().enumerate() {
            let out = &mut images[j * per..(j + 1) * per];
            if self.augment == Augment::default() {
                labels.push(self.dataset.try_sample(index, out)?);
            } else {
                labels.push(self.dataset.try_sample(index, &mut tmp)?);
                let position = (b * self.batch + from + j) as u64;
                let mut rng = Rng::stream(self.seed ^ 0xA06, epoch << 32 | position);
                augment_into(&tmp, out, [h, w, c], self.augment, &mut rng);
            }
        }
        Ok(Batch {
            images,
            labels,
            shape: [chunk.len(), h, w, c],
            global: chunk.len(),
        })
    }
}

fn augment_into(src: &[f32], dst: &mut [f32], [h, w, c]: [usize; 3], a: Augment, rng: &mut Rng) {
    let pad = a.crop_padding as i64;
    let shift = |rng: &mut Rng| {
        if pad > 0 {
            (rng.next_u64() % (2 * pad as u64 + 1)) as i64 - pad
        } else {
            0
        }
    };
    let (dy, dx) = (shift(rng), shift(rng));
    let flip = a.flip && rng.next_u64() & 1 == 1;
    for y in 0..h as i64 {
        for x in 0..w as i64 {
            let sx = if flip { w as i64 - 1 - x } else { x } + dx;
            let sy = y + dy;
            let d = &mut dst[((y * w as i64 + x) as usize) * c..][..c];
            if sx < 0 || sy < 0 || sx >= w as i64 || sy >= h as i64 {
                d.fill(0.0);
            } else {
                d.copy_from_slice(&src[((sy * w as i64 + sx) as usize) * c..][..c]);
            }
        }
    }
}

/// The batches of one epoch; dropping it stops the background thread. A sample that
/// cannot be read (a corrupt image file) ends the epoch with its error.
pub struct Epoch {
    rx: Option<Receiver<Result<Batch>>>,
    worker: Option<JoinHandle<()>>,
}

impl Iterator for Epoch {
    type Item = Result<Batch>;
    fn next(&mut self) -> Option<Result<Batch>> {
        self.rx.as_ref()?.recv().ok()
    }
}

impl Drop for Epoch {
    fn drop(&mut self) {
        drop(self.rx.take()); // unblocks a worker waiting to send
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}
