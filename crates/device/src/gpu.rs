//! `Gpu`: the wgpu context. It picks the adapter, opens the device with the adapter's
//! real limits and the optional features that help, and owns the buffer pool and the
//! pipeline cache.
//!
//! ## Design
//!
//! One `Gpu` per process is the normal case; it is `Send + Sync`, so tests and loaders
//! share it through an `Arc`. Nothing here submits work implicitly except the explicit
//! helpers ([`Gpu::upload`], [`Gpu::download`], [`Gpu::submit`]): kernels record into a
//! caller's encoder, so a whole training step can be one submission.
//!
//! wgpu reports validation errors either through error scopes (used around shader and
//! pipeline creation, where we turn them into [`DeviceError`]s) or to an "uncaptured"
//! handler, which by default panics. We install a handler that stores the message and
//! hand it back as [`DeviceError::Gpu`] from the next [`Gpu::sync`] or download, so a
//! user never sees a raw validation dump.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use wgpu::util::DeviceExt;

use crate::autotune::Autotuner;
use crate::error::{DeviceError, Result};
use crate::pipeline::PipelineCache;
use crate::pool::{BufferPool, PooledBuffer};

/// Features requested when the adapter has them; none is required.
const WANTED_FEATURES: wgpu::Features = wgpu::Features::SHADER_F16
    .union(wgpu::Features::SUBGROUP)
    .union(wgpu::Features::TIMESTAMP_QUERY)
    .union(wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES)
    .union(wgpu::Features::PIPELINE_CACHE);

/// The GPU context: adapter, device, queue, buffer pool and pipeline cache.
pub struct Gpu {
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    features: wgpu::Features,
    limits: wgpu::Limits,
    pool: BufferPool,
    pub(crate) pipelines: PipelineCache,
    uncaptured: Arc<Mutex<Vec<String>>>,
    submissions: AtomicU64,
    autotune: Autotuner,
    /// Bound where a kernel's optional input (e.g. bias) is absent.
    pub(crate) placeholder: wgpu::Buffer,
}

impl Gpu {
    /// Opens the adapter chosen by `WGTRAIN_ADAPTER` (an index into [`Gpu::list_adapters`]
    /// or a case-insensitive substring of the name), else the best discrete GPU, else an
    /// integrated one, else a CPU adapter such as Mesa lavapipe.
    pub fn new() -> Result<Self> {
        pollster::block_on(Self::new_async(std::env::var("WGTRAIN_ADAPTER").ok()))
    }

    /// Like [`Gpu::new`] with an explicit adapter choice instead of the environment.
    pub fn with_adapter(choice: Option<&str>) -> Result<Self> {
        pollster::block_on(Self::new_async(choice.map(str::to_owned)))
    }

    fn instance() -> wgpu::Instance {
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
        desc.backends = wgpu::Backends::PRIMARY;
        wgpu::Instance::new(desc)
    }

    /// Every adapter wgpu can see, as `(index, info)`, in the order `WGTRAIN_ADAPTER`
    /// indexes them.
    pub fn list_adapters() -> Vec<wgpu::AdapterInfo> {
        let instance = Self::instance();
        pollster::block_on(instance.enumerate_adapters(wgpu::Backends::PRIMARY))
            .iter()
            .map(|a| a.get_info())
            .collect()
    }

