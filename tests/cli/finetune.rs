//! `aion-finetune` and `aion-fit-codecs` end to end, on the bundled SDSS catalogue with a very
//! small model (a few steps each, so the suite stays fast): codec fitting for 1 and 2 ranks, the
//! four modes, new modalities on a base model, 1-rank vs 2-rank loss curves, resuming after
//! SIGKILL and after the time-limit signal (also under Slurm).

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use crate::util::*;

fn sdss() -> PathBuf {
    repo().join("data/sdss_mgs/sdss_mgs_train.h5")
}

const MAGS: [&str; 5] = ["u", "g", "r", "i", "z"];

/// A small masked-modelling config from scratch (D 32, 1 + 1 blocks, codebooks of 32).
fn masked_config(steps: u64, extra_train: &str) -> String {
    let mut s = format!(
        "mode = \"masked\"\nseed = 11\ncatalog = [{:?}]\n[model]\ninit = \"tiny\"\ndim = 32\nencoder_depth = 1\ndecoder_depth = 1\nnum_heads = 2\n",
        sdss().display().to_string()
    );
    for b in MAGS {
        s += &format!(
            "[[new_modality]]\ntoken_key = \"tok_mag_{b}_sdss\"\ndataset = \"mag_{b}\"\ncodebook_size = 32\nreservoir_size = 2000\n"
        );
    }
    let keys: Vec<String> = MAGS
        .iter()
        .map(|b| format!("\"tok_mag_{b}_sdss\""))
        .collect();
    s += &format!(
        "[data]\ninputs = [{}]\ntargets = [{}, \"tok_z\"]\nsplit = {{ val = 0.05, test = 0.05 }}\n",
        keys.join(", "),
        keys.join(", ")
    );
    s += "[data.noise]\n";
    for b in MAGS {
        s += &format!("tok_mag_{b}_sdss = \"magerr_{b}\"\n");
    }
    s += &format!(
        "[map]\ntok_z = \"Z\"\n[train]\nsteps = {steps}\nbatch_size = 32\nlr = 3e-3\nwarmup_steps = 2\nmask_ratio = 0.3\nsoft_label_sigma = 1.0\neval_every = 5\ncheckpoint_every = 4\n{extra_train}"
    );
    s
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// `aion-finetune --config C --output O`, one Rayon thread per rank.
fn finetune(launch: Launch, config: &Path, out: &Path, env: &[(&str, &str)]) -> Output {
    let env = [&[("RAYON_NUM_THREADS", "1")], env].concat();
    let args = ["--config", s(config), "--output", s(out)];
    run_tool_env(FINETUNE, launch, &args, &env)
}

/// `(step, loss)` of every training step in `train_log.jsonl`.
fn losses(out: &Path) -> Vec<(u64, f64)> {
    std::fs::read_to_string(out.join("train_log.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v.get("eval").is_none())
        .map(|v| (v["step"].as_u64().unwrap(), v["loss"].as_f64().unwrap()))
        .collect()
}

fn tensors(path: &Path) -> Vec<(String, Vec<f32>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<String> = st.names().into_iter().map(String::from).collect();
    names.sort();
    names
        .into_iter()
        .map(|n| {
            let v = st.tensor(&n).unwrap();
            let f: Vec<f32> = v
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            (n, f)
        })
        .collect()
}

fn max_rel_diff(a: &Path, b: &Path) -> f32 {
    let (ta, tb) = (tensors(a), tensors(b));
    assert_eq!(
        ta.iter().map(|t| &t.0).collect::<Vec<_>>(),
        tb.iter().map(|t| &t.0).collect::<Vec<_>>()
    );
    let mut worst = 0.0f32;
    for ((_, x), (_, y)) in ta.iter().zip(&tb) {
        for (p, q) in x.iter().zip(y) {
            worst = worst.max((p - q).abs() / (1e-3 + p.abs().max(q.abs())));
        }
    }
    worst
}

/// Largest absolute difference between the tensors of two safetensors files.
fn max_abs_diff(a: &Path, b: &Path) -> f32 {
    let (ta, tb) = (tensors(a), tensors(b));
    assert_eq!(ta.len(), tb.len());
    ta.iter()
        .zip(&tb)
        .flat_map(|((_, x), (_, y))| x.iter().zip(y).map(|(p, q)| (p - q).abs()))
        .fold(0.0, f32::max)
}

/// Asserts that the weights of two model folders agree to 1 % (relative, [`max_rel_diff`]): runs
/// that differ in their rank count sum in another order.
fn assert_weights_agree(what: &str, a: &Path, b: &Path) {
    let diff = max_rel_diff(&a.join("model.safetensors"), &b.join("model.safetensors"));
    assert!(diff < 1e-2, "{what}: relative difference {diff}");
}

/// Largest absolute difference between the weights of two model folders.
fn weights_abs_diff(a: &Path, b: &Path) -> f32 {
    max_abs_diff(&a.join("model.safetensors"), &b.join("model.safetensors"))
}

/// Training losses agree to float noise (burn's NdArray backend is not bit-reproducible from
/// run to run: its in-place SIMD reciprocal, used in the backward pass of divisions, depends on
/// buffer alignment; two uninterrupted runs differ by ~1e-7 relative in the loss, ~1e-5 in the
/// weights after 12 steps).
fn assert_same_curve(a: &Path, b: &Path) {
    let (x, y) = (losses(a), losses(b));
    assert_eq!(x.len(), y.len());
    for ((s, p), (_, q)) in x.iter().zip(&y) {
        assert!((p - q).abs() / p.abs() < 1e-5, "step {s}: loss {p} vs {q}");
    }
}

/// The `calibration` attribute of `pred/tok_z/mean` in an aion-predict output, as JSON.
fn calibration_attr(path: &Path) -> serde_json::Value {
    let f = hdf5::File::open(path).unwrap();
    let a: hdf5::types::VarLenUnicode = f
        .dataset("pred/tok_z/mean")
        .unwrap()
        .attr("calibration")
        .unwrap()
        .read_scalar()
        .unwrap();
    serde_json::from_str(a.as_str()).unwrap()
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(
        &std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap()
}

#[test]
fn fit_codecs_are_rank_independent_and_load_in_every_tool() {
    let dir = tempdir();
    let cat = sdss();
    let args = |out: &Path| -> Vec<String> {
        vec![
            "--catalog".into(),
            cat.display().to_string(),
            "--output".into(),
            out.display().to_string(),
            "--column".into(),
            "tok_mag_u_sdss=mag_u".into(),
            "--column".into(),
            "tok_magerr_r_sdss=magerr_r:LogScalar".into(),
            "--codebook-size".into(),
            "64".into(),
            "--reservoir-size".into(),
            "1500".into(),
        ]
    };
    let (one, two) = (dir.path().join("one"), dir.path().join("two"));
    let a1 = args(&one);
    assert_ok(&run_tool(
        FIT,
        Launch::Alone,
        &a1.iter().map(String::as_str).collect::<Vec<_>>(),
    ));
    let a2 = args(&two);
    assert_ok(&run_tool(
        FIT,
        Launch::Mpirun(2),
        &a2.iter().map(String::as_str).collect::<Vec<_>>(),
    ));
    for f in [
        "codecs/mag_u/model.safetensors",
        "codecs/magerr_r/model.safetensors",
        "codecs/mag_u/config.json",
        "modalities.json",
    ] {
        assert_eq!(
            std::fs::read(one.join(f)).unwrap(),
            std::fs::read(two.join(f)).unwrap(),
            "{f} differs between 1 and 2 ranks"
        );
    }
    let cfg = json(&one.join("codecs/magerr_r/config.json"));
    assert_eq!(
        (
            cfg["codebook_size"].as_u64(),
            cfg["reservoir_size"].as_u64()
        ),
        (Some(64), Some(1500))
    );
    assert_eq!(cfg["min_log_value"].as_f64(), Some(-3.0));
    // aion-tokenize loads the model directory (registering its new modalities) and tokenizes.
    let out = dir.path().join("tokens.h5");
    assert_ok(&run_tool(
        TOKENIZE,
        Launch::Alone,
        &[io_args(&one, &cat, &out), vec!["--map", "tok_z=none"]].concat(),
    ));
    let (shape, tok) = read_i64(&out, "tok_mag_u_sdss");
    assert_eq!(shape, vec![5000, 1]);
    assert!(tok.iter().all(|&t| (0..64).contains(&t)));
    // Quantile codec: the 64 tokens are about equally used.
    let top = (0..64)
        .map(|k| tok.iter().filter(|&&t| t == k).count())
        .max()
        .unwrap();
    assert!(top < 200, "most used token has {top} rows");
    let (_, err_tok) = read_i64(&out, "tok_magerr_r_sdss");
    assert!(err_tok.iter().all(|&t| (0..64).contains(&t)));
}

#[test]
fn masked_from_scratch_then_full_lora_probe_and_new_modalities_on_it() {
    let dir = tempdir();
    let d = dir.path();
    let base = d.join("masked");
    let cfg = write(d, "masked.toml", &masked_config(10, ""));
    let log = assert_ok(&finetune(Launch::Alone, &cfg, &base, &[]));
    // Training progress every ceil(10 / 20) = 1 step, with a rate and the time left.
    let steps = log
        .lines()
        .filter(|l| l.contains("INFO  step ") && l.contains("/10 ("))
        .count();
    assert_eq!(steps, 10, "{log}");
    assert!(log.contains("steps/s, ETA"), "{log}");
    for f in [
        "config.json",
        "model.safetensors",
        "modalities.json",
        "codecs/mag_u/model.safetensors",
        "codecs/Z/model.safetensors",
        "train_log.jsonl",
        "learning_curves.png",
        "split.json",
        "finetune.json",
        "eval/test_metrics.json",
        "eval/test_tok_z.png",
    ] {
        assert!(base.join(f).is_file(), "{f} missing");
    }
    // The figures name what they show, with the metric names of aion-predict.
    assert_figure(
        base.join("learning_curves").to_str().unwrap(),
        &[
            "training step",
            "validation",
            "validation σ_NMAD",
            "validation outlier fraction",
            "68 % interval tok_z",
        ],
    );
    assert_figure(
        base.join("eval/test_tok_z").to_str().unwrap(),
        &["spectroscopic redshift z", "PIT = F(z_spec)", "NMAD"],
    );
    assert!(
        !base.join("checkpoint").exists(),
        "checkpoint kept after a finished run"
    );
    let summary = json(&base.join("finetune.json"));
    assert_eq!(summary["finished"], true);
    assert_eq!(summary["steps"], 10);
    for k in [
        "sigma_nmad",
        "outlier_fraction",
        "coverage_68",
        "coverage_95",
        "crps",
    ] {
        assert!(summary["test"]["tok_z"][k].as_f64().unwrap() > 0.0, "{k}");
    }
    assert_eq!(losses(&base).len(), 10);
    let split = json(&base.join("split.json"));
    assert_eq!(split["test"].as_array().unwrap().len(), 250);
    // The redshift posterior is calibrated on the validation rows (temperature scaling) and the
    // temperature recorded in calibration.json and the summary.
    let cal = json(&base.join("calibration.json"));
    let t = cal["targets"]["tok_z"]["temperature"].as_f64().unwrap();
    assert!(t > 0.0 && t.is_finite(), "{cal}");
    assert_eq!(cal["targets"]["tok_z"]["rows"], 250, "{cal}");
    assert_eq!(summary["calibration"], cal);
    // aion-predict applies it: on the test rows, its posterior means are the calibrated ones
    // aion-finetune recorded; without the calibration they differ (T != 1).
    let catalog = sdss();
    let predicted = |name: &str, extra: &[&str]| {
        let out = d.join(name);
        let mut a = io_args(&base, &catalog, &out);
        a.extend(["--target", "tok_z"]);
        a.extend(extra);
        assert_ok(&run_tool(PREDICT, Launch::Alone, &a));
        read_all(&out)["/pred/tok_z/mean"].1.clone()
    };
    let (calibrated, raw) = (
        predicted("cal.h5", &[]),
        predicted("raw.h5", &["--no-calibration"]),
    );
    let csv = std::fs::read_to_string(base.join("eval/test_tok_z.csv")).unwrap();
    let mut moved = 0;
    for line in csv.lines().skip(1) {
        let f: Vec<f64> = line.split(',').map(|x| x.parse().unwrap()).collect();
        let r = f[0] as usize;
        assert!(
            (calibrated[r] - f[2]).abs() < 1e-5,
            "row {r}: aion-predict mean {} vs aion-finetune's calibrated {}",
            calibrated[r],
            f[2]
        );
        moved += usize::from((raw[r] - f[2]).abs() > 1e-4);
    }
    assert!(
        moved > 0,
        "T = {t}: no test mean changed by the calibration"
    );
    // Re-running a finished run does nothing.
    let again = finetune(Launch::Alone, &cfg, &base, &[]);
    assert!(assert_ok(&again).contains("nothing to do"));

    let common = |mode: &str| {
        let keys: Vec<String> = MAGS
            .iter()
            .map(|b| format!("\"tok_mag_{b}_sdss\""))
            .collect();
        format!(
            "mode = \"{mode}\"\nseed = 3\ncatalog = [{:?}]\n[model]\nbase = {:?}\n[data]\ninputs = [{}]\ntargets = [\"tok_z\"]\nsplit = {{ val = 0.05, test = 0.05 }}\n[map]\ntok_z = \"Z\"\n[train]\nsteps = 4\nbatch_size = 32\nwarmup_steps = 1\neval_every = 2\n",
            sdss().display().to_string(),
            base.display().to_string(),
            keys.join(", ")
        )
    };
    // full: supervised on the base; the exported model is a base again.
    let full = d.join("full");
    assert_ok(&finetune(
        Launch::Alone,
        &write(d, "full.toml", &common("full")),
        &full,
        &[],
    ));
    assert_eq!(
        tensors(&full.join("model.safetensors")).len(),
        tensors(&base.join("model.safetensors")).len()
    );
    // An ensemble of the base and the full model (both calibrated, the same codecs): a target's
    // posterior is the mean of the members' calibrated probabilities, so its pdf is the mean of
    // their pdfs and its posterior mean the mean of their means; the output records the members.
    let predicted_pdf = |model: &Path, name: &str, extra: &[&str], launch: Launch| {
        let out = d.join(name);
        let mut a = io_args(model, &catalog, &out);
        a.extend(["--target", "tok_z", "--save-pdf"]);
        a.extend(extra);
        assert_ok(&run_tool(PREDICT, launch, &a));
        let mut all = read_all(&out);
        let (pdf, mean) = (
            all.remove("/pdf/tok_z").unwrap(),
            all.remove("/pred/tok_z/mean"),
        );
        (out, pdf.1, mean.unwrap().1)
    };
    let (_, pdf_a, mean_a) = predicted_pdf(&base, "member_a.h5", &[], Launch::Alone);
    let (_, pdf_b, mean_b) = predicted_pdf(&full, "member_b.h5", &[], Launch::Alone);
    let (ens_out, pdf_e, mean_e) = predicted_pdf(
        &base,
        "ensemble.h5",
        &["--ensemble", s(&full)],
        Launch::Mpirun(2),
    );
    assert_eq!(pdf_e.len(), pdf_a.len());
    let worst_pdf = pdf_e
        .iter()
        .zip(pdf_a.iter().zip(&pdf_b))
        .map(|(e, (a, b))| (e - 0.5 * (a + b)).abs())
        .fold(0.0, f64::max);
    assert!(
        worst_pdf < 1e-6,
        "ensemble pdf vs the members' mean: {worst_pdf}"
    );
    let mut between = 0;
    for (r, (e, (a, b))) in mean_e.iter().zip(mean_a.iter().zip(&mean_b)).enumerate() {
        assert!(
            (e - 0.5 * (a + b)).abs() < 1e-5,
            "row {r}: ensemble mean {e} vs members {a}, {b}"
        );
        between += usize::from(a != b);
    }
    assert!(between > 0, "the two members predict the same means");
    let calibration = calibration_attr(&ens_out);
    let members = calibration["members"].as_array().unwrap();
    assert_eq!(members.len(), 2, "{calibration}");
    assert_eq!(
        members[0]["calibration"]["temperature"],
        cal["targets"]["tok_z"]["temperature"]
    );
    // A member whose codec files are not --model's (here: the same tables, another file) reads
    // the catalogue through its own codecs: the same posteriors as with the original member.
    let other = d.join("own-codecs");
    copy_dir(&full, &other);
    let codec_cfg = other.join("codecs/mag_r/config.json");
    let text = std::fs::read_to_string(&codec_cfg).unwrap();
    std::fs::write(&codec_cfg, format!("{text}\n")).unwrap();
    let (_, pdf_o, _) = predicted_pdf(
        &base,
        "ensemble-own.h5",
        &["--ensemble", s(&other)],
        Launch::Alone,
    );
    let worst = pdf_o
        .iter()
        .zip(&pdf_e)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(worst < 1e-6, "member with its own codec files: {worst}");
    // --save-logits is one model's output: refused before anything is written.
    let refused = |model: &Path, extra: &[&str], name: &str| {
        let out = d.join(name);
        let mut a = io_args(model, &catalog, &out);
        a.extend(["--target", "tok_z"]);
        a.extend(extra);
        let err = assert_fails(&run_tool(PREDICT, Launch::Alone, &a));
        assert!(!out.exists(), "{} written by a refused run", out.display());
        err
    };
    let err = refused(
        &base,
        &["--ensemble", s(&full), "--save-logits"],
        "refused.h5",
    );
    assert_mentions(&err, &["--ensemble", "--save-logits"]);
    // lora: adapters saved, fused model exported; only the adapters changed.
    let lora = d.join("lora");
    let lcfg = common("lora")
        + "[lora]\nrank = 2\nalpha = 4\ntargets = \"all\"\n[calibration]\nmethod = \"none\"\n";
    assert_ok(&finetune(
        Launch::Alone,
        &write(d, "lora.toml", &lcfg),
        &lora,
        &[],
    ));
    let adapter = tensors(&lora.join("adapter.safetensors"));
    assert!(
        adapter
            .iter()
            .any(|(n, _)| n == "decoder.0.cross_attn.kv.lora_up.weight")
    );
    let (b, l) = (
        tensors(&base.join("model.safetensors")),
        tensors(&lora.join("model.safetensors")),
    );
    for ((n, x), (_, y)) in b.iter().zip(&l) {
        let adapted = n.contains(".attn.") || n.contains("_attn.") || n.contains(".mlp.");
        if !adapted || n.contains("norm") {
            assert_eq!(x, y, "{n} changed under LoRA");
        }
    }
    assert_ne!(b, l, "LoRA changed nothing");
    assert!(
        !lora.join("calibration.json").exists(),
        "[calibration] method = \"none\" writes no calibration"
    );
    // probe: the base is copied and a regression head on pooled embeddings written.
    let probe = d.join("probe");
    let pcfg = common("probe").replace("targets = [\"tok_z\"]\n", "")
        + "[probe]\ntarget = \"Z\"\nhidden = 8\n";
    assert_ok(&finetune(
        Launch::Alone,
        &write(d, "probe.toml", &pcfg),
        &probe,
        &[],
    ));
    let head = json(&probe.join("probe/config.json"));
    assert_eq!(
        (
            head["task"].as_str(),
            head["hidden"].as_u64(),
            head["outputs"].as_u64()
        ),
        (Some("regression"), Some(8), Some(2))
    );
    assert!(
        probe.join("probe/model.safetensors").is_file()
            && probe.join("model.safetensors").is_file()
    );
    // The base's token posteriors are unchanged by a probe: its calibration comes along.
    assert_eq!(json(&probe.join("calibration.json")), cal);
    assert!(
        json(&probe.join("eval/test_metrics.json"))["Z"]["n"]
            .as_u64()
            .unwrap()
            == 250
    );
    // ... which aion-predict applies (--probe): on the test rows, the means and σ
    // aion-finetune recorded; every row predicted, with a positive σ.
    let probe_out = d.join("probe.h5");
    assert_ok(&run_tool(
        PREDICT,
        Launch::Mpirun(2),
        &[io_args(&probe, &sdss(), &probe_out), vec!["--probe"]].concat(),
    ));
    let got = read_all(&probe_out);
    let (mean, std) = (&got["/probe/Z/mean"].1, &got["/probe/Z/std"].1);
    assert_eq!(mean.len(), 5000);
    assert!(std.iter().all(|&s| s > 0.0 && s.is_finite()));
    let csv = std::fs::read_to_string(probe.join("eval/test_Z.csv")).unwrap();
    for line in csv.lines().skip(1) {
        let f: Vec<f64> = line.split(',').map(|x| x.parse().unwrap()).collect();
        let r = f[0] as usize;
        assert!(
            (mean[r] - f[2]).abs() <= 1e-5 * f[2].abs().max(1.0),
            "row {r}: aion-predict --probe {} vs aion-finetune {}",
            mean[r],
            f[2]
        );
        assert!(
            f[3].is_finite() && f[3] > 0.0,
            "row {r}: aion-finetune's σ {}",
            f[3]
        );
        assert!(
            (std[r] - f[3]).abs() <= 1e-5 * f[3],
            "row {r}: aion-predict --probe σ {} vs aion-finetune {}",
            std[r],
            f[3]
        );
    }
    let metrics = json(&probe.join("eval/test_metrics.json"));
    assert!(
        metrics["Z"]["coverage_68"].as_f64().unwrap() > 0.0,
        "{metrics}"
    );
    // New modalities on an existing model: a new input column (its codec fitted), the base's
    // weights untouched in the starting model, trained with the full mode.
    let ext = d.join("extended");
    let ecfg = common("full").replace(
        "[data]\ninputs = [",
        "[[new_modality]]\ntoken_key = \"tok_magerr_r_sdss\"\ndataset = \"magerr_r\"\ncodec = \"LogScalar\"\ncodebook_size = 16\n[data]\ninputs = [\"tok_magerr_r_sdss\", ",
    );
    assert_ok(&finetune(
        Launch::Alone,
        &write(d, "ext.toml", &ecfg),
        &ext,
        &[],
    ));
    let ec = json(&ext.join("config.json"));
    assert!(
        ec["domains_in"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k == "tok_magerr_r_sdss")
    );
    assert!(ext.join("codecs/magerr_r/model.safetensors").is_file());
    let m = json(&ext.join("modalities.json"));
    assert_eq!(m["modalities"].as_array().unwrap().len(), 6);
    // An ensemble member that cannot read one of --model's inputs is refused, naming it.
    let err = refused(&ext, &["--ensemble", s(&full)], "refused-ext.h5");
    assert_mentions(&err, &["--ensemble", "tok_magerr_r_sdss"]);
}

#[test]
fn photometry_pretraining_then_redshift_fine_tuning() {
    // Issue 19's "pre-train, then fine-tune": a masked pre-training on the magnitudes alone (no
    // redshift anywhere) and a `full` run on it with redshift as a new target.
    let dir = tempdir();
    let d = dir.path();
    let pre = masked_config(4, "")
        .replace(", \"tok_z\"]", "]")
        .replace("[map]\ntok_z = \"Z\"\n", "");
    assert!(!pre.contains("tok_z"), "{pre}");
    let base = d.join("pretrained");
    assert_ok(&finetune(
        Launch::Alone,
        &write(d, "pre.toml", &pre),
        &base,
        &[],
    ));
    assert!(!base.join("codecs/Z").exists());
    let keys: Vec<String> = MAGS
        .iter()
        .map(|b| format!("\"tok_mag_{b}_sdss\""))
        .collect();
    let full_cfg = format!(
        "mode = \"full\"\nseed = 3\ncatalog = [{:?}]\n[model]\nbase = {:?}\n[data]\ninputs = [{}]\ntargets = [\"tok_z\"]\nsplit = {{ val = 0.05, test = 0.05 }}\n[map]\ntok_z = \"Z\"\n[train]\nsteps = 4\nbatch_size = 32\nwarmup_steps = 1\neval_every = 2\n",
        sdss().display().to_string(),
        base.display().to_string(),
        keys.join(", ")
    );
    let full = d.join("full");
    let log = assert_ok(&finetune(
        Launch::Alone,
        &write(d, "full.toml", &full_cfg),
        &full,
        &[],
    ));
    assert!(
        log.contains("tok_z: new decoder embedding and output head"),
        "{log}"
    );
    // The output has the redshift grid codec and a tok_z head; its test metrics are real numbers.
    assert!(full.join("codecs/Z/model.safetensors").is_file());
    let cfg = json(&full.join("config.json"));
    assert!(
        cfg["domains_out"]
            .as_array()
            .unwrap()
            .contains(&"tok_z".into())
    );
    let summary = json(&full.join("finetune.json"));
    let nmad = summary["test"]["tok_z"]["sigma_nmad"].as_f64().unwrap();
    assert!(nmad.is_finite() && nmad > 0.0, "{summary}");
    // The pre-trained weights were the starting point: every backbone tensor kept its shape.
    let before = tensors(&base.join("model.safetensors"));
    let after = tensors(&full.join("model.safetensors"));
    for (name, v) in &before {
        let a = after.iter().find(|(n, _)| n == name);
        assert!(a.is_some_and(|(_, w)| w.len() == v.len()), "{name}");
    }
    assert!(after.iter().any(|(n, _)| n.contains("tok_z")));
    // aion-predict reads it like any model.
    let (out, catalog) = (d.join("pred.h5"), sdss());
    let mut a = io_args(&full, &catalog, &out);
    a.extend(["--target", "tok_z"]);
    assert_ok(&run_tool(PREDICT, Launch::Alone, &a));
    let mean = read_all(&out)["/pred/tok_z/mean"].1.clone();
    assert_eq!(mean.len(), 5000);
    assert!(
        mean.iter()
            .all(|z| z.is_finite() && (0.0..=1.0).contains(z))
    );
}

#[test]
fn noise_draws_average_over_redrawn_inputs_with_their_own_temperature() {
    // A model trained with [data.noise] gets, at export, a second temperature fitted for the
    // posterior averaged over noise draws of its inputs; aion-predict --noise-draws uses it.
    let dir = tempdir();
    let d = dir.path();
    let base = d.join("model");
    assert_ok(&finetune(
        Launch::Alone,
        &write(d, "m.toml", &masked_config(6, "")),
        &base,
        &[],
    ));
    let cal = json(&base.join("calibration.json"));
    let nd = &cal["targets"]["tok_z"]["noise_draws"];
    assert_eq!(nd["draws"], 16, "{cal}");
    let t_draws = nd["temperature"].as_f64().unwrap();
    assert!(t_draws > 0.0 && t_draws.is_finite(), "{cal}");
    let cov = nd["coverage_68"][1].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&cov), "{cal}");

    // A copy of the catalogue with an all-zero error column (the bundled file stays untouched).
    let cat = d.join("cat.h5");
    std::fs::copy(sdss(), &cat).unwrap();
    {
        let f = hdf5::File::open_rw(&cat).unwrap();
        let n = f.dataset("mag_u").unwrap().shape()[0];
        f.new_dataset_builder()
            .with_data(&ndarray::Array1::<f32>::zeros(n))
            .create("zero_err")
            .unwrap();
    }
    let predicted = |name: &str, extra: &[&str], launch: Launch| {
        let out = d.join(name);
        let mut a = io_args(&base, &cat, &out);
        a.extend(["--target", "tok_z", "--save-pdf"]);
        a.extend(extra);
        let log = assert_ok(&run_tool(PREDICT, launch, &a));
        (out, log)
    };
    let pdf = |p: &Path| read_all(p)["/pdf/tok_z"].1.clone();
    let (clean, _) = predicted("clean.h5", &[], Launch::Alone);
    let (drawn, log) = predicted("drawn.h5", &["--noise-draws", "8"], Launch::Alone);
    assert!(log.contains("averaged over 8 noise draws"), "{log}");
    // The draws move the posteriors, and the temperature is the one fitted for them.
    let (a, b) = (pdf(&clean), pdf(&drawn));
    let moved = a
        .iter()
        .zip(&b)
        .filter(|(x, y)| (*x - *y).abs() > 1e-4)
        .count();
    assert!(moved > 1000, "only {moved} probabilities moved");
    let attr = calibration_attr(&drawn);
    assert_eq!(
        attr["each"]["temperature"].as_f64(),
        Some(t_draws),
        "{attr}"
    );
    assert_eq!(attr["each"]["fitted_for_noise_draws"], true, "{attr}");
    // Every draw of a row depends on the seed and the row only: two ranks with small chunks give
    // the same file; another seed gives other posteriors.
    let (two, _) = predicted(
        "drawn2.h5",
        &["--noise-draws", "8", "--chunk-rows", "700"],
        Launch::Mpirun(2),
    );
    assert_eq!(pdf(&two), b, "1 rank vs 2 ranks");
    let (seed, _) = predicted(
        "seed.h5",
        &["--noise-draws", "8", "--noise-seed", "5"],
        Launch::Alone,
    );
    assert_ne!(pdf(&seed), b);
    // Zero errors redraw nothing: the raw posteriors equal the clean raw ones.
    let (raw, _) = predicted("raw.h5", &["--no-calibration"], Launch::Alone);
    let (zero, _) = predicted(
        "zero.h5",
        &[
            "--no-calibration",
            "--noise-draws",
            "4",
            "--noise",
            "tok_mag_u_sdss=zero_err",
        ],
        Launch::Alone,
    );
    let worst = pdf(&raw)
        .iter()
        .zip(&pdf(&zero))
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max);
    assert!(worst < 1e-6, "zero errors changed a probability by {worst}");
    // Refusals, before anything is written.
    let refused = |extra: &[&str], words: &[&str]| {
        let out = d.join("refused.h5");
        let mut a = io_args(&base, &cat, &out);
        a.extend(["--target", "tok_z"]);
        a.extend(extra);
        let err = assert_fails(&run_tool(PREDICT, Launch::Alone, &a));
        assert_mentions(&err, words);
        assert!(!out.exists());
    };
    refused(
        &["--noise", "tok_mag_u_sdss=zero_err"],
        &["--noise", "--noise-draws"],
    );
    refused(
        &["--noise-draws", "2", "--save-logits"],
        &["--save-logits", "--save-pdf"],
    );
    refused(
        &[
            "--noise-draws",
            "2",
            "--noise",
            "tok_mag_u_sdss=no_such_err",
        ],
        &["no_such_err", "tok_mag_u_sdss", "cat.h5"],
    );
    refused(
        &["--noise-draws", "2", "--noise", "tok_z=zero_err"],
        &["tok_z", "not an input"],
    );
}

#[test]
fn one_and_two_ranks_give_the_same_loss_curve() {
    let dir = tempdir();
    let cfg = write(dir.path(), "c.toml", &masked_config(12, ""));
    let (one, two) = (dir.path().join("one"), dir.path().join("two"));
    assert_ok(&finetune(Launch::Alone, &cfg, &one, &[]));
    assert_ok(&finetune(Launch::Mpirun(2), &cfg, &two, &[]));
    let (a, b) = (losses(&one), losses(&two));
    assert_eq!(a.len(), 12);
    for ((s, x), (_, y)) in a.iter().zip(&b) {
        let rel = (x - y).abs() / x.abs();
        assert!(rel < 1e-4, "step {s}: loss {x} (1 rank) vs {y} (2 ranks)");
    }
    assert_weights_agree("1 vs 2 ranks, final weights", &one, &two);
    assert_eq!(
        std::fs::read(one.join("split.json")).unwrap(),
        std::fs::read(two.join("split.json")).unwrap()
    );
    assert_eq!(
        std::fs::read(one.join("codecs/mag_r/model.safetensors")).unwrap(),
        std::fs::read(two.join("codecs/mag_r/model.safetensors")).unwrap()
    );
    eprintln!(
        "1 vs 2 ranks: max relative loss difference {:.2e}",
        a.iter()
            .zip(&b)
            .map(|(x, y)| (x.1 - y.1).abs() / x.1.abs())
            .fold(0.0, f64::max)
    );
}

#[test]
fn sigkill_and_time_limit_signal_resume_to_the_same_weights() {
    let dir = tempdir();
    let d = dir.path();
    let cfg = write(d, "c.toml", &masked_config(12, "ema = 0.9\n"));
    let whole = d.join("whole");
    assert_ok(&finetune(Launch::Alone, &cfg, &whole, &[]));

    // (With an exponential moving average of the weights, whose state is checkpointed too.)
    // SIGKILL at step 9 (checkpoints every 4 steps): the rerun resumes from step 8.
    let killed = d.join("killed");
    let k = finetune(
        Launch::Alone,
        &cfg,
        &killed,
        &[("AION_FAULT", "train_step@9")],
    );
    assert_eq!(
        k.status.code(),
        None,
        "expected death by signal: {}",
        String::from_utf8_lossy(&k.stderr)
    );
    // The run works in <output>.partial; the output directory appears only when finished.
    assert!(
        d.join("killed.partial/checkpoint/state.safetensors")
            .is_file()
    );
    assert!(
        !killed.exists(),
        "a half-trained model in the output directory"
    );
    let r = assert_ok(&finetune(Launch::Alone, &cfg, &killed, &[]));
    assert!(r.contains("resuming from step 8"), "{r}");
    assert_same_curve(&killed, &whole);
    let diff = weights_abs_diff(&killed, &whole);
    assert!(diff < 1e-4, "SIGKILL + resume: weights differ by {diff}");

    // The Slurm time-limit signal (SIGUSR1) at step 6: checkpoint at step 7, exit 3, resume.
    let stopped = d.join("usr1");
    let s = finetune(Launch::Alone, &cfg, &stopped, &[("AION_FAULT", "usr1@6")]);
    assert_eq!(
        s.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&s.stderr)
    );
    let r = assert_ok(&finetune(Launch::Alone, &cfg, &stopped, &[]));
    assert!(r.contains("resuming from step 7"), "{r}");
    assert_same_curve(&stopped, &whole);
    let diff = weights_abs_diff(&stopped, &whole);
    assert!(diff < 1e-4, "stop + resume: weights differ by {diff}");

    // Killed on rank 1 of 2, resumed on one rank: the run does not depend on the rank count.
    let mixed = d.join("mixed");
    let k = finetune(
        Launch::Mpirun(2),
        &cfg,
        &mixed,
        &[("AION_FAULT", "train_step@6:1")],
    );
    assert!(!k.status.success());
    assert_ok(&finetune(Launch::Alone, &cfg, &mixed, &[]));
    assert_weights_agree("2-rank start + 1-rank resume", &mixed, &whole);
}

