//! Decoding schedules: how many target tokens each step reveals, and at what temperature.
//!
//! Port of `aion/fourm/generation_utils.py::{cosine_schedule, linear_schedule,
//! linear_temp_schedule, onex_temp_schedule}` and of the per-target part of
//! `aion/fourm/generate.py::build_chained_generation_schedules` (polymathic-aion 0.0.2), in the
//! same f64 arithmetic so that the step sizes are the reference's integers exactly.

use crate::error::{Error, Result};

/// How the positions decoded at a step are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    /// MaskGIT: every remaining position is predicted and sampled; the `tokens` samples with the
    /// highest probability (confidence) are kept (`GenerationSampler.maskgit_step_batched`).
    MaskGit,
    /// ROAR (random-order autoregression): `tokens` remaining positions chosen at random are
    /// predicted together and all kept (`GenerationSampler.roar_step_batched`).
    Roar,
}

/// MaskGIT's token schedule (tokens revealed per step).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenSchedule {
    /// `cosine_schedule`: few tokens first, most in the middle steps.
    Cosine,
    /// `linear_schedule`: (nearly) equal numbers, larger ones first.
    Linear,
}

/// Temperature per step (`build_chained_generation_schedules`' `temp_schedules`).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TemperatureSchedule {
    /// The same temperature at every step.
    Constant,
    /// `linear_temp_schedule`: starts at the temperature and decreases in proportion to the
    /// tokens still to decode (floored at 1e-9).
    Linear,
    /// `onex_temp_schedule` (`onex:{min}:{power}`): a 1/x^power decay from the temperature
    /// towards `min`.
    OneX {
        /// Temperature approached at the end.
        min: f64,
        /// Exponent of the 1/x decay.
        power: f64,
    },
}

impl std::str::FromStr for TemperatureSchedule {
    type Err = String;

    /// `constant`, `linear` or `onex:MIN:POWER` (the reference's spelling).
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "constant" => Ok(Self::Constant),
            "linear" => Ok(Self::Linear),
            _ => {
                let parts: Vec<&str> = s.split(':').collect();
                match parts.as_slice() {
                    ["onex", min, power] => {
                        let num = |v: &str| {
                            v.parse::<f64>()
                                .ok()
                                .filter(|x| x.is_finite())
                                .ok_or_else(|| format!("'{v}' is not a number in '{s}'"))
                        };
                        Ok(Self::OneX {
                            min: num(min)?,
                            power: num(power)?,
                        })
                    }
                    _ => Err(format!(
                        "unknown temperature schedule '{s}' (constant, linear or onex:MIN:POWER)"
                    )),
                }
            }
        }
    }
}

/// One decoding step.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Step {
    /// Target tokens revealed by this step (may be 0: the reference then runs the model and
    /// keeps nothing; here the step is skipped).
    pub tokens: usize,
    /// Sampling temperature; |t| ≤ 1e-10 means argmax (the reference's `np.isclose(t, 0)`).
    pub temperature: f64,
}

/// A full decoding plan for one target: the scheme and its steps (token counts sum to the
/// target's token count).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Schedule {
    /// How positions are chosen.
    pub scheme: Scheme,
    /// The steps, in order.
    pub steps: Vec<Step>,
}

impl Schedule {
    /// Every token in one step: one decoder pass over all target positions, each token sampled
    /// (argmax at temperature 0). Identical to MaskGIT or ROAR with one step.
    pub fn single_pass(total: usize, temperature: f64) -> Self {
        Self {
            scheme: Scheme::MaskGit,
            steps: vec![Step {
                tokens: total,
                temperature,
            }],
        }
    }

    /// MaskGIT over `steps` steps for a target of `total` tokens.
    pub fn maskgit(
        steps: usize,
        total: usize,
        tokens: TokenSchedule,
        temperature: f64,
        temps: TemperatureSchedule,
    ) -> Result<Self> {
        check(steps, total)?;
        let counts = match tokens {
            TokenSchedule::Cosine => cosine_schedule(steps, total)?,
            TokenSchedule::Linear => linear_schedule(steps, total),
        };
        Self::with_temperatures(Scheme::MaskGit, steps, counts, temperature, temps)
    }

