//! End-to-end tests of the tools, run as a user would run them: the binaries are spawned alone,
//! under `mpirun -n 2` and `mpirun -n 3 --oversubscribe`, and their HDF5 outputs are read back.

mod util;

mod export;
mod faults;
mod finetune;
mod formats;
mod generate;
mod model;
mod random_model;
mod ranks;
mod resume;
mod search;
mod slurm;
mod surveys;
mod tokenize;
mod version;