#[test]
fn finetune_sbatch_checkpoints_on_the_time_limit_signal_and_requeues() {
    let Some(dir) = crate::slurm::slurm_test_dir() else {
        return;
    };
    let cfg = write(dir.path(), "c.toml", &masked_config(10, ""));
    let out = dir.path().join("slurm");
    let log = dir.path().join("job-%j.out");
    let job = crate::slurm::sbatch(&[
        "-n",
        "2",
        "-o",
        log.to_str().unwrap(),
        "--export=ALL,AION_FAULT=usr1@4",
        "slurm/finetune.sbatch",
        "--config",
        cfg.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ]);
    // The requeued job is made eligible at once (Slurm waits 2 minutes).
    let state = crate::slurm::Cluster::local().wait_job_restarted(&job, Duration::from_secs(300));
    let text = crate::slurm::job_log(&log, &job);
    assert_eq!(state, "COMPLETED", "job log:\n{text}");
    assert!(
        text.contains("requeueing job") && text.contains("resuming from step 5"),
        "job log:\n{text}"
    );
    let alone = dir.path().join("alone");
    assert_ok(&finetune(Launch::Alone, &cfg, &alone, &[]));
    assert_weights_agree("Slurm (2 ranks, requeued) vs 1 rank", &out, &alone);
}

