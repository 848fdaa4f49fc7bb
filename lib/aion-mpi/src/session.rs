//! The MPI session: the only `mpi::initialize` of a process.
//!
//! Without a launcher OpenMPI starts as a singleton (rank 0 of 1), so the same binary runs under
//! `srun`, `mpirun` or alone. MPI is only ever called from the main thread (`Funneled`).
//!
//! Error discipline: a rank that fails must not leave the others waiting in a collective. Code
//! that can fail on some ranks only calls [`Session::agree`] before the next collective step;
//! every rank then learns whether all succeeded and returns the error together.

use mpi::Threading;
use mpi::collective::SystemOperation;
use mpi::environment::Universe;
use mpi::topology::{Communicator, SimpleCommunicator};
use mpi::traits::*;

use crate::slurm::SlurmEnv;

/// An initialised MPI environment and this process's place in it.
pub struct Session {
    // Dropping the universe finalises MPI, so it lives as long as the session.
    _universe: Universe,
    world: SimpleCommunicator,
    rank: usize,
    size: usize,
    local_rank: usize,
    node_size: usize,
    host: String,
    slurm: SlurmEnv,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("rank", &self.rank)
            .field("size", &self.size)
            .finish()
    }
}

impl Session {
    /// Initialises MPI. Returns `None` if MPI was already initialised in this process.
    pub fn init() -> Option<Self> {
        let (universe, _granted) = mpi::initialize_with_threading(Threading::Funneled)?;
        let world = universe.world();
        let rank = usize::try_from(world.rank()).expect("MPI rank is non-negative");
        let size = usize::try_from(world.size()).expect("MPI size is positive");
        let node = world.split_shared(world.rank());
        let local_rank = usize::try_from(node.rank()).expect("MPI rank is non-negative");
        let node_size = usize::try_from(node.size()).expect("MPI size is positive");
        let host = mpi::environment::processor_name().unwrap_or_else(|_| "?".into());
        Some(Self {
            _universe: universe,
            world,
            rank,
            size,
            local_rank,
            node_size,
            host,
            slurm: SlurmEnv::from_env(),
        })
    }

    /// This process's rank in `MPI_COMM_WORLD`.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Number of ranks.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Whether this is rank 0 (the one that reports and draws progress).
    pub fn is_root(&self) -> bool {
        self.rank == 0
    }

    /// Rank among the processes on this node (`SLURM_LOCALID` when set, else the MPI
    /// shared-memory split): the GPU index a rank should use.
    pub fn local_rank(&self) -> usize {
        self.slurm.localid.map_or(self.local_rank, |l| l as usize)
    }

    /// Number of ranks on this node (the MPI shared-memory split).
    pub fn node_size(&self) -> usize {
        self.node_size
    }

    /// This node's name (`MPI_Get_processor_name`, the host name).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The Slurm environment of this task.
    pub fn slurm(&self) -> &SlurmEnv {
        &self.slurm
    }

    /// The world communicator (for HDF5's MPI-IO driver).
    pub fn world(&self) -> &SimpleCommunicator {
        &self.world
    }

    /// Blocks until every rank arrives.
    pub fn barrier(&self) {
        self.world.barrier();
    }

    /// Logical AND of `ok` over all ranks (collective).
    pub fn agree(&self, ok: bool) -> bool {
        all_true(&self.world, ok)
    }

    /// Sum over ranks (collective).
    pub fn sum_u64(&self, v: u64) -> u64 {
        let mut out = 0u64;
        self.world
            .all_reduce_into(&v, &mut out, SystemOperation::sum());
        out
    }

    /// Maximum over ranks (collective).
    pub fn max_u64(&self, v: u64) -> u64 {
        let mut out = 0u64;
        self.world
            .all_reduce_into(&v, &mut out, SystemOperation::max());
        out
    }

    /// Minimum over ranks (collective).
    pub fn min_u64(&self, v: u64) -> u64 {
        let mut out = 0u64;
        self.world
            .all_reduce_into(&v, &mut out, SystemOperation::min());
        out
    }

    /// Elementwise sum of a vector over ranks (collective; every rank passes the same length).
    pub fn sum_f64s(&self, v: &[f64]) -> Vec<f64> {
        let mut out = vec![0.0; v.len()];
        self.world
            .all_reduce_into(v, &mut out[..], SystemOperation::sum());
        out
    }

