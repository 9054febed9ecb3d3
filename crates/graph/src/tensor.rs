//! Symbolic tensors: a [`Value`] names one output of one node; [`TensorType`] is its
//! shape and element type.

use std::fmt;

/// Element type. Both are 4 bytes, so buffer sizes depend only on the element count.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    U32,
}

/// Shape and element type of a value. Activations are NHWC, matrices row-major.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TensorType {
    pub shape: Vec<usize>,
    pub dtype: DType,
}

impl TensorType {
    pub fn f32(shape: &[usize]) -> Self {
        Self {
            shape: shape.to_vec(),
            dtype: DType::F32,
        }
    }

    pub fn u32(shape: &[usize]) -> Self {
        Self {
            shape: shape.to_vec(),
            dtype: DType::U32,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// True for a tensor with no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes of storage (4 per element).
    pub fn bytes(&self) -> u64 {
        self.len() as u64 * 4
    }
}

impl fmt::Display for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dims: Vec<String> = self.shape.iter().map(|d| d.to_string()).collect();
        let dtype = match self.dtype {
            DType::F32 => "",
            DType::U32 => " u32",
        };
        write!(f, "[{}]{dtype}", dims.join(", "))
    }
}

/// One output of one node of a [`Graph`](crate::Graph).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Value(pub(crate) usize);

impl Value {
    /// The value's index in its graph (stable; useful as a map key).
    pub fn index(self) -> usize {
        self.0
    }
}
