//! Datasets and the batch loader. Images are f32 HWC (channels last, matching the NHWC
//! graphs), normalised per channel; labels are u32 class indices.

pub mod cifar;
pub mod folder;
pub mod idx;
pub mod loader;
pub mod synthetic;

pub use loader::{Batch, Loader};

/// A labelled image dataset held in memory or generated on demand.
pub trait Dataset: Send + Sync {
    /// Number of samples.
    fn len(&self) -> usize;

    /// True for a dataset with no samples.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `[H, W, C]` of every image.
    fn image_shape(&self) -> [usize; 3];

    /// Number of classes (labels are `0..classes`).
    fn classes(&self) -> usize;

    /// Writes sample `index`'s normalised HWC pixels into `out` (length H·W·C) and
    /// returns its label. For datasets held in memory, which cannot fail.
    fn sample(&self, index: usize, out: &mut [f32]) -> u32;

    /// [`sample`](Self::sample) for datasets that decode files and can meet a bad one;
    /// the loader always calls this.
    fn try_sample(&self, index: usize, out: &mut [f32]) -> crate::Result<u32> {
        Ok(self.sample(index, out))
    }
}

/// Samples `range` of a dataset as a dataset (e.g. MNIST's first 8,000 for training).
pub struct Subset<D> {
    inner: D,
    start: usize,
    len: usize,
}

impl<D: Dataset> Subset<D> {
    /// Samples `start..start + len` of `inner` (clamped to its length).
    pub fn new(inner: D, start: usize, len: usize) -> Self {
        let start = start.min(inner.len());
        let len = len.min(inner.len() - start);
        Self { inner, start, len }
    }
}

impl<D: Dataset> Dataset for Subset<D> {
    fn len(&self) -> usize {
        self.len
    }
    fn image_shape(&self) -> [usize; 3] {
        self.inner.image_shape()
    }
    fn classes(&self) -> usize {
        self.inner.classes()
    }
    fn sample(&self, index: usize, out: &mut [f32]) -> u32 {
        self.inner.sample(self.start + index, out)
    }
    fn try_sample(&self, index: usize, out: &mut [f32]) -> crate::Result<u32> {
        self.inner.try_sample(self.start + index, out)
    }
}

impl<D: Dataset + ?Sized> Dataset for std::sync::Arc<D> {
    fn len(&self) -> usize {
        (**self).len()
    }
    fn image_shape(&self) -> [usize; 3] {
        (**self).image_shape()
    }
    fn classes(&self) -> usize {
        (**self).classes()
    }
    fn sample(&self, index: usize, out: &mut [f32]) -> u32 {
        (**self).sample(index, out)
    }
    fn try_sample(&self, index: usize, out: &mut [f32]) -> crate::Result<u32> {
        (**self).try_sample(index, out)
    }
}
