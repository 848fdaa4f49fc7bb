//! Evaluation metrics of predictions against true values, one module for every evaluation
//! (`aion-predict`'s run summary and figure, `aion-finetune`'s validation and test sets).
//!
//! Point estimates, photometric-redshift style: with Δ = (pred − true) / (1 + true),
//! bias = median(Δ); σ_NMAD = 1.4826 · median(|Δ − median Δ|); outlier fraction = share of
//! |Δ| > [`OUTLIER`]. Non-finite pairs are left out (and counted).
//!
//! Posteriors: the probability integral transform PIT = F(true) (F the posterior's CDF), whose
//! histogram is flat for calibrated posteriors; the coverage of the central 68 % and 95 %
//! intervals (the share of true values inside `[F⁻¹(α/2), F⁻¹(1 − α/2)]`, i.e. with
//! α/2 ≤ PIT ≤ 1 − α/2, so exactly the `q16`–`q84` interval `aion-predict` writes); and the
//! continuous ranked probability score CRPS = ∫ (F(x) − 1{x ≥ true})² dx (in the target's
//! units; lower is better), computed exactly for the two posterior shapes the tools make:
//! [`Binned`] (piecewise uniform over a codec's bins, `aion-predict` and token fine-tuning) and
//! [`Gaussian`] (probe heads).

use serde::Serialize;

/// Outlier threshold on |Δz| / (1 + z).
pub const OUTLIER: f64 = 0.05;

/// Bins of the PIT histogram (equal bins on [0, 1]).
pub const PIT_BINS: usize = 10;

/// Metrics of predicted vs true values.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PointMetrics {
    /// Pairs used.
    pub n: usize,
    /// Pairs left out (non-finite prediction or truth).
    pub skipped: usize,
    /// Median of Δ.
    pub bias: f64,
    /// 1.4826 · median(|Δ − median Δ|).
    pub sigma_nmad: f64,
    /// Fraction of |Δ| > [`OUTLIER`].
    pub outlier_fraction: f64,
}

/// Median of a non-empty slice (sorts it).
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// Computes the metrics; `None` when no pair is usable.
pub fn point_metrics(pred: &[f32], truth: &[f32]) -> Option<PointMetrics> {
    let mut d: Vec<f64> = pred
        .iter()
        .zip(truth)
        .filter(|(p, t)| p.is_finite() && t.is_finite())
        .map(|(&p, &t)| (f64::from(p) - f64::from(t)) / (1.0 + f64::from(t)))
        .collect();
    if d.is_empty() {
        return None;
    }
    let n = d.len();
    let outliers = d.iter().filter(|x| x.abs() > OUTLIER).count();
    let bias = median(&mut d);
    let mut dev: Vec<f64> = d.iter().map(|x| (x - bias).abs()).collect();
    Some(PointMetrics {
        n,
        skipped: pred.len() - n,
        bias,
        sigma_nmad: 1.4826 * median(&mut dev),
        outlier_fraction: outliers as f64 / n as f64,
    })
}

/// A posterior that can be scored against a true value.
pub trait Posterior {
    /// P(X ≤ y).
    fn cdf(&self, y: f64) -> f64;
    /// ∫ (F(x) − 1{x ≥ y})² dx.
    fn crps(&self, y: f64) -> f64;

    /// PIT and CRPS of the true value `y`; `None` when `y` or the posterior is not finite.
    fn score(&self, y: f64) -> Option<Score> {
        let s = Score {
            pit: self.cdf(y),
            crps: self.crps(y),
        };
        (y.is_finite() && s.pit.is_finite() && s.crps.is_finite()).then_some(s)
    }
}

/// PIT and CRPS of one row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score {
    /// F(true).
    pub pit: f64,
    /// CRPS (target units).
    pub crps: f64,
}

/// A posterior with probability `probs[k]` spread uniformly over `[edges[k], edges[k + 1]]`
/// (ascending edges; a zero-width bin is a point mass). `probs` sums to 1.
#[derive(Debug, Clone, Copy)]
pub struct Binned<'a> {
    /// Probability of each bin.
    pub probs: &'a [f64],
    /// `probs.len() + 1` bin edges.
    pub edges: &'a [f64],
}

impl Binned<'_> {
    fn bins(&self) -> impl Iterator<Item = (f64, f64, f64)> + '_ {
        self.probs
            .iter()
            .enumerate()
            .map(|(k, &p)| (self.edges[k], self.edges[k + 1], p))
    }
}

