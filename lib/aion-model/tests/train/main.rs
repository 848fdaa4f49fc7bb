//! Tests of the training support (feature `train`): export is the inverse of loading,
//! from-scratch models load strictly, new modalities leave existing weights untouched, LoRA and
//! probe heads round-trip, and a few optimiser steps learn.

use std::path::{Path, PathBuf};

use aion_model::export::{NamedTensor, read_safetensors, save};
use aion_model::fourm::{DecoderMode, TokenInput};
use aion_model::lora::{LoraBlocks, LoraConfig, LoraSet, LoraTargets};
use aion_model::modality::{ExtraModality, ModalityTable, by_token_key};
use aion_model::probe::{ProbeConfig, ProbeHead, ProbePrediction, ProbeTask};
use aion_model::train::extend::{NewModality, NewRole, add_modalities, extended_with_roles};
use aion_model::train::init::{InitOptions, init_model, init_state_dict};
use aion_model::{Aion, AionConfig};
use burn::tensor::{Int, Tensor, TensorData};
use burn_ndarray::NdArray;

mod stable;

type B = NdArray<f32>;

fn fixture_model() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../validation/fixtures/fourm/swiglu_qknorm_nobias")
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("aion-train-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn ids(key: &str, rows: &[i64]) -> TokenInput<B> {
    ids_in(&ModalityTable::builtin(), key, rows)
}

/// [`ids`] of a modality of `table` (a model's extra modalities).
fn ids_in(table: &ModalityTable, key: &str, rows: &[i64]) -> TokenInput<B> {
    let m = table.get(key).unwrap();
    let (n, vocab) = (m.num_tokens(), m.vocab as i64);
    let v: Vec<i64> = rows
        .iter()
        .flat_map(|&r| (0..n).map(move |j| (r + j as i64) % vocab))
        .collect();
    TokenInput::new(
        m,
        Tensor::<B, 2, Int>::from_data(TensorData::new(v, [rows.len(), n]), &Default::default()),
    )
}

fn z_logits(model: &Aion<B>, inputs: &[TokenInput<B>]) -> Vec<f32> {
    let z = by_token_key("tok_z").unwrap();
    model.predict(inputs, &[z], DecoderMode::Joint)[0]
        .clone()
        .into_data()
        .to_vec()
        .unwrap()
}

/// The fixture model with LoRA adapters (rank 2, alpha 4, on every target of every block;
/// seed 3).
fn fixture_lora(dev: &burn_ndarray::NdArrayDevice) -> (Aion<B>, LoraSet<B>) {
    let model = Aion::<B>::load(&fixture_model(), dev).unwrap();
    let cfg = LoraConfig {
        rank: 2,
        alpha: 4.0,
        targets: LoraTargets::All,
        blocks: LoraBlocks::all(),
    };
    let lora = LoraSet::<B>::init(&model, &cfg, 3, dev).unwrap();
    (model, lora)
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn export_is_the_inverse_of_loading() {
    let dev = Default::default();
    let src = fixture_model();
    let model = Aion::<B>::load(&src, &dev).unwrap();
    let out = tmp("export");
    save(&model, &out, Some(&src.join("model.safetensors"))).unwrap();
    let (want, _) = read_safetensors(&src.join("model.safetensors")).unwrap();
    let (got, _) = read_safetensors(&out.join("model.safetensors")).unwrap();
    let names = |v: &[aion_model::export::NamedTensor]| {
        v.iter().map(|t| t.name.clone()).collect::<Vec<_>>()
    };
    assert_eq!(names(&got), names(&want));
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g.shape, w.shape, "{}", g.name);
        assert!(
            g.data
                .iter()
                .zip(&w.data)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "{} differs",
            g.name
        );
    }
    let again = Aion::<B>::load(&out, &dev).unwrap();
    assert_eq!(again.config(), model.config());
    std::fs::remove_dir_all(&out).ok();
}

#[test]
fn from_scratch_models_load_strictly_and_reproducibly() {
    let dev = Default::default();
    let cfg = AionConfig::tiny();
    let opts = InitOptions {
        seed: 7,
        ordinal_scalars: true,
    };
    let a = init_model::<B>(&cfg, opts, &dev).unwrap();
    let b = init_model::<B>(&cfg, opts, &dev).unwrap();
    let inputs = [ids("tok_flux_g", &[1, 500]), ids("tok_ebv", &[3, 9])];
    assert_eq!(z_logits(&a, &inputs), z_logits(&b, &inputs));
    let out = tmp("scratch");
    save(&a, &out, None).unwrap();
    let c = Aion::<B>::load(&out, &dev).unwrap();
    assert_eq!(z_logits(&c, &inputs), z_logits(&a, &inputs));
    let other = init_model::<B>(&cfg, InitOptions { seed: 8, ..opts }, &dev).unwrap();
    assert_ne!(z_logits(&other, &inputs), z_logits(&a, &inputs));
    std::fs::remove_dir_all(&out).ok();
}

