//! Catalogue input and HDF5 output for aion-hpc.
//!
//! - [`catalog`]: reads row ranges of catalogues (first axis = object) from HDF5 (Multimodal
//!   Universe), Parquet, HATS and FITS behind one interface; several files are one
//!   concatenated catalogue.
//! - [`output`]: the one output file all ranks create together and write collectively
//!   (MPI-IO driver, `H5FD_MPIO_COLLECTIVE` transfers).
//! - [`provenance`]: what every output records about how it was made.
//! - [`export`]: Parquet files (arrow-rs) and FITS binary tables (cfitsio) written block by
//!   block, for `aion-export`.

pub mod catalog;
pub mod error;
pub mod export;
pub mod output;
pub mod provenance;

pub use catalog::{Catalog, Column, ColumnInfo, Format, Preset};
pub use error::{Error, Result};
pub use output::{OutputDataset, OutputFile};
pub use provenance::Provenance;
