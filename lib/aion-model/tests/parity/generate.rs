//! The generation sampler vs `validation/fixtures/generate` (the reference's `GenerationSampler`
//! on the tiny `fourm/swiglu_qknorm_nobias` transformer):
//!
//! * exact: single-pass argmax tokens (and that pass's logits to 1e-5); MaskGIT and ROAR runs fed
//!   the reference's draws (same uniform numbers and ROAR keys): same tokens revealed at the same
//!   steps, except where the reference's recorded decision margin shows float noise could flip
//!   it ([`assert_generation_eq`]); the schedules (token counts, temperatures) of
//!   `build_chained_generation_schedules`;
//! * statistical: our own seeded draws against the reference's native torch randomness, per
//!   position token frequencies of many samples of one object (chi-square homogeneity test).

use aion_model::fourm::generate::{
    Draws, Filter, Schedule, Scheme, SeededDraws, TemperatureSchedule, TokenSchedule,
};
use aion_model::fourm::{Aion, TokenInput};
use burn::tensor::backend::Backend;
use burn::tensor::{Bool, Int, Tensor, TensorData};
use serde_json::Value;

use crate::common::{DecisionMargins, Fixture, assert_close, assert_generation_eq, fixtures_dir};
use crate::fourm::{ROWS, inputs, io, load, modality};

const VARIANT: &str = "swiglu_qknorm_nobias";

/// Decision margin (logit units, a worst-case first-order bound: see the fixture's `Trace`)
/// within which our logits' float noise may flip a draw or an argmax: twice the 1e-5 to which the
/// single-pass logits are compared.
const MARGIN_TOL: f32 = 2e-5;

