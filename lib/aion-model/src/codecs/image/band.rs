//! Survey bands of the image codec: their slot in the 9-channel "super-band" tensor, their clamp
//! bound and their survey's zero point.
//!
//! Port of `aion/codecs/preprocessing/band_to_index.py` (`BAND_TO_INDEX`, `BAND_CENTER_MAX`) and
//! of the zero-point part of `RescaleToLegacySurvey` (`aion/codecs/preprocessing/image.py`).

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// The survey a band belongs to (the text before `-` in the reference's band names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Survey {
    /// Hyper Suprime-Cam: counts at zero point 27 (converted to Legacy Survey units by
    /// dividing by `10^((27 − 22.5)/2.5)`).
    Hsc,
    /// DES / Legacy Survey: nanomaggies (zero point 22.5), the codec's native units.
    Des,
}

impl Survey {
    /// Flux units of this survey's images as astropy's `Unit()` reads them, written in the
    /// `units` attribute of decoded images: nanomaggies (`nmgy`, AB zero point 22.5) for DES,
    /// `10**(-1.8) nmgy` (AB zero point 27) for HSC.
    pub fn units(self) -> &'static str {
        match self {
            Self::Hsc => "10**(-1.8) nmgy",
            Self::Des => "nmgy",
        }
    }

    /// The same in words (the `photometry` attribute of decoded images).
    pub fn photometry(self) -> &'static str {
        match self {
            Self::Hsc => "HSC coadd flux, AB zero point 27 (1 unit = 10^-1.8 nanomaggies)",
            Self::Des => "nanomaggies, AB zero point 22.5",
        }
    }

    /// Factor from the codec's units (Legacy Survey nanomaggies) to this survey's units:
    /// `10^1.8` (as `f32`, 63.095734) for HSC, 1 for DES.
    pub fn zero_point_scale(self) -> f32 {
        match self {
            // 10 ** ((27.0 - 22.5) / 2.5) in f64, then rounded to f32 as torch does for a
            // python-float scalar applied to a float32 tensor.
            Self::Hsc => 10f64.powf((27.0 - 22.5) / 2.5) as f32,
            Self::Des => 1.0,
        }
    }
}

/// A band the image codec accepts. The discriminant order is the slot order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Band {
    /// HSC g (slot 0).
    HscG,
    /// HSC r (slot 1).
    HscR,
    /// HSC i (slot 2).
    HscI,
    /// HSC z (slot 3).
    HscZ,
    /// HSC y (slot 4).
    HscY,
    /// DES / Legacy Survey g (slot 5).
    DesG,
    /// DES / Legacy Survey r (slot 6).
    DesR,
    /// DES / Legacy Survey i (slot 7).
    DesI,
    /// DES / Legacy Survey z (slot 8).
    DesZ,
}

impl Band {
    /// All bands in slot order (the reference's `BAND_TO_INDEX` order).
    pub const ALL: [Band; 9] = [
        Band::HscG,
        Band::HscR,
        Band::HscI,
        Band::HscZ,
        Band::HscY,
        Band::DesG,
        Band::DesR,
        Band::DesI,
        Band::DesZ,
    ];

    /// Number of slots of the super-band tensor.
    pub const SLOTS: usize = 9;

    /// Slot in the 9-channel super-band tensor (`BAND_TO_INDEX`).
    pub fn slot(self) -> usize {
        self as usize
    }

    /// The reference's name, e.g. `"HSC-G"`.
    pub fn name(self) -> &'static str {
        [
            "HSC-G", "HSC-R", "HSC-I", "HSC-Z", "HSC-Y", "DES-G", "DES-R", "DES-I", "DES-Z",
        ][self.slot()]
    }

    /// Pixels are clipped to `[-bound, bound]` in the survey's own units (`BAND_CENTER_MAX`).
    pub fn clamp_bound(self) -> f32 {
        [80.0, 110.0, 200.0, 330.0, 500.0, 6.0, 15.0, 20.0, 25.0][self.slot()]
    }

    /// The band's survey.
    pub fn survey(self) -> Survey {
        if self.slot() < 5 {
            Survey::Hsc
        } else {
            Survey::Des
        }
    }

    /// Parses a list of names (see [`FromStr`]).
    pub fn parse_list<S: AsRef<str>>(names: &[S]) -> Result<Vec<Band>> {
        names.iter().map(|s| s.as_ref().parse()).collect()
    }

    /// Fails on an empty list or a band given twice.
    pub fn check_distinct(bands: &[Band]) -> Result<()> {
        if bands.is_empty() {
            return Err(Error::Input("the band list is empty".into()));
        }
        for (i, b) in bands.iter().enumerate() {
            if bands[..i].contains(b) {
                return Err(Error::Input(format!("band {b} is given twice")));
            }
        }
        Ok(())
    }
}

impl fmt::Display for Band {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Band {
    type Err = Error;

    /// Case-insensitive reference name: `"DES-G"`, `"des-g"`, `"HSC-Y"`, …
    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|b| b.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| {
                let valid: Vec<&str> = Self::ALL.iter().map(|b| b.name()).collect();
                Error::Input(format!(
                    "unknown band {s:?}; valid bands: {}",
                    valid.join(", ")
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_is_case_insensitive() {
        assert_eq!("des-g".parse::<Band>().unwrap(), Band::DesG);
        assert_eq!("DES-G".parse::<Band>().unwrap(), Band::DesG);
        assert_eq!("HSC-Y".parse::<Band>().unwrap(), Band::HscY);
        assert_eq!("hsc-i".parse::<Band>().unwrap(), Band::HscI);
        let err = "DES-Y".parse::<Band>().unwrap_err().to_string();
        assert!(err.contains("DES-Y") && err.contains("HSC-G"), "{err}");
        assert!("DESG".parse::<Band>().is_err());
    }

    #[test]
    fn slots_bounds_surveys() {
        for (i, b) in Band::ALL.iter().enumerate() {
            assert_eq!(b.slot(), i);
            assert_eq!(b.name().parse::<Band>().unwrap(), *b);
        }
        assert_eq!(Band::DesZ.clamp_bound(), 25.0);
        assert_eq!(Band::HscY.clamp_bound(), 500.0);
        assert_eq!(Band::HscY.survey(), Survey::Hsc);
        assert_eq!(Band::DesG.survey(), Survey::Des);
        assert_eq!(Survey::Hsc.zero_point_scale(), 63.095_734);
    }

    #[test]
    fn distinctness() {
        assert!(Band::check_distinct(&[Band::DesG, Band::DesR]).is_ok());
        assert!(Band::check_distinct(&[Band::DesG, Band::DesG]).is_err());
        assert!(Band::check_distinct(&[]).is_err());
    }
}