    async fn new_async(choice: Option<String>) -> Result<Self> {
        let instance = Self::instance();
        let adapters = instance.enumerate_adapters(wgpu::Backends::PRIMARY).await;
        let adapter = pick_adapter(adapters, choice.as_deref())?;
        let info = adapter.get_info();
        let features = adapter.features() & WANTED_FEATURES;
        let limits = adapter.limits();
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("wgtrain"),
                required_features: features,
                required_limits: limits.clone(),
                experimental_features: wgpu::ExperimentalFeatures::disabled(),
                memory_hints: wgpu::MemoryHints::Performance,
                trace: wgpu::Trace::Off,
            })
            .await
            .map_err(|e| DeviceError::RequestDevice {
                adapter: info.name.clone(),
                message: e.to_string(),
            })?;
        let uncaptured = Arc::new(Mutex::new(Vec::new()));
        let sink = uncaptured.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            if let Ok(mut v) = sink.lock() {
                v.push(e.to_string());
            }
        }));
        let placeholder = device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("wgtrain.placeholder"),
            contents: &[0u8; 16],
            usage: wgpu::BufferUsages::STORAGE,
        });
        let pool = BufferPool::new(device.clone(), limits.max_storage_buffer_binding_size);
        let pipelines = PipelineCache::new(&device, features, &info);
        let autotune = Autotuner::new(&info);
        Ok(Self {
            device,
            queue,
            info,
            features,
            limits,
            pool,
            pipelines,
            uncaptured,
            submissions: AtomicU64::new(0),
            autotune,
            placeholder,
        })
    }

    /// The wgpu device (for callers that create their own objects).
    pub fn device(&self) -> &wgpu::Device {
        &self.device
    }

    /// The wgpu queue.
    pub fn queue(&self) -> &wgpu::Queue {
        &self.queue
    }

    /// The chosen adapter's description.
    pub fn info(&self) -> &wgpu::AdapterInfo {
        &self.info
    }

    /// The optional features this device was opened with.
    pub fn features(&self) -> wgpu::Features {
        self.features
    }

    /// The limits this device was opened with (the adapter's own).
    pub fn limits(&self) -> &wgpu::Limits {
        &self.limits
    }

    /// True for a CPU adapter such as lavapipe, where barrier-free register-blocked
    /// kernels beat shared-memory tiling.
    pub fn is_cpu(&self) -> bool {
        self.info.device_type == wgpu::DeviceType::Cpu
    }

    /// The subgroup width when the device has subgroup operations and every subgroup is
    /// that wide (lavapipe: 8, one 256-bit SIMD register of f32); `None` otherwise.
    pub fn subgroup_width(&self) -> Option<u32> {
        let i = &self.info;
        (self.features.contains(wgpu::Features::SUBGROUP)
            && i.subgroup_min_size == i.subgroup_max_size
            && i.subgroup_min_size > 0)
            .then_some(i.subgroup_min_size)
    }

    /// The buffer pool.
    pub fn pool(&self) -> &BufferPool {
        &self.pool
    }

    /// A multi-line human description: adapter, driver, backend, features, key limits.
    pub fn describe(&self) -> String {
        let i = &self.info;
        let l = &self.limits;
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        format!(
            "adapter:  {} ({:?}, vendor {:#06x}, device {:#06x})\n\
             driver:   {} {}\n\
             backend:  {:?}\n\
             features: {}\n\
             limits:   max_storage_buffer_binding_size {:.0} MiB, max_buffer_size {:.0} MiB, \
             max_compute_workgroup_storage_size {} B, max_compute_invocations_per_workgroup {}, \
             max_compute_workgroup_size ({}, {}, {}), max_compute_workgroups_per_dimension {}, \
             max_storage_buffers_per_shader_stage {}",
            i.name,
            i.device_type,
            i.vendor,
            i.device,
            i.driver,
            i.driver_info,
            i.backend,
            feature_names(self.features),
            mib(l.max_storage_buffer_binding_size),
            mib(l.max_buffer_size),
            l.max_compute_workgroup_storage_size,
            l.max_compute_invocations_per_workgroup,
            l.max_compute_workgroup_size_x,
            l.max_compute_workgroup_size_y,
            l.max_compute_workgroup_size_z,
            l.max_compute_workgroups_per_dimension,
            l.max_storage_buffers_per_shader_stage,
        )
    }

    /// A new command encoder labelled `label`.
    pub fn encoder(&self, label: &str) -> wgpu::CommandEncoder {
        self.device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some(label) })
    }

    /// Submits one encoder's commands.
    pub fn submit(&self, encoder: wgpu::CommandEncoder) -> wgpu::SubmissionIndex {
        self.submissions.fetch_add(1, Ordering::Relaxed);
        self.queue.submit(Some(encoder.finish()))
    }

    /// The kernel autotuner of this adapter (see [`crate::autotune`]).
    pub fn autotuner(&self) -> &Autotuner {
        &self.autotune
    }

    /// Replaces the autotuner (e.g. one with an explicit mode and cache directory; see
    /// [`Autotuner::with`]).
    pub fn set_autotuner(&mut self, tuner: Autotuner) {
        self.autotune = tuner;
    }

    /// Queue submissions made through [`Gpu::submit`] (downloads included) so far.
    pub fn submissions(&self) -> u64 {
        self.submissions.load(Ordering::Relaxed)
    }

    /// Waits for all submitted work, then reports any GPU error raised meanwhile.
    pub fn sync(&self) -> Result<()> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| DeviceError::Gpu(e.to_string()))?;
        self.take_errors()
    }

    /// Waits until submission `index` has completed (later ones may still run), then
    /// reports any GPU error raised meanwhile.
    pub fn wait_for(&self, index: wgpu::SubmissionIndex) -> Result<()> {
        self.device
            .poll(wgpu::PollType::Wait {
                submission_index: Some(index),
                timeout: None,
            })
            .map_err(|e| DeviceError::Gpu(e.to_string()))?;
        self.take_errors()
    }

    /// Returns (and clears) the first GPU error that was not caught by an error scope.
    pub fn take_errors(&self) -> Result<()> {
        let mut errors = self
            .uncaptured
            .lock()
            .map_err(|e| DeviceError::Gpu(e.to_string()))?;
        match errors.drain(..).next() {
            Some(first) => Err(DeviceError::Gpu(first)),
            None => Ok(()),
        }
    }

    /// Copies `data` into a new pooled storage buffer.
    pub fn upload<T: bytemuck::Pod>(&self, data: &[T], label: &str) -> Result<PooledBuffer> {
        let bytes: &[u8] = bytemuck::cast_slice(data);
        let buffer = self.pool.acquire(bytes.len().max(4) as u64, label)?;
        self.write(&buffer, data);
        Ok(buffer)
    }

    /// Writes `data` to the start of `buffer` (queued; ordered before the next submit).
    pub fn write<T: bytemuck::Pod>(&self, buffer: &wgpu::Buffer, data: &[T]) {
        let bytes: &[u8] = bytemuck::cast_slice(data);
        if bytes.len() % 4 == 0 {
            self.queue.write_buffer(buffer, 0, bytes);
        } else {
            let mut padded = bytes.to_vec();
            padded.resize(bytes.len().next_multiple_of(4), 0);
            self.queue.write_buffer(buffer, 0, &padded);
        }
    }

    /// Reads the first `len` elements of `buffer` back to the CPU (submits and waits).
    pub fn download<T: bytemuck::Pod>(&self, buffer: &wgpu::Buffer, len: usize) -> Result<Vec<T>> {
        self.read_back(buffer, len, true)
    }

    /// [`Gpu::download`]; `counted`: whether its submission counts in
    /// [`Gpu::submissions`] (the autotuner's do not).
    pub(crate) fn read_back<T: bytemuck::Pod>(
        &self,
        buffer: &wgpu::Buffer,
        len: usize,
        counted: bool,
    ) -> Result<Vec<T>> {
        let bytes = (len * std::mem::size_of::<T>()) as u64;
        if bytes > buffer.size() {
            return Err(DeviceError::Readback {
                what: buffer_label(buffer),
                message: format!("asked for {bytes} bytes of a {}-byte buffer", buffer.size()),
            });
        }
        if bytes == 0 {
            return Ok(Vec::new());
        }
        let padded = bytes.next_multiple_of(wgpu::COPY_BUFFER_ALIGNMENT);
        let staging = self.pool.acquire_staging(padded)?;
        let mut encoder = self.encoder("wgtrain.download");
        encoder.copy_buffer_to_buffer(buffer, 0, &staging, 0, padded);
        if counted {
            self.submit(encoder);
        } else {
            self.queue.submit(Some(encoder.finish()));
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let slice = staging.slice(..padded);
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.sync()?;
        let readback = |message: String| DeviceError::Readback {
            what: buffer_label(buffer),
            message,
        };
        rx.recv()
            .map_err(|e| readback(e.to_string()))?
            .map_err(|e| readback(e.to_string()))?;
        let out = {
            let view = slice
                .get_mapped_range()
                .map_err(|e| readback(e.to_string()))?;
            bytemuck::pod_collect_to_vec(&view[..bytes as usize])
        };
        staging.unmap();
        Ok(out)
    }
}

