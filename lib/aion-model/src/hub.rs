//! Model directories in the Hub layout as a whole (`aion-model`): [`layout`] names the files,
//! [`ModelDir`] opens one and hands out what it holds, [`random`] writes a complete AION with
//! random weights, [`check`] verifies a directory strictly without running it and describes what
//! it holds.

pub mod check;
pub mod layout;
mod model_dir;
pub mod random;

pub use model_dir::ModelDir;
