//! Row decomposition: N catalogue rows over R ranks in contiguous blocks.
//!
//! The first `N mod R` ranks get one row more than the others; with R > N the last ranks get
//! empty ranges. Every row belongs to exactly one rank, in order, so rank r's block starts where
//! rank r−1's ends: outputs written by row index do not depend on R.

use std::ops::Range;

/// The rows of `rank` when `n_rows` rows are split over `n_ranks` ranks.
///
/// # Panics
/// If `n_ranks == 0` or `rank >= n_ranks` (a programming error, not a user error).
pub fn block_range(n_rows: usize, rank: usize, n_ranks: usize) -> Range<usize> {
    assert!(n_ranks > 0 && rank < n_ranks, "rank {rank} of {n_ranks}");
    let base = n_rows / n_ranks;
    let extra = n_rows % n_ranks;
    let start = rank * base + rank.min(extra);
    let len = base + usize::from(rank < extra);
    start..start + len
}

/// Splits `range` into consecutive sub-ranges of at most `size` rows (the last may be shorter).
pub fn blocks(range: Range<usize>, size: usize) -> impl Iterator<Item = Range<usize>> {
    let size = size.max(1);
    let Range { start, end } = range;
    (start..end)
        .step_by(size)
        .map(move |s| s..(s + size).min(end))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn covers_exactly_once(n: usize, r: usize) {
        let mut next = 0;
        for rank in 0..r {
            let b = block_range(n, rank, r);
            assert_eq!(b.start, next, "n={n} r={r} rank={rank}: gap or overlap");
            next = b.end;
        }
        assert_eq!(next, n, "n={n} r={r}: rows dropped");
    }

    #[test]
    fn every_row_once_for_many_shapes() {
        for n in [0, 1, 2, 3, 7, 10, 64, 1000, 1001] {
            for r in 1..=12 {
                covers_exactly_once(n, r);
            }
        }
    }

    #[test]
    fn balanced_within_one_row() {
        for (n, r) in [(10, 3), (1001, 7), (5, 8)] {
            let lens: Vec<_> = (0..r).map(|k| block_range(n, k, r).len()).collect();
            assert!(
                lens.iter().max().unwrap() - lens.iter().min().unwrap() <= 1,
                "{lens:?}"
            );
        }
    }

    #[test]
    fn more_ranks_than_rows() {
        let t = |rank, want: Range<usize>| assert_eq!(block_range(2, rank, 5), want);
        t(0, 0..1);
        t(1, 1..2);
        t(2, 2..2);
        t(4, 2..2);
    }

    #[test]
    fn blocks_split_a_range() {
        let got: Vec<_> = blocks(3..10, 3).collect();
        assert_eq!(got, vec![3..6, 6..9, 9..10]);
        assert_eq!(blocks(4..4, 3).count(), 0);
    }
}
