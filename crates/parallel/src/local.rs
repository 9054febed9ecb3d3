//! [`LocalComm`]: replicas as threads of one process (one wgpu device each: several
//! adapters, or several devices opened on one adapter).
//!
//! ## Design
//!
//! One shared rendezvous guarded by a mutex and a condition variable. A collective is a
//! *round*: each rank deposits its contribution; the last to arrive computes the result
//! (the rank-order sum, the root's data, nothing for a barrier), publishes it and opens
//! the next round; the others wake, copy the result and leave. A rank's result stays
//! published until the next round completes, which needs that rank, so no one can
//! overwrite it early. A rank whose endpoint is dropped (its thread returned, failed or
//! panicked) is marked gone; anyone waiting for it gets [`CommError::PeerFailed`] at
//! once, and every wait is bounded by a timeout. Point-to-point messages go to per-rank
//! mailboxes.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::comm::{CommError, Communicator, sum_in_rank_order};

/// The default bound on any wait: generous for a slow CPU adapter's step, still finite.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// What a round computes once everyone has arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Round {
    Sum,
    /// From the root; every rank must pass the root's length when `exact`.
    Broadcast {
        root: usize,
        exact: bool,
    },
    Barrier,
}

impl Round {
    fn name(self) -> &'static str {
        match self {
            Round::Sum => "all_reduce",
            Round::Broadcast { .. } => "broadcast",
            Round::Barrier => "barrier",
        }
    }
}

/// A completed round's result: the bytes every rank gets, or why the calls did not fit.
type RoundResult = Arc<Result<Vec<u8>, String>>;

struct State {
    /// Rounds completed so far.
    completed: u64,
    /// The round in progress: what it is and each rank's contribution.
    round: Option<Round>,
    contributions: Vec<Option<Vec<u8>>>,
    arrived: usize,
    /// The last completed round's result (or why the ranks' calls did not fit).
    result: RoundResult,
    /// Ranks that stopped, with why.
    gone: Vec<Option<String>>,
    /// Ranks in the order they went: a peer names the first (the cause; the others
    /// usually stopped because of it).
    gone_order: Vec<usize>,
    /// Per destination rank: `(source, tag, data)`.
    mailboxes: Vec<VecDeque<(usize, u32, Vec<f32>)>>,
}

struct Shared {
    world: usize,
    state: Mutex<State>,
    wake: Condvar,
    timeout: Duration,
}

/// One rank's endpoint of a [`LocalComm::group`]. Move it into that rank's thread.
pub struct LocalComm {
    rank: usize,
    shared: Arc<Shared>,
}

