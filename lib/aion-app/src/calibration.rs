//! Calibration of scalar posteriors by temperature scaling, stored in a model directory as
//! `calibration.json` and applied by `aion-predict`.
//!
//! A classifier trained on a few thousand objects is usually over-confident: its posteriors are
//! too narrow (the 16–84 % interval holds the truth less than 68 % of the time). Temperature
//! scaling (Guo et al. 2017) divides a target's logits by one number `T` fitted on held-out rows
//! (`aion-finetune`'s validation split): the posterior becomes `softmax(logits / T)`, i.e.
//! `p^(1/T)` renormalised. It keeps the ordering of the tokens and the mode, changes the width
//! (`T > 1` widens), and gives a whole calibrated distribution, so the mean, σ, quantiles and
//! `--save-pdf` probabilities all follow from it. (Conformal intervals would calibrate one
//! interval, not the distribution those products are computed from.)
//!
//! `T` minimises the mean negative log-likelihood of the true token over the ids with a codec
//! value (the ones [`crate::posterior`] keeps): `NLL(β) = mean(logsumexp(β·l) − β·l_true)` with
//! `β = 1/T` is convex, so a golden-section search over `ln T` finds the minimum. The search
//! asks for `NLL(T)` through a closure, so on several MPI ranks each rank sums its rows and one
//! all-reduce per probe gives every rank the same value (and the same `T`).
//!
//! A model trained with noise augmentation also gets the temperature of its posterior averaged
//! over redraws of the inputs within their errors (`aion-predict --noise-draws`): the same search
//! on the likelihood of the mixture `mean_d softmax(β·l_d)`, which need not be convex in β: the
//! search then finds a local minimum (the unit test checks it against a known answer).

use std::collections::BTreeMap;
use std::path::Path;

use aion_mpi::Session;
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::posterior::{probabilities, summarize, summarize_probabilities};

/// File name inside a model directory.
pub const FILE: &str = "calibration.json";
/// Value of the file's `format` field.
pub const FORMAT: &str = "aion-hpc/calibration";
/// The method name (`[calibration] method` in a fine-tuning configuration, `method` in the file).
pub const METHOD: &str = "temperature";
/// Search range of the temperature.
pub const T_RANGE: (f64, f64) = (0.05, 50.0);

/// `calibration.json`: one entry per calibrated target token key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalibrationFile {
    /// [`FORMAT`].
    pub format: String,
    /// 1.
    pub version: u32,
    /// Per token key.
    pub targets: BTreeMap<String, TargetCalibration>,
}

/// The calibration of one target, with what it did on the rows it was fitted on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetCalibration {
    /// `"temperature"` (the only method so far).
    pub method: String,
    /// `T`: the logits are divided by it.
    pub temperature: f64,
    /// What the fit used (e.g. `validation split (500 rows)`).
    pub fitted_on: String,
    /// Rows used.
    pub rows: usize,
    /// Mean negative log-likelihood of the true token before / after.
    pub nll: [f64; 2],
    /// Share of rows whose truth lies in the 16–84 % interval, before / after.
    pub coverage_68: [f64; 2],
    /// The temperature of the posterior averaged over noise draws of the inputs (`aion-predict
    /// --noise-draws`), fitted on the same rows; absent when the model has no noise map.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub noise_draws: Option<NoiseDrawsCalibration>,
}

/// The calibration of the posterior averaged over `draws` redraws of the inputs within their
/// errors (the mixture `mean_d softmax(logits_d / T)`): wider than one draw's, so it needs its own,
/// smaller, temperature.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoiseDrawsCalibration {
    /// Draws the fit averaged over.
    pub draws: usize,
    /// `T` of the mixture.
    pub temperature: f64,
    /// Mean negative log-likelihood of the true token before / after.
    pub nll: [f64; 2],
    /// Share of rows whose truth lies in the 16–84 % interval, before / after.
    pub coverage_68: [f64; 2],
}

impl CalibrationFile {
    /// A file with these targets.
    pub fn new(targets: BTreeMap<String, TargetCalibration>) -> Self {
        Self {
            format: FORMAT.into(),
            version: 1,
            targets,
        }
    }

