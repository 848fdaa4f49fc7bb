//! Survey presets on the real raw files in `data/raw/` (PICZL's Legacy Survey DR10 catalogue and
//! cutouts, a DESI coadd with its Redrock file): they go through aion-tokenize, aion-embed,
//! aion-predict and aion-generate with `--survey` and no glue code, and give the same tokens and
//! embeddings as the hand-converted samples (`validation/make_sample_catalogs.py`); the image size
//! policy (`--pad`); bad inputs name the file, column and row.

use std::path::{Path, PathBuf};

use crate::util::*;

fn raw(p: &str) -> String {
    repo().join("data/raw").join(p).display().to_string()
}

fn piczl() -> Vec<String> {
    vec![
        raw("legacysurvey_piczl/train_demo_catalog.fits"),
        raw("legacysurvey_piczl/train_processed_dered_griz_images.npy"),
    ]
}

fn desi() -> Vec<String> {
    vec![
        raw("desi/coadd-4-80613-thru20210324.fits"),
        raw("desi/redrock-4-80613-thru20210324.fits"),
    ]
}

/// Runs `bin` on `catalog` into `output` with `extra` flags.
fn run(bin: &str, model: &Path, catalog: &[String], output: &Path, extra: &[&str]) -> String {
    assert_ok(&try_run(bin, model, catalog, output, extra))
}

fn try_run(
    bin: &str,
    model: &Path,
    catalog: &[String],
    output: &Path,
    extra: &[&str],
) -> std::process::Output {
    let mut a = vec!["--model", model.to_str().unwrap(), "--catalog"];
    a.extend(catalog.iter().map(String::as_str));
    a.extend(["--output", output.to_str().unwrap()]);
    a.extend(extra);
    run_tool(bin, Launch::Alone, &a)
}

fn random_model(dir: &Path) -> PathBuf {
    let m = dir.join("random");
    assert_ok(&run_tool(
        MODEL,
        Launch::Alone,
        &["random", "--size", "tiny", "--output", m.to_str().unwrap()],
    ));
    m
}

fn tok_names(path: &Path) -> Vec<String> {
    let f = hdf5::File::open(path).unwrap();
    f.member_names()
        .unwrap()
        .into_iter()
        .filter(|n| n.starts_with("tok_"))
        .collect()
}

/// Every token dataset of `hand` is in `raw` with the same values.
fn assert_same_tokens(raw: &Path, hand: &Path) {
    let names = tok_names(hand);
    assert!(names.len() >= 9, "{names:?}");
    for name in names {
        let (a, b) = (read_i64(raw, &name), read_i64(hand, &name));
        assert_eq!(
            a, b,
            "{name}: tokens from the raw files differ from the sample's"
        );
    }
    assert_eq!(read_i64(raw, "object_id"), read_i64(hand, "object_id"));
}