impl LocalComm {
    /// A group of `world` endpoints, rank `i` at index `i`, with the default timeout
    /// ([`DEFAULT_TIMEOUT`], or `WGTRAIN_COMM_TIMEOUT` seconds from the environment).
    pub fn group(world: usize) -> Vec<LocalComm> {
        let timeout = std::env::var("WGTRAIN_COMM_TIMEOUT")
            .ok()
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s > 0.0)
            .map_or(DEFAULT_TIMEOUT, Duration::from_secs_f64);
        Self::group_with_timeout(world, timeout)
    }

    /// [`group`](Self::group) where every wait gives up after `timeout`.
    pub fn group_with_timeout(world: usize, timeout: Duration) -> Vec<LocalComm> {
        let world = world.max(1);
        let shared = Arc::new(Shared {
            world,
            state: Mutex::new(State {
                completed: 0,
                round: None,
                contributions: vec![None; world],
                arrived: 0,
                result: Arc::new(Ok(Vec::new())),
                gone: vec![None; world],
                gone_order: Vec::new(),
                mailboxes: vec![VecDeque::new(); world],
            }),
            wake: Condvar::new(),
            timeout,
        });
        (0..world)
            .map(|rank| LocalComm {
                rank,
                shared: shared.clone(),
            })
            .collect()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A rank that panicked while holding the lock cannot have left the state half
        // written in a way that matters here: its endpoint's drop marks it gone.
        self.shared
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The first queued message with `tag` from a rank of `senders`. Fails when every
    /// sender is gone or, when `strict`, when any is.
    fn receive(
        &self,
        senders: &[usize],
        tag: u32,
        strict: bool,
    ) -> Result<(usize, Vec<f32>), CommError> {
        for &f in senders {
            check_rank(f, self.shared.world)?;
        }
        let deadline = Instant::now() + self.shared.timeout;
        let mut state = self.lock();
        loop {
            let mailbox = &mut state.mailboxes[self.rank];
            if let Some(i) = mailbox
                .iter()
                .position(|(src, t, _)| *t == tag && senders.contains(src))
            {
                let (src, _, data) = mailbox.remove(i).expect("found above");
                return Ok((src, data));
            }
            let gone = senders.iter().copied().find(|&r| state.gone[r].is_some());
            let all_gone = senders.iter().all(|&r| state.gone[r].is_some());
            if let Some(rank) = gone.filter(|_| strict || all_gone) {
                return Err(CommError::PeerFailed {
                    rank,
                    me: self.rank,
                    op: "recv",
                    reason: state.gone[rank].clone().unwrap_or_default(),
                });
            }
            if senders.is_empty() {
                return Err(CommError::Invalid(format!(
                    "rank {}: recv from no rank",
                    self.rank
                )));
            }
            let (next, waited) = self.wait(state, deadline, "recv", senders.to_vec());
            state = next;
            waited?;
        }
    }

    /// Runs one round: contributes `mine`, returns the round's result.
    fn round(&self, round: Round, mine: Vec<u8>) -> Result<Vec<u8>, CommError> {
        let result = self.round_inner(round, mine)?;
        match result.as_ref() {
            Ok(bytes) => Ok(bytes.clone()),
            Err(message) => Err(CommError::Mismatch {
                me: self.rank,
                message: message.clone(),
            }),
        }
    }

    fn round_inner(&self, round: Round, mine: Vec<u8>) -> Result<RoundResult, CommError> {
        let op = round.name();
        let deadline = Instant::now() + self.shared.timeout;
        let mut state = self.lock();
        match state.round {
            Some(current) if current != round => {
                return Err(CommError::Mismatch {
                    me: self.rank,
                    message: format!("called {op} while other ranks are in {}", current.name()),
                });
            }
            _ => state.round = Some(round),
        }
        state.contributions[self.rank] = Some(mine);
        state.arrived += 1;
        let my_round = state.completed;
        if state.arrived == self.shared.world {
            let parts: Vec<Vec<u8>> = state
                .contributions
                .iter_mut()
                .map(|c| c.take().unwrap_or_default())
                .collect();
            let result = match round {
                Round::Sum => sum_bytes(&parts),
                Round::Broadcast { root, exact } => {
                    match parts
                        .iter()
                        .position(|p| exact && p.len() != parts[root].len())
                    {
                        Some(r) => Err(format!(
                            "broadcast from rank {root} of {} elements, but rank {r} expects {}",
                            parts[root].len() / 4,
                            parts[r].len() / 4
                        )),
                        None => Ok(parts[root].clone()),
                    }
                }
                Round::Barrier => Ok(Vec::new()),
            };
            state.result = Arc::new(result);
            state.arrived = 0;
            state.round = None;
            state.completed += 1;
            self.shared.wake.notify_all();
            return Ok(state.result.clone());
        }
        let (mut state, outcome) = self.await_round(state, my_round, op, deadline);
        if outcome.is_err() {
            // Leave the round as if this rank had never come: a later call (or a late
            // peer) must not count a stale contribution.
            state.contributions[self.rank] = None;
            state.arrived -= 1;
            if state.arrived == 0 {
                state.round = None;
            }
        }
        outcome
    }

    /// Waits until round `my_round` completes, a missing rank is gone, or `deadline`.
    fn await_round<'a>(
        &'a self,
        mut state: MutexGuard<'a, State>,
        my_round: u64,
        op: &'static str,
        deadline: Instant,
    ) -> (MutexGuard<'a, State>, Result<RoundResult, CommError>) {
        loop {
            if state.completed > my_round {
                let result = state.result.clone();
                return (state, Ok(result));
            }
            let missing: Vec<usize> = (0..self.shared.world)
                .filter(|&r| state.contributions[r].is_none() && r != self.rank)
                .collect();
            if let Some((rank, reason)) = state
                .gone_order
                .iter()
                .find(|r| missing.contains(r))
                .map(|&r| (r, state.gone[r].clone().unwrap_or_default()))
            {
                let failed = CommError::PeerFailed {
                    rank,
                    me: self.rank,
                    op,
                    reason,
                };
                return (state, Err(failed));
            }
            let (next, waited) = self.wait(state, deadline, op, missing);
            state = next;
            if let Err(e) = waited {
                return (state, Err(e));
            }
        }
    }

    /// Waits for a change of the shared state until `deadline`; past it, a timeout
    /// naming the ranks `missing`.
    fn wait<'a>(
        &'a self,
        state: MutexGuard<'a, State>,
        deadline: Instant,
        op: &'static str,
        missing: Vec<usize>,
    ) -> (MutexGuard<'a, State>, Result<(), CommError>) {
        let now = Instant::now();
        if now >= deadline {
            let timeout = CommError::Timeout {
                me: self.rank,
                op,
                missing,
                timeout: self.shared.timeout,
            };
            return (state, Err(timeout));
        }
        let state = self
            .shared
            .wake
            .wait_timeout(state, deadline - now)
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .0;
        (state, Ok(()))
    }

    fn mark_gone(&self, reason: String) {
        let mut state = self.lock();
        if state.gone[self.rank].is_none() {
            state.gone[self.rank] = Some(reason);
            state.gone_order.push(self.rank);
        }
        self.shared.wake.notify_all();
    }
}

