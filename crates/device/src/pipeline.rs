//! Pipelines and dispatches: the cache of compiled kernels, keyed by (shader, entry point,
//! specialisation), and [`Dispatch`], a kernel bound to its buffers and ready to record.
//!
//! ## Design
//!
//! A kernel wrapper validates its shapes, then builds a [`Dispatch`] through
//! [`DispatchBuilder`]: pipeline (from the cache), uniform buffer with the shape, and bind
//! group. A `Dispatch` is built once and recorded any number of times, so the graph
//! executor creates no bind group in its steady-state step. Recording never submits.
//!
//! Bind group layouts are explicit (uniform / read-only storage / read-write storage per
//! binding), derived from the wrapper's list of bindings, so an optional input that a
//! specialisation never reads is still a valid binding. Shader-module and pipeline
//! creation run inside a validation error scope; failures become typed errors.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::error::{DeviceError, Result};
use crate::gpu::Gpu;
use crate::shaders::Shader;

/// How a kernel uses one binding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    Uniform,
    Read,
    ReadWrite,
}

type LayoutKey = Vec<Access>;

#[derive(Default)]
struct CacheInner {
    modules: HashMap<&'static str, wgpu::ShaderModule>,
    layouts: HashMap<LayoutKey, (wgpu::BindGroupLayout, wgpu::PipelineLayout)>,
    pipelines: HashMap<String, (wgpu::ComputePipeline, wgpu::BindGroupLayout)>,
}

/// Compiled shader modules, layouts and pipelines of one device.
pub struct PipelineCache {
    inner: Mutex<CacheInner>,
    /// Whether pipelines may skip zero-initialising workgroup memory. Every kernel here
    /// writes shared memory before reading it, so this is safe; kept as a switch.
    zero_init_workgroup_memory: bool,
}

impl PipelineCache {
    pub(crate) fn new(
        _device: &wgpu::Device,
        _features: wgpu::Features,
        _info: &wgpu::AdapterInfo,
    ) -> Self {
        Self {
            inner: Mutex::default(),
            zero_init_workgroup_memory: true,
        }
    }

    /// Number of distinct pipelines compiled so far.
    pub fn len(&self) -> usize {
        self.inner.lock().map(|i| i.pipelines.len()).unwrap_or(0)
    }

    /// True when no pipeline has been compiled yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn get(
        &self,
        device: &wgpu::Device,
        shader: Shader,
        entry: &'static str,
        constants: &[(&'static str, f64)],
        layout: &[Access],
    ) -> Result<(wgpu::ComputePipeline, wgpu::BindGroupLayout)> {
        let key = specialisation_key(shader, entry, constants, layout);
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(hit) = inner.pipelines.get(&key) {
            return Ok(hit.clone());
        }
        if !inner.modules.contains_key(shader.name) {
            let module = create_module(device, shader)?;
            inner.modules.insert(shader.name, module);
        }
        if !inner.layouts.contains_key(layout) {
            let made = create_layout(device, layout);
            inner.layouts.insert(layout.to_vec(), made);
        }
        let module = &inner.modules[shader.name];
        let (bgl, pipeline_layout) = &inner.layouts[layout];
        let label = format!("{}.{}", shader.name, entry);
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(&label),
            layout: Some(pipeline_layout),
            module,
            entry_point: Some(entry),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants,
                zero_initialize_workgroup_memory: self.zero_init_workgroup_memory,
            },
            cache: None,
        });
        if let Some(err) = pollster::block_on(scope.pop()) {
            return Err(DeviceError::Pipeline {
                kernel: label,
                message: error_text(&err),
            });
        }
        let entry_value = (pipeline, bgl.clone());
        inner.pipelines.insert(key, entry_value.clone());
        Ok(entry_value)
    }
}

