//! [`MpiComm`]: one replica per MPI process (OpenMPI through rsmpi), launched with
//! `mpirun`; rank and world size come from MPI.
//!
//! ## Design
//!
//! The all-reduce is a reduce-scatter followed by an all-gather, both MPI collectives
//! (`MPI_Alltoallv`, `MPI_Allgatherv`): rank `r` receives chunk `r` of every rank's
//! data, sums the chunks in rank order, and the reduced chunks are gathered back. That
//! moves `2·(K−1)/K` of the data per rank, as a ring all-reduce does, and, unlike
//! `MPI_Allreduce` (whose summation order is the library's choice), gives the same bits
//! as [`LocalComm`](crate::LocalComm) on every rank and every run. Messages larger
//! than MPI's 32-bit counts are sent in pieces.
//!
//! MPI errors are fatal (the library's default handler aborts the job), and OpenMPI's
//! `mpirun` ends every rank when one dies, naming it; [`Communicator::abort`] calls
//! `MPI_Abort`.

use mpi::collective::{CommunicatorCollectives, SystemOperation};
use mpi::datatype::{Partition, PartitionMut};
use mpi::environment::Universe;
use mpi::point_to_point::{Destination, Source};
use mpi::topology::{Communicator as _, Rank, SimpleCommunicator};
use mpi::traits::Root;
use mpi::{Count, Tag};

use crate::comm::{CommError, Communicator, sum_in_rank_order};
use crate::local::check_rank;

/// The largest piece sent in one MPI call, in elements (well inside `i32` counts).
const PIECE: usize = 1 << 28;

/// This process's endpoint of `MPI_COMM_WORLD`. Dropping it finalises MPI.
pub struct MpiComm {
    world: SimpleCommunicator,
    rank: usize,
    size: usize,
    // Dropped last: finalises MPI.
    _universe: Universe,
}

impl MpiComm {
    /// Initialises MPI. Fails if it was initialised before in this process.
    pub fn init() -> Result<Self, CommError> {
        let universe = mpi::initialize().ok_or_else(|| {
            CommError::Invalid("MPI was already initialised in this process".to_owned())
        })?;
        let world = universe.world();
        let rank = world.rank() as usize;
        let size = world.size() as usize;
        Ok(Self {
            world,
            rank,
            size,
            _universe: universe,
        })
    }

    /// True when this process was started by `mpirun`/`mpiexec` (OpenMPI, MPICH or
    /// Slurm's launcher set these), without initialising MPI.
    pub fn launched_by_mpirun() -> bool {
        ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"]
            .iter()
            .any(|v| std::env::var_os(v).is_some())
    }

    fn process(&self, rank: usize) -> mpi::topology::Process<'_> {
        self.world.process_at_rank(rank as Rank)
    }

    /// Fails on every rank (not only on those that differ) unless all pass `root`'s
    /// `len`: two small collectives, so that no rank goes on into an exchange the
    /// others have left.
    fn same_length(&self, len: usize, root: usize, op: &str) -> Result<(), CommError> {
        let mut root_len = len as u64;
        self.process(root).broadcast_into(&mut root_len);
        let differs = i32::from(root_len != len as u64);
        let mut any = 0i32;
        self.world
            .all_reduce_into(&differs, &mut any, SystemOperation::max());
        if any == 0 {
            return Ok(());
        }
        Err(CommError::Mismatch {
            me: self.rank,
            message: format!(
                "{op}: rank {root} passes {root_len} elements, this rank {len} (some rank \
                 differs)"
            ),
        })
    }

    /// Reduce-scatter + all-gather of one piece (at most [`PIECE`] elements).
    fn all_reduce_piece(&self, data: &mut [f32]) {
        let k = self.size;
        let n = data.len();
        let bounds: Vec<usize> = (0..=k).map(|r| r * n / k).collect();
        let counts: Vec<Count> = (0..k)
            .map(|r| (bounds[r + 1] - bounds[r]) as Count)
            .collect();
        let displs: Vec<Count> = bounds[..k].iter().map(|&b| b as Count).collect();
        let mine = counts[self.rank] as usize;
        // Chunk `rank` of every rank, rank by rank.
        let mut gathered = vec![0.0f32; mine * k];
        {
            let recv_counts: Vec<Count> = vec![mine as Count; k];
            let recv_displs: Vec<Count> = (0..k).map(|r| (r * mine) as Count).collect();
            let send = Partition::new(&data[..], &counts[..], &displs[..]);
            let mut recv = PartitionMut::new(&mut gathered[..], recv_counts, recv_displs);
            self.world.all_to_all_varcount_into(&send, &mut recv);
        }
        let mut reduced = vec![0.0f32; mine];
        sum_in_rank_order(gathered.chunks(mine.max(1)).take(k), &mut reduced);
        let mut recv = PartitionMut::new(&mut data[..], &counts[..], &displs[..]);
        self.world.all_gather_varcount_into(&reduced[..], &mut recv);
    }
}