#[test]
fn sincos_tables_equal_the_reference_buffers() {
    // The fixture's position tables were built by the reference; ours must match them.
    let cfg = AionConfig::from_file(fixture_model().join("config.json")).unwrap();
    let ours = init_state_dict(
        &cfg,
        InitOptions {
            seed: 0,
            ordinal_scalars: false,
        },
    )
    .unwrap();
    let (theirs, _) = read_safetensors(&fixture_model().join("model.safetensors")).unwrap();
    let mut n = 0;
    for t in theirs.iter().filter(|t| t.name.ends_with("pos_emb")) {
        let o = ours
            .iter()
            .find(|o| o.name == t.name)
            .unwrap_or_else(|| panic!("{}", t.name));
        assert_eq!(o.shape, t.shape, "{}", t.name);
        let d = max_diff(&o.data, &t.data);
        assert!(d < 2e-5, "{}: max diff {d}", t.name);
        n += 1;
    }
    assert!(n >= 8, "{n} tables checked");
}

/// Every tensor of `before` is in `after` with the same name, shape and bits.
fn assert_kept_bit_for_bit(before: &[NamedTensor], after: &[NamedTensor]) {
    for t in before {
        let a = after.iter().find(|a| a.name == t.name).unwrap();
        assert!(
            a.shape == t.shape
                && a.data
                    .iter()
                    .zip(&t.data)
                    .all(|(x, y)| x.to_bits() == y.to_bits()),
            "{} changed",
            t.name
        );
    }
}

fn sdss_spec(key: &str, vocab: usize) -> ExtraModality {
    ExtraModality {
        token_key: key.into(),
        codec: "Scalar".into(),
        codec_dir: key.trim_start_matches("tok_").into(),
        vocab,
        tokens: 1,
        dataset: key.trim_start_matches("tok_").into(),
        class_name: None,
        units: None,
        label: None,
    }
}

#[test]
fn new_modalities_leave_existing_weights_untouched() {
    let dev = Default::default();
    let src = fixture_model();
    let out = tmp("extend");
    let new = vec![
        NewModality {
            spec: sdss_spec("tok_test_ext_u", 64),
            input: true,
            output: true,
        },
        NewModality {
            spec: sdss_spec("tok_test_ext_g", 32),
            input: true,
            output: false,
        },
    ];
    let cfg = add_modalities(
        &src,
        &out,
        &new,
        InitOptions {
            seed: 1,
            ordinal_scalars: true,
        },
    )
    .unwrap();
    assert!(
        cfg.domains_in
            .ends_with(&["tok_test_ext_u".to_string(), "tok_test_ext_g".to_string()])
    );
    assert!(cfg.domains_out.last().unwrap() == "tok_test_ext_u");
    let (before, _) = read_safetensors(&src.join("model.safetensors")).unwrap();
    let (after, _) = read_safetensors(&out.join("model.safetensors")).unwrap();
    assert_kept_bit_for_bit(&before, &after);
    assert!(
        after
            .iter()
            .any(|t| t.name == "encoder_embeddings.tok_test_ext_u.token_emb.weight")
    );
    // The extended model loads strictly (registering the modalities from modalities.json) and
    // predicts exactly as before from the old inputs.
    let old = Aion::<B>::load(&src, &dev).unwrap();
    let ext = Aion::<B>::load(&out, &dev).unwrap();
    let inputs = [ids("tok_flux_g", &[1, 500]), ids("tok_ebv", &[3, 9])];
    assert_eq!(z_logits(&ext, &inputs), z_logits(&old, &inputs));
    // And takes the new modality as an input.
    let with_new = [
        ids("tok_flux_g", &[1, 500]),
        ids_in(&ext.config().modalities, "tok_test_ext_u", &[3, 60]),
    ];
    assert_eq!(z_logits(&ext, &with_new).len(), 2 * 1025);
    std::fs::remove_dir_all(&out).ok();
}

