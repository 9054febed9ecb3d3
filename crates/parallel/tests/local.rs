//! The in-process communicator without a GPU: collectives in rank order, bounded waits,
//! a stopped rank named in its peers' errors, point-to-point messages, and `--devices`
//! parsing.

use std::time::{Duration, Instant};

use wgtrain_parallel::{CommError, Communicator, DeviceSpec, LocalComm};

/// Runs `f(comm)` on every rank of a fresh group (threads); returns results by rank.
fn each<T: Send>(world: usize, timeout: Duration, f: impl Fn(LocalComm) -> T + Sync) -> Vec<T> {
    let comms = LocalComm::group_with_timeout(world, timeout);
    std::thread::scope(|s| {
        let hs: Vec<_> = comms.into_iter().map(|c| s.spawn(|| f(c))).collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

#[test]
fn all_reduce_sums_in_rank_order_on_every_rank() {
    // 1e8 + 1 − 1e8 in f32: ((1e8 + 1) + −1e8) = 0, not 1: the order shows in the bits.
    let out = each(3, Duration::from_secs(10), |c| {
        let mut v = [[1e8f32, 0.5], [1.0, 0.25], [-1e8, 2.0]][c.rank()];
        c.all_reduce_sum(&mut v).unwrap();
        v
    });
    for v in &out {
        assert_eq!(v[0], (1e8f32 + 1.0) + -1e8);
        assert_eq!(v[1], 2.75);
    }
}

#[test]
fn broadcast_barrier_and_messages() {
    let out = each(3, Duration::from_secs(10), |c| {
        let mut v = vec![c.rank() as f32; 4];
        c.broadcast(&mut v, 2).unwrap();
        let mut bytes = if c.rank() == 1 {
            b"hello".to_vec()
        } else {
            Vec::new()
        };
        c.broadcast_bytes(&mut bytes, 1).unwrap();
        c.barrier().unwrap();
        // Every rank sends its rank to rank 0 with tag 7; rank 0 receives from anyone.
        if c.rank() != 0 {
            c.send(0, 7, &[c.rank() as f32]).unwrap();
            (v, bytes, Vec::new())
        } else {
            let mut got: Vec<(usize, Vec<f32>)> =
                (0..2).map(|_| c.recv(None, 7).unwrap()).collect();
            got.sort_by_key(|g| g.0);
            (v, bytes, got)
        }
    });
    for (v, bytes, _) in &out {
        assert_eq!(v, &vec![2.0; 4]);
        assert_eq!(bytes, b"hello");
    }
    assert_eq!(out[0].2, vec![(1, vec![1.0]), (2, vec![2.0])]);
}

#[test]
fn a_stopped_rank_fails_its_peers_at_once_naming_it() {
    let start = Instant::now();
    let out = each(3, Duration::from_secs(60), |c| {
        if c.rank() == 1 {
            return None; // returns without joining the collective: its endpoint drops
        }
        let mut v = [1.0f32];
        Some(c.all_reduce_sum(&mut v).unwrap_err())
    });
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "waited for the timeout"
    );
    for e in [&out[0], &out[2]] {
        match e {
            Some(CommError::PeerFailed { rank: 1, op, .. }) => assert_eq!(*op, "all_reduce"),
            other => panic!("expected rank 1 named, got {other:?}"),
        }
    }
}

#[test]
fn a_rank_that_never_comes_times_out() {
    let out = each(2, Duration::from_millis(300), |c| {
        if c.rank() == 1 {
            std::thread::sleep(Duration::from_secs(2)); // alive, but late
            return None;
        }
        Some(c.barrier().unwrap_err())
    });
    match &out[0] {
        Some(CommError::Timeout { missing, .. }) => assert_eq!(missing, &vec![1]),
        other => panic!("expected a timeout naming rank 1, got {other:?}"),
    }
}

#[test]
fn mismatched_collectives_and_lengths_are_errors() {
    let out = each(2, Duration::from_secs(10), |c| {
        let mut v = vec![0.0f32; 2 + c.rank()];
        c.all_reduce_sum(&mut v).err().map(|e| e.to_string())
    });
    assert!(
        out.iter().flatten().any(|e| e.contains("lengths differ")),
        "{out:?}"
    );
    let c = LocalComm::group(2).remove(0);
    assert!(matches!(c.send(5, 0, &[]), Err(CommError::Invalid(_))));
}

#[test]
fn device_specs_parse() {
    assert_eq!(DeviceSpec::parse("2").unwrap(), DeviceSpec::Count(2));
    assert_eq!(
        DeviceSpec::parse("0,0").unwrap(),
        DeviceSpec::List(vec!["0".into(), "0".into()])
    );
    assert_eq!(DeviceSpec::parse("0, nvidia").unwrap().len(), 2);
    for bad in ["0", "1,,2", ","] {
        assert!(DeviceSpec::parse(bad).is_err(), "{bad} should be refused");
    }
}

#[test]
fn a_rank_that_timed_out_leaves_no_stale_contribution() {
    // Rank 0 gives up on a barrier; rank 1 arrives later. Their next collective (a
    // broadcast) must see both ranks' fresh data, not rank 0's abandoned barrier.
    // Rank 0: the barrier times out at 1 s, its broadcast waits from 1 s to 2 s;
    // rank 1 comes to the broadcast at 1.5 s.
    let out = each(2, Duration::from_millis(1000), |c| {
        if c.rank() == 0 {
            assert!(matches!(c.barrier(), Err(CommError::Timeout { .. })));
        } else {
            std::thread::sleep(Duration::from_millis(1500));
        }
        let mut v = vec![c.rank() as f32 + 10.0; 3];
        c.broadcast(&mut v, 1).map(|()| v)
    });
    for v in out {
        assert_eq!(v.unwrap(), vec![11.0; 3]);
    }
}

#[test]
fn a_broadcast_of_the_wrong_length_fails_every_rank() {
    let out = each(3, Duration::from_secs(10), |c| {
        let mut v = vec![0.0f32; if c.rank() == 2 { 5 } else { 4 }];
        c.broadcast(&mut v, 0).is_err()
    });
    assert_eq!(out, vec![true, true, true]);
}

#[test]
fn recv_any_of_fails_as_soon_as_one_sender_is_gone() {
    let out = each(3, Duration::from_secs(20), |c| match c.rank() {
        0 => {
            // Rank 1's message arrives; then rank 2 is gone while rank 1 still lives:
            // `recv(None)` would wait for rank 1, `recv_any_of` fails naming rank 2.
            let (from, data) = c.recv_any_of(&[1, 2], 9).unwrap();
            assert_eq!((from, data), (1, vec![1.0]));
            let start = Instant::now();
            let err = c.recv_any_of(&[1, 2], 9).unwrap_err().to_string();
            assert!(start.elapsed() < Duration::from_secs(10), "{err}");
            c.send(1, 10, &[]).unwrap();
            err
        }
        1 => {
            c.send(0, 9, &[1.0]).unwrap();
            c.recv(Some(0), 10).unwrap(); // stays alive until rank 0 is done
            String::new()
        }
        _ => {
            c.abort("rank 2 gave up");
            String::new()
        }
    });
    assert!(
        out[0].contains("rank 2") && out[0].contains("gave up"),
        "{}",
        out[0]
    );
}
