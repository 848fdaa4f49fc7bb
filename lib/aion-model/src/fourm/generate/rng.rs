//! Counter-based random numbers: every draw is a hash of what it is for, so a generated object
//! does not depend on the order in which objects are processed, on the batch, on the MPI rank
//! count, or on whether the run was interrupted and resumed.
//!
//! A draw is `mix(… mix(mix(KEY ^ w₀) ^ w₁) …)` over the words (run seed, object id, sample
//! index, step, position, stream) with SplitMix64's finaliser as `mix` (a bijection of u64 with
//! full avalanche; [`crate::rng`], the one generator of the crate), and the top 53 bits give a
//! uniform number in [0, 1).

use super::Draws;
use crate::rng::{finalize as mix, mix64};

pub use crate::rng::unit;

/// Hash of a sequence of words (order matters).
pub fn hash_words(words: &[u64]) -> u64 {
    const KEY: u64 = 0x4149_4f4e_2d47_454e; // "AION-GEN"
    words.iter().fold(mix(KEY), |h, &w| mix(h ^ mix64(w)))
}

/// Stream of the token draws.
const TOKEN_STREAM: u64 = 0;
/// Stream of the ROAR order keys.
const ORDER_STREAM: u64 = 1;

/// The draws of a batch whose rows are (object id, sample index) pairs, under a run seed.
#[derive(Debug, Clone)]
pub struct SeededDraws {
    seed: u64,
    rows: Vec<(i64, u64)>,
}

impl SeededDraws {
    /// `rows[r]` = (object id, sample index) of batch row `r`.
    pub fn new(seed: u64, rows: Vec<(i64, u64)>) -> Self {
        Self { seed, rows }
    }

    fn draw(&self, row: usize, step: usize, position: usize, stream: u64) -> f64 {
        let (id, sample) = self.rows[row];
        unit(hash_words(&[
            self.seed,
            id as u64,
            sample,
            step as u64,
            position as u64,
            stream,
        ]))
    }
}

impl Draws for SeededDraws {
    fn token_uniform(&self, row: usize, step: usize, position: usize) -> f64 {
        self.draw(row, step, position, TOKEN_STREAM)
    }

    fn order_key(&self, row: usize, step: usize, position: usize) -> f64 {
        self.draw(row, step, position, ORDER_STREAM)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_depend_on_every_word_and_look_uniform() {
        let d = SeededDraws::new(7, vec![(100, 0), (100, 1), (101, 0)]);
        let a = d.token_uniform(0, 0, 0);
        assert_ne!(a, d.token_uniform(1, 0, 0));
        assert_ne!(a, d.token_uniform(2, 0, 0));
        assert_ne!(a, d.token_uniform(0, 1, 0));
        assert_ne!(a, d.token_uniform(0, 0, 1));
        assert_ne!(a, d.order_key(0, 0, 0));
        assert_ne!(
            a,
            SeededDraws::new(8, vec![(100, 0)]).token_uniform(0, 0, 0)
        );
        // Same (seed, id, sample) in another batch row gives the same draws.
        assert_eq!(
            a,
            SeededDraws::new(7, vec![(5, 5), (100, 0)]).token_uniform(1, 0, 0)
        );
        // Mean and decile counts of 100k draws.
        let n = 100_000;
        let mut bins = [0usize; 10];
        let mut sum = 0.0;
        for i in 0..n {
            let u = unit(hash_words(&[1, i, 2]));
            assert!((0.0..1.0).contains(&u));
            sum += u;
            bins[(u * 10.0) as usize] += 1;
        }
        assert!((sum / n as f64 - 0.5).abs() < 0.005);
        assert!(
            bins.iter().all(|&b| (b as f64 - 10_000.0).abs() < 500.0),
            "{bins:?}"
        );
    }
}
