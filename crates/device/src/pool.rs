//! The buffer pool: storage buffers grouped by size class and reused after release.
//!
//! ## Design
//!
//! Sizes are rounded up to a class: a power of two times 1, 1.25, 1.5 or 1.75 (at least
//! 256 bytes), so at most a quarter of a buffer is slack while a freed buffer still fits
//! many later requests. [`PooledBuffer`] returns its buffer to the free list when it is
//! dropped. Staging (MAP_READ) buffers for downloads are pooled the same way in their own
//! free lists. A request larger than `max_storage_buffer_binding_size` is refused with
//! [`DeviceError::TooLarge`] naming the size and the limit, instead of a wgpu validation
//! panic at bind time.

use std::collections::HashMap;
use std::ops::Deref;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::error::{DeviceError, Result};

/// Statistics of a pool since it was created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Bytes in buffers currently handed out (by size class).
    pub live_bytes: u64,
    /// The most `live_bytes` ever reached.
    pub peak_bytes: u64,
    /// Bytes of all buffers ever created by the pool (storage and staging).
    pub total_allocated_bytes: u64,
    /// Buffers ever created.
    pub allocations: u64,
    /// Requests served from a free list instead of a new allocation.
    pub reuses: u64,
}

#[derive(Default)]
struct Inner {
    free: HashMap<u64, Vec<wgpu::Buffer>>,
    free_staging: HashMap<u64, Vec<wgpu::Buffer>>,
    stats: PoolStats,
}

/// A pool of storage buffers by size class. Cheap to clone (shared state).
#[derive(Clone)]
pub struct BufferPool {
    device: wgpu::Device,
    max_binding: u64,
    inner: Arc<Mutex<Inner>>,
}

/// Usage of every pooled storage buffer: bound to kernels, written and read by copies.
const STORAGE_USAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

/// Rounds `bytes` up to its size class.
pub fn size_class(bytes: u64) -> u64 {
    let bytes = bytes.max(256);
    let pow = bytes.next_power_of_two();
    if pow == bytes {
        return bytes;
    }
    let base = pow / 2;
    let quarter = base / 4;
    (1..=4)
        .map(|q| base + q * quarter)
        .find(|&c| c >= bytes)
        .unwrap_or(pow)
}

impl BufferPool {
    pub(crate) fn new(device: wgpu::Device, max_binding: u64) -> Self {
        Self {
            device,
            max_binding,
            inner: Arc::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind; keep using it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The largest storage buffer this pool hands out (the adapter's binding limit).
    pub fn max_buffer_bytes(&self) -> u64 {
        self.max_binding
    }

    /// A storage buffer of at least `bytes` bytes; `label` names it in errors and tools.
    pub fn acquire(&self, bytes: u64, label: &str) -> Result<PooledBuffer> {
        if bytes > self.max_binding {
            return Err(DeviceError::TooLarge {
                what: label.to_owned(),
                bytes,
                limit: self.max_binding,
            });
        }
        let class = size_class(bytes).min(self.max_binding.max(bytes.next_multiple_of(4)));
        let mut inner = self.lock();
        let reused = inner.free.get_mut(&class).and_then(Vec::pop);
        let buffer = match reused {
            Some(b) => {
                inner.stats.reuses += 1;
                b
            }
            None => {
                inner.stats.allocations += 1;
                inner.stats.total_allocated_bytes += class;
                self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some(label),
                    size: class,
                    usage: STORAGE_USAGE,
                    mapped_at_creation: false,
                })
            }
        };
        inner.stats.live_bytes += class;
        inner.stats.peak_bytes = inner.stats.peak_bytes.max(inner.stats.live_bytes);
        Ok(PooledBuffer {
            buffer: Some(buffer),
            class,
            staging: false,
            pool: self.clone(),
        })
    }

    /// A MAP_READ staging buffer of at least `bytes` bytes, for downloads.
    pub(crate) fn acquire_staging(&self, bytes: u64) -> Result<PooledBuffer> {
        let class = size_class(bytes);
        let mut inner = self.lock();
        let buffer = match inner.free_staging.get_mut(&class).and_then(Vec::pop) {
            Some(b) => {
                inner.stats.reuses += 1;
                b
            }
            None => {
                inner.stats.allocations += 1;
                inner.stats.total_allocated_bytes += class;
                self.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("wgtrain.staging"),
                    size: class,
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                })
            }
        };
        Ok(PooledBuffer {
            buffer: Some(buffer),
            class,
            staging: true,
            pool: self.clone(),
        })
    }

    /// The pool's statistics.
    pub fn stats(&self) -> PoolStats {
        self.lock().stats
    }

    /// Bytes held in free lists (allocated, not handed out).
    pub fn free_bytes(&self) -> u64 {
        let inner = self.lock();
        let sum = |m: &HashMap<u64, Vec<wgpu::Buffer>>| {
            m.iter()
                .map(|(class, v)| class * v.len() as u64)
                .sum::<u64>()
        };
        sum(&inner.free) + sum(&inner.free_staging)
    }

    /// Destroys every free buffer (handed-out buffers are unaffected).
    pub fn trim(&self) {
        let mut inner = self.lock();
        let inner = &mut *inner;
        for b in inner
            .free
            .drain()
            .chain(inner.free_staging.drain())
            .flat_map(|(_, v)| v)
        {
            b.destroy();
        }
    }

    fn release(&self, buffer: wgpu::Buffer, class: u64, staging: bool) {
        let mut inner = self.lock();
        if staging {
            inner.free_staging.entry(class).or_default().push(buffer);
        } else {
            inner.stats.live_bytes -= class;
            inner.free.entry(class).or_default().push(buffer);
        }
    }
}

/// A buffer on loan from a [`BufferPool`]; returned to the pool when dropped.
pub struct PooledBuffer {
    buffer: Option<wgpu::Buffer>,
    class: u64,
    staging: bool,
    pool: BufferPool,
}

impl PooledBuffer {
    /// Bytes actually allocated (the size class, at least the requested size).
    pub fn capacity(&self) -> u64 {
        self.class
    }
}

impl Deref for PooledBuffer {
    type Target = wgpu::Buffer;
    fn deref(&self) -> &wgpu::Buffer {
        self.buffer.as_ref().expect("buffer present until drop")
    }
}

impl Drop for PooledBuffer {
    fn drop(&mut self) {
        if let Some(b) = self.buffer.take() {
            self.pool.release(b, self.class, self.staging);
        }
    }
}

impl std::fmt::Debug for PooledBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PooledBuffer({} bytes)", self.class)
    }
}

#[cfg(test)]
mod tests {
    use super::size_class;

    #[test]
    fn size_classes_round_up_by_at_most_a_quarter() {
        assert_eq!(size_class(1), 256);
        assert_eq!(size_class(256), 256);
        assert_eq!(size_class(257), 320);
        assert_eq!(size_class(1000), 1024);
        assert_eq!(size_class(1025), 1280);
        for bytes in [300u64, 5000, 123_457, 10_000_000] {
            let c = size_class(bytes);
            assert!(
                c >= bytes && (c as f64) <= bytes as f64 * 1.25 + 1.0,
                "{bytes} -> {c}"
            );
        }
    }
}
