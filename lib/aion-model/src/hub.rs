//! Model directories in the Hub layout as a whole (`aion-model`): [`random`] writes a complete
//! AION with random weights, [`check`] verifies a directory strictly without running it and
//! describes what it holds.

pub mod check;
pub mod random;
