//! Survey presets (`--survey NAME|FILE.toml`, `survey = "…"` in a run config): the built-in
//! presets are the files of `configs/surveys/`, compiled into the tools so an installed binary
//! needs no source tree; a path to a TOML file of the same form works too. What a preset is and
//! does: `aion_io::catalog::preset`; what each built-in one converts and why: docs/surveys.md.

use std::path::Path;

use aion_io::Preset;
use aion_model::modality::ModalityTable;
use anyhow::{Context, Result, bail};

/// The built-in presets: (name, TOML text).
pub const BUILT_IN: &[(&str, &str)] = &[
    (
        "legacysurvey",
        include_str!("../../../configs/surveys/legacysurvey.toml"),
    ),
    (
        "legacysurvey-piczl",
        include_str!("../../../configs/surveys/legacysurvey-piczl.toml"),
    ),
    ("desi", include_str!("../../../configs/surveys/desi.toml")),
    ("hsc", include_str!("../../../configs/surveys/hsc.toml")),
    ("sdss", include_str!("../../../configs/surveys/sdss.toml")),
    ("gaia", include_str!("../../../configs/surveys/gaia.toml")),
];

/// The built-in names, for messages.
pub fn names() -> String {
    BUILT_IN
        .iter()
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Parses and checks a preset's TOML text (`source` names it in messages), including its `[map]`
/// token keys, which name built-in modalities (a preset is read before the model directory).
pub fn parse(text: &str, source: &Path) -> Result<Preset> {
    let preset: Preset = toml::from_str(text)
        .with_context(|| format!("invalid survey preset {}", source.display()))?;
    preset.validate(source)?;
    for key in preset.map.keys() {
        if aion_model::modality::by_token_key(key).is_none() {
            bail!(
                "survey preset '{}' ({}): [map] names the unknown token key '{key}'; the token \
                 keys are: {}",
                preset.name,
                source.display(),
                crate::run_config::token_key_list(&ModalityTable::builtin())
            );
        }
    }
    Ok(preset)
}

/// A preset by built-in name, or from a TOML file (`spec` ending in `.toml` or naming an
/// existing file; relative paths from a run config are made relative to it by the caller).
pub fn load(spec: &str) -> Result<Preset> {
    if let Some((name, text)) = BUILT_IN.iter().find(|(n, _)| n.eq_ignore_ascii_case(spec)) {
        return parse(text, Path::new(&format!("configs/surveys/{name}.toml")));
    }
    let path = Path::new(spec);
    if spec.ends_with(".toml") || path.is_file() {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read survey preset {}", path.display()))?;
        return parse(&text, path);
    }
    bail!(
        "unknown survey preset '{spec}': the built-in presets are {}; or give a preset file \
         (FILE.toml, see docs/surveys.md)",
        names()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_built_in_preset_parses_and_is_listed_in_the_directory() {
        for (name, text) in BUILT_IN {
            let p = parse(text, Path::new(name)).unwrap();
            assert_eq!(&p.name, name, "the name inside {name}.toml");
        }
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/surveys");
        let mut on_disk: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
            .collect();
        on_disk.sort();
        let mut built: Vec<String> = BUILT_IN.iter().map(|(n, _)| n.to_string()).collect();
        built.sort();
        assert_eq!(on_disk, built, "configs/surveys/*.toml and BUILT_IN differ");
    }

    /// The survey's columns feed its own modalities: HSC images never the Legacy Survey image
    /// codec, SDSS spectra never the DESI one, and the reverse.
    #[test]
    fn presets_send_shared_column_names_to_their_survey() {
        let bound = |name: &str, has: &[&str]| {
            let p = load(name).unwrap();
            let ex: Vec<(String, String)> =
                p.map.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            let b = crate::run_config::resolve(
                &ModalityTable::builtin(),
                &ex,
                |d| has.contains(&d),
                &[],
            )
            .unwrap();
            b.into_iter()
                .map(|b| {
                    let m = aion_model::modality::by_token_key(b.token_key()).expect("built-in");
                    (&*m.token_key, b.source.describe())
                })
                .collect::<Vec<_>>()
        };
        let hsc = bound("hsc", &[]);
        assert!(
            hsc.contains(&("tok_image_hsc", "image_*".into())),
            "{hsc:?}"
        );
        assert!(!hsc.iter().any(|(k, _)| *k == "tok_image"));
        let sdss = bound("sdss", &[]);
        assert!(sdss.contains(&("tok_spectrum_sdss", "spectrum_*".into())));
        assert!(!sdss.iter().any(|(k, _)| *k == "tok_spectrum_desi"));
        let desi = bound("desi", &[]);
        assert!(desi.contains(&("tok_spectrum_desi", "spectrum_*".into())));
        assert!(!desi.iter().any(|(k, _)| *k == "tok_spectrum_sdss"));
        for ls in ["legacysurvey", "legacysurvey-piczl"] {
            let b = bound(ls, &[]);
            assert!(b.contains(&("tok_image", "image_*".into())), "{ls}");
            assert!(!b.iter().any(|(k, _)| *k == "tok_image_hsc"), "{ls}");
        }
        let gaia = bound("gaia", &[]);
        assert!(gaia.contains(&("tok_xp_bp", "coeff[0:55]".into())));
    }

    #[test]
    fn bad_presets_are_clear_errors() {
        let e = load("nosuchsurvey").unwrap_err().to_string();
        assert!(e.contains("legacysurvey") && e.contains("desi"), "{e}");
        let e = parse(
            "name = \"x\"\n[map]\ntok_nope = \"A\"\n",
            Path::new("x.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("tok_nope") && e.contains("tok_flux_g"), "{e}");
        let e = parse(
            "name = \"x\"\n[columns.A]\nop = \"copy\"\nform = \"B\"\n",
            Path::new("x.toml"),
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("form"), "{e:#}");
        let e = parse(
            "name = \"x\"\n[[files]]\nrole = \"a\"\npattern = \"a-*-*.fits\"\n",
            Path::new("x.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("exactly one '*'"), "{e}");
    }
}