    /// ROAR over `steps` steps (linear token schedule, as the reference).
    pub fn roar(
        steps: usize,
        total: usize,
        temperature: f64,
        temps: TemperatureSchedule,
    ) -> Result<Self> {
        check(steps, total)?;
        let counts = linear_schedule(steps, total);
        Self::with_temperatures(Scheme::Roar, steps, counts, temperature, temps)
    }

    fn with_temperatures(
        scheme: Scheme,
        steps: usize,
        counts: Vec<usize>,
        temperature: f64,
        temps: TemperatureSchedule,
    ) -> Result<Self> {
        if !temperature.is_finite() || temperature < 0.0 {
            return Err(Error::Input(format!(
                "temperature {temperature} must be finite and ≥ 0"
            )));
        }
        let t = match temps {
            // `temp * np.ones(num_steps)`: one entry per requested step; zip() below keeps as
            // many as there are token counts.
            TemperatureSchedule::Constant => vec![temperature; steps],
            TemperatureSchedule::Linear => linear_temperatures(temperature, &counts),
            TemperatureSchedule::OneX { min, power } => {
                onex_temperatures(temperature, min, &counts, power)?
            }
        };
        let steps = counts
            .into_iter()
            .zip(t)
            .map(|(tokens, temperature)| Step {
                tokens,
                temperature,
            })
            .collect();
        Ok(Self { scheme, steps })
    }

    /// Total tokens revealed.
    pub fn total(&self) -> usize {
        self.steps.iter().map(|s| s.tokens).sum()
    }
}

fn check(steps: usize, total: usize) -> Result<()> {
    if steps == 0 || total == 0 {
        return Err(Error::Input(format!(
            "a schedule needs at least one step and one token (steps {steps}, tokens {total})"
        )));
    }
    Ok(())
}

/// `cosine_schedule(num_steps, total_tokens)`: with `s_i = ½(1 + cos(π i / n))`, step `i < n−1`
/// reveals `round(total · (s_i − s_{i+1}))` tokens (round half to even, like Python's `round`
/// on a numpy float) and the last step the rest.
pub fn cosine_schedule(steps: usize, total: usize) -> Result<Vec<usize>> {
    let n = steps as f64;
    let s: Vec<f64> = (0..steps)
        .map(|i| 0.0 + 0.5 * 1.0 * (1.0 + (std::f64::consts::PI * i as f64 / n).cos()))
        .collect();
    let mut out: Vec<i64> = s
        .windows(2)
        .map(|w| (total as f64 * (w[0] - w[1])).round_ties_even() as i64)
        .collect();
    let rest = total as i64 - out.iter().sum::<i64>();
    out.push(rest);
    if rest < 0 {
        return Err(Error::Input(format!(
            "the cosine schedule of {total} tokens over {steps} steps is invalid (last step \
             {rest}); use fewer steps"
        )));
    }
    Ok(out.into_iter().map(|x| x as usize).collect())
}

/// `linear_schedule(num_steps, total_tokens)`: the differences of
/// `floor(linspace(0, total, n + 1))`, sorted in descending order, trailing zeros removed (so
/// more steps than tokens gives one token per step and fewer steps).
pub fn linear_schedule(steps: usize, total: usize) -> Vec<usize> {
    let step = total as f64 / steps as f64;
    let points: Vec<i64> = (0..=steps)
        .map(|i| {
            if i == steps {
                total as i64
            } else {
                (i as f64 * step + 0.0).floor() as i64
            }
        })
        .collect();
    let mut diffs: Vec<usize> = points.windows(2).map(|w| (w[1] - w[0]) as usize).collect();
    diffs.sort_unstable_by(|a, b| b.cmp(a));
    while diffs.last() == Some(&0) {
        diffs.pop();
    }
    diffs
}

