//! Plausible distributions of the catalogue quantities the scalar codecs tokenize, for the
//! quantile tables of a random model directory (`aion-model random`).
//!
//! A released codec's table holds the quantiles of its training sample. Without the weights we
//! draw that sample (the reservoir) from a simple distribution chosen from the quantity's
//! physical range, and build the table from it exactly as the reference does
//! ([`quantile_table`](super::scalar_fit::quantile_table)); real catalogue values then fall
//! into many different bins, as they would with the released codecs. The distributions are
//! order-of-magnitude choices, checked against the bundled samples (`data/`), not fits:
//!
//! | quantity | distribution |
//! |---|---|
//! | Legacy Survey `FLUX_G/R/I/Z`, `FLUX_W1/W2` (nanomaggies) | log-normal, median 10 (mag 20), σ_ln 1.5 |
//! | `FLUX_W3/W4` | log-normal, median 30, σ_ln 2 (noisy, often negative) |
//! | `SHAPE_R` (half-light radius, arcsec) | log-normal, median 0.7, σ_ln 0.8 |
//! | `SHAPE_E1/E2` (ellipticity) | normal, 0 ± 0.15 |
//! | `EBV` (mag) | log-normal, median 0.03, σ_ln 0.7 |
//! | HSC `a_g…a_y` (mag) | log-normal, median 0.03·R (R = 3.2, 2.3, 1.6, 1.25, 1.07), σ_ln 0.7 |
//! | HSC `*_cmodel_mag` (AB) | normal, 23 ± 1.5 |
//! | HSC `i_sdssshape_shape11/22` (arcsec²) | log-normal, median 0.3, σ_ln 0.8; `shape12`: normal 0 ± 0.05 |
//! | Gaia `phot_g/bp/rp_mean_flux` (e⁻/s) | log-normal, medians 1000 / 500 / 800 (G ≈ 18), σ_ln 2 |
//! | Gaia `parallax` (mas) | log-normal, median 0.5, σ_ln 1 |
//! | `ra`, `dec` (deg) | uniform on the sphere |
//! | Gaia XP `bp/rp_coefficients` | coefficient 0: log-normal, median 1000, σ_ln 1.5; coefficient c ≥ 1: normal, 0 ± (300·e^(−c/5) + 1) |
//!
//! Anything else (e.g. a new survey's quantity) gets a standard normal.

use super::scalar_fit::FitKind;
use crate::rng::Rng;
use crate::weights::{Reservoir, ValueSpace};

/// A distribution of a quantity's values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Distribution {
    /// `N(mean, std²)`.
    Normal {
        /// Mean.
        mean: f64,
        /// Standard deviation.
        std: f64,
    },
    /// `ln x ~ N(ln median, sigma²)`.
    LogNormal {
        /// Median.
        median: f64,
        /// Standard deviation of `ln x`.
        sigma: f64,
    },
    /// Right ascension: uniform on `[0, 360)` degrees.
    RightAscension,
    /// Declination: uniform on the sphere (`asin` of a uniform on `[−1, 1]`), degrees.
    Declination,
}

impl Distribution {
    /// One draw.
    pub fn sample(self, rng: &mut Rng) -> f64 {
        match self {
            Self::Normal { mean, std } => mean + std * rng.normal(),
            Self::LogNormal { median, sigma } => median * (sigma * rng.normal()).exp(),
            Self::RightAscension => 360.0 * rng.uniform(),
            Self::Declination => (2.0 * rng.uniform() - 1.0).asin().to_degrees(),
        }
    }
}

/// The distribution of `quantity` (a codec folder name), channel `channel` (see the module
/// docs).
pub fn distribution(quantity: &str, channel: usize) -> Distribution {
    use Distribution::{LogNormal, Normal};
    let log = |median: f64, sigma: f64| LogNormal { median, sigma };
    let normal = |mean: f64, std: f64| Normal { mean, std };
    match quantity {
        "FLUX_G" | "FLUX_R" | "FLUX_I" | "FLUX_Z" | "FLUX_W1" | "FLUX_W2" => log(10.0, 1.5),
        "FLUX_W3" | "FLUX_W4" => log(30.0, 2.0),
        "SHAPE_R" => log(0.7, 0.8),
        "SHAPE_E1" | "SHAPE_E2" => normal(0.0, 0.15),
        "EBV" => log(0.03, 0.7),
        "a_g" => log(0.03 * 3.2, 0.7),
        "a_r" => log(0.03 * 2.3, 0.7),
        "a_i" => log(0.03 * 1.6, 0.7),
        "a_z" => log(0.03 * 1.25, 0.7),
        "a_y" => log(0.03 * 1.07, 0.7),
        q if q.ends_with("_cmodel_mag") => normal(23.0, 1.5),
        "i_sdssshape_shape11" | "i_sdssshape_shape22" => log(0.3, 0.8),
        "i_sdssshape_shape12" => normal(0.0, 0.05),
        "phot_g_mean_flux" => log(1000.0, 2.0),
        "phot_bp_mean_flux" => log(500.0, 2.0),
        "phot_rp_mean_flux" => log(800.0, 2.0),
        "parallax" => log(0.5, 1.0),
        "ra" => Distribution::RightAscension,
        "dec" => Distribution::Declination,
        "bp_coefficients" | "rp_coefficients" if channel == 0 => log(1000.0, 1.5),
        "bp_coefficients" | "rp_coefficients" => {
            normal(0.0, 300.0 * (-(channel as f64) / 5.0).exp() + 1.0)
        }
        _ => normal(0.0, 1.0),
    }
}

/// `n` reservoir values of `r` in its codec's space, drawn from [`distribution`].
pub fn reservoir(rng: &mut Rng, r: &Reservoir, n: usize) -> Vec<f32> {
    let dist = distribution(&r.quantity, r.channel);
    (0..n)
        .map(|_| {
            let x = dist.sample(rng) as f32;
            match &r.space {
                ValueSpace::Linear => x,
                ValueSpace::Log { min_log_value } => FitKind::LogScalar {
                    min_log_value: *min_log_value,
                }
                .reservoir_value(x)
                .expect("finite draw"),
                ValueSpace::Compressed(fns) => fns.iter().fold(x, |v, f| f.apply(v)),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codecs::scalar_fit::quantile_table;

    /// Real values of the bundled samples spread over many bins of a table built this way.
    #[test]
    fn real_values_fall_into_many_bins() {
        let mut rng = Rng::new(1, 0, 0);
        let flux = Reservoir {
            quantity: "FLUX_R".into(),
            channel: 0,
            space: ValueSpace::Log {
                min_log_value: -3.0,
            },
        };
        let table = quantile_table(&reservoir(&mut rng, &flux, 1000), 1024);
        // FLUX_R of data/legacysurvey/piczl_dr10.h5: 0.23 … 2821 nanomaggies.
        let tokens: Vec<usize> = [0.23f32, 1.0, 5.0, 20.0, 52.6, 200.0, 2821.0]
            .iter()
            .map(|&x| crate::codecs::scalar::bucketize_left(x.ln(), &table[..1023]))
            .collect();
        assert!(tokens.windows(2).all(|w| w[0] < w[1]), "{tokens:?}");
        assert!(tokens[1] > 20 && tokens[5] < 1010, "{tokens:?}");
        let dec = Reservoir {
            quantity: "dec".into(),
            channel: 0,
            space: ValueSpace::Linear,
        };
        let d = reservoir(&mut rng, &dec, 1000);
        assert!(d.iter().all(|v| (-90.0..=90.0).contains(v)));
    }
}