/// The rank-order sum of equal-length f32 byte vectors.
fn sum_bytes(parts: &[Vec<u8>]) -> Result<Vec<u8>, String> {
    let len = parts[0].len();
    if let Some(r) = parts.iter().position(|p| p.len() != len) {
        return Err(format!(
            "all_reduce lengths differ: rank 0 has {} elements, rank {r} {}",
            len / 4,
            parts[r].len() / 4
        ));
    }
    let floats: Vec<Vec<f32>> = parts.iter().map(|p| from_bytes(p)).collect();
    let mut out = vec![0.0f32; len / 4];
    sum_in_rank_order(floats.iter().map(Vec::as_slice), &mut out);
    Ok(to_bytes(&out))
}

fn to_bytes(data: &[f32]) -> Vec<u8> {
    data.iter().flat_map(|x| x.to_ne_bytes()).collect()
}

fn from_bytes(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

impl Communicator for LocalComm {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.shared.world
    }

    fn all_reduce_sum(&self, data: &mut [f32]) -> Result<(), CommError> {
        if self.shared.world == 1 {
            return Ok(());
        }
        let result = self.round(Round::Sum, to_bytes(data))?;
        if result.len() != data.len() * 4 {
            return Err(CommError::Mismatch {
                me: self.rank,
                message: format!(
                    "all_reduce of {} elements got {}",
                    data.len(),
                    result.len() / 4
                ),
            });
        }
        data.copy_from_slice(&from_bytes(&result));
        Ok(())
    }

    fn broadcast(&self, data: &mut [f32], root: usize) -> Result<(), CommError> {
        check_rank(root, self.shared.world)?;
        if self.shared.world == 1 {
            return Ok(());
        }
        // The round has checked every rank's length against the root's.
        let bytes = self.round(Round::Broadcast { root, exact: true }, to_bytes(data))?;
        data.copy_from_slice(&from_bytes(&bytes));
        Ok(())
    }

    fn broadcast_bytes(&self, data: &mut Vec<u8>, root: usize) -> Result<(), CommError> {
        check_rank(root, self.shared.world)?;
        if self.shared.world == 1 {
            return Ok(());
        }
        *data = self.round(
            Round::Broadcast { root, exact: false },
            std::mem::take(data),
        )?;
        Ok(())
    }

    fn barrier(&self) -> Result<(), CommError> {
        if self.shared.world == 1 {
            return Ok(());
        }
        self.round(Round::Barrier, Vec::new()).map(|_| ())
    }

    fn send(&self, to: usize, tag: u32, data: &[f32]) -> Result<(), CommError> {
        check_rank(to, self.shared.world)?;
        let mut state = self.lock();
        if let Some(reason) = state.gone[to].clone() {
            return Err(CommError::PeerFailed {
                rank: to,
                me: self.rank,
                op: "send",
                reason,
            });
        }
        state.mailboxes[to].push_back((self.rank, tag, data.to_vec()));
        self.shared.wake.notify_all();
        Ok(())
    }

    fn recv(&self, from: Option<usize>, tag: u32) -> Result<(usize, Vec<f32>), CommError> {
        match from {
            Some(f) => self.receive(&[f], tag, false),
            None => {
                let others: Vec<usize> =
                    (0..self.shared.world).filter(|&r| r != self.rank).collect();
                self.receive(&others, tag, false)
            }
        }
    }

    fn recv_any_of(&self, from: &[usize], tag: u32) -> Result<(usize, Vec<f32>), CommError> {
        self.receive(from, tag, true)
    }

    fn abort(&self, reason: &str) {
        self.mark_gone(reason.to_owned());
    }

    fn kind(&self) -> &'static str {
        "local"
    }
}

impl Drop for LocalComm {
    fn drop(&mut self) {
        let reason = if std::thread::panicking() {
            "its thread panicked"
        } else {
            "its thread finished or failed"
        };
        self.mark_gone(reason.to_owned());
    }
}

pub(crate) fn check_rank(rank: usize, world: usize) -> Result<(), CommError> {
    if rank < world {
        Ok(())
    } else {
        Err(CommError::Invalid(format!(
            "rank {rank} is out of range for a world of {world}"
        )))
    }
}