/// `linear_temp_schedule(temp, token_schedule)`: `[t, t·(S − c_1)/S, …, t·(S − c_{n−1})/S]`
/// with `c` the cumulative token counts and `S` their sum, floored at 1e-9.
pub fn linear_temperatures(temperature: f64, counts: &[usize]) -> Vec<f64> {
    let total: usize = counts.iter().sum();
    let s = total as f64;
    let mut out = vec![temperature * 1.0];
    let mut cum = 0usize;
    for &c in &counts[..counts.len().saturating_sub(1)] {
        cum += c;
        out.push(temperature * (total - cum) as f64 / s);
    }
    out.into_iter().map(|t| t.max(1e-9)).collect()
}

/// `onex_temp_schedule(max_t, min_t, token_schedule, power)`: with `y = 1/x^power` over
/// `x = linspace(1, 100, total tokens)` rescaled to [0, 1], step `i` gets
/// `min + (max − min)·(1 − c_i/S)·y_i` (floored at 1e-9). Note the reference pairs step `i`
/// with the `i`-th of the per-*token* values (Python's `zip` truncates); this port does too.
pub fn onex_temperatures(max_t: f64, min_t: f64, counts: &[usize], power: f64) -> Result<Vec<f64>> {
    let total: usize = counts.iter().sum();
    if total < 2 {
        return Err(Error::Input(
            "the onex temperature schedule needs a target of at least 2 tokens (the reference \
             divides 0 by 0 otherwise)"
                .into(),
        ));
    }
    let (lo, hi) = (1.0f64, 100.0f64);
    let step = (hi - lo) / (total - 1) as f64;
    let x: Vec<f64> = (0..total)
        .map(|i| {
            if i == total - 1 {
                hi
            } else {
                i as f64 * step + lo
            }
        })
        .collect();
    let y: Vec<f64> = x.iter().map(|&v| 1.0 / v.powf(power)).collect();
    let min = y.iter().copied().fold(f64::INFINITY, f64::min);
    let y: Vec<f64> = y.iter().map(|&v| v - min).collect();
    let max = y.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let y: Vec<f64> = y.iter().map(|&v| v / max).collect();
    let s = total as f64;
    let mut cum = 0usize;
    Ok(counts
        .iter()
        .zip(&y)
        .map(|(&c, &us)| {
            cum += c;
            let cs = cum as f64 / s;
            let unscaled = (1.0 - cs) * us;
            (min_t + (max_t - min_t) * unscaled).max(1e-9)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_sum_to_the_total() {
        for total in [1, 2, 55, 144, 273, 576] {
            for steps in [1, 2, 3, 8, 12, 50] {
                if let Ok(c) = cosine_schedule(steps, total) {
                    assert_eq!(c.iter().sum::<usize>(), total);
                    assert_eq!(c.len(), steps);
                }
                let l = linear_schedule(steps, total);
                assert_eq!(l.iter().sum::<usize>(), total);
                assert!(l.windows(2).all(|w| w[0] >= w[1]) && l.iter().all(|&x| x > 0));
            }
        }
        assert_eq!(linear_schedule(3, 10), [4, 3, 3]);
        assert_eq!(linear_schedule(8, 1), [1]);
        assert_eq!(cosine_schedule(1, 273).unwrap(), [273]);
    }

    #[test]
    fn temperature_schedules() {
        assert_eq!(linear_temperatures(2.0, &[4, 3, 3]), [2.0, 1.2, 0.6]);
        assert_eq!(
            "onex:0.5:1".parse::<TemperatureSchedule>().unwrap(),
            TemperatureSchedule::OneX {
                min: 0.5,
                power: 1.0
            }
        );
        assert!("onex:a:1".parse::<TemperatureSchedule>().is_err());
        assert!("cosine".parse::<TemperatureSchedule>().is_err());
        let t = onex_temperatures(3.0, 0.5, &[4, 3, 3], 0.5).unwrap();
        assert_eq!(t.len(), 3);
        assert!(t.iter().all(|&x| (0.5..=3.0).contains(&x)));
        assert!(onex_temperatures(3.0, 0.5, &[1], 0.5).is_err());
    }
}