fn specialisation_key(
    shader: Shader,
    entry: &str,
    constants: &[(&'static str, f64)],
    layout: &[Access],
) -> String {
    let consts: Vec<String> = constants.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!(
        "{}:{}:{}:{:?}",
        shader.name,
        entry,
        consts.join(","),
        layout
    )
}

fn error_text(err: &wgpu::Error) -> String {
    match err {
        wgpu::Error::Validation {
            description,
            source,
        } => {
            // The description stops at the outermost error; the causes (which
            // expression, which rule) are in the source chain.
            let mut text = description.trim_end().to_owned();
            let mut cause: Option<&(dyn std::error::Error + 'static)> = source.source();
            while let Some(c) = cause {
                let line = c.to_string();
                if !text.contains(&line) {
                    text.push_str(&format!("\n    caused by: {line}"));
                }
                cause = c.source();
            }
            text
        }
        other => other.to_string(),
    }
}

fn create_module(device: &wgpu::Device, shader: Shader) -> Result<wgpu::ShaderModule> {
    let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
    let desc = wgpu::ShaderModuleDescriptor {
        label: Some(shader.name),
        source: wgpu::ShaderSource::Wgsl(shader.source.into()),
    };
    // Measured: creating the module without runtime bounds checks
    // (`create_shader_module_trusted`) did not change matmul speed on lavapipe, so every
    // module keeps wgpu's checks.
    let module = device.create_shader_module(desc);
    match pollster::block_on(scope.pop()) {
        Some(err) => Err(DeviceError::Shader {
            shader: shader.name.to_owned(),
            message: error_text(&err),
        }),
        None => Ok(module),
    }
}

fn create_layout(
    device: &wgpu::Device,
    layout: &[Access],
) -> (wgpu::BindGroupLayout, wgpu::PipelineLayout) {
    let entries: Vec<wgpu::BindGroupLayoutEntry> = layout
        .iter()
        .enumerate()
        .map(|(i, access)| wgpu::BindGroupLayoutEntry {
            binding: i as u32,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: match access {
                Access::Uniform => wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Uniform,
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                Access::Read | Access::ReadWrite => wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Storage {
                        read_only: *access == Access::Read,
                    },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
            },
            count: None,
        })
        .collect();
    let label = format!("wgtrain.layout{layout:?}");
    let bgl = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
        label: Some(&label),
        entries: &entries,
    });
    let pl = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
        label: Some(&label),
        bind_group_layouts: &[Some(&bgl)],
        immediate_size: 0,
    });
    (bgl, pl)
}

/// A kernel bound to its buffers: record it into any number of command encoders.
pub struct Dispatch {
    label: String,
    pipeline: wgpu::ComputePipeline,
    bind_group: wgpu::BindGroup,
    groups: [u32; 3],
    uniform: Option<wgpu::Buffer>,
}

impl std::fmt::Debug for Dispatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Dispatch({}, groups {:?})", self.label, self.groups)
    }
}

impl Dispatch {
    /// Records this dispatch into an open compute pass.
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>) {
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind_group, &[]);
        let [x, y, z] = self.groups;
        pass.dispatch_workgroups(x, y, z);
    }

    /// Records this dispatch in a compute pass of its own, labelled with the kernel name.
    pub fn encode(&self, encoder: &mut wgpu::CommandEncoder) {
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some(&self.label),
            timestamp_writes: None,
        });
        self.record(&mut pass);
    }

    /// The kernel's name (`shader.entry`).
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Workgroups launched in x, y, z.
    pub fn workgroups(&self) -> [u32; 3] {
        self.groups
    }

    /// The uniform buffer holding the kernel's parameters, for callers that rewrite
    /// them between runs (e.g. a learning-rate schedule) with `Queue::write_buffer`.
    pub fn uniform(&self) -> Option<&wgpu::Buffer> {
        self.uniform.as_ref()
    }
}

/// Records `dispatches` in order in one compute pass.
pub fn encode_all<'a>(
    encoder: &mut wgpu::CommandEncoder,
    label: &str,
    dispatches: impl IntoIterator<Item = &'a Dispatch>,
) {
    let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
        label: Some(label),
        timestamp_writes: None,
    });
    for d in dispatches {
        d.record(&mut pass);
    }
}

/// Workgroup counts for `threads` invocations in groups of `group_size`, spread over x
/// and y when x alone would pass the adapter's per-dimension limit. Shaders rebuild the
/// linear index as `(wid.y * num_workgroups.x + wid.x) * group_size + lid.x`.
pub(crate) fn grid_1d(threads: u64, group_size: u32, max_per_dim: u32) -> [u32; 3] {
    let groups = threads.div_ceil(group_size as u64).max(1);
    if groups <= max_per_dim as u64 {
        return [groups as u32, 1, 1];
    }
    let y = groups.div_ceil(max_per_dim as u64);
    let x = groups.div_ceil(y);
    [x as u32, y as u32, 1]
}