    /// Reads `dir/calibration.json`; `None` when the directory has none.
    pub fn read_dir(dir: &Path) -> Result<Option<Self>> {
        let path = dir.join(FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let f: Self = serde_json::from_str(&text)
            .with_context(|| format!("invalid calibration file {}", path.display()))?;
        if f.format != FORMAT || f.version != 1 {
            bail!(
                "{}: format {:?} version {} (expected {FORMAT:?} version 1)",
                path.display(),
                f.format,
                f.version
            );
        }
        for (key, t) in &f.targets {
            let noise_t = t.noise_draws.as_ref().map(|n| n.temperature);
            let valid = |t: f64| t.is_finite() && t > 0.0;
            if t.method != "temperature" || !valid(t.temperature) || !noise_t.is_none_or(valid) {
                let also = noise_t.map_or(String::new(), |n| format!(", noise draws' {n}"));
                bail!(
                    "{}: {key}: method {:?} with temperature {}{also} (expected \"temperature\" \
                     and T > 0)",
                    path.display(),
                    t.method,
                    t.temperature
                );
            }
        }
        Ok(Some(f))
    }

    /// Writes `dir/calibration.json` (atomically).
    pub fn write_dir(&self, dir: &Path) -> Result<()> {
        let text = format!("{}\n", serde_json::to_string_pretty(self)?);
        aion_model::fs::write_atomic(&dir.join(FILE), text.as_bytes())?;
        Ok(())
    }

    /// The temperature of `key`, if calibrated.
    pub fn temperature(&self, key: &str) -> Option<f64> {
        self.targets.get(key).map(|t| t.temperature)
    }

    /// The temperature of `key`'s posterior averaged over noise draws, if fitted.
    pub fn noise_draws(&self, key: &str) -> Option<&NoiseDrawsCalibration> {
        self.targets.get(key).and_then(|t| t.noise_draws.as_ref())
    }
}

/// Divides logits by the temperature.
pub fn scaled(logits: &[f32], temperature: f64) -> Vec<f32> {
    let b = (1.0 / temperature) as f32;
    logits.iter().map(|&l| l * b).collect()
}

/// Held-out rows of one target: logits (`draws × rows × vocab`, row-major), the true value and
/// token of each row (rows without a usable truth are left out by the caller) and the codec
/// values of the first `values.len()` ids. With `draws > 1` the posterior of a row is the mean
/// of its draws' probabilities (inputs redrawn within their errors), each at temperature `T`.
pub struct Heldout<'a> {
    /// Logits, `draws × truth.len() × vocab`.
    pub logits: &'a [f32],
    /// Posteriors averaged per row (1: one set of logits).
    pub draws: usize,
    /// Vocabulary size (row length of `logits`).
    pub vocab: usize,
    /// True token per row (`< values.len()`).
    pub truth: &'a [usize],
    /// True value per row.
    pub truth_values: &'a [f32],
    /// Decoded value of each id that has one (ascending).
    pub values: &'a [f32],
}

impl Heldout<'_> {
    /// Rows.
    pub fn len(&self) -> usize {
        self.truth.len()
    }

    /// No rows.
    pub fn is_empty(&self) -> bool {
        self.truth.is_empty()
    }

    /// Row `i`'s logits in draw `d`.
    fn row(&self, d: usize, i: usize) -> &[f32] {
        let at = d * self.len() + i;
        &self.logits[at * self.vocab..(at + 1) * self.vocab]
    }

    /// Σ over the rows of −log p(true token) at temperature `t`, over the ids with a value; with
    /// draws, p is the mean over the draws.
    pub fn nll_sum(&self, t: f64) -> f64 {
        let (b, k) = (1.0 / t, self.values.len());
        (0..self.len())
            .map(|i| {
                // log p_d(true) per draw, then the log of their mean (log-sum-exp).
                let logp: Vec<f64> = (0..self.draws)
                    .map(|d| {
                        let l = &self.row(d, i)[..k];
                        let max = l.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                        let lse = f64::from(max) * b
                            + l.iter()
                                .map(|&x| (f64::from(x - max) * b).exp())
                                .sum::<f64>()
                                .ln();
                        b * f64::from(l[self.truth[i]]) - lse
                    })
                    .collect();
                let m = logp.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let mean = m + logp.iter().map(|&x| (x - m).exp()).sum::<f64>().ln()
                    - (self.draws as f64).ln();
                -mean
            })
            .sum()
    }

    /// Number of rows whose true value lies in the 16–84 % interval of the posterior at
    /// temperature `t` (as [`summarize`] computes it; with draws, of their mean probabilities).
    pub fn covered_68(&self, t: f64) -> usize {
        (0..self.len())
            .filter(|&i| {
                let s = if self.draws == 1 {
                    summarize(&scaled(self.row(0, i), t), self.values)
                } else {
                    let k = self.values.len();
                    let (mut p, mut outside) = (vec![0.0; k], 0.0);
                    for d in 0..self.draws {
                        let (pd, od) = probabilities(&scaled(self.row(d, i), t), k);
                        for (acc, x) in p.iter_mut().zip(pd) {
                            *acc += x / self.draws as f64;
                        }
                        outside += od / self.draws as f64;
                    }
                    summarize_probabilities(&p, outside, self.values)
                };
                (s.q16..=s.q84).contains(&self.truth_values[i])
            })
            .count()
    }
}

