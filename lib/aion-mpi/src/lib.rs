//! aion-mpi