/// ∫ over [a, b] of (f − h)² for f linear from `f0` to `f1`.
fn segment(a: f64, b: f64, f0: f64, f1: f64, h: f64) -> f64 {
    let (u, v) = (f0 - h, f1 - h);
    (b - a) * (u * u + u * v + v * v) / 3.0
}

impl Posterior for Binned<'_> {
    fn cdf(&self, y: f64) -> f64 {
        let mut c = 0.0;
        for (a, b, p) in self.bins() {
            if y >= b {
                c += p;
            } else {
                if y > a {
                    c += p * (y - a) / (b - a);
                }
                break;
            }
        }
        c.min(1.0)
    }

    fn crps(&self, y: f64) -> f64 {
        let (lo, hi) = (self.edges[0], self.edges[self.probs.len()]);
        // Outside the support F is 0 (below) or 1 (above) and the step 1{x ≥ y} differs from it
        // between y and the support.
        let mut total = (lo - y).max(0.0) + (y - hi).max(0.0);
        let mut c = 0.0;
        for (a, b, p) in self.bins() {
            let c1 = c + p;
            if b > a {
                total += if y <= a {
                    segment(a, b, c, c1, 1.0)
                } else if y >= b {
                    segment(a, b, c, c1, 0.0)
                } else {
                    let cy = c + p * (y - a) / (b - a);
                    segment(a, y, c, cy, 0.0) + segment(y, b, cy, c1, 1.0)
                };
            }
            c = c1;
        }
        total
    }
}

/// A Gaussian posterior (the regression probe heads).
#[derive(Debug, Clone, Copy)]
pub struct Gaussian {
    /// Mean.
    pub mean: f64,
    /// Standard deviation (> 0).
    pub sigma: f64,
}

/// Standard normal CDF.
fn phi_cdf(z: f64) -> f64 {
    0.5 * libm::erfc(-z / std::f64::consts::SQRT_2)
}

impl Posterior for Gaussian {
    fn cdf(&self, y: f64) -> f64 {
        phi_cdf((y - self.mean) / self.sigma)
    }

    /// Gneiting & Raftery (2007): σ [z (2Φ(z) − 1) + 2φ(z) − 1/√π], z = (y − μ)/σ.
    fn crps(&self, y: f64) -> f64 {
        let z = (y - self.mean) / self.sigma;
        let pdf = (-0.5 * z * z).exp() / (2.0 * std::f64::consts::PI).sqrt();
        self.sigma * (z * (2.0 * phi_cdf(z) - 1.0) + 2.0 * pdf - 1.0 / std::f64::consts::PI.sqrt())
    }
}

/// Calibration of a set of posteriors against their true values.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Calibration {
    /// Rows in [`PIT_BINS`] equal bins of PIT on [0, 1] (PIT = 1 in the last bin).
    pub pit_histogram: Vec<usize>,
    /// Share of true values inside the central 68 % interval (0.16 ≤ PIT ≤ 0.84).
    pub coverage_68: f64,
    /// Share inside the central 95 % interval (0.025 ≤ PIT ≤ 0.975).
    pub coverage_95: f64,
    /// Mean CRPS (target units).
    pub crps: f64,
}

/// Share of PIT values inside the central interval of probability `level`.
pub fn coverage(pits: &[f64], level: f64) -> f64 {
    let (lo, hi) = (0.5 - 0.5 * level, 0.5 + 0.5 * level);
    pits.iter().filter(|&&p| (lo..=hi).contains(&p)).count() as f64 / pits.len().max(1) as f64
}

/// Calibration from per-row scores; `None` without any.
pub fn calibration(scores: &[Score]) -> Option<Calibration> {
    if scores.is_empty() {
        return None;
    }
    let pits: Vec<f64> = scores.iter().map(|s| s.pit).collect();
    let mut hist = vec![0usize; PIT_BINS];
    for &p in &pits {
        hist[((p * PIT_BINS as f64) as usize).min(PIT_BINS - 1)] += 1;
    }
    Some(Calibration {
        pit_histogram: hist,
        coverage_68: coverage(&pits, 0.68),
        coverage_95: coverage(&pits, 0.95),
        crps: scores.iter().map(|s| s.crps).sum::<f64>() / scores.len() as f64,
    })
}

