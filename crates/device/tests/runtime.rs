//! The runtime around the kernels: adapter description, the buffer pool's reuse and
//! statistics, refusal of tensors past the adapter's binding limit, and readback errors.

mod common;

use common::*;
use wgtrain_device::{DeviceError, Gpu};

#[test]
fn describe_names_adapter_backend_features_and_limits() {
    let text = gpu().describe();
    assert!(text.contains(&gpu().info().name), "{text}");
    for key in [
        "driver:",
        "backend:",
        "features:",
        "max_storage_buffer_binding_size",
    ] {
        assert!(text.contains(key), "describe() lacks {key}: {text}");
    }
}

#[test]
fn a_tensor_past_the_binding_limit_is_refused_with_both_numbers() {
    let limit = gpu().limits().max_storage_buffer_binding_size;
    let err = gpu()
        .pool()
        .acquire(limit + 4, "activations.conv1")
        .unwrap_err();
    assert!(matches!(err, DeviceError::TooLarge { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("activations.conv1"), "{text}");
    assert!(
        text.contains(&(limit + 4).to_string()) && text.contains(&limit.to_string()),
        "{text}"
    );
    // At the limit itself the buffer is fine.
    assert!(gpu().pool().acquire(limit, "at-limit").is_ok());
}

#[test]
fn released_buffers_are_reused_and_counted() {
    // A private Gpu so other tests' allocations do not disturb the statistics.
    let gpu = Gpu::new().expect("adapter");
    let pool = gpu.pool();
    let first = pool.acquire(1000, "a").expect("acquire");
    let class = first.capacity();
    assert!(class >= 1000);
    let s1 = pool.stats();
    assert_eq!(
        (s1.live_bytes, s1.peak_bytes, s1.allocations, s1.reuses),
        (class, class, 1, 0)
    );
    drop(first);
    assert_eq!(pool.stats().live_bytes, 0);
    let again = pool.acquire(900, "b").expect("acquire"); // same size class
    let s2 = pool.stats();
    assert_eq!((s2.allocations, s2.reuses, s2.live_bytes), (1, 1, class));
    let other = pool.acquire(100_000, "c").expect("acquire");
    let s3 = pool.stats();
    assert_eq!(s3.allocations, 2);
    assert_eq!(s3.peak_bytes, class + other.capacity());
    assert_eq!(s3.total_allocated_bytes, class + other.capacity());
    drop((again, other));
    assert_eq!(pool.free_bytes(), s3.total_allocated_bytes);
    pool.trim();
    assert_eq!(pool.free_bytes(), 0);
}

#[test]
fn upload_download_round_trip_and_reading_past_the_end_is_an_error() {
    let data: Vec<f32> = (0..1234).map(|i| i as f32 * 0.5).collect();
    let buf = upload(&data);
    assert_eq!(download(&buf, data.len()), data);
    let bytes = buf.size() as usize;
    let err = gpu().download::<f32>(&buf, bytes / 4 + 1).unwrap_err();
    assert!(matches!(err, DeviceError::Readback { .. }), "{err:?}");
}

#[test]
fn an_unknown_adapter_name_lists_the_available_ones() {
    let err = Gpu::with_adapter(Some("no-such-adapter-xyz"))
        .err()
        .expect("must fail");
    let text = err.to_string();
    assert!(
        text.contains("no-such-adapter-xyz") && text.contains(&gpu().info().name),
        "{text}"
    );
}
