//! Exact per-query top-k: a bounded heap per query, mergeable across threads and ranks.
//!
//! Every candidate has an *order key*: a `u32` whose integer order is the order "best first" of
//! its score (higher similarity, or smaller distance). Candidates compare by `(key, row)`, so
//! among equal scores the smaller global row index wins. That total order makes the k best of any
//! set unique: scanning rows in any order, on any number of threads or ranks, and merging the
//! partial results in any order gives the same answer.

use std::collections::BinaryHeap;

/// One hit: where it is and how good it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// Order key ([`key_of`]): smaller is better.
    pub key: u32,
    /// Global row index in the concatenated embedding table.
    pub row: u64,
    /// The row's object id.
    pub object_id: i64,
}

impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.key, self.row).cmp(&(other.key, other.row))
    }
}

impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Maps a "badness" value (smaller is better; never NaN) to a `u32` with the same order.
/// `-0.0` and `+0.0` map to the same key, so they tie (and fall back to the row order).
#[inline]
pub fn key_of(badness: f32) -> u32 {
    let bits = (badness + 0.0).to_bits(); // -0.0 + 0.0 == +0.0
    if bits & 0x8000_0000 != 0 {
        !bits
    } else {
        bits | 0x8000_0000
    }
}

/// The badness value of a key (inverse of [`key_of`]).
#[inline]
pub fn badness_of(key: u32) -> f32 {
    if key & 0x8000_0000 != 0 {
        f32::from_bits(key & 0x7fff_ffff)
    } else {
        f32::from_bits(!key)
    }
}

/// The k best candidates seen so far for one query.
#[derive(Debug, Clone)]
pub struct TopK {
    k: usize,
    // Max-heap: the worst kept candidate is on top, ready to be replaced.
    heap: BinaryHeap<Candidate>,
}

impl TopK {
    /// An empty top-k.
    pub fn new(k: usize) -> Self {
        Self {
            k,
            heap: BinaryHeap::with_capacity(k + 1),
        }
    }

    /// The key a new candidate must not exceed to have a chance (`u32::MAX` while not full).
    /// A candidate with exactly this key still needs a smaller row than the worst kept one.
    #[inline]
    pub fn threshold(&self) -> u32 {
        if self.heap.len() < self.k {
            u32::MAX
        } else {
            self.heap.peek().map_or(u32::MAX, |c| c.key)
        }
    }

    /// Offers a candidate; keeps it if it is among the k best so far.
    #[inline]
    pub fn push(&mut self, c: Candidate) {
        if self.k == 0 {
            return;
        }
        if self.heap.len() < self.k {
            self.heap.push(c);
        } else if let Some(mut worst) = self.heap.peek_mut()
            && c < *worst
        {
            *worst = c;
        }
    }

    /// Adds every candidate of `other`.
    pub fn merge(&mut self, other: TopK) {
        for c in other.heap {
            self.push(c);
        }
    }

    /// Number of candidates kept.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// The kept candidates, best first.
    pub fn into_sorted(self) -> Vec<Candidate> {
        self.heap.into_sorted_vec()
    }
}

/// Bytes per serialized candidate.
const RECORD: usize = 4 + 8 + 8;

/// Serializes one top-k per query (for the merge between ranks): `u32` query count, then per
/// query a `u32` candidate count and the candidates (little endian).
pub fn encode(sets: &[TopK]) -> Vec<u8> {
    let total: usize = sets.iter().map(TopK::len).sum();
    let mut out = Vec::with_capacity(4 + 4 * sets.len() + RECORD * total);
    out.extend((sets.len() as u32).to_le_bytes());
    for s in sets {
        out.extend((s.len() as u32).to_le_bytes());
        for c in s.heap.iter() {
            out.extend(c.key.to_le_bytes());
            out.extend(c.row.to_le_bytes());
            out.extend(c.object_id.to_le_bytes());
        }
    }
    out
}

/// Reads what [`encode`] wrote into top-k sets of size `k`.
///
/// # Panics
/// On a malformed buffer (messages only ever come from [`encode`] of the same binary).
pub fn decode(bytes: &[u8], k: usize) -> Vec<TopK> {
    let mut at = 0;
    let u32_at = |at: &mut usize| {
        let v = u32::from_le_bytes(bytes[*at..*at + 4].try_into().expect("4 bytes"));
        *at += 4;
        v
    };
    let n = u32_at(&mut at) as usize;
    let mut sets = Vec::with_capacity(n);
    for _ in 0..n {
        let m = u32_at(&mut at) as usize;
        let mut s = TopK::new(k);
        for _ in 0..m {
            let r = &bytes[at..at + RECORD];
            s.push(Candidate {
                key: u32::from_le_bytes(r[0..4].try_into().expect("4 bytes")),
                row: u64::from_le_bytes(r[4..12].try_into().expect("8 bytes")),
                object_id: i64::from_le_bytes(r[12..20].try_into().expect("8 bytes")),
            });
            at += RECORD;
        }
        sets.push(s);
    }
    assert_eq!(at, bytes.len(), "trailing bytes in a top-k message");
    sets
}

