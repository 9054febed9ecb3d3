//! What the models crate's test binaries share: one GPU per test process.

pub mod dp;

use std::sync::{Arc, OnceLock};

use wgtrain_graph::device::Gpu;

/// The adapter wgtrain picks, opened once per test binary; with none, the test fails
/// with the install hint.
#[allow(dead_code)]
pub fn gpu() -> Arc<Gpu> {
    static GPU: OnceLock<Arc<Gpu>> = OnceLock::new();
    GPU.get_or_init(|| Arc::new(Gpu::new().unwrap_or_else(|e| panic!("{e}"))))
        .clone()
}
