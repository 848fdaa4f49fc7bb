//! The weights this crate writes stay bit for bit what they were: the initial state dicts of
//! from-scratch models (so a fine-tune from scratch reproduces with the same seed), saved models,
//! models extended with new modalities and LoRA adapters. The SHA-256 digests below were
//! computed by the code before the one-description refactor of the weights (issue 15, item 3);
//! a digest that changes means a tensor was renamed, reshaped or drawn differently.

use std::path::Path;

use aion_model::codecs::scalar_fit::{BottomK, FitKind, FittedCodec};
use aion_model::export::{read_safetensors, safetensors_bytes, save};
use aion_model::probe::ProbeHead;
use aion_model::train::extend::{NewModality, extended};
use aion_model::train::init::{InitOptions, init_model, init_state_dict};
use aion_model::{Aion, AionConfig};
use burn::module::Param;
use burn::tensor::{Tensor, TensorData};
use sha2::{Digest, Sha256};

use super::{B, fixture_model, sdss_spec, tmp};

fn hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn file_digest(path: &Path) -> String {
    hex(&std::fs::read(path).unwrap())
}

fn opts(seed: u64, ordinal_scalars: bool) -> InitOptions {
    InitOptions {
        seed,
        ordinal_scalars,
    }
}

/// Configurations that exercise every switch of the description: SwiGLU + qk-norm without
/// biases (the released family), GELU with every bias, some biases without a gate, unshared
/// modality embeddings, and modalities that are only inputs or only outputs.
fn configs() -> Vec<(&'static str, AionConfig)> {
    let tiny = AionConfig::tiny();
    let gelu = AionConfig::from_file(
        fixture_model()
            .parent()
            .unwrap()
            .join("gelu_bias/config.json"),
    )
    .unwrap();
    let unshared = AionConfig {
        share_modality_embeddings: false,
        ..AionConfig::tiny()
    };
    // An output-only and an input-only modality (4M keeps separate tables for them).
    let mut one_sided = AionConfig::tiny();
    one_sided.domains_out.push("tok_a_g".into());
    one_sided.domains_in.push("tok_mag_r".into());
    let plain = AionConfig {
        gated_mlp: false,
        qk_norm: true,
        qkv_bias: true,
        proj_bias: false,
        mlp_bias: true,
        norm_bias: true,
        ..AionConfig::tiny()
    };
    vec![
        ("tiny", tiny),
        ("gelu_bias", gelu),
        ("unshared", unshared),
        ("plain", plain),
        ("one_sided", one_sided),
    ]
}

/// Digest of each initial state dict, for seeds 7 (ordinal scalar tables) and 3 (all random).
const INIT: &[(&str, &str, &str)] = &[
    (
        "tiny",
        "64d1b07ff053953b2141420427bbb78887cdd7b66e90c3fb1d8eb1b40cea5402",
        "55ca1b69acf3d39386451e90b7ed92499f6af253750147780ed9a5e79fad36a8",
    ),
    (
        "gelu_bias",
        "2c069aab1cf05c5d13a492d4856ed2a127624c9c5ede2722acdfff0e6353e324",
        "dfe6ba4435e0a6e8254569eb0e4b67151478b7a256fabe3cc4507400cd9574de",
    ),
    (
        "unshared",
        "2e53e9e53994222a15d9ca6e88b3c7e12e5b06673a717d14125fdfedd3deb194",
        "b71601891953034f9516897f6eb51a5f61854618350e78e3890da643e94e8efb",
    ),
    (
        "plain",
        "e87ef4af8c08f4b8e4786a30e9524bee2ea4366f989f0db904992c0550bb945b",
        "4d14daa3aab4b2df185e652e50c1bf2c0fbfd825f9956dd46648828cd4c2ed1b",
    ),
    (
        "one_sided",
        "3f4f76fd268a182b429cbb06825570b43991c2534098647b0e8464e28f3ecac2",
        "7698be6005c8e9f99d2ede3e6d1a8f603f9d4a3f175d931cb930e05c2b2cfb8c",
    ),
];