    /// Rank 0's bytes on every rank (collective).
    pub fn broadcast_bytes(&self, bytes: &[u8]) -> Vec<u8> {
        let root = self.world.process_at_rank(0);
        let mut len = bytes.len() as u64;
        root.broadcast_into(&mut len);
        let mut buf = if self.is_root() {
            bytes.to_vec()
        } else {
            vec![0u8; len as usize]
        };
        root.broadcast_into(&mut buf[..]);
        buf
    }

    /// Rank 0's string on every rank (collective).
    pub fn broadcast_string(&self, s: &str) -> String {
        String::from_utf8(self.broadcast_bytes(s.as_bytes())).expect("broadcast of valid UTF-8")
    }

    /// Every rank's bytes, on every rank, in rank order (collective).
    pub fn all_gather_bytes(&self, bytes: &[u8]) -> Vec<Vec<u8>> {
        all_gather_bytes(&self.world, bytes)
    }

    /// Combines every rank's bytes on rank 0 along a binomial tree (collective). In round
    /// `s = 1, 2, 4, …` a rank `r` with `r mod 2s == s` sends its partial result to `r − s` and
    /// is done; `r − s` replaces its own with `merge(own, received)`. Rank 0 returns the result
    /// after `ceil(log2 R)` rounds; the other ranks return `None`. Each message is one partial
    /// result, so neither messages nor rank 0's memory grow with the rank count (unlike a
    /// gather). `merge` must not depend on which side a value came from beyond its arguments'
    /// order (rank order is kept: the left argument always holds lower ranks' data).
    pub fn reduce_bytes(
        &self,
        bytes: Vec<u8>,
        mut merge: impl FnMut(Vec<u8>, Vec<u8>) -> Vec<u8>,
    ) -> Option<Vec<u8>> {
        let mut acc = bytes;
        let mut step = 1;
        while step < self.size {
            if self.rank % (2 * step) == step {
                let to = i32::try_from(self.rank - step).expect("rank fits i32");
                self.world.process_at_rank(to).send(&acc[..]);
                return None;
            }
            if self.rank + step < self.size {
                let from = i32::try_from(self.rank + step).expect("rank fits i32");
                let (theirs, _status) = self.world.process_at_rank(from).receive_vec::<u8>();
                acc = merge(acc, theirs);
            }
            step *= 2;
        }
        Some(acc)
    }

    /// Ends the whole job now with `code` (use only when ranks cannot agree to stop together).
    pub fn abort(&self, code: i32) -> ! {
        self.world.abort(code)
    }
}

/// Logical AND of `ok` over the ranks of `comm` (collective on `comm`).
pub fn all_true(comm: &SimpleCommunicator, ok: bool) -> bool {
    let mut out = 0u64;
    comm.all_reduce_into(&u64::from(ok), &mut out, SystemOperation::min());
    out == 1
}

/// Every rank's bytes, on every rank of `comm`, in rank order (collective on `comm`). Empty
/// contributions are fine, also when every rank's is empty.
pub fn all_gather_bytes(comm: &SimpleCommunicator, bytes: &[u8]) -> Vec<Vec<u8>> {
    let size = usize::try_from(comm.size()).expect("MPI size is positive");
    let n = bytes.len() as u64;
    let mut lens = vec![0u64; size];
    comm.all_gather_into(&n, &mut lens[..]);
    let total: usize = lens.iter().map(|&l| l as usize).sum();
    if total == 0 {
        // Every rank sees the same lengths, so every rank skips the exchange together (a
        // zero-length MPI_Allgatherv hands MPI a null buffer, which some MPIs reject).
        return vec![Vec::new(); size];
    }
    let counts: Vec<i32> = lens
        .iter()
        .map(|&l| i32::try_from(l).expect("message under 2 GiB"))
        .collect();
    let displs: Vec<i32> = counts
        .iter()
        .scan(0i32, |acc, &c| {
            let d = *acc;
            *acc += c;
            Some(d)
        })
        .collect();
    let mut buf = vec![0u8; total];
    {
        let mut part = mpi::datatype::PartitionMut::new(&mut buf[..], &counts[..], &displs[..]);
        comm.all_gather_varcount_into(bytes, &mut part);
    }
    let mut out = Vec::with_capacity(size);
    let mut at = 0;
    for l in lens {
        out.push(buf[at..at + l as usize].to_vec());
        at += l as usize;
    }
    out
}