impl Drop for MpiComm {
    /// A panicking rank ends the job rather than finalise MPI while the others wait for
    /// it in a collective.
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.abort("this rank panicked");
        }
    }
}

impl Communicator for MpiComm {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.size
    }

    fn all_reduce_sum(&self, data: &mut [f32]) -> Result<(), CommError> {
        if self.size == 1 {
            return Ok(());
        }
        // Every rank must agree on the length, or the exchange below would be undefined.
        self.same_length(data.len(), 0, "all_reduce")?;
        for piece in data.chunks_mut(PIECE) {
            self.all_reduce_piece(piece);
        }
        Ok(())
    }

    fn broadcast(&self, data: &mut [f32], root: usize) -> Result<(), CommError> {
        check_rank(root, self.size)?;
        self.same_length(data.len(), root, "broadcast")?;
        for piece in data.chunks_mut(PIECE) {
            self.process(root).broadcast_into(piece);
        }
        Ok(())
    }

    fn broadcast_bytes(&self, data: &mut Vec<u8>, root: usize) -> Result<(), CommError> {
        check_rank(root, self.size)?;
        let mut len = data.len() as u64;
        self.process(root).broadcast_into(&mut len);
        data.resize(len as usize, 0);
        for piece in data.chunks_mut(PIECE) {
            self.process(root).broadcast_into(piece);
        }
        Ok(())
    }

    fn barrier(&self) -> Result<(), CommError> {
        self.world.barrier();
        Ok(())
    }

    fn send(&self, to: usize, tag: u32, data: &[f32]) -> Result<(), CommError> {
        check_rank(to, self.size)?;
        if data.len() > PIECE {
            return Err(CommError::Invalid(format!(
                "a message of {} elements is past the {PIECE}-element limit of one send",
                data.len()
            )));
        }
        self.process(to).send_with_tag(data, tag as Tag);
        Ok(())
    }

    fn recv(&self, from: Option<usize>, tag: u32) -> Result<(usize, Vec<f32>), CommError> {
        let (data, status) = match from {
            Some(f) => {
                check_rank(f, self.size)?;
                self.process(f).receive_vec_with_tag::<f32>(tag as Tag)
            }
            None => self
                .world
                .any_process()
                .receive_vec_with_tag::<f32>(tag as Tag),
        };
        Ok((status.source_rank() as usize, data))
    }

    fn recv_any_of(&self, from: &[usize], tag: u32) -> Result<(usize, Vec<f32>), CommError> {
        for &f in from {
            check_rank(f, self.size)?;
        }
        // A process that dies ends the job (mpirun), so only the source needs checking.
        let status = self.world.any_process().probe_with_tag(tag as Tag);
        let source = status.source_rank() as usize;
        if !from.contains(&source) {
            return Err(CommError::Mismatch {
                me: self.rank,
                message: format!(
                    "a message with tag {tag} came from rank {source}, expected one of {from:?}"
                ),
            });
        }
        self.recv(Some(source), tag)
    }

    fn abort(&self, reason: &str) {
        eprintln!("rank {}: aborting the MPI job: {reason}", self.rank);
        self.world.abort(1)
    }

    fn kind(&self) -> &'static str {
        "mpi"
    }
}