/// Golden-section search of the temperature minimising `mean_nll(T)` over [`T_RANGE`] (in
/// `ln T`, to 1e-4 relative). `mean_nll` must give every MPI rank the same value.
pub fn fit_temperature(mut mean_nll: impl FnMut(f64) -> f64) -> f64 {
    let (mut a, mut b) = (T_RANGE.0.ln(), T_RANGE.1.ln());
    let g = (5f64.sqrt() - 1.0) / 2.0;
    let (mut c, mut d) = (b - g * (b - a), a + g * (b - a));
    let (mut fc, mut fd) = (mean_nll(c.exp()), mean_nll(d.exp()));
    while b - a > 1e-4 {
        if fc <= fd {
            (b, d, fd) = (d, c, fc);
            c = b - g * (b - a);
            fc = mean_nll(c.exp());
        } else {
            (a, c, fc) = (c, d, fd);
            d = a + g * (b - a);
            fd = mean_nll(d.exp());
        }
    }
    (0.5 * (a + b)).exp()
}

/// Fits the temperature of one target on held-out rows spread over the MPI ranks (each rank
/// passes its own rows; every rank gets the same result). `None` when no rank has a row.
pub fn fit_distributed(
    session: &Session,
    heldout: &Heldout<'_>,
    what: &str,
) -> Option<TargetCalibration> {
    let n = session.sum_f64s(&[heldout.len() as f64])[0];
    if n == 0.0 {
        return None;
    }
    let mean_nll = |t: f64| session.sum_f64s(&[heldout.nll_sum(t)])[0] / n;
    let t = fit_temperature(mean_nll);
    let covered = session.sum_f64s(&[heldout.covered_68(1.0) as f64, heldout.covered_68(t) as f64]);
    Some(TargetCalibration {
        method: "temperature".into(),
        temperature: t,
        fitted_on: format!("{what} ({n} rows)"),
        rows: n as usize,
        nll: [mean_nll(1.0), mean_nll(t)],
        coverage_68: [covered[0] / n, covered[1] / n],
        noise_draws: None,
    })
}

