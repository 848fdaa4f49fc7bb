//! Drawing one token from a row of logits, on the host.
//!
//! Port of `aion/fourm/generate.py::GenerationSampler.{top_k_top_p_filtering, sample_tokens}`
//! (polymathic-aion 0.0.2): argmax at temperature 0; otherwise top-k then top-p filtering of the
//! raw logits (filtered entries become −∞), softmax of the filtered logits divided by the
//! temperature, and one categorical draw. The reference draws with `torch.multinomial`; here the
//! draw is the inverse of the cumulative distribution at a given uniform number `u`
//! ([`inverse_cdf`]), which has the same distribution and makes the draw a pure function of `u`.

use std::cmp::Ordering;

/// The reference's `np.isclose(temperature, 0, atol=1e-10)`: argmax below this.
pub const ARGMAX_TEMPERATURE: f64 = 1e-10;

/// Filtering options (0 = off, as in the reference).
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize)]
pub struct Filter {
    /// Keep only the `top_k` largest logits (ties with the k-th largest are kept).
    pub top_k: usize,
    /// Keep the smallest set of largest logits whose probability reaches `top_p` (nucleus).
    pub top_p: f64,
}

/// Index of the first largest value (`torch.argmax`); NaN is never chosen unless all are NaN.
pub fn argmax(x: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] || (x[best].is_nan() && !v.is_nan()) {
            best = i;
        }
    }
    best
}

/// Descending order by value, ties by index (a total order; NaN last).
fn desc(a: (usize, f32), b: (usize, f32)) -> Ordering {
    match (a.1.is_nan(), b.1.is_nan()) {
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        _ => b.1.partial_cmp(&a.1).unwrap_or(Ordering::Equal),
    }
    .then(a.0.cmp(&b.0))
}

/// `top_k_top_p_filtering`: sets the filtered logits to −∞, in place.
///
/// * top-k: every logit strictly below the k-th largest is removed;
/// * top-p: the logits are sorted in descending order, the cumulative softmax (accumulated in
///   f64 and stored as f32, like torch's CPU `cumsum`) is compared with `top_p`, and every
///   entry after the first whose cumulative probability exceeds `top_p` is removed. Equal logits
///   are ordered by index (torch's unstable sort leaves that order unspecified; it only matters
///   for ties exactly at the boundary).
pub fn filter_logits(logits: &mut [f32], f: Filter) {
    let v = logits.len();
    if v == 0 {
        return;
    }
    if f.top_k > 0 {
        let k = f.top_k.min(v);
        let mut sorted: Vec<(usize, f32)> = logits.iter().copied().enumerate().collect();
        sorted.select_nth_unstable_by(k - 1, |&a, &b| desc(a, b));
        let kth = sorted[k - 1].1;
        for x in logits.iter_mut() {
            if *x < kth {
                *x = f32::NEG_INFINITY;
            }
        }
    }
    if f.top_p > 0.0 {
        let mut sorted: Vec<(usize, f32)> = logits.iter().copied().enumerate().collect();
        sorted.sort_unstable_by(|&a, &b| desc(a, b));
        let values: Vec<f32> = sorted.iter().map(|p| p.1).collect();
        let probs = softmax(&values, 1.0);
        let top_p = f.top_p as f32;
        let mut cum = 0f64;
        let mut exceeded_before = false;
        for (j, &(i, _)) in sorted.iter().enumerate() {
            cum += f64::from(probs[j]);
            // Removed if the previous entry's cumulative probability exceeded top_p (the
            // reference shifts the mask right by one and always keeps the first).
            if j > 0 && exceeded_before {
                logits[i] = f32::NEG_INFINITY;
            }
            exceeded_before = (cum as f32) > top_p;
        }
    }
}

/// `softmax(logits / temperature)` in f32: max subtracted, exponentials, divided by their sum.
pub fn softmax(logits: &[f32], temperature: f32) -> Vec<f32> {
    let scaled: Vec<f32> = logits.iter().map(|&x| x / temperature).collect();
    let max = scaled.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = scaled.iter().map(|&x| (x - max).exp()).collect();
    let sum: f32 = e.iter().sum();
    e.into_iter().map(|x| x / sum).collect()
}

/// The categorical draw at uniform `u ∈ [0, 1)`: the first index whose cumulative probability
/// (summed in f64, in index order) exceeds `u ×` the total. Zero-probability entries are never
/// chosen. (`validation/fixtures/generate/make_fixture.py` replaces `torch.multinomial` with
/// the same function to feed both samplers the same draws.)
pub fn inverse_cdf(probs: &[f32], u: f64) -> usize {
    let total: f64 = probs.iter().fold(0.0, |s, &p| s + f64::from(p));
    let target = u * total;
    let mut cum = 0f64;
    for (i, &p) in probs.iter().enumerate() {
        cum += f64::from(p);
        if cum > target {
            return i;
        }
    }
    // u·total rounded up to the total (or NaN probabilities): the last possible entry.
    probs.iter().rposition(|&p| p > 0.0).unwrap_or(0)
}

/// One token from a row of logits: `(token, its probability)`; the probability is 1 for an
/// argmax draw (temperature ≈ 0), as in the reference.
pub fn sample(logits: &[f32], temperature: f64, f: Filter, u: f64) -> (usize, f32) {
    if temperature.abs() <= ARGMAX_TEMPERATURE {
        return (argmax(logits), 1.0);
    }
    let mut l = logits.to_vec();
    filter_logits(&mut l, f);
    let probs = softmax(&l, temperature as f32);
    let i = inverse_cdf(&probs, u);
    (i, probs[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_keeps_ties_and_top_p_keeps_the_crossing_entry() {
        let mut l = vec![1.0, 3.0, 2.0, 3.0, 0.0];
        filter_logits(
            &mut l,
            Filter {
                top_k: 2,
                top_p: 0.0,
            },
        );
        assert_eq!(l[1], 3.0);
        assert_eq!(l[3], 3.0);
        assert!(l[0].is_infinite() && l[2].is_infinite() && l[4].is_infinite());
        // probabilities ≈ [0.64, 0.24, 0.09, 0.03]: top_p 0.7 keeps the first two.
        let mut l = vec![0.0, 2.0, 1.0, 3.0];
        filter_logits(
            &mut l,
            Filter {
                top_k: 0,
                top_p: 0.7,
            },
        );
        assert_eq!(l, [f32::NEG_INFINITY, 2.0, f32::NEG_INFINITY, 3.0]);
    }

    #[test]
    fn inverse_cdf_skips_zero_mass() {
        let p = [0.0, 0.5, 0.0, 0.5];
        assert_eq!(inverse_cdf(&p, 0.0), 1);
        assert_eq!(inverse_cdf(&p, 0.4999), 1);
        assert_eq!(inverse_cdf(&p, 0.5), 3);
        assert_eq!(inverse_cdf(&p, 0.999_999_999), 3);
        assert_eq!(argmax(&[1.0, 5.0, 5.0]), 1);
        assert_eq!(
            sample(&[1.0, 5.0, 5.0], 0.0, Filter::default(), 0.9),
            (1, 1.0)
        );
    }
}