#[test]
fn initial_state_dicts_are_unchanged() {
    let mut got = Vec::new();
    for (name, cfg) in configs() {
        let a = hex(&safetensors_bytes(
            &init_state_dict(&cfg, opts(7, true)).unwrap(),
            None,
        ));
        let b = hex(&safetensors_bytes(
            &init_state_dict(&cfg, opts(3, false)).unwrap(),
            None,
        ));
        got.push((name, a, b));
    }
    for ((name, a, b), (n, want_a, want_b)) in got.iter().zip(INIT) {
        assert_eq!(name, n);
        assert_eq!(
            a, want_a,
            "{name}: initial state dict (seed 7, ordinal) changed"
        );
        assert_eq!(b, want_b, "{name}: initial state dict (seed 3) changed");
    }
}

/// Digest of `save` for the loaded SwiGLU fixture (with the unkept tensors carried from its
/// file), computed by the code before the refactor.
const SAVED_SWIGLU: &str = "95565094f2c7d37a7b1d13e343ea6466e25c04dc6d1f3a10527b98d77684628c";

/// Saving reproduces the bytes the code before the refactor wrote: for a loaded model (with the
/// unkept tensors carried from its file) every stored tensor exactly, which is what it wrote;
/// for a from-scratch model its initial state dict (pinned above) with the unkept decoder token
/// tables as zeros. And export → reload → export gives the same bytes.
#[test]
fn saved_models_are_unchanged() {
    let dev = Default::default();
    let out = tmp("stable-save");
    for name in ["swiglu_qknorm_nobias", "gelu_bias"] {
        let src = fixture_model().parent().unwrap().join(name);
        let model = Aion::<B>::load(&src, &dev).unwrap();
        let dir = out.join(name);
        save(&model, &dir, Some(&src.join("model.safetensors"))).unwrap();
        let got = file_digest(&dir.join("model.safetensors"));
        let (stored, _) = read_safetensors(&src.join("model.safetensors")).unwrap();
        assert_eq!(
            got,
            hex(&safetensors_bytes(&stored, None)),
            "{name}: saved bytes"
        );
        if name == "swiglu_qknorm_nobias" {
            assert_eq!(got, SAVED_SWIGLU, "{name}: saved bytes changed");
        }
        let again = Aion::<B>::load(&dir, &dev).unwrap();
        let dir2 = out.join(format!("{name}-again"));
        save(&again, &dir2, Some(&dir.join("model.safetensors"))).unwrap();
        assert_eq!(
            std::fs::read(dir.join("model.safetensors")).unwrap(),
            std::fs::read(dir2.join("model.safetensors")).unwrap(),
            "{name}: export → reload → export changed the bytes"
        );
    }
    let cfg = AionConfig::tiny();
    let scratch = init_model::<B>(&cfg, opts(7, true), &dev).unwrap();
    save(&scratch, &out.join("scratch"), None).unwrap();
    let mut want = init_state_dict(&cfg, opts(7, true)).unwrap();
    for t in want.iter_mut().filter(|t| {
        t.name.starts_with("decoder_embeddings.") && t.name.ends_with("token_emb.weight")
    }) {
        t.data.iter_mut().for_each(|v| *v = 0.0);
    }
    assert_eq!(
        file_digest(&out.join("scratch/model.safetensors")),
        hex(&safetensors_bytes(&want, None)),
        "from-scratch model: saved bytes"
    );
    std::fs::remove_dir_all(&out).ok();
}