/// [`fit_distributed`] for the mixture over noise draws (`heldout.draws` of them, the same rows
/// as the plain fit): every rank gets the same result; `None` when no rank has a row.
pub fn fit_noise_draws(session: &Session, heldout: &Heldout<'_>) -> Option<NoiseDrawsCalibration> {
    let plain = fit_distributed(session, heldout, "")?;
    Some(NoiseDrawsCalibration {
        draws: heldout.draws,
        temperature: plain.temperature,
        nll: plain.nll,
        coverage_68: plain.coverage_68,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use aion_model::rng::Rng;

    /// Logits of a Gaussian posterior N(centre, width²) over `values` (log density).
    /// `n` objects on a grid of 512 token values in [0, 1]: centres uniform in
    /// `[from, from + span]`, true values `z` drawn around them with `sigma`. Returns the grid,
    /// the true tokens (first value >= z: the codec's bucketize), the `z` and the centres.
    fn draw(
        n: usize,
        seed: u64,
        (from, span): (f64, f64),
        sigma: f64,
    ) -> (Vec<f32>, Vec<usize>, Vec<f32>, Vec<f64>) {
        let k = 512;
        let values: Vec<f32> = (0..k).map(|i| i as f32 / (k - 1) as f32).collect();
        let mut rng = Rng::new(seed, 99, 0);
        let (mut truth, mut zs, mut centres) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..n {
            let centre = from + span * rng.uniform();
            let z = (centre + sigma * rng.normal()) as f32;
            truth.push(values.partition_point(|&v| v < z).min(k - 1));
            zs.push(z);
            centres.push(centre);
        }
        (values, truth, zs, centres)
    }

    fn gaussian_logits(values: &[f32], vocab: usize, centre: f64, width: f64) -> Vec<f32> {
        (0..vocab)
            .map(|k| match values.get(k) {
                Some(&v) => (-0.5 * ((f64::from(v) - centre) / width).powi(2)) as f32,
                None => -30.0,
            })
            .collect()
    }

    /// A problem with a known answer: the truth scatters around each row's centre with
    /// σ = 0.02 but the model claims σ = 0.01. The logits are quadratic, so dividing them by
    /// T = (0.02 / 0.01)² = 4 gives exactly the right Gaussian; the fit must find T ≈ 4 and the
    /// 16–84 % interval must then hold the truth for ~68 % of the rows (about 38 % before).
    #[test]
    fn temperature_restores_the_coverage_of_a_too_narrow_gaussian() {
        let (vocab, n) = (513usize, 4000usize);
        let (values, truth, zs, centres) = draw(n, 7, (0.2, 0.6), 0.02);
        let logits: Vec<f32> = centres
            .iter()
            .flat_map(|&c| gaussian_logits(&values, vocab, c, 0.01))
            .collect();
        let h = Heldout {
            logits: &logits,
            draws: 1,
            vocab,
            truth: &truth,
            truth_values: &zs,
            values: &values,
        };
        let t = fit_temperature(|t| h.nll_sum(t) / n as f64);
        assert!(
            (t - 4.0).abs() < 0.25,
            "fitted temperature {t}, expected ~4"
        );
        let before = h.covered_68(1.0) as f64 / n as f64;
        let after = h.covered_68(t) as f64 / n as f64;
        assert!((0.33..0.43).contains(&before), "coverage before {before}");
        assert!((0.65..0.71).contains(&after), "coverage after {after}");
        assert!(h.nll_sum(t) < h.nll_sum(1.0));
    }

    /// Posteriors averaged over noise draws: each draw claims N(c + δ_d, 0.01²), the row's 16
    /// shifts δ_d (the inputs redrawn within their errors) random but standardised to mean 0 and
    /// spread exactly 0.015; the truth scatters with σ = 0.02 around c. The mixture of T-scaled
    /// draws has variance 0.01²·T + 0.015², the truth's at T = 1.75 (instead of 4 for one draw
    /// without the shifts); a 16-component mixture has lighter tails than a Gaussian, so its
    /// likelihood prefers a little more (2.0 with this seed). The fit must land in 1.5–2.3 and
    /// give 65–71 % coverage. Identical draws must give exactly the one-draw likelihood.
    #[test]
    fn the_mixture_over_noise_draws_gets_its_own_temperature() {
        let (vocab, n, draws) = (513usize, 3000usize, 16usize);
        let (values, truth, zs, centres) = draw(n, 9, (0.2, 0.6), 0.02);
        let mut rng = Rng::new(10, 99, 1);
        let mut logits = Vec::with_capacity(draws * n * vocab);
        let shifts: Vec<Vec<f64>> = (0..n)
            .map(|_| {
                let x: Vec<f64> = (0..draws).map(|_| rng.normal()).collect();
                let mean = x.iter().sum::<f64>() / draws as f64;
                let sd = (x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / draws as f64).sqrt();
                x.iter().map(|v| 0.015 * (v - mean) / sd).collect()
            })
            .collect();
        for d in 0..draws {
            for (row, &c) in shifts.iter().zip(&centres) {
                logits.extend(gaussian_logits(&values, vocab, c + row[d], 0.01));
            }
        }
        let h = Heldout {
            logits: &logits,
            draws,
            vocab,
            truth: &truth,
            truth_values: &zs,
            values: &values,
        };
        let t = fit_temperature(|t| h.nll_sum(t) / n as f64);
        assert!(
            (1.5..2.3).contains(&t),
            "mixture temperature {t}, expected ~1.75-2"
        );
        let after = h.covered_68(t) as f64 / n as f64;
        assert!((0.65..0.71).contains(&after), "coverage after {after}");
        assert!(h.nll_sum(t) < h.nll_sum(1.0));

        let one: Vec<f32> = centres
            .iter()
            .flat_map(|&c| gaussian_logits(&values, vocab, c, 0.01))
            .collect();
        let copies: Vec<f32> = (0..4).flat_map(|_| one.iter().copied()).collect();
        let single = Heldout {
            logits: &one,
            draws: 1,
            ..h
        };
        let same = Heldout {
            logits: &copies,
            draws: 4,
            ..single
        };
        for t in [0.5, 1.0, 4.0] {
            let (a, b) = (single.nll_sum(t), same.nll_sum(t));
            assert!((a - b).abs() < 1e-9 * a.abs(), "T {t}: {a} vs {b}");
            assert_eq!(single.covered_68(t), same.covered_68(t));
        }
    }

    /// An already calibrated model keeps T ≈ 1; a too wide one gets T < 1.
    #[test]
    fn calibrated_and_too_wide_models() {
        let (vocab, n) = (512usize, 3000usize);
        let (values, truth, zs, centres) = draw(n, 8, (0.3, 0.4), 0.03);
        let logits = |width: f64| -> Vec<f32> {
            centres
                .iter()
                .flat_map(|&c| gaussian_logits(&values, vocab, c, width))
                .collect()
        };
        let (right, wide) = (logits(0.03), logits(0.06));
        let fit = |logits: &[f32]| {
            let h = Heldout {
                logits,
                draws: 1,
                vocab,
                truth: &truth,
                truth_values: &zs,
                values: &values,
            };
            fit_temperature(|t| h.nll_sum(t) / n as f64)
        };
        let t = fit(&right);
        assert!((t - 1.0).abs() < 0.08, "calibrated model: T = {t}");
        let t = fit(&wide);
        assert!(
            (t - 0.25).abs() < 0.03,
            "too wide model: T = {t}, expected ~0.25"
        );
    }

    #[test]
    fn file_round_trip_and_refusals() {
        let dir = std::env::temp_dir().join(format!("aion-calibration-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(CalibrationFile::read_dir(&dir).unwrap(), None);
        let mut targets = BTreeMap::new();
        targets.insert(
            "tok_z".to_string(),
            TargetCalibration {
                method: "temperature".into(),
                temperature: 1.7,
                fitted_on: "validation split (500 rows)".into(),
                rows: 500,
                nll: [3.0, 2.8],
                coverage_68: [0.55, 0.68],
                noise_draws: None,
            },
        );
        let f = CalibrationFile::new(targets);
        f.write_dir(&dir).unwrap();
        let back = CalibrationFile::read_dir(&dir).unwrap().unwrap();
        assert_eq!(back, f);
        assert_eq!(back.temperature("tok_z"), Some(1.7));
        assert_eq!(back.temperature("tok_mag_r"), None);
        let bad = serde_json::to_string(&f).unwrap().replace("1.7", "-1.0");
        std::fs::write(dir.join(FILE), bad).unwrap();
        let e = CalibrationFile::read_dir(&dir).unwrap_err();
        assert!(format!("{e:#}").contains("T > 0"), "{e:#}");
        // A noise-draw temperature round-trips, and a non-positive one is refused too.
        let mut with_draws = f.clone();
        with_draws.targets.get_mut("tok_z").unwrap().noise_draws = Some(NoiseDrawsCalibration {
            draws: 16,
            temperature: 0.9,
            nll: [2.9, 2.7],
            coverage_68: [0.75, 0.69],
        });
        with_draws.write_dir(&dir).unwrap();
        let back = CalibrationFile::read_dir(&dir).unwrap().unwrap();
        assert_eq!(back, with_draws);
        assert_eq!(back.noise_draws("tok_z").map(|n| n.temperature), Some(0.9));
        let bad = serde_json::to_string(&with_draws)
            .unwrap()
            .replace("0.9,", "0.0,");
        std::fs::write(dir.join(FILE), bad).unwrap();
        let e = CalibrationFile::read_dir(&dir).unwrap_err();
        assert!(format!("{e:#}").contains("noise draws' 0"), "{e:#}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn scaling_widens_a_posterior() {
        let values: Vec<f32> = (0..101).map(|i| i as f32 / 100.0).collect();
        let l = gaussian_logits(&values, 101, 0.5, 0.05);
        let narrow = summarize(&l, &values);
        let wide = summarize(&scaled(&l, 4.0), &values);
        assert!((wide.std / narrow.std - 2.0).abs() < 0.05);
        assert!((wide.median - narrow.median).abs() < 1e-4);
    }
}
