//! The kernel library: one module per WGSL family in `shaders/`. Every wrapper is a
//! plain parameter struct whose `prepare*` methods check shapes and buffer sizes and
//! return a [`Dispatch`](crate::Dispatch) that records into the caller's encoder.
//! The matching CPU reference lives in [`crate::reference`] under the same name.

pub mod batchnorm;
pub mod clip;
pub mod conv2d;
pub mod dropout;
pub mod elementwise;
pub mod finite;
pub mod lrn;
pub mod matmul;
pub mod mse;
pub mod optimizer;
pub mod pool;
pub mod probe;
pub mod reduce;
pub(crate) mod row_loss;
pub mod softmax_xent;

use crate::error::{DeviceError, Result};

/// An `InvalidParams` error for `kernel` unless `ok`.
pub(crate) fn ensure(ok: bool, kernel: &str, message: impl FnOnce() -> String) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(DeviceError::InvalidParams {
            kernel: kernel.to_owned(),
            message: message(),
        })
    }
}

/// Converts a size to `u32`, or an error naming the kernel and the quantity.
pub(crate) fn to_u32(value: u64, kernel: &str, what: &str) -> Result<u32> {
    u32::try_from(value).map_err(|_| DeviceError::InvalidParams {
        kernel: kernel.to_owned(),
        message: format!("{what} = {value} does not fit the kernel's 32-bit indexing"),
    })
}
