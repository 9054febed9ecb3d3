//! The device crate's error type: every failure a caller can cause or meet, with the
//! kernel, the binding and the numbers involved named in the message.

/// Errors from the GPU runtime and the kernel library.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// No adapter at all: the machine has no GPU driver and no CPU Vulkan driver.
    #[error(
        "no GPU adapter found (backends tried: {backends}). wgtrain needs a Vulkan, Metal or DX12 \
         adapter. On a machine without a GPU install Mesa's CPU Vulkan driver (lavapipe): \
         `sudo apt-get install mesa-vulkan-drivers` on Debian/Ubuntu, `dnf install \
         mesa-vulkan-drivers` on Fedora"
    )]
    NoAdapter { backends: String },

    /// `WGTRAIN_ADAPTER` named an adapter that does not exist.
    #[error("WGTRAIN_ADAPTER={requested:?} matches no adapter; available: {available}")]
    AdapterNotFound {
        requested: String,
        available: String,
    },

    /// The adapter refused to create a device.
    #[error("could not open a device on adapter {adapter:?}: {message}")]
    RequestDevice { adapter: String, message: String },

    /// A shader failed to parse, validate or compile.
    #[error("shader {shader}.wgsl failed to compile: {message}")]
    Shader { shader: String, message: String },

    /// A compute pipeline could not be created (bad entry point or specialisation).
    #[error("kernel {kernel}: pipeline creation failed: {message}")]
    Pipeline { kernel: String, message: String },

    /// A tensor is larger than one storage binding may be on this adapter.
    #[error(
        "{what}: {bytes} bytes ({:.1} MiB) exceed this adapter's max_storage_buffer_binding_size \
         of {limit} bytes ({:.1} MiB); use a smaller batch or split the tensor",
        *.bytes as f64 / 1048576.0,
        *.limit as f64 / 1048576.0
    )]
    TooLarge {
        what: String,
        bytes: u64,
        limit: u64,
    },

    /// A kernel's parameters are inconsistent (zero sizes, mismatched shapes, bad settings).
    #[error("kernel {kernel}: {message}")]
    InvalidParams { kernel: String, message: String },

    /// A buffer bound to a kernel is smaller than the shape requires.
    #[error("kernel {kernel}: binding `{binding}` needs {need} bytes but the buffer has {have}")]
    BufferTooSmall {
        kernel: String,
        binding: &'static str,
        need: u64,
        have: u64,
    },

    /// A dispatch would need more workgroups than the adapter allows.
    #[error(
        "kernel {kernel}: needs {groups} workgroups in one dimension, the adapter allows {limit}"
    )]
    TooManyWorkgroups {
        kernel: String,
        groups: u64,
        limit: u64,
    },

    /// Reading a buffer back failed.
    #[error("reading back {what} failed: {message}")]
    Readback { what: String, message: String },

    /// The GPU reported an error that no kernel wrapper caught earlier.
    #[error("GPU error: {0}")]
    Gpu(String),
}

/// Result alias for the device crate.
pub type Result<T, E = DeviceError> = std::result::Result<T, E>;
