//! Graph ops, one module per family, each implementing [`Op`](crate::op::Op) with its
//! shape inference, backward and lowering to the device kernels of the same family.

pub mod clip;
pub mod conv;
pub mod dropout;
pub mod elementwise;
pub mod finite;
pub mod loss;
pub mod matmul;
pub mod mse;
pub mod norm;
pub mod optim;
pub mod pool;
pub mod sync;
pub mod syncbn;

use crate::error::Result;
use wgtrain_device::Dispatch;

/// Converts a size to the kernels' `u32`, or a shape error message.
pub(crate) fn u32_of(n: usize, what: &str) -> Result<u32, String> {
    u32::try_from(n).map_err(|_| format!("{what} = {n} exceeds the kernels' 32-bit sizes"))
}

/// Wraps one dispatch as the usual `lower` result.
pub(crate) fn one(d: wgtrain_device::Result<Dispatch>) -> Result<Vec<Dispatch>> {
    Ok(vec![d?])
}

/// The element count of a lowered tensor as `u32` (checked in `infer`).
pub(crate) fn count(ty: &crate::tensor::TensorType) -> u32 {
    ty.len() as u32
}
