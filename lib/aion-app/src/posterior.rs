//! Posterior summaries of a scalar target from the decoder logits.
//!
//! The logits over the target's vocabulary are turned into probabilities (softmax); ids
//! without a codec value (`tok_z` has vocabulary 1025 for a 1024-bucket grid) are dropped and
//! the rest renormalised; the dropped mass is reported. Token k of a quantile/grid codec stands
//! for the interval (v_{k−1}, v_k] of its decoded values (token 0 for the point v_0), so the
//! posterior is taken as uniform within each interval: mean, standard deviation and quantiles
//! (16 %, median, 84 %) are those of this piecewise-uniform density; the mode is the centre of
//! the most probable interval.

use serde::Serialize;

/// Summary of one posterior.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Summary {
    /// Mean.
    pub mean: f32,
    /// Standard deviation.
    pub std: f32,
    /// Median.
    pub median: f32,
    /// Centre of the most probable interval.
    pub mode: f32,
    /// 16 % quantile.
    pub q16: f32,
    /// 84 % quantile.
    pub q84: f32,
    /// Probability on ids without a codec value (before renormalisation).
    pub mass_outside: f32,
}

/// The bins of a codec's decoded values `values` (ascending) as `values.len() + 1` edges:
/// token `k` covers `[edges[k], edges[k + 1]]` = `[v_{k−1}, v_k]`, token 0 the point `v_0`
/// (`edges[0] = edges[1] = v_0`). These are the grid of `pdf/<key>` and of the metrics.
pub fn edges(values: &[f32]) -> Vec<f64> {
    values
        .first()
        .into_iter()
        .chain(values)
        .map(|&v| f64::from(v))
        .collect()
}

/// The centre of each bin of [`edges`] (`v_0` for token 0): where the mode is reported.
pub fn centres(edges: &[f64]) -> Vec<f64> {
    edges.windows(2).map(|e| 0.5 * (e[0] + e[1])).collect()
}

/// Probabilities of the first `values.len()` ids, renormalised, and the mass left outside.
pub fn probabilities(logits: &[f32], k: usize) -> (Vec<f64>, f64) {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f64> = logits.iter().map(|&l| f64::from(l - max).exp()).collect();
    let total: f64 = e.iter().sum();
    let inside: f64 = e[..k].iter().sum();
    (
        e[..k].iter().map(|x| x / inside).collect(),
        1.0 - inside / total,
    )
}

/// Summarises the posterior given by `logits` (one position, whole vocabulary) over the codec's
/// decoded values `values` (ascending).
pub fn summarize(logits: &[f32], values: &[f32]) -> Summary {
    let (p, outside) = probabilities(logits, values.len());
    summarize_probabilities(&p, outside, values)
}

/// Summarises the posterior with probabilities `p` over the codec's decoded values `values`
/// (ascending; `p` renormalised over them, as [`probabilities`] gives them), `outside` the mass
/// that was dropped. An ensemble's posterior (the mean of its members' `p`) is summarised here.
pub fn summarize_probabilities(p: &[f64], outside: f64, values: &[f32]) -> Summary {
    let k = values.len();
    let edge = |i: usize| f64::from(values[i]);
    let lo = |i: usize| if i == 0 { edge(0) } else { edge(i - 1) };
    let (mut mean, mut m2) = (0.0, 0.0);
    let mut best = 0;
    for (i, &pi) in p.iter().enumerate() {
        let (a, b) = (lo(i), edge(i));
        mean += pi * 0.5 * (a + b);
        m2 += pi * (a * a + a * b + b * b) / 3.0;
        if pi > p[best] {
            best = i;
        }
    }
    let quantile = |q: f64| {
        let mut c = 0.0;
        for (i, &pi) in p.iter().enumerate() {
            if c + pi >= q && pi > 0.0 {
                return lo(i) + (q - c) / pi * (edge(i) - lo(i));
            }
            c += pi;
        }
        edge(k - 1)
    };
    Summary {
        mean: mean as f32,
        std: (m2 - mean * mean).max(0.0).sqrt() as f32,
        median: quantile(0.5) as f32,
        mode: (0.5 * (lo(best) + edge(best))) as f32,
        q16: quantile(0.16) as f32,
        q84: quantile(0.84) as f32,
        mass_outside: outside as f32,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_over_a_grid() {
        // Values 0, 0.25, 0.5, 0.75, 1 with all the mass on tokens 1..=4 equally: uniform on (0, 1].
        let values = [0.0, 0.25, 0.5, 0.75, 1.0];
        let logits = [-1e9, 0.0, 0.0, 0.0, 0.0, -1e9];
        let s = summarize(&logits, &values);
        assert!((s.mean - 0.5).abs() < 1e-6, "{s:?}");
        assert!((s.median - 0.5).abs() < 1e-6);
        assert!((s.q16 - 0.16).abs() < 1e-6 && (s.q84 - 0.84).abs() < 1e-6);
        assert!((s.std - (1.0f32 / 12.0).sqrt()).abs() < 1e-6);
        assert!(s.mass_outside < 1e-9);
    }

    #[test]
    fn edges_and_centres_of_a_grid() {
        let e = edges(&[0.0, 0.25, 0.5]);
        assert_eq!(e, vec![0.0, 0.0, 0.25, 0.5]);
        assert_eq!(centres(&e), vec![0.0, 0.125, 0.375]);
    }

    #[test]
    fn mass_outside_is_dropped_and_reported() {
        let values = [0.0, 1.0];
        let logits = [0.0, -1e9, 0.0];
        let s = summarize(&logits, &values);
        assert!((s.mass_outside - 0.5).abs() < 1e-6);
        assert_eq!(s.mode, 0.0);
        assert_eq!(s.median, 0.0);
    }
}
