//! The graph crate's error type.

use wgtrain_device::DeviceError;

/// Errors from building, differentiating, planning or running a graph.
#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    /// An op's inputs do not fit together: names the op, its layer and the shapes.
    #[error("{op} in layer `{layer}`: {message}")]
    Shape {
        op: &'static str,
        layer: String,
        message: String,
    },

    /// A feed was missing, unknown, or of the wrong size.
    #[error("feed `{name}`: {message}")]
    Feed { name: String, message: String },

    /// A parameter or state tensor was not found, or a value has the wrong length.
    #[error("parameter `{name}`: {message}")]
    Param { name: String, message: String },

    /// The graph cannot be differentiated or compiled as asked.
    #[error("{0}")]
    Invalid(String),

    /// A host reduction across replicas failed (a peer stopped, a timeout).
    #[error("{0}")]
    Collective(String),

    /// The GPU runtime failed (kernel parameters, buffer limits, GPU errors).
    #[error(transparent)]
    Device(#[from] DeviceError),
}

/// Result alias for the graph crate.
pub type Result<T, E = GraphError> = std::result::Result<T, E>;
