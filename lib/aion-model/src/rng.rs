//! Small deterministic random numbers for initialisation, sampling and masking.
//!
//! Training must give the same result for any number of MPI ranks and after a resume, so every
//! random decision is a pure function of `(seed, what, index)` ([`hash`]) or comes from a
//! [`Rng`] seeded that way, never from a global generator. The generators are written out here
//! (SplitMix64 and xoshiro256**, both public-domain algorithms by Vigna et al.) so that results
//! do not change with a dependency's version.

/// SplitMix64's increment (the golden ratio in 64 bits).
pub const GOLDEN: u64 = 0x9e37_79b9_7f4a_7c15;

/// SplitMix64's output function (Steele, Lea & Flood 2014; the constants of `splitmix64.c`): a
/// bijection of u64 with full avalanche.
pub fn finalize(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// One SplitMix64 step from state `z`: [`finalize`]`(z + GOLDEN)`.
pub fn mix64(z: u64) -> u64 {
    finalize(z.wrapping_add(GOLDEN))
}

/// A hash of a seed, a purpose tag and an index: the key of one random decision.
pub fn hash(seed: u64, tag: u64, index: u64) -> u64 {
    mix64(mix64(mix64(seed) ^ tag) ^ index)
}

/// Uniform in `[0, 1)` from a hash value (53 bits).
pub fn unit(h: u64) -> f64 {
    (h >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Tags of the random streams (so that two purposes never share a key).
pub mod tags {
    /// Codec fitting sample (bottom-k) keys.
    pub const CODEC_SAMPLE: u64 = 1;
    /// Train / validation / test split.
    pub const SPLIT: u64 = 2;
    /// Epoch permutations.
    pub const EPOCH: u64 = 3;
    /// Input / target masks of the masked objective.
    pub const MASK: u64 = 4;
    /// Noise augmentation.
    pub const NOISE: u64 = 5;
    /// Weight initialisation.
    pub const INIT: u64 = 6;
}

/// xoshiro256** generator.
#[derive(Debug, Clone)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// A generator seeded from `(seed, tag, index)`.
    pub fn new(seed: u64, tag: u64, index: u64) -> Self {
        let mut x = hash(seed, tag, index);
        let mut s = [0u64; 4];
        for v in &mut s {
            x = mix64(x);
            *v = x;
        }
        Self { s }
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in `[0, 1)`.
    pub fn uniform(&mut self) -> f64 {
        unit(self.next_u64())
    }

    /// Uniform integer in `0..n` (`n > 0`; the modulo bias is below 2^-40 for the sizes used).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform();
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Fisher–Yates shuffle.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_spread() {
        let mut a = Rng::new(7, tags::INIT, 0);
        let mut b = Rng::new(7, tags::INIT, 0);
        let xs: Vec<u64> = (0..5).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..5).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(Rng::new(7, tags::INIT, 1).next_u64(), xs[0]);
        let mut r = Rng::new(1, 2, 3);
        let n = 20_000;
        let v: Vec<f64> = (0..n).map(|_| r.normal()).collect();
        let mean = v.iter().sum::<f64>() / n as f64;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        assert!(
            mean.abs() < 0.03 && (var - 1.0).abs() < 0.05,
            "{mean} {var}"
        );
        let mut p: Vec<usize> = (0..10).collect();
        r.shuffle(&mut p);
        let mut q = p.clone();
        q.sort_unstable();
        assert_eq!(q, (0..10).collect::<Vec<_>>());
    }
}