#[test]
fn a_backbone_without_redshift_gets_it_as_a_new_target() {
    // A model whose outputs lack tok_z (as one pre-trained on photometry only): the run gives
    // it a decoder embedding and head for tok_z; an input role it already has stays as it is.
    let dev = Default::default();
    let mut cfg = AionConfig::tiny();
    cfg.domains_in = vec!["tok_flux_g".into(), "tok_ebv".into()];
    cfg.domains_out = vec!["tok_flux_g".into(), "tok_ebv".into()];
    let opts = InitOptions {
        seed: 5,
        ordinal_scalars: true,
    };
    let src = tmp("roles");
    save(&init_model::<B>(&cfg, opts, &dev).unwrap(), &src, None).unwrap();
    let roles = [
        NewRole {
            token_key: "tok_z".into(),
            input: false,
            output: true,
        },
        NewRole {
            token_key: "tok_flux_g".into(),
            input: true,
            output: false,
        },
    ];
    let dir = aion_model::ModelDir::open(&src).unwrap();
    let (ext_cfg, bytes, _) = extended_with_roles(&dir, &[], &roles, opts).unwrap();
    assert_eq!(ext_cfg.domains_in, cfg.domains_in);
    assert_eq!(
        ext_cfg.domains_out,
        ["tok_flux_g", "tok_ebv", "tok_z"].map(String::from)
    );
    let (before, _) = read_safetensors(&src.join("model.safetensors")).unwrap();
    let out = tmp("roles-out");
    std::fs::write(out.join("model.safetensors"), &bytes).unwrap();
    let (after, _) = read_safetensors(&out.join("model.safetensors")).unwrap();
    assert_kept_bit_for_bit(&before, &after);
    let added: Vec<&str> = after
        .iter()
        .filter(|a| !before.iter().any(|b| b.name == a.name))
        .map(|a| a.name.as_str())
        .collect();
    assert!(
        !added.is_empty() && added.iter().all(|n| n.contains("tok_z")),
        "{added:?}"
    );
    // The extended weights load strictly and predict redshift from the old inputs.
    let mut w = aion_model::weights::WeightFile::from_bytes("extended", bytes).unwrap();
    let ext = Aion::<B>::from_weights(ext_cfg, &mut w, &dev).unwrap();
    w.finish().unwrap();
    let inputs = [ids("tok_flux_g", &[1, 500]), ids("tok_ebv", &[3, 9])];
    let z = z_logits(&ext, &inputs);
    assert_eq!(z.len(), 2 * 1025);
    assert!(z.iter().all(|v| v.is_finite()));
    // Asking for a modality the table does not know is an error that names it.
    let unknown = NewRole {
        token_key: "tok_nonesuch".into(),
        input: true,
        output: false,
    };
    let e = extended_with_roles(&dir, &[], &[unknown], opts).unwrap_err();
    assert!(e.to_string().contains("tok_nonesuch"), "{e}");
    std::fs::remove_dir_all(&src).ok();
    std::fs::remove_dir_all(&out).ok();
}

#[test]
fn lora_starts_as_identity_fuses_and_round_trips() {
    let dev = Default::default();
    let (model, mut lora) = fixture_lora(&dev);
    assert_eq!(lora.paths.len(), 2 * (2 + 3) + 2 * (2 + 3 + 3));
    let inputs = [ids("tok_flux_g", &[1, 500]), ids("tok_ebv", &[3, 9])];
    assert_eq!(
        z_logits(&lora.apply(&model), &inputs),
        z_logits(&model, &inputs)
    );
    // Non-zero up: the adapted qkv weight is W + s·D·U.
    for a in &mut lora.adapters {
        let [r, o] = a.up.dims();
        let v: Vec<f32> = (0..r * o).map(|i| ((i % 7) as f32 - 3.0) * 0.01).collect();
        a.up =
            burn::module::Param::from_tensor(Tensor::from_data(TensorData::new(v, [r, o]), &dev));
    }
    let fused = lora.apply(&model);
    let qkv0 = |m: &Aion<B>| -> Vec<f32> {
        let w = m.encoder[0].attn.qkv.weight.val();
        w.into_data().to_vec().unwrap()
    };
    let (w0, w1) = (qkv0(&model), qkv0(&fused));
    let a = &lora.adapters[0];
    let delta: Vec<f32> = a
        .down
        .val()
        .matmul(a.up.val())
        .mul_scalar(2.0)
        .into_data()
        .to_vec()
        .unwrap();
    let expect: Vec<f32> = w0.iter().zip(&delta).map(|(w, d)| w + d).collect();
    assert!(max_diff(&w1, &expect) < 1e-6);
    assert_ne!(z_logits(&fused, &inputs), z_logits(&model, &inputs));
    let out = tmp("lora");
    lora.save(&out.join("adapter.safetensors")).unwrap();
    let back = LoraSet::<B>::load(&out.join("adapter.safetensors"), &model, &dev).unwrap();
    assert_eq!(back.paths, lora.paths);
    assert_eq!(
        z_logits(&back.apply(&model), &inputs),
        z_logits(&fused, &inputs)
    );
    let (t, meta) = read_safetensors(&out.join("adapter.safetensors")).unwrap();
    assert_eq!(meta["rank"], "2");
    assert!(
        t.iter()
            .any(|t| t.name == "encoder.0.attn.qkv.lora_down.weight" && t.shape == vec![6, 64])
    );
    std::fs::remove_dir_all(&out).ok();
}