#[test]
fn raw_survey_files_go_through_every_tool_with_a_preset() {
    let dir = tempdir();
    let model = random_model(dir.path());
    let out = |n: &str| dir.path().join(n);
    let ls_h5 = vec![
        repo()
            .join("data/legacysurvey/piczl_dr10.h5")
            .display()
            .to_string(),
    ];
    let desi_h5 = vec![repo().join("data/desi/desi_one.h5").display().to_string()];
    let ls = ["--survey", "legacysurvey-piczl", "--pad"];

    // Tokens: the raw files give the hand-converted samples' tokens, plus the LS images.
    run(TOKENIZE, &model, &piczl(), &out("ls-raw.h5"), &ls);
    run(TOKENIZE, &model, &ls_h5, &out("ls-h5.h5"), &[]);
    assert_same_tokens(&out("ls-raw.h5"), &out("ls-h5.h5"));
    let (shape, img) = read_i64(&out("ls-raw.h5"), "tok_image");
    assert_eq!(shape, [50, 576]);
    assert!(img.iter().all(|&t| t >= 0), "every cutout tokenized");
    assert!(!tok_names(&out("ls-raw.h5")).contains(&"tok_z".to_string()));
    run(
        TOKENIZE,
        &model,
        &desi(),
        &out("desi-raw.h5"),
        &["--survey", "desi"],
    );
    run(TOKENIZE, &model, &desi_h5, &out("desi-h5.h5"), &[]);
    assert_same_tokens(&out("desi-raw.h5"), &out("desi-h5.h5"));
    // (object_id: the sample's is the FIBERMAP TARGETID; the preset copies it.)
    // Gaia XP: the archive's table (ECSV converted by astropy, validation/xp_ecsv_to_fits.py).
    let xp = vec![raw("gaia/XP_CONTINUOUS-Gaia_DR3_5937083312263887616.fits")];
    run(
        TOKENIZE,
        &model,
        &xp,
        &out("xp-raw.h5"),
        &["--survey", "gaia"],
    );
    let xp_h5 = vec![
        repo()
            .join("data/gaia/gaia_xp_one.h5")
            .display()
            .to_string(),
    ];
    run(TOKENIZE, &model, &xp_h5, &out("xp-h5.h5"), &[]);
    for name in ["tok_xp_bp", "tok_xp_rp", "object_id"] {
        let (a, b) = (
            read_i64(&out("xp-raw.h5"), name),
            read_i64(&out("xp-h5.h5"), name),
        );
        assert_eq!(a, b, "{name}");
    }

    // Embeddings: same inputs, same embedding (the LS images left out for the comparison).
    let no_img = ["--survey", "legacysurvey-piczl", "--map", "tok_image=none"];
    run(EMBED, &model, &piczl(), &out("emb-ls-raw.h5"), &no_img);
    run(EMBED, &model, &ls_h5, &out("emb-ls-h5.h5"), &[]);
    assert_eq!(
        read_f32(&out("emb-ls-raw.h5"), "embedding"),
        read_f32(&out("emb-ls-h5.h5"), "embedding")
    );
    run(
        EMBED,
        &model,
        &desi(),
        &out("emb-desi-raw.h5"),
        &["--survey", "desi"],
    );
    run(EMBED, &model, &desi_h5, &out("emb-desi-h5.h5"), &[]);
    assert_eq!(
        read_f32(&out("emb-desi-raw.h5"), "embedding"),
        read_f32(&out("emb-desi-h5.h5"), "embedding")
    );
    // With the images: finite, and different from the photometry-only embedding.
    run(EMBED, &model, &piczl(), &out("emb-ls-img.h5"), &ls);
    let (_, with) = read_f32(&out("emb-ls-img.h5"), "embedding");
    let (_, without) = read_f32(&out("emb-ls-raw.h5"), "embedding");
    assert!(with.iter().all(|v| v.is_finite()));
    assert_ne!(with, without);
    // aion-search draws the cutouts: it reopens the catalogue through the recorded preset (the
    // pixels are a column the preset computes from the .npy file).
    let search = out("search.h5");
    assert_ok(&run_tool(
        SEARCH,
        Launch::Alone,
        &[
            "--embeddings",
            out("emb-ls-img.h5").to_str().unwrap(),
            "--query-ids",
            &read_i64(&out("emb-ls-img.h5"), "object_id").1[0].to_string(),
            "--k",
            "3",
            "--output",
            search.to_str().unwrap(),
        ],
    ));
    let png = out("search.h5.cutouts.png");
    assert!(
        std::fs::metadata(&png).is_ok_and(|m| m.len() > 1000),
        "no cutout figure {}",
        png.display()
    );

    // Redshift from LS photometry (the images went through embed above; CI time); Z is the
    // truth, never an input.
    run(
        PREDICT,
        &model,
        &piczl(),
        &out("pred-ls.h5"),
        &[&no_img[..], &["--target", "tok_z"]].concat(),
    );
    let (_, z) = read_f32(&out("pred-ls.h5"), "pred/tok_z/mean");
    assert_eq!(z.len(), 50);
    assert!(z.iter().all(|v| v.is_finite()));
    run(
        PREDICT,
        &model,
        &desi(),
        &out("pred-desi.h5"),
        &["--survey", "desi", "--target", "tok_z"],
    );
    // PIT needs the true value: Redrock's Z, read from the paired file.
    let (_, pit) = read_f32(&out("pred-desi.h5"), "pred/tok_z/pit");
    assert!(pit[0].is_finite(), "{pit:?}");

    // Generation: a DESI spectrum from the DESI file's photometry, LS images from photometry.
    let gen_spec = [
        "--survey",
        "desi",
        "--target",
        "tok_spectrum_desi",
        "--steps",
        "2",
    ];
    run(GENERATE, &model, &desi(), &out("gen-desi.h5"), &gen_spec);
    let (shape, flux) = read_f32(&out("gen-desi.h5"), "gen/tok_spectrum_desi/flux");
    assert_eq!(shape[0], 1);
    assert!(flux.iter().all(|v| v.is_finite()));
    let gen_img = [
        &ls[..],
        &[
            "--target",
            "tok_image",
            "--steps",
            "1",
            "--chunk-rows",
            "50",
        ],
    ]
    .concat();
    run(GENERATE, &model, &piczl(), &out("gen-ls.h5"), &gen_img);
    let (shape, _) = read_f32(&out("gen-ls.h5"), "gen/tok_image/flux");
    assert_eq!(&shape[2..], [4, 96, 96]);

    // aion-fit-codecs on a column the preset computes (observed g flux from the dereddened one).
    let fitted = out("fitted");
    assert_ok(&run_tool(
        FIT,
        Launch::Alone,
        &[
            &["--catalog"][..],
            &piczl().iter().map(String::as_str).collect::<Vec<_>>(),
            &[
                "--survey",
                "legacysurvey-piczl",
                "--column",
                "tok_flux_g_piczl=FLUX_G",
                "--codebook-size",
                "16",
                "--output",
                fitted.to_str().unwrap(),
            ],
        ]
        .concat(),
    ));
    assert!(fitted.join("modalities.json").is_file());
    // aion-finetune reads the same files through the preset (`survey` in its config): a probe of
    // Z on the LS fluxes.
    let cfg = out("probe.toml");
    std::fs::write(
        &cfg,
        format!(
            "mode = \"probe\"\nsurvey = \"legacysurvey-piczl\"\ncatalog = [\"{}\", \"{}\"]\n\
             output = \"{}\"\n[model]\nbase = \"{}\"\n[data]\n\
             inputs = [\"tok_flux_g\", \"tok_flux_r\", \"tok_flux_z\"]\n\
             split = {{ val = 0.2, test = 0.2 }}\n[probe]\ntarget = \"Z\"\n[train]\nsteps = 2\n\
             batch_size = 16\neval_every = 2\ncheckpoint_every = 2\n",
            piczl()[0],
            piczl()[1],
            out("probe").display(),
            model.display()
        ),
    )
    .unwrap();
    assert_ok(&run_tool(
        FINETUNE,
        Launch::Alone,
        &["--config", cfg.to_str().unwrap()],
    ));
    assert!(out("probe").join("finetune.json").is_file());
}

