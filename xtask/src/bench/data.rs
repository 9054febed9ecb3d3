//! Inputs and checks shared by the suites: seeded random data, buffers filled with it
//! (or with NaN, so that an element a kernel forgets to write fails validation), and
//! the comparison with the CPU reference.

use anyhow::{Result, ensure};
use wgtrain_device::reference::max_relative_error;
use wgtrain_device::{Gpu, PooledBuffer};

/// Largest relative error accepted against the f64 CPU reference.
pub const TOLERANCE: f64 = 1e-3;

/// `len` values uniform in [-1, 1), from a xorshift generator seeded by `seed`.
pub fn random(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// `len` values uniform in [lo, hi).
pub fn random_in(len: usize, seed: u64, lo: f32, hi: f32) -> Vec<f32> {
    random(len, seed)
        .into_iter()
        .map(|v| lo + (v + 1.0) * 0.5 * (hi - lo))
        .collect()
}

/// `len` labels below `classes`.
pub fn labels(len: usize, classes: u32, seed: u64) -> Vec<u32> {
    random(len, seed)
        .into_iter()
        .map(|v| (((v + 1.0) * 0.5 * classes as f32) as u32).min(classes - 1))
        .collect()
}

/// Widens to f64 (the element-wise references take f64).
pub fn widen(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// Narrows to f32.
pub fn narrow(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

/// A buffer holding `len` random values.
pub fn upload_random(gpu: &Gpu, len: u64, seed: u64) -> Result<PooledBuffer> {
    Ok(gpu.upload(&random(len.max(1) as usize, seed), "bench.input")?)
}

/// A buffer of `len` NaNs, for outputs under validation.
pub fn nan_buffer(gpu: &Gpu, len: u64) -> Result<PooledBuffer> {
    Ok(gpu.upload(&vec![f32::NAN; len.max(1) as usize], "bench.output")?)
}

/// A zeroed buffer of `len` elements of 4 bytes.
pub fn zeroed(gpu: &Gpu, len: u64) -> Result<PooledBuffer> {
    Ok(gpu.upload(&vec![0u32; len.max(1) as usize], "bench.zeroed")?)
}

/// Runs `dispatches` once, in one pass, and waits.
pub fn run_once(gpu: &Gpu, dispatches: &[&wgtrain_device::Dispatch]) -> Result<()> {
    let mut enc = gpu.encoder("bench.validate");
    wgtrain_device::encode_all(&mut enc, "bench.validate", dispatches.iter().copied());
    gpu.submit(enc);
    Ok(gpu.sync()?)
}

/// Downloads `len` f32 from `buffer`.
pub fn download(gpu: &Gpu, buffer: &wgpu::Buffer, len: u64) -> Result<Vec<f32>> {
    Ok(gpu.download(buffer, len as usize)?)
}

/// The largest relative error of `got` against `want`; an error naming `what` above the
/// tolerance.
pub fn check(what: &str, got: &[f32], want: &[f32]) -> Result<f64> {
    ensure!(
        got.len() == want.len(),
        "{what}: {} values, the reference has {}",
        got.len(),
        want.len()
    );
    let err = max_relative_error(got, want);
    ensure!(
        err < TOLERANCE,
        "{what}: max relative error {err:.2e} against the CPU reference (tolerance {TOLERANCE:.0e})"
    );
    Ok(err)
}

/// Exact comparison of integer outputs (argmax, ranks).
pub fn check_exact(what: &str, got: &[u32], want: &[u32]) -> Result<f64> {
    let bad = got.iter().zip(want).position(|(g, w)| g != w);
    ensure!(
        got.len() == want.len() && bad.is_none(),
        "{what}: differs from the CPU reference at index {bad:?} (lengths {} and {})",
        got.len(),
        want.len()
    );
    Ok(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_is_seeded_and_in_range() {
        let a = random(1000, 7);
        assert_eq!(a, random(1000, 7));
        assert_ne!(a, random(1000, 8));
        assert!(a.iter().all(|v| (-1.0..1.0).contains(v)));
        assert!(
            random_in(100, 1, 2.0, 3.0)
                .iter()
                .all(|v| (2.0..3.0).contains(v))
        );
        assert!(labels(100, 10, 3).iter().all(|&l| l < 10));
    }

    #[test]
    fn check_rejects_large_errors() {
        assert!(check("x", &[1.0, 2.0], &[1.0, 2.0]).is_ok());
        assert!(check("x", &[1.0, 2.1], &[1.0, 2.0]).is_err());
        assert!(check("x", &[f32::NAN], &[1.0]).is_err());
        assert!(check_exact("a", &[1, 2], &[1, 3]).is_err());
    }
}
