//! Non-finite counting against the CPU reference: NaN, ±Inf, the largest finite value,
//! subnormals and zeros at random positions, lengths 1, 1000 and 70000 (several
//! workgroups, so several atomics into one slot), several tensors into neighbouring
//! slots, a second run after a clear (counts do not accumulate across runs), and the
//! error for an empty tensor.

mod common;

use common::*;
use wgtrain_device::kernels::finite::{ClearCounts, CountNonFinite};
use wgtrain_device::reference::finite::count_nonfinite;

/// Random values with the awkward ones sprinkled in: about 1 in `every` element is
/// replaced by NaN, +Inf, -Inf, ±f32::MAX, a subnormal, -0.0 or a NaN with payload.
fn sprinkled(len: usize, every: u32, seed: u64) -> Vec<f32> {
    let mut rng = Rng::new(seed);
    let specials = [
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::MAX,
        -f32::MAX,
        f32::from_bits(1),
        -f32::MIN_POSITIVE / 2.0,
        -0.0,
        f32::from_bits(0xffc0_0001),
    ];
    (0..len)
        .map(|_| {
            let v = rng.uniform();
            if rng.below(every) == 0 {
                specials[rng.below(specials.len() as u32) as usize]
            } else {
                v
            }
        })
        .collect()
}

fn gpu_counts(tensors: &[Vec<f32>], runs: usize) -> Vec<u32> {
    let slots = tensors.len() as u32;
    let counts = upload_u32(&vec![u32::MAX; tensors.len()]);
    let bufs: Vec<_> = tensors.iter().map(|t| upload(t)).collect();
    let mut dispatches = vec![
        ClearCounts { slots }
            .prepare(gpu(), &counts)
            .expect("clear"),
    ];
    for (i, (t, b)) in tensors.iter().zip(&bufs).enumerate() {
        let k = CountNonFinite {
            count: t.len() as u32,
            slot: i as u32,
        };
        dispatches.push(k.prepare(gpu(), b, &counts).expect("count"));
    }
    for _ in 0..runs {
        run(&dispatches.iter().collect::<Vec<_>>());
    }
    gpu().download(&counts, tensors.len()).expect("download")
}

fn reference(tensors: &[Vec<f32>]) -> Vec<u32> {
    let mut want = vec![0u32; tensors.len()];
    for (i, t) in tensors.iter().enumerate() {
        let p = CountNonFinite {
            count: t.len() as u32,
            slot: i as u32,
        };
        count_nonfinite(&p, t, &mut want);
    }
    want
}

#[test]
fn counts_match_the_reference_for_every_special_value() {
    for (len, every, seed) in [(1, 1, 1), (1, 1, 2), (1000, 7, 3), (70000, 50, 4)] {
        let t = sprinkled(len, every, seed);
        let want = reference(std::slice::from_ref(&t));
        let got = gpu_counts(std::slice::from_ref(&t), 1);
        println!("len {len}: {got:?} non-finite (reference {want:?})");
        assert_eq!(got, want, "length {len}, seed {seed}");
    }
}

#[test]
fn each_special_value_alone() {
    let cases = [
        (f32::NAN, 1),
        (f32::INFINITY, 1),
        (f32::NEG_INFINITY, 1),
        (f32::MAX, 0),
        (f32::from_bits(1), 0),
        (f32::MIN_POSITIVE / 4.0, 0),
        (0.0, 0),
    ];
    for (v, want) in cases {
        let mut t = vec![0.5f32; 1000];
        t[999] = v;
        assert_eq!(gpu_counts(&[t], 1), vec![want], "value {v:e}");
    }
}

#[test]
fn several_tensors_fill_their_own_slots_and_runs_do_not_accumulate() {
    let tensors = vec![
        vec![1.0; 70000],
        sprinkled(1000, 3, 5),
        vec![f32::NAN; 70000],
        sprinkled(1, 1, 6),
        vec![f32::INFINITY; 33],
    ];
    let want = reference(&tensors);
    assert_eq!(want[0], 0);
    assert_eq!(want[2], 70000);
    // Three runs of the same dispatches: the clear at the start keeps each run's count.
    assert_eq!(gpu_counts(&tensors, 3), want);
}

#[test]
fn an_empty_tensor_is_an_error() {
    let x = upload(&[1.0]);
    let counts = upload_u32(&[0]);
    let err = CountNonFinite { count: 0, slot: 0 }
        .prepare(gpu(), &x, &counts)
        .expect_err("count 0");
    let msg = err.to_string();
    assert!(msg.contains("empty tensor"), "{msg}");
    let err = ClearCounts { slots: 0 }
        .prepare(gpu(), &counts)
        .expect_err("slots 0");
    assert!(err.to_string().contains("at least one slot"), "{err}");
}
