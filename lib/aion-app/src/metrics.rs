//! Photometric-redshift style point-estimate metrics.
//!
//! With Δ = (pred − true) / (1 + true): bias = median(Δ); σ_NMAD = 1.4826 · median(|Δ − median Δ|);
//! outlier fraction = share of |Δ| > 0.05. Non-finite pairs are left out (and counted).

use serde::Serialize;

/// Outlier threshold on |Δz| / (1 + z).
pub const OUTLIER: f64 = 0.05;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