/// Everything an evaluation reports: point metrics of the point estimates and, with
/// posteriors, their calibration. Serialised flat (`sigma_nmad`, …, `coverage_68`, `crps`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Evaluation {
    /// Point-estimate metrics.
    #[serde(flatten)]
    pub point: PointMetrics,
    /// Posterior calibration (absent without posteriors).
    #[serde(flatten)]
    pub calibration: Option<Calibration>,
}

/// Scalar metrics by name, as evaluation logs and `[train] select` name them, and how figures
/// label them.
pub const NAMES: [(&str, &str); 6] = [
    ("sigma_nmad", "σ_NMAD"),
    ("outlier_fraction", "outlier fraction"),
    ("bias", "bias"),
    ("coverage_68", "68 % interval coverage"),
    ("coverage_95", "95 % interval coverage"),
    ("crps", "CRPS"),
];

impl Evaluation {
    /// Evaluates point estimates `pred` (with their posteriors' `scores` against `truth`, one
    /// per usable row; empty without posteriors). `None` when no pair is usable.
    pub fn new(pred: &[f32], truth: &[f32], scores: &[Score]) -> Option<Self> {
        Some(Self {
            point: point_metrics(pred, truth)?,
            calibration: calibration(scores),
        })
    }

    /// The scalar metrics of [`NAMES`] that this evaluation has, in that order.
    pub fn named(&self) -> Vec<(&'static str, f64)> {
        let p = &self.point;
        let mut v = vec![
            ("sigma_nmad", p.sigma_nmad),
            ("outlier_fraction", p.outlier_fraction),
            ("bias", p.bias),
        ];
        if let Some(c) = &self.calibration {
            v.extend([
                ("coverage_68", c.coverage_68),
                ("coverage_95", c.coverage_95),
                ("crps", c.crps),
            ]);
        }
        v
    }
}