#[test]
fn probe_heads_round_trip() {
    let dev = Default::default();
    let mut cfg = ProbeConfig::new(ProbeTask::Regression, 4, Some(3), 2);
    cfg.target = "Z".into();
    cfg.target_mean = 0.1;
    cfg.target_std = 0.05;
    let w = |n: usize, k: f32| -> Vec<f32> { (0..n).map(|i| (i as f32 * k).sin() * 0.5).collect() };
    let lin = |i: usize, o: usize, k| aion_model::nn::Linear::<B> {
        weight: burn::module::Param::from_tensor(Tensor::from_data(
            TensorData::new(w(i * o, k), [i, o]),
            &dev,
        )),
        bias: Some(burn::module::Param::from_tensor(Tensor::from_data(
            TensorData::new(w(o, k + 1.0), [o]),
            &dev,
        ))),
    };
    let head = ProbeHead {
        hidden: Some(lin(4, 3, 0.3)),
        out: lin(3, 2, 0.7),
    };
    let dir = tmp("probe");
    head.save(&cfg, &dir).unwrap();
    let (back, bcfg) = ProbeHead::<B>::load(&dir, &dev).unwrap();
    assert_eq!(bcfg, cfg);
    let x = Tensor::<B, 2>::from_data(TensorData::new(w(8, 0.9), [2, 4]), &dev);
    let (a, b) = (head.predict(&cfg, x.clone()), back.predict(&bcfg, x));
    assert_eq!(a, b);
    let ProbePrediction::Gaussian { mean, sigma } = a else {
        panic!()
    };
    assert_eq!(mean.len(), 2);
    assert!(sigma.iter().all(|s| *s > 0.0));
    std::fs::remove_dir_all(&dir).ok();
    let _ = Path::new("");
}

#[test]
fn a_few_adamw_steps_learn_a_target() {
    use aion_model::train::adamw::{AdamW, AdamWConfig, clip_global_norm};
    use aion_model::train::objective::{ModalityBatch, token_loss};
    use aion_model::train::params;
    type A = burn::backend::Autodiff<NdArray<f32>>;
    let dev = Default::default();
    let mut cfg = AionConfig::tiny();
    cfg.domains_in = vec!["tok_ebv".into()];
    cfg.domains_out = vec!["tok_z".into()];
    let mut model = init_model::<A>(
        &cfg,
        InitOptions {
            seed: 5,
            ordinal_scalars: true,
        },
        &dev,
    )
    .unwrap();
    let (ebv, z) = (
        by_token_key("tok_ebv").unwrap(),
        by_token_key("tok_z").unwrap(),
    );
    // z token = 2 × ebv token: a deterministic map to learn.
    let x: Vec<i64> = (0..32).map(|i| i * 13 % 400).collect();
    let batch = vec![
        ModalityBatch {
            modality: ebv.into(),
            ids: x.clone(),
            input: vec![true; 32],
            target_weight: vec![0.0; 32],
            soft_sigma: 0.0,
        },
        ModalityBatch {
            modality: z.into(),
            ids: x.iter().map(|v| 2 * v).collect(),
            input: vec![false; 32],
            target_weight: vec![1.0; 32],
            soft_sigma: 1.0,
        },
    ];
    let flat = params::layout(&model);
    assert!(flat.len > 100_000);
    let mut values = params::values(&model, &flat);
    let decay = flat.decay_mask();
    let mut opt = AdamW::new(AdamWConfig::default(), flat.len);
    let mut losses = Vec::new();
    for _ in 0..15 {
        let (loss, parts) = token_loss(&model, &batch, &dev).unwrap();
        assert_eq!(parts.len(), 1);
        let v: Vec<f32> = loss.clone().inner().into_data().to_vec().unwrap();
        losses.push(v[0] / 32.0);
        let g = loss.backward();
        let mut grads = params::gradients(&model, &flat, &g);
        assert!(grads.iter().any(|&g| g != 0.0));
        clip_global_norm(&mut grads, 1.0);
        opt.step(&mut values, &grads, &decay, 3e-3);
        model = params::assign(model, &flat, &values);
    }
    assert!(losses[14] < 0.7 * losses[0], "{losses:?}");
    assert_eq!(params::values(&model, &flat), values);
}
