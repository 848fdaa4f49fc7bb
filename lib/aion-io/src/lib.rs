//! HDF5 input and output for aion-hpc.
//!
//! - [`catalog`]: reads row ranges of Multimodal-Universe-style HDF5 catalogues (first axis =
//!   object); several files are one concatenated catalogue.
//! - [`output`]: the one output file all ranks create together and write collectively
//!   (MPI-IO driver, `H5FD_MPIO_COLLECTIVE` transfers).
//! - [`provenance`]: what every output records about how it was made.

pub mod catalog;
pub mod error;
pub mod output;
pub mod provenance;

pub use catalog::{Catalog, Column, ColumnInfo};
pub use error::{Error, Result};
pub use output::{OutputDataset, OutputFile};
pub use provenance::Provenance;