struct Binding<'a> {
    name: &'static str,
    access: Access,
    buffer: &'a wgpu::Buffer,
    need: u64,
}

/// Assembles one [`Dispatch`]: specialisation constants, uniform parameters and buffers,
/// each buffer checked against the bytes the kernel will touch.
pub(crate) struct DispatchBuilder<'a> {
    gpu: &'a Gpu,
    shader: Shader,
    entry: &'static str,
    constants: Vec<(&'static str, f64)>,
    uniform: Option<Vec<u8>>,
    bindings: Vec<Binding<'a>>,
}

impl<'a> DispatchBuilder<'a> {
    pub fn new(gpu: &'a Gpu, shader: Shader, entry: &'static str) -> Self {
        Self {
            gpu,
            shader,
            entry,
            constants: Vec::new(),
            uniform: None,
            bindings: Vec::new(),
        }
    }

    fn kernel(&self) -> String {
        format!("{}.{}", self.shader.name, self.entry)
    }

    /// Sets a WGSL `override` constant.
    pub fn constant(mut self, name: &'static str, value: impl Into<f64>) -> Self {
        self.constants.push((name, value.into()));
        self
    }

    /// Sets a boolean `override` constant.
    pub fn flag(self, name: &'static str, value: bool) -> Self {
        self.constant(name, if value { 1.0 } else { 0.0 })
    }

    /// The uniform parameters, bound at binding 0.
    pub fn params<T: bytemuck::Pod>(mut self, params: &T) -> Self {
        self.uniform = Some(bytemuck::bytes_of(params).to_vec());
        self
    }

    /// A read-only storage buffer the kernel reads `elems` f32/u32 elements from.
    pub fn read(mut self, name: &'static str, buffer: &'a wgpu::Buffer, elems: u64) -> Self {
        self.bindings.push(Binding {
            name,
            access: Access::Read,
            buffer,
            need: elems * 4,
        });
        self
    }

    /// An optional read-only input; absent, a placeholder is bound (and never read).
    pub fn read_opt(
        self,
        name: &'static str,
        buffer: Option<&'a wgpu::Buffer>,
        elems: u64,
    ) -> Self {
        match buffer {
            Some(b) => self.read(name, b, elems),
            None => {
                let placeholder = &self.gpu.placeholder;
                self.read(name, placeholder, 0)
            }
        }
    }

    /// [`DispatchBuilder::write`] of an optional buffer: the placeholder when absent (for
    /// a binding the specialisation never touches).
    pub fn write_opt(
        self,
        name: &'static str,
        buffer: Option<&'a wgpu::Buffer>,
        elems: u64,
    ) -> Self {
        match buffer {
            Some(b) => self.write(name, b, elems),
            None => {
                let placeholder = &self.gpu.placeholder;
                self.write(name, placeholder, 0)
            }
        }
    }

    /// A read-write storage buffer of at least `elems` 4-byte elements.
    pub fn write(mut self, name: &'static str, buffer: &'a wgpu::Buffer, elems: u64) -> Self {
        self.bindings.push(Binding {
            name,
            access: Access::ReadWrite,
            buffer,
            need: elems * 4,
        });
        self
    }