/// Writes a float32 C-order `.npy` array of `shape` (zeros).
fn write_npy(path: &Path, shape: &[usize]) {
    let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
    let mut header = format!(
        "{{'descr': '<f4', 'fortran_order': False, 'shape': ({}), }}",
        dims.join(", ")
    );
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend((header.len() as u16).to_le_bytes());
    bytes.extend(header.as_bytes());
    bytes.resize(bytes.len() + 4 * shape.iter().product::<usize>(), 0);
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn bad_survey_inputs_name_the_file_column_and_row() {
    let dir = tempdir();
    let model = random_model(dir.path());
    let out = dir.path().join("out.h5");
    let fails =
        |cat: &[String], extra: &[&str]| assert_fails(&try_run(TOKENIZE, &model, cat, &out, extra));

    // Images smaller than the crop: refused with what to do.
    let e = fails(&piczl(), &["--survey", "legacysurvey-piczl"]);
    assert_mentions(&e, &["23×23", "--pad", "tok_image=none"]);
    // ... naming the file that holds the pixels, not the FITS catalogue beside it.
    assert!(e.contains("train_processed_dered_griz_images.npy"), "{e}");
    // A part without its cutouts.
    let e = fails(&piczl()[..1], &["--survey", "legacysurvey-piczl", "--pad"]);
    assert_mentions(&e, &["train_processed_dered_griz_images.npy", "cutouts"]);
    // Cutouts for 49 objects beside a catalogue of 50.
    let cat = dir.path().join("x_demo_catalog.fits");
    std::fs::copy(&piczl()[0], &cat).unwrap();
    let npy = dir.path().join("x_processed_dered_griz_images.npy");
    write_npy(&npy, &[4, 49, 23, 23]);
    let files = [cat.display().to_string(), npy.display().to_string()];
    let e = fails(&files, &["--survey", "legacysurvey-piczl", "--pad"]);
    assert_mentions(&e, &["x_processed_dered_griz_images.npy", "49 rows", "50"]);
    // A file no role of the preset matches.
    let e = fails(
        &[
            piczl()[0].clone(),
            raw("desi/coadd-4-80613-thru20210324.fits"),
        ],
        &["--survey", "legacysurvey-piczl"],
    );
    assert_mentions(&e, &["coadd-4-80613", "matches none"]);
    // A preset file naming a column the catalogue lacks: the column, the file and its columns.
    let preset = dir.path().join("mine.toml");
    std::fs::write(
        &preset,
        "name = \"mine\"\n[columns.FLUX_G]\nop = \"multiply\"\nfrom = \"flux_g\"\nby = [\"mw_transmission_g\"]\n",
    )
    .unwrap();
    let e = fails(&piczl()[..1], &["--survey", preset.to_str().unwrap()]);
    assert_mentions(
        &e,
        &[
            "'mine'",
            "flux_g",
            "train_demo_catalog.fits",
            "dered_flux_g",
        ],
    );
    // Unknown preset name: the built-in ones are listed.
    let e = fails(&piczl()[..1], &["--survey", "hsc-pdr9"]);
    assert_mentions(&e, &["legacysurvey-piczl", "desi"]);
    // A Redrock file of other objects.
    let coadd = dir.path().join("coadd-a.fits");
    let redrock = dir.path().join("redrock-a.fits");
    std::fs::copy(raw("desi/coadd-4-80613-thru20210324.fits"), &coadd).unwrap();
    std::fs::copy(raw("desi/redrock-4-80613-thru20210324.fits"), &redrock).unwrap();
    let files = [coadd.display().to_string(), redrock.display().to_string()];
    assert_ok(&try_run(
        TOKENIZE,
        &model,
        &files,
        &out,
        &["--survey", "desi"],
    ));
    let wrong = dir.path().join("redrock-b.fits");
    let coadd_b = dir.path().join("coadd-b.fits");
    std::fs::copy(raw("desi/coadd-4-80613-thru20210324.fits"), &coadd_b).unwrap();
    std::fs::copy(&redrock, &wrong).unwrap();
    set_targetid(&wrong, 12345);
    let files = [coadd_b.display().to_string(), wrong.display().to_string()];
    let e = fails(&files, &["--survey", "desi", "--overwrite"]);
    assert_mentions(&e, &["redrock-b.fits", "row 0", "TARGETID = 12345"]);
}

/// Sets TARGETID of the first row of the REDSHIFTS table of a Redrock file.
fn set_targetid(path: &Path, id: i64) {
    let mut f = fitsio::FitsFile::edit(path).unwrap();
    let hdu = f.hdu("REDSHIFTS").unwrap();
    hdu.write_col(&mut f, "TARGETID", &[id]).unwrap();
}

/// The preset's content is part of the resume key: an output made through one version of a
/// preset file is not resumed (nor reported complete) through an edited one.
#[test]
fn an_edited_preset_is_not_resumed_into() {
    let dir = tempdir();
    let model = random_model(dir.path());
    let out = dir.path().join("xp.h5");
    let preset = dir.path().join("my-gaia.toml");
    let text = std::fs::read_to_string(repo().join("configs/surveys/gaia.toml")).unwrap();
    std::fs::write(&preset, &text).unwrap();
    let xp = vec![raw("gaia/XP_CONTINUOUS-Gaia_DR3_5937083312263887616.fits")];
    let flags = ["--survey", preset.to_str().unwrap()];
    run(TOKENIZE, &model, &xp, &out, &flags);
    let made = read_i64(&out, "tok_xp_bp");
    // The same preset again: complete, nothing to do.
    let log = run(TOKENIZE, &model, &xp, &out, &flags);
    assert!(log.contains("is complete"), "{log}");
    // The same preset edited (here only its description): refused, naming the preset.
    std::fs::write(
        &preset,
        text.replacen("about = \"", "about = \"edited: ", 1),
    )
    .unwrap();
    let e = assert_fails(&try_run(TOKENIZE, &model, &xp, &out, &flags));
    assert_mentions(&e, &["survey_preset", "--overwrite"]);
    assert_eq!(read_i64(&out, "tok_xp_bp"), made, "the output changed");
    run(
        TOKENIZE,
        &model,
        &xp,
        &out,
        &[&flags[..], &["--overwrite"]].concat(),
    );
}