/// Merges two serialized lists of top-k sets query by query (the reduction between ranks).
pub fn merge_encoded(a: Vec<u8>, b: Vec<u8>, k: usize) -> Vec<u8> {
    let (mut sa, sb) = (decode(&a, k), decode(&b, k));
    assert_eq!(
        sa.len(),
        sb.len(),
        "ranks disagree on the number of queries"
    );
    for (x, y) in sa.iter_mut().zip(sb) {
        x.merge(y);
    }
    encode(&sa)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(badness: f32, row: u64) -> Candidate {
        Candidate {
            key: key_of(badness),
            row,
            object_id: row as i64 + 1000,
        }
    }

    /// Brute force: sort everything by (badness, row), take k.
    fn brute(all: &[(f32, u64)], k: usize) -> Vec<(f32, u64)> {
        let mut v = all.to_vec();
        v.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        v.truncate(k);
        v
    }

    fn got(t: TopK) -> Vec<(f32, u64)> {
        t.into_sorted()
            .iter()
            .map(|c| (badness_of(c.key), c.row))
            .collect()
    }

    #[test]
    fn keys_keep_the_float_order() {
        let xs = [
            f32::NEG_INFINITY,
            -1e30,
            -2.5,
            -1.0,
            -f32::MIN_POSITIVE,
            0.0,
            f32::MIN_POSITIVE,
            1.0,
            3.5,
            1e30,
            f32::INFINITY,
        ];
        for w in xs.windows(2) {
            assert!(key_of(w[0]) < key_of(w[1]), "{} vs {}", w[0], w[1]);
        }
        for &x in &xs {
            assert_eq!(badness_of(key_of(x)), x);
        }
        assert_eq!(key_of(-0.0), key_of(0.0), "signed zeros tie");
    }

    #[test]
    fn keeps_the_k_best_with_ties_by_row() {
        // Many exact ties, rows offered in a scrambled order.
        let mut all = Vec::new();
        for i in 0..200u64 {
            let row = (i * 7919) % 200;
            all.push(((row % 5) as f32 - 2.0, row));
        }
        for k in [0, 1, 3, 39, 40, 41, 199, 200, 250] {
            let mut t = TopK::new(k);
            for &(b, r) in &all {
                t.push(cand(b, r));
            }
            assert_eq!(got(t), brute(&all, k), "k={k}");
        }
    }

    #[test]
    fn merging_parts_in_any_order_is_exact() {
        let all: Vec<(f32, u64)> = (0..300u64)
            .map(|r| (((r * 37) % 11) as f32 * 0.5 - ((r % 3) as f32), r))
            .collect();
        let k = 17;
        let want = brute(&all, k);
        for parts in [1, 2, 3, 7] {
            let mut sets: Vec<TopK> = (0..parts).map(|_| TopK::new(k)).collect();
            for (i, &(b, r)) in all.iter().enumerate() {
                sets[i % parts].push(cand(b, r));
            }
            // Merge back to front, and through the wire format.
            let mut acc = encode(&[sets.pop().unwrap()]);
            while let Some(s) = sets.pop() {
                acc = merge_encoded(encode(&[s]), acc, k);
            }
            let merged = decode(&acc, k).pop().unwrap();
            assert_eq!(got(merged), want, "parts={parts}");
        }
    }

    #[test]
    fn wire_format_round_trips_several_queries() {
        let mut a = TopK::new(3);
        let mut b = TopK::new(3);
        for r in 0..10u64 {
            a.push(cand(r as f32, r));
            b.push(cand(-(r as f32), r));
        }
        let back = decode(&encode(&[a.clone(), TopK::new(3), b.clone()]), 3);
        assert_eq!(back.len(), 3);
        assert_eq!(got(back[0].clone()), got(a));
        assert!(back[1].is_empty());
        assert_eq!(got(back[2].clone()), got(b));
    }

    #[test]
    fn threshold_tracks_the_worst_kept() {
        let mut t = TopK::new(2);
        assert_eq!(t.threshold(), u32::MAX);
        t.push(cand(5.0, 0));
        assert_eq!(t.threshold(), u32::MAX);
        t.push(cand(1.0, 1));
        assert_eq!(t.threshold(), key_of(5.0));
        t.push(cand(5.0, 2)); // same score, larger row: rejected
        assert_eq!(got(t.clone()), vec![(1.0, 1), (5.0, 0)]);
        t.push(cand(2.0, 3));
        assert_eq!(t.threshold(), key_of(2.0));
    }
}