fn buffer_label(buffer: &wgpu::Buffer) -> String {
    format!("a {}-byte buffer", buffer.size())
}

fn feature_names(features: wgpu::Features) -> String {
    let names: Vec<String> = features
        .iter_names()
        .map(|(n, _)| n.to_lowercase())
        .collect();
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}

/// Preference order when no adapter is named: discrete, integrated, virtual, CPU.
fn rank(device_type: wgpu::DeviceType) -> u8 {
    match device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Cpu => 3,
        wgpu::DeviceType::Other => 4,
    }
}

fn pick_adapter(adapters: Vec<wgpu::Adapter>, choice: Option<&str>) -> Result<wgpu::Adapter> {
    if adapters.is_empty() {
        return Err(DeviceError::NoAdapter {
            backends: format!("{:?}", wgpu::Backends::PRIMARY),
        });
    }
    let Some(choice) = choice.map(str::trim).filter(|c| !c.is_empty()) else {
        let best = (0..adapters.len()).min_by_key(|&i| rank(adapters[i].get_info().device_type));
        return Ok(adapters
            .into_iter()
            .nth(best.unwrap_or(0))
            .expect("index in range"));
    };
    let by_index = choice.parse::<usize>().ok().filter(|&i| i < adapters.len());
    let needle = choice.to_lowercase();
    let found = by_index.or_else(|| {
        adapters
            .iter()
            .position(|a| a.get_info().name.to_lowercase().contains(&needle))
    });
    match found {
        Some(i) => Ok(adapters.into_iter().nth(i).expect("index in range")),
        None => Err(DeviceError::AdapterNotFound {
            requested: choice.to_owned(),
            available: adapters
                .iter()
                .enumerate()
                .map(|(i, a)| {
                    let info = a.get_info();
                    format!(
                        "[{i}] {} ({:?}, {:?})",
                        info.name, info.device_type, info.backend
                    )
                })
                .collect::<Vec<_>>()
                .join("; "),
        }),
    }
}