/// Digests of an extended model (two new modalities; its tensors, not its file: the file's
/// metadata is a hash map written in no fixed order), of fresh LoRA adapters, of a probe head
/// and of fitted scalar codecs (config.json and model.safetensors).
const EXTENDED: &str = "206dc0ef2d0560442db71d3c6154814d696c0778494995b60a8e294a09ca8065";
const LORA: &str = "e5575a58510491d899653ed545a6034fdf04205fa040064a322c991b6dd33c82";
const PROBE: &str = "4d721dbbf0391f9c39c4d9f4a8c92914c25fc76c532a31c92faa5a10b2900915";
const FITTED: &[(&str, &str, &str)] = &[
    (
        "Scalar",
        "77330dd860ad44e81364a4262e2f70137a31aceabc1274ebc2b85a26d8b0ce17",
        "e00cd33b8a83cb6f211bd0e8db971f601cd8ec3f6f4e3d03356bd0e5bebecfaf",
    ),
    (
        "LogScalar",
        "65b1168d3ec5a72cb740acedf3fd0f768d7ce9c375060ea74b99fefd16cc5c15",
        "5a9f1e03b3c3afc91734adbfca281cb9d89e749082ca80b51cd9acfb7271eb77",
    ),
];

#[test]
fn extended_models_lora_probes_and_fitted_codecs_are_unchanged() {
    let new = vec![
        NewModality {
            spec: sdss_spec("tok_test_stable_u", 64),
            input: true,
            output: true,
        },
        NewModality {
            spec: sdss_spec("tok_test_stable_g", 32),
            input: false,
            output: true,
        },
    ];
    let (_, bytes, _) = extended(
        &aion_model::ModelDir::open(&fixture_model()).unwrap(),
        &new,
        opts(5, true),
    )
    .unwrap();
    let out = tmp("stable-extended");
    std::fs::write(out.join("m.safetensors"), &bytes).unwrap();
    let (tensors, _) = read_safetensors(&out.join("m.safetensors")).unwrap();
    let ext = hex(&safetensors_bytes(&tensors, None));

    let dev = Default::default();
    let (_, lora) = super::fixture_lora(&dev);
    let (tensors, _) = lora.tensors();
    let adapters = hex(&safetensors_bytes(&tensors, None));

    let lin = |i: usize, o: usize, k: f32| {
        let w = |n: usize, k: f32| -> Vec<f32> { (0..n).map(|j| (j as f32 * k).sin()).collect() };
        aion_model::nn::Linear::<B> {
            weight: Param::from_tensor(Tensor::from_data(
                TensorData::new(w(i * o, k), [i, o]),
                &dev,
            )),
            bias: Some(Param::from_tensor(Tensor::from_data(
                TensorData::new(w(o, k + 1.0), [o]),
                &dev,
            ))),
        }
    };
    let head = ProbeHead {
        hidden: Some(lin(5, 3, 0.3)),
        out: lin(3, 2, 0.7),
    };
    let probe = hex(&safetensors_bytes(&head.tensors(), None));

    let mut fitted = Vec::new();
    for kind in [
        FitKind::Scalar,
        FitKind::LogScalar {
            min_log_value: -3.0,
        },
    ] {
        let mut sample = BottomK::new(300, 11);
        for r in 0..1000u64 {
            if let Some(v) = kind.reservoir_value(((r as f32) * 0.37).sin() * 50.0 + 40.0) {
                sample.offer(r, v);
            }
        }
        let f = FittedCodec::from_sample("EBV", kind, &sample, 256).unwrap();
        let dir = out.join(kind.name());
        f.write_hub(&dir).unwrap();
        fitted.push((
            kind.name(),
            file_digest(&dir.join("config.json")),
            file_digest(&dir.join("model.safetensors")),
        ));
    }
    assert_eq!(ext, EXTENDED, "extended model changed");
    assert_eq!(adapters, LORA, "LoRA adapters changed");
    assert_eq!(probe, PROBE, "probe head tensors changed");
    for ((kind, c, m), (k, want_c, want_m)) in fitted.iter().zip(FITTED) {
        assert_eq!(kind, k);
        assert_eq!(c, want_c, "{kind}: fitted codec config.json changed");
        assert_eq!(m, want_m, "{kind}: fitted codec model.safetensors changed");
    }
    std::fs::remove_dir_all(&out).ok();
}