/// The bundled photo-z model through `aion-predict`, as the README's demo runs it: on the
/// held-out galaxies of its split (2 ranks), the posterior means equal the ones `aion-finetune`
/// recorded for those galaxies, the summary carries the redshift metrics and the plot exists.
#[test]
fn bundled_photoz_model_through_aion_predict() {
    let model = repo().join("data/models/sdss-photoz-tiny");
    let test_cat = repo().join("data/sdss_mgs/sdss_mgs_test_split.h5");
    let dir = tempdir();
    let out = dir.path().join("photoz.h5");
    let o = run_tool(
        PREDICT,
        Launch::Mpirun(2),
        &[io_args(&model, &test_cat, &out), vec!["--target", "tok_z"]].concat(),
    );
    assert_ok(&o);
    let all = read_all(&out);
    let mean = &all["/pred/tok_z/mean"].1;
    let ids = &all["/object_id"].1;
    // eval/test_tok_z.csv: catalogue row (= object id in the bundled file), truth, mean, σ.
    let csv = std::fs::read_to_string(model.join("eval/test_tok_z.csv")).unwrap();
    let recorded: Vec<Vec<f64>> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').map(|x| x.parse().unwrap()).collect())
        .collect();
    assert_eq!(
        recorded.len(),
        mean.len(),
        "one prediction per held-out galaxy"
    );
    for (i, r) in recorded.iter().enumerate() {
        assert_eq!(ids[i], r[0], "row {i}: object id");
        assert!(
            (mean[i] - r[2]).abs() < 1e-5,
            "row {i}: aion-predict mean {} vs aion-finetune's {}",
            mean[i],
            r[2]
        );
    }
    let summary = std::fs::read_to_string(format!("{}.run.json", out.display())).unwrap();
    assert!(summary.contains("sigma_nmad"), "{summary}");
    assert!(dir.path().join("photoz.h5.tok_z.png").exists());
}

