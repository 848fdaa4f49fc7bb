//! The elementwise functions a `MultiScalarCodec` config names (`torch.<name>`): they map the
//! values into the space its reservoirs are sampled in (and back).

/// An elementwise function named in a `MultiScalarCodec` config (`torch.<name>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElementFn {
    /// `torch.arcsinh` / `torch.asinh`.
    Asinh,
    /// `torch.sinh`.
    Sinh,
    /// `torch.log`.
    Log,
    /// `torch.exp`.
    Exp,
    /// `torch.log10`.
    Log10,
    /// `torch.log1p`.
    Log1p,
    /// `torch.expm1`.
    Expm1,
    /// `torch.sqrt`.
    Sqrt,
    /// `torch.square`.
    Square,
    /// `torch.tanh`.
    Tanh,
    /// `torch.arctanh` / `torch.atanh`.
    Atanh,
}

impl ElementFn {
    /// Parses a `torch` function name (`arcsinh`, `sinh`, …).
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "arcsinh" | "asinh" => Self::Asinh,
            "sinh" => Self::Sinh,
            "log" => Self::Log,
            "exp" => Self::Exp,
            "log10" => Self::Log10,
            "log1p" => Self::Log1p,
            "expm1" => Self::Expm1,
            "sqrt" => Self::Sqrt,
            "square" => Self::Square,
            "tanh" => Self::Tanh,
            "arctanh" | "atanh" => Self::Atanh,
            _ => return None,
        })
    }

    /// Applies the function in `f32` (evaluated in `f64` and rounded once).
    pub fn apply(self, x: f32) -> f32 {
        let x = f64::from(x);
        let y = match self {
            Self::Asinh => x.asinh(),
            Self::Sinh => x.sinh(),
            Self::Log => x.ln(),
            Self::Exp => x.exp(),
            Self::Log10 => x.log10(),
            Self::Log1p => x.ln_1p(),
            Self::Expm1 => x.exp_m1(),
            Self::Sqrt => x.sqrt(),
            Self::Square => x * x,
            Self::Tanh => x.tanh(),
            Self::Atanh => x.atanh(),
        };
        y as f32
    }
}