fn cases() -> Value {
    let path = fixtures_dir().join("generate/cases.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn fixture() -> Fixture {
    Fixture::open("generate", "io.safetensors")
}

fn keys(case: &Value) -> Vec<&str> {
    case["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect()
}

/// The reference's draws: `U[row, step, position]` and ROAR keys `K[step, position]`.
struct Recorded {
    u: Vec<f32>,
    k: Vec<f32>,
    steps: usize,
    n: usize,
}

impl Draws for Recorded {
    fn token_uniform(&self, row: usize, step: usize, position: usize) -> f64 {
        f64::from(self.u[(row * self.steps + step) * self.n + position])
    }
    fn order_key(&self, _row: usize, step: usize, position: usize) -> f64 {
        f64::from(self.k[step * self.n + position])
    }
}

/// Our schedule for a case's parameters.
fn our_schedule(case: &Value, total: usize) -> Schedule {
    let steps = case["steps"].as_u64().unwrap() as usize;
    let t = case["temperature"].as_f64().unwrap();
    let temps: TemperatureSchedule = case["temperature_schedule"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    match case["scheme"].as_str().unwrap() {
        "maskgit" => {
            let tokens = match case["token_schedule"].as_str().unwrap() {
                "cosine" => TokenSchedule::Cosine,
                _ => TokenSchedule::Linear,
            };
            Schedule::maskgit(steps, total, tokens, t, temps).unwrap()
        }
        _ => Schedule::roar(steps, total, t, temps).unwrap(),
    }
}

fn single_pass_argmax_matches_the_reference<B: Backend>(device: &B::Device) {
    let model = load::<B>(VARIANT, device);
    let (cases, mut fx, mut fio) = (cases(), fixture(), io(VARIANT));
    for name in ["spectrum", "image", "z"] {
        let case = &cases[format!("single.{name}")];
        let target = modality(case["target"].as_str().unwrap());
        let inp = inputs::<B>(&mut fio, &keys(case), true, 0..ROWS, device);
        let n = target.num_tokens();
        let g = model
            .generate(
                &inp,
                target,
                &Schedule::single_pass(n, 0.0),
                Filter::default(),
                &SeededDraws::new(0, (0..ROWS).map(|r| (r as i64, 0)).collect()),
            )
            .unwrap();
        let (_, want) = fx.i64(&format!("single.{name}.tokens"));
        assert!(g.step.iter().all(|&s| s == 0));
        let zeros = vec![0i64; want.len()];
        assert_generation_eq(
            &format!("single-pass argmax {name}"),
            &g.tokens,
            &want,
            &zeros,
            &zeros,
            n,
            &DecisionMargins::read(&mut fx, &format!("single.{name}")),
            MARGIN_TOL,
        );
        let positions: Vec<usize> = (0..ROWS).flat_map(|_| 0..n).collect();
        let logits = model
            .generation_logits(&inp, target, &[], &positions)
            .unwrap();
        let [_, _, v] = logits.dims();
        let (got, want) = if n == 1 {
            (logits, fx.f32(&format!("single.{name}.logits")).1)
        } else {
            (
                logits.narrow(2, 0, 128.min(v)),
                fx.f32(&format!("single.{name}.logits_head")).1,
            )
        };
        let got: Vec<f32> = got.into_data().convert::<f32>().to_vec().unwrap();
        assert_close(
            &format!("single-pass logits {name}"),
            &got,
            &want,
            1e-5,
            0.0,
        );
    }
}
crate::backend_test!(single_pass_argmax, single_pass_argmax_matches_the_reference);

fn recorded_draws_give_the_reference_tokens<B: Backend>(device: &B::Device) {
    let model = load::<B>(VARIANT, device);
    let (cases, mut fx, mut fio) = (cases(), fixture(), io(VARIANT));
    let mut names: Vec<&String> = cases
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| k.starts_with("case."))
        .collect();
    names.sort();
    assert!(names.len() >= 7, "fixture cases: {names:?}");
    for name in names {
        let case = &cases[name.as_str()];
        let target = modality(case["target"].as_str().unwrap());
        let n = target.num_tokens();
        let schedule = our_schedule(case, n);
        let want_sched: Vec<(usize, f64)> = case["schedule"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| (s[0].as_u64().unwrap() as usize, s[1].as_f64().unwrap()))
            .collect();
        assert_eq!(schedule.steps.len(), want_sched.len(), "{name}: steps");
        for (s, (tok, t)) in schedule.steps.iter().zip(&want_sched) {
            assert_eq!(s.tokens, *tok, "{name}: tokens per step");
            assert!(
                (s.temperature - t).abs() <= 1e-12 * t.abs(),
                "{name}: temperature {} vs {t}",
                s.temperature
            );
        }
        let (ushape, u) = fx.f32(&format!("{name}.U"));
        let k = if schedule.scheme == Scheme::Roar {
            fx.f32(&format!("{name}.K")).1
        } else {
            Vec::new()
        };
        let draws = Recorded {
            u,
            k,
            steps: ushape[1],
            n,
        };
        let filter = Filter {
            top_k: case["top_k"].as_u64().unwrap() as usize,
            top_p: case["top_p"].as_f64().unwrap(),
        };
        let inp = inputs::<B>(&mut fio, &keys(case), true, 0..ROWS, device);
        let g = model
            .generate(&inp, target, &schedule, filter, &draws)
            .unwrap();
        let (_, want) = fx.i64(&format!("{name}.tokens"));
        let (_, want_steps) = fx.i64(&format!("{name}.steps"));
        let got_steps: Vec<i64> = g.step.iter().map(|&s| i64::from(s)).collect();
        assert_generation_eq(
            name,
            &g.tokens,
            &want,
            &got_steps,
            &want_steps,
            n,
            &DecisionMargins::read(&mut fx, name),
            MARGIN_TOL,
        );
    }
}
crate::backend_test!(recorded_draws, recorded_draws_give_the_reference_tokens);

#[test]
fn schedules_match_build_chained_generation_schedules() {
    let path = fixtures_dir().join("generate/schedules.json");
    let grid: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let (mut same, mut refused) = (0, 0);
    for e in grid.as_array().unwrap() {
        let want: Vec<i64> = serde_json::from_value(e["tokens"].clone()).unwrap();
        let total = e["total"].as_u64().unwrap() as usize;
        let steps = e["steps"].as_u64().unwrap() as usize;
        let t = e["temperature"].as_f64().unwrap();
        let temps: TemperatureSchedule =
            e["temperature_schedule"].as_str().unwrap().parse().unwrap();
        let ours = match (e["scheme"].as_str().unwrap(), e["token_schedule"].as_str()) {
            ("maskgit", Some("cosine")) => {
                Schedule::maskgit(steps, total, TokenSchedule::Cosine, t, temps)
            }
            ("maskgit", _) => Schedule::maskgit(steps, total, TokenSchedule::Linear, t, temps),
            _ => Schedule::roar(steps, total, t, temps),
        };
        if want.iter().any(|&x| x < 0) {
            assert!(ours.is_err(), "{e}: negative step accepted");
            refused += 1;
            continue;
        }
        let ours = ours.unwrap_or_else(|err| panic!("{e}: {err}"));
        let tokens: Vec<i64> = ours.steps.iter().map(|s| s.tokens as i64).collect();
        assert_eq!(tokens, want, "{e}");
        for (s, w) in ours.steps.iter().zip(e["temperatures"].as_array().unwrap()) {
            let w = w.as_f64().unwrap();
            assert!(
                (s.temperature - w).abs() <= 1e-12 * w.abs().max(1e-9),
                "{e}: temperature {} vs {w}",
                s.temperature
            );
        }
        same += 1;
    }
    eprintln!(
        "[parity] schedules: {same} identical to the reference, {refused} refused (the reference's \
         cosine schedule gives a negative last step)"
    );
    assert!(same > 400);
}

/// Per position, the two-sample chi-square homogeneity statistic of token counts (categories
/// with fewer than 10 samples in both sets together are pooled); summed over positions.
/// Returns (statistic, degrees of freedom, mean total-variation distance).
fn chi_square(a: &[i64], b: &[i64], n: usize) -> (f64, usize, f64) {
    use std::collections::BTreeMap;
    let (ra, rb) = (a.len() / n, b.len() / n);
    let (na, nb) = (ra as f64, rb as f64);
    let (mut stat, mut dof, mut tv) = (0.0, 0usize, 0.0);
    for p in 0..n {
        let mut counts: BTreeMap<i64, (f64, f64)> = BTreeMap::new();
        for r in 0..ra {
            counts.entry(a[r * n + p]).or_default().0 += 1.0;
        }
        for r in 0..rb {
            counts.entry(b[r * n + p]).or_default().1 += 1.0;
        }
        tv += 0.5
            * counts
                .values()
                .map(|&(x, y)| (x / na - y / nb).abs())
                .sum::<f64>();
        let mut bins: Vec<(f64, f64)> = Vec::new();
        let mut other = (0.0, 0.0);
        for &(x, y) in counts.values() {
            if x + y < 10.0 {
                other = (other.0 + x, other.1 + y);
            } else {
                bins.push((x, y));
            }
        }
        if other.0 + other.1 > 0.0 {
            if other.0 + other.1 < 10.0 && !bins.is_empty() {
                let smallest = (0..bins.len())
                    .min_by(|&i, &j| (bins[i].0 + bins[i].1).total_cmp(&(bins[j].0 + bins[j].1)))
                    .unwrap();
                bins[smallest].0 += other.0;
                bins[smallest].1 += other.1;
            } else {
                bins.push(other);
            }
        }
        for &(x, y) in &bins {
            stat += (x * nb - y * na).powi(2) / (na * nb * (x + y));
        }
        dof += bins.len().saturating_sub(1);
    }
    (stat, dof, tv / n as f64)
}

/// Wilson–Hilferty: the standard normal deviate of a chi-square statistic.
fn z_score(stat: f64, dof: usize) -> f64 {
    let k = dof as f64;
    let c = 2.0 / (9.0 * k);
    ((stat / k).cbrt() - (1.0 - c)) / c.sqrt()
}

/// Largest z accepted: one-sided p ≈ 3e-5 for a true chi-square; the per-position statistics
/// are not independent (tokens of one sample condition each other), so the margin is wide.
const Z_MAX: f64 = 4.0;

#[test]
fn seeded_sampling_matches_the_reference_distribution() {
    type B = burn::backend::NdArray<f32>;
    let device = Default::default();
    let model: Aion<B> = load(VARIANT, &device);
    let (cases, mut fx, mut fio) = (cases(), fixture(), io(VARIANT));
    let case = &cases["native"];
    let target = modality(case["target"].as_str().unwrap());
    let n = target.num_tokens();
    let r = case["samples"].as_u64().unwrap() as usize;
    let one = inputs::<B>(&mut fio, &keys(case), true, 0..1, &device);
    let repeated: Vec<TokenInput<B>> = one
        .iter()
        .map(|i| {
            let k = i.ids.dims()[1];
            let ids: Vec<i64> = i.ids.clone().into_data().convert::<i64>().to_vec().unwrap();
            let ids = ids.repeat(r);
            let mut t = TokenInput::new(
                &i.modality,
                Tensor::<B, 2, Int>::from_data(TensorData::new(ids, [r, k]), &device),
            );
            if let Some(m) = &i.mask {
                let m: Vec<bool> = m.clone().into_data().convert::<bool>().to_vec().unwrap();
                t = t.with_mask(Tensor::<B, 2, Bool>::from_data(
                    TensorData::new(m.repeat(r), [r, k]),
                    &device,
                ));
            }
            t
        })
        .collect();
    let filter = Filter {
        top_k: case["top_k"].as_u64().unwrap() as usize,
        top_p: 0.0,
    };
    let t = case["temperature"].as_f64().unwrap();
    let steps = |s: &str| case["steps"][s].as_u64().unwrap() as usize;
    let draws = SeededDraws::new(2025, (0..r).map(|i| (i as i64, 0)).collect());
    let run = |schedule: Schedule| {
        model
            .generate(&repeated, target, &schedule, filter, &draws)
            .unwrap()
            .tokens
    };
    let constant = TemperatureSchedule::Constant;
    let ours = [
        (
            "maskgit",
            run(
                Schedule::maskgit(steps("maskgit"), n, TokenSchedule::Cosine, t, constant).unwrap(),
            ),
        ),
        (
            "roar",
            run(Schedule::roar(steps("roar"), n, t, constant).unwrap()),
        ),
        ("single", run(Schedule::single_pass(n, t))),
    ];
    let refs: Vec<(&str, Vec<i64>)> = ["maskgit", "roar", "single"]
        .into_iter()
        .map(|s| (s, fx.i64(&format!("native.{s}")).1))
        .collect();
    for ((name, got), (_, want)) in ours.iter().zip(&refs) {
        let (stat, dof, tv) = chi_square(want, got, n);
        let z = z_score(stat, dof);
        eprintln!(
            "[parity] {name} sampling vs the reference's torch RNG ({r} + {r} samples, {n} \
             positions): chi2 {stat:.1} on {dof} dof, z {z:.2} (bound {Z_MAX}), mean TV {tv:.3}"
        );
        assert!(z < Z_MAX, "{name}: token distributions differ (z {z:.2})");
    }
    // Power: the test tells MaskGIT's confidence-biased tokens from independent sampling.
    let (stat, dof, tv) = chi_square(&refs[2].1, &ours[0].1, n);
    let z = z_score(stat, dof);
    eprintln!(
        "[parity] power check, our maskgit vs the reference's single pass: chi2 {stat:.1} on \
         {dof} dof, z {z:.2}, mean TV {tv:.3}"
    );
    assert!(
        z > 2.0 * Z_MAX,
        "the test cannot tell MaskGIT from single-pass sampling"
    );
}