/// Paths in a config file are relative to the file: the shipped LoRA config (whose catalogue
/// and base model are `../../data/…`) runs from another working directory, and a wrong path is
/// reported with the config file and the key that set it.
#[test]
fn config_paths_are_relative_to_the_config_file() {
    let dir = tempdir();
    let d = dir.path();
    let run_in = |cwd: &Path, args: &[&str]| {
        command(FINETUNE)
            .args(args)
            .current_dir(cwd)
            .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
            .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
            .env("OMP_NUM_THREADS", "1")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let cfg = repo().join("configs/finetune/sdss-photoz-lora.toml");
    let out = d.join("lora");
    let cfg_arg = cfg.to_str().unwrap();
    let out_arg = out.to_str().unwrap();
    let args = ["--config", cfg_arg, "--output", out_arg, "--steps", "2"];
    assert_ok(&run_in(d, &args));
    assert!(out.join("model.safetensors").is_file());
    assert_eq!(losses(&out).len(), 2);

    let bad = write(
        d,
        "bad.toml",
        "mode = \"lora\"\ncatalog = [\"cat.h5\"]\noutput = \"o\"\n[model]\nbase = \"no-such-model\"\n\
         [data]\ninputs = [\"tok_z\"]\ntargets = [\"tok_z\"]\n",
    );
    let err = assert_fails(&run_in(
        Path::new("/"),
        &["--config", bad.to_str().unwrap()],
    ));
    assert!(
        err.contains(&format!("[model] base in {}", bad.display()))
            && err.contains(&d.join("no-such-model").display().to_string()),
        "{err}"
    );
    assert!(!d.join("o").exists(), "a failed run created its output");
}