    /// Validates the buffers and workgroup counts, then builds the dispatch.
    pub fn build(self, groups: [u32; 3]) -> Result<Dispatch> {
        let kernel = self.kernel();
        let limits = self.gpu.limits();
        let max_binding = limits.max_storage_buffer_binding_size;
        for b in &self.bindings {
            if b.need > max_binding {
                return Err(DeviceError::TooLarge {
                    what: format!("kernel {kernel}, binding `{}`", b.name),
                    bytes: b.need,
                    limit: max_binding,
                });
            }
            if b.buffer.size() < b.need {
                return Err(DeviceError::BufferTooSmall {
                    kernel,
                    binding: b.name,
                    need: b.need,
                    have: b.buffer.size(),
                });
            }
        }
        for (i, w) in self.bindings.iter().enumerate() {
            // The placeholder stands in for absent optional buffers and is never
            // touched, so several absent ones may share it.
            let clash = self.bindings[..i].iter().find(|r| {
                r.buffer == w.buffer
                    && *w.buffer != self.gpu.placeholder
                    && (r.access == Access::ReadWrite || w.access == Access::ReadWrite)
            });
            if let Some(r) = clash {
                return Err(DeviceError::InvalidParams {
                    kernel,
                    message: format!(
                        "bindings `{}` and `{}` are the same buffer, but one is written",
                        r.name, w.name
                    ),
                });
            }
        }
        let max_groups = limits.max_compute_workgroups_per_dimension;
        if let Some(&g) = groups.iter().find(|&&g| g > max_groups) {
            return Err(DeviceError::TooManyWorkgroups {
                kernel,
                groups: g as u64,
                limit: max_groups as u64,
            });
        }
        let mut layout = Vec::with_capacity(self.bindings.len() + 1);
        if self.uniform.is_some() {
            layout.push(Access::Uniform);
        }
        layout.extend(self.bindings.iter().map(|b| b.access));
        let device = &self.gpu.device;
        let (pipeline, bgl) =
            self.gpu
                .pipelines
                .get(device, self.shader, self.entry, &self.constants, &layout)?;
        let uniform = self.uniform.as_ref().map(|bytes| {
            use wgpu::util::DeviceExt;
            device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(&kernel),
                contents: bytes,
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            })
        });
        let mut entries = Vec::with_capacity(layout.len());
        if let Some(u) = &uniform {
            entries.push(wgpu::BindGroupEntry {
                binding: 0,
                resource: u.as_entire_binding(),
            });
        }
        let offset = entries.len() as u32;
        for (i, b) in self.bindings.iter().enumerate() {
            // A buffer larger than one binding may be is bound up to the limit: the
            // kernel's footprint (`need`) was checked against it above.
            let size = b.buffer.size().min(max_binding & !3);
            entries.push(wgpu::BindGroupEntry {
                binding: offset + i as u32,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: b.buffer,
                    offset: 0,
                    size: wgpu::BufferSize::new(size),
                }),
            });
        }
        let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(&kernel),
            layout: &bgl,
            entries: &entries,
        });
        if crate::log::enabled(crate::log::Level::Debug) {
            eprintln!(
                "[wgtrain] dispatch {kernel} groups={groups:?} consts={:?}",
                self.constants
            );
        }
        Ok(Dispatch {
            label: kernel,
            pipeline,
            bind_group,
            groups,
            uniform,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::{DispatchBuilder, grid_1d};
    use crate::error::DeviceError;
    use crate::gpu::Gpu;
    use crate::shaders::Shader;

    #[test]
    fn a_broken_shader_or_entry_point_is_a_typed_error() {
        let gpu = Gpu::new().expect("adapter");
        let broken = Shader {
            name: "broken",
            source: "@compute @workgroup_size(1) fn main( {",
        };
        let err = DispatchBuilder::new(&gpu, broken, "main")
            .build([1, 1, 1])
            .unwrap_err();
        assert!(matches!(err, DeviceError::Shader { .. }), "{err:?}");
        assert!(err.to_string().contains("broken.wgsl"), "{err}");
        let fine = Shader {
            name: "fine",
            source: "@compute @workgroup_size(1) fn main() {}",
        };
        let err = DispatchBuilder::new(&gpu, fine, "missing")
            .build([1, 1, 1])
            .unwrap_err();
        assert!(matches!(err, DeviceError::Pipeline { .. }), "{err:?}");
        assert!(err.to_string().contains("fine.missing"), "{err}");
        assert!(
            DispatchBuilder::new(&gpu, fine, "main")
                .build([1, 1, 1])
                .is_ok()
        );
        gpu.sync().expect("no uncaptured GPU error left behind");
    }

    #[test]
    fn grid_spreads_over_y_past_the_limit() {
        assert_eq!(grid_1d(1, 64, 65535), [1, 1, 1]);
        assert_eq!(grid_1d(64 * 65535, 64, 65535), [65535, 1, 1]);
        let [x, y, _] = grid_1d(64 * 65536, 64, 65535);
        assert!(x <= 65535 && (x as u64) * (y as u64) >= 65536);
    }
}