/// How figures label the metric `name` (`"σ_NMAD"`, …); the name itself if unknown.
pub fn display_name(name: &str) -> &str {
    NAMES
        .iter()
        .find(|(n, _)| *n == name)
        .map_or(name, |(_, d)| d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aion_model::rng::Rng;

    #[test]
    fn known_values() {
        let truth = [0.0f32, 0.0, 0.0, 0.0, 0.0];
        let pred = [0.01f32, -0.01, 0.0, 0.02, 0.1];
        let m = point_metrics(&pred, &truth).unwrap();
        assert!((m.bias - 0.01).abs() < 1e-6);
        // |Δ - 0.01| = 0, .02, .01, .01, .09 -> median .01
        assert!((m.sigma_nmad - 0.014826).abs() < 1e-6);
        assert!((m.outlier_fraction - 0.2).abs() < 1e-9);
        assert_eq!(point_metrics(&[f32::NAN], &[0.1]), None);
        assert_eq!(
            point_metrics(&[0.1, f32::NAN], &[0.1, 0.2])
                .unwrap()
                .skipped,
            1
        );
    }

    /// A Gaussian N(mean, sigma²) as a binned posterior on a fine grid over ±8σ.
    fn binned_gaussian(mean: f64, sigma: f64, bins: usize) -> (Vec<f64>, Vec<f64>) {
        let (lo, hi) = (mean - 8.0 * sigma, mean + 8.0 * sigma);
        let edges: Vec<f64> = (0..=bins)
            .map(|i| lo + (hi - lo) * i as f64 / bins as f64)
            .collect();
        let g = Gaussian { mean, sigma };
        let mut probs: Vec<f64> = edges
            .windows(2)
            .map(|e| g.cdf(e[1]) - g.cdf(e[0]))
            .collect();
        let total: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= total);
        (probs, edges)
    }

    #[test]
    fn crps_of_simple_posteriors() {
        // Uniform on [0, 1], truth 0.5: 2 ∫₀^½ x² dx = 1/12.
        let (p, e) = ([1.0], [0.0, 1.0]);
        let u = Binned {
            probs: &p,
            edges: &e,
        };
        assert!((u.crps(0.5) - 1.0 / 12.0).abs() < 1e-12);
        // Truth 2, above the support: F² = x² on [0, 1], then 1 on [1, 2].
        assert!((u.crps(2.0) - (1.0 / 3.0 + 1.0)).abs() < 1e-12);
        assert!((u.cdf(0.25) - 0.25).abs() < 1e-12 && u.cdf(-1.0) == 0.0 && u.cdf(3.0) == 1.0);
        // A point mass at 0 (zero-width bin): CRPS = |y|, CDF steps at 0.
        let (p, e) = ([1.0, 0.0], [0.0, 0.0, 1.0]);
        let d = Binned {
            probs: &p,
            edges: &e,
        };
        assert!((d.crps(0.3) - 0.3).abs() < 1e-12 && (d.crps(-0.2) - 0.2).abs() < 1e-12);
        assert_eq!(d.cdf(0.0), 1.0);
        // A finely binned Gaussian scores as the closed form, which at the mean is σ(√2 − 1)/√π.
        let (p, e) = binned_gaussian(0.3, 0.05, 4000);
        let b = Binned {
            probs: &p,
            edges: &e,
        };
        let g = Gaussian {
            mean: 0.3,
            sigma: 0.05,
        };
        let at_mean = 0.05 * (2f64.sqrt() - 1.0) / std::f64::consts::PI.sqrt();
        assert!((g.crps(0.3) - at_mean).abs() < 1e-12);
        for y in [0.3, 0.27, 0.41, 0.9] {
            assert!((b.crps(y) - g.crps(y)).abs() < 1e-6, "{y}");
            assert!((b.cdf(y) - g.cdf(y)).abs() < 1e-6, "{y}");
        }
    }

    /// Truths drawn from N(0, 1); posteriors N(0, width²) binned: the known coverage of the
    /// central interval at level `l` is P(|Y| ≤ width · z_l).
    fn calibration_of(width: f64) -> Calibration {
        let mut rng = Rng::new(7, 1, 0);
        let (p, e) = binned_gaussian(0.0, width, 2000);
        let post = Binned {
            probs: &p,
            edges: &e,
        };
        let scores: Vec<Score> = (0..20_000)
            .map(|_| post.score(rng.normal()).unwrap())
            .collect();
        calibration(&scores).unwrap()
    }

    #[test]
    fn calibrated_posteriors_have_flat_pit_and_nominal_coverage() {
        let c = calibration_of(1.0);
        assert!((c.coverage_68 - 0.68).abs() < 0.01, "{c:?}");
        assert!((c.coverage_95 - 0.95).abs() < 0.006, "{c:?}");
        // Flat PIT: every bin holds 10 % ± 1 % (2000 expected, binomial σ = 42).
        assert!(
            c.pit_histogram.iter().all(|&n| n.abs_diff(2000) < 200),
            "{c:?}"
        );
        // CRPS of the true distribution: E over Y of crps(N(0,1), Y) = 1/√π.
        assert!(
            (c.crps - 1.0 / std::f64::consts::PI.sqrt()).abs() < 0.01,
            "{c:?}"
        );
    }

    #[test]
    fn too_narrow_posteriors_under_cover_and_too_wide_over_cover() {
        // Half the width: 68 % interval ±0.497 → P(|Y| < 0.497) = 0.381; 95 % → ±0.980: 0.673.
        let narrow = calibration_of(0.5);
        assert!((narrow.coverage_68 - 0.381).abs() < 0.012, "{narrow:?}");
        assert!((narrow.coverage_95 - 0.673).abs() < 0.012, "{narrow:?}");
        // U-shaped PIT: the outer bins hold more than the inner ones.
        let h = &narrow.pit_histogram;
        assert!(h[0] > 2 * h[4] && h[9] > 2 * h[5], "{h:?}");
        // Twice the width: ±1.989 → 0.953; ±3.92 → 0.9999.
        let wide = calibration_of(2.0);
        assert!((wide.coverage_68 - 0.953).abs() < 0.01, "{wide:?}");
        assert!(wide.coverage_95 > 0.999, "{wide:?}");
        // Both score worse than the calibrated posterior.
        let good = calibration_of(1.0);
        assert!(narrow.crps > good.crps && wide.crps > good.crps);
    }

    #[test]
    fn evaluation_serialises_flat_and_names_its_metrics() {
        let pred = [0.1f32, 0.2];
        let e = Evaluation::new(&pred, &pred, &[]).unwrap();
        assert_eq!(
            e.named().iter().map(|p| p.0).collect::<Vec<_>>(),
            ["sigma_nmad", "outlier_fraction", "bias"]
        );
        let s = Score {
            pit: 0.5,
            crps: 0.01,
        };
        let e = Evaluation::new(&pred, &pred, &[s, s]).unwrap();
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["coverage_68"], 1.0);
        assert_eq!(v["n"], 2);
        assert_eq!(e.named().len(), NAMES.len());
        assert_eq!(display_name("sigma_nmad"), "σ_NMAD");
    }
}
