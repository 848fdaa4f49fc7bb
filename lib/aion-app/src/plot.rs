//! Figures of the tools, drawn with `plotters` as PNG and SVG.
//!
//! Text is set in DejaVu Sans, embedded in the binary (`assets/fonts/`, Bitstream Vera licence
//! beside it) and rasterised by `ab_glyph`, so figures look the same on every machine and need
//! no system fonts. A figure implements [`Figure`] once, generically over the drawing backend,
//! and [`save`] renders it twice: into an RGB buffer (encoded by the `png` crate) and into an SVG
//! string. Image cutouts are [`Raster`] panels: copied into the PNG's pixels, and embedded in
//! the SVG as PNG data (one `<image>` each) rather than as one rectangle per pixel.
//!
//! Shared pieces: [`Axis`] (ticks at 1, 2, 5 × 10ᵏ labelled with just enough decimals that no two
//! labels are equal), [`rich_text`] (`σ_{NMAD}`: subscripts and superscripts in braces),
//! [`chart`] (a titled 2-D chart on an [`Axis`] pair). The figures themselves are in
//! [`charts`] (evaluations, histograms, curves, image grids).

pub mod charts;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{Context, Result, anyhow};
use plotters::coord::Shift;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// DejaVu Sans 2.37 (Debian's fonts-dejavu-core; licence in `assets/fonts/`).
static FONT: &[u8] = include_bytes!("../assets/fonts/DejaVuSans.ttf");

/// Font sizes (pixels) of tick labels, axis titles and panel titles.
pub const TICK_SIZE: f64 = 16.0;
/// Axis title size.
pub const AXIS_SIZE: f64 = 19.0;
/// Panel title size.
pub const TITLE_SIZE: f64 = 20.0;

/// Colours (matplotlib's "tab10" blue, orange, green, red, grey).
pub const C_BLUE: RGBColor = RGBColor(31, 119, 180);
/// Light blue.
pub const C_LIGHT_BLUE: RGBColor = RGBColor(174, 199, 232);
/// Orange.
pub const C_ORANGE: RGBColor = RGBColor(255, 127, 14);
/// Green.
pub const C_GREEN: RGBColor = RGBColor(44, 160, 44);
/// Red.
pub const C_RED: RGBColor = RGBColor(214, 39, 40);
/// Grey.
pub const C_GREY: RGBColor = RGBColor(110, 110, 110);

/// Registers the embedded font as plotters' `sans-serif` (once per process).
fn register_font() -> Result<()> {
    static DONE: OnceLock<bool> = OnceLock::new();
    let ok = *DONE.get_or_init(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, FONT).is_ok()
    });
    ok.then_some(())
        .ok_or_else(|| anyhow!("the embedded DejaVu Sans font cannot be parsed"))
}

/// Converts a plotters error.
pub fn drawn<T, E: std::fmt::Display>(r: std::result::Result<T, E>) -> Result<T> {
    r.map_err(|e| anyhow!("drawing the figure: {e}"))
}

/// An RGB image placed on a figure: `rgb` is `width × height` pixels (row-major), shown in
/// the pixel rectangle at `at` of size `size` (nearest-neighbour scaling).
#[derive(Debug, Clone)]
pub struct Raster {
    /// Top-left corner on the figure.
    pub at: (i32, i32),
    /// Displayed size.
    pub size: (u32, u32),
    /// Image width.
    pub width: usize,
    /// Image height.
    pub height: usize,
    /// `width · height · 3` bytes.
    pub rgb: Vec<u8>,
}

/// A figure: its size and how it is drawn on any backend.
pub trait Figure {
    /// Width and height in pixels.
    fn size(&self) -> (u32, u32);
    /// Draws the vector content.
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()>;
    /// Raster panels drawn over the vector content.
    fn rasters(&self) -> Vec<Raster> {
        Vec::new()
    }
}

/// `<stem>.png` and `<stem>.svg` (the extension is appended, so `out.h5.tok_z` gives
/// `out.h5.tok_z.png`).
pub fn paths(stem: &Path) -> [PathBuf; 2] {
    ["png", "svg"].map(|ext| {
        let mut p = stem.as_os_str().to_owned();
        p.push(format!(".{ext}"));
        PathBuf::from(p)
    })
}

/// Renders `fig` to `<stem>.png` and `<stem>.svg` (each written to a temporary file and renamed);
/// returns both paths.
pub fn save(fig: &impl Figure, stem: &Path) -> Result<[PathBuf; 2]> {
    register_font()?;
    let (w, h) = fig.size();
    let rasters = fig.rasters();
    let [png_path, svg_path] = paths(stem);

    let mut buf = vec![255u8; w as usize * h as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        fig.draw(&root)?;
        drawn(root.present())?;
    }
    for r in &rasters {
        blit(&mut buf, w as usize, h as usize, r);
    }
    let png = encode_png(w as usize, h as usize, &buf)?;
    write(&png_path, &png)?;

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (w, h)).into_drawing_area();
        drawn(root.fill(&WHITE))?;
        fig.draw(&root)?;
        drawn(root.present())?;
    }
    // Right after the `<svg …>` tag: how the output guard recognises the figure as ours.
    let open_end = svg
        .find("<svg")
        .and_then(|i| svg[i..].find('>').map(|j| i + j + 1))
        .context("SVG without its start tag")?;
    svg.insert_str(open_end, &format!("\n{}", crate::guard::SVG_MARKER));
    if !rasters.is_empty() {
        let end = svg.rfind("</svg>").context("SVG without its end tag")?;
        let mut images = String::new();
        for r in &rasters {
            use base64::Engine;
            let data = base64::engine::general_purpose::STANDARD
                .encode(encode_png(r.width, r.height, &r.rgb)?);
            images.push_str(&format!(
                "<image x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" preserveAspectRatio=\"none\" \
                 style=\"image-rendering:pixelated\" href=\"data:image/png;base64,{data}\"/>\n",
                r.at.0, r.at.1, r.size.0, r.size.1
            ));
        }
        svg.insert_str(end, &images);
    }
    write(&svg_path, svg.as_bytes())?;
    Ok([png_path, svg_path])
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    aion_model::fs::write_atomic(path, bytes)
        .with_context(|| format!("cannot write the figure {}", path.display()))
}

/// Copies a raster into an RGB buffer of `w × h` pixels (nearest neighbour).
fn blit(buf: &mut [u8], w: usize, h: usize, r: &Raster) {
    let (sw, sh) = (r.size.0 as usize, r.size.1 as usize);
    for y in 0..sh {
        let py = r.at.1 + y as i32;
        if py < 0 || py as usize >= h {
            continue;
        }
        let sy = (y * r.height / sh.max(1)).min(r.height - 1);
        for x in 0..sw {
            let px = r.at.0 + x as i32;
            if px < 0 || px as usize >= w {
                continue;
            }
            let sx = (x * r.width / sw.max(1)).min(r.width - 1);
            let (d, s) = ((py as usize * w + px as usize) * 3, (sy * r.width + sx) * 3);
            buf[d..d + 3].copy_from_slice(&r.rgb[s..s + 3]);
        }
    }
}

/// An 8-bit RGB PNG, with the text chunk that marks it as ours ([`crate::guard::PNG_SOFTWARE`]).
fn encode_png(w: usize, h: usize, rgb: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, w as u32, h as u32);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let (key, value) = crate::guard::PNG_SOFTWARE;
    enc.add_text_chunk(key.to_string(), value.to_string())
        .context("PNG text")?;
    let mut writer = enc.write_header().context("PNG header")?;
    writer.write_image_data(rgb).context("PNG data")?;
    writer.finish().context("PNG end")?;
    Ok(out)
}

/// A linear axis: its range, tick positions (1, 2 or 5 × 10ᵏ apart) and their labels.
#[derive(Debug, Clone, PartialEq)]
pub struct Axis {
    /// Lower end.
    pub lo: f64,
    /// Upper end.
    pub hi: f64,
    ticks: Vec<f64>,
    step: f64,
}

impl Axis {
    /// An axis over `[lo, hi]` with 4 to 8 ticks (a degenerate or non-finite range is widened).
    pub fn new(lo: f64, hi: f64) -> Self {
        let (lo, hi) = match (lo.is_finite(), hi.is_finite()) {
            (true, true) if hi > lo => (lo, hi),
            (true, true) => {
                // One value: ±10 % around it (±0.5 around 0).
                let d = if lo == 0.0 { 0.5 } else { lo.abs() * 0.1 };
                (lo - d, lo + d)
            }
            _ => (0.0, 1.0),
        };
        let span = hi - lo;
        let mag = 10f64.powf((span / 5.0).log10().floor());
        let step = [1.0, 2.0, 5.0, 10.0, 20.0]
            .iter()
            .map(|m| m * mag)
            .find(|s| span / s <= 7.0)
            .unwrap_or(20.0 * mag);
        let first = (lo / step - 1e-9).ceil() as i64;
        let last = (hi / step + 1e-9).floor() as i64;
        let ticks = (first..=last).map(|k| k as f64 * step).collect();
        Self {
            lo,
            hi,
            ticks,
            step,
        }
    }

    /// An axis over the finite `values`, widened by `pad` of the span on each side.
    pub fn fit(values: impl IntoIterator<Item = f64>, pad: f64) -> Self {
        let (lo, hi) = values
            .into_iter()
            .filter(|v| v.is_finite())
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
                (a.min(v), b.max(v))
            });
        if lo.is_finite() && hi > lo {
            let d = (hi - lo) * pad;
            Self::new(lo - d, hi + d)
        } else {
            Self::new(lo, hi)
        }
    }

    /// Tick positions.
    pub fn ticks(&self) -> &[f64] {
        &self.ticks
    }

    /// The plotters coordinate with these ticks.
    pub fn coord(&self) -> Ticked {
        Ticked(self.clone())
    }

    /// The label of tick value `v`: fixed notation with the decimals the tick step needs
    /// (`0.505`, `0.510`; `1200`), scientific for very large or small values (`2.5e-5`).
    pub fn label(&self, v: f64) -> String {
        let v = if v.abs() < self.step * 1e-6 { 0.0 } else { v };
        let big = self.lo.abs().max(self.hi.abs());
        let step_exp = self.step.log10().floor() as i32;
        let s = if big >= 1e6 || (big > 0.0 && self.step < 1e-4) {
            if v == 0.0 {
                return "0".into();
            }
            let exp = v.abs().log10().floor() as i32;
            let decimals = (exp - step_exp).max(0) as usize;
            format!("{v:.decimals$e}")
        } else {
            let decimals = (-step_exp).max(0) as usize;
            format!("{v:.decimals$}")
        };
        if s.trim_start_matches('-')
            .chars()
            .all(|c| c == '0' || c == '.')
        {
            s.trim_start_matches('-').to_string()
        } else {
            s.replace('-', "−")
        }
    }
}

/// An [`Axis`] as a plotters coordinate whose grid lines and labels are exactly its ticks.
#[derive(Debug, Clone)]
pub struct Ticked(Axis);

impl Ranged for Ticked {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, v: &f64, limit: (i32, i32)) -> i32 {
        let f = (v - self.0.lo) / (self.0.hi - self.0.lo);
        limit.0 + (f * f64::from(limit.1 - limit.0) + 1e-3).floor() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, _hint: Hint) -> Vec<f64> {
        self.0.ticks.clone()
    }

    fn range(&self) -> std::ops::Range<f64> {
        self.0.lo..self.0.hi
    }
}

/// Horizontal alignment of [`rich_text`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    /// Starts at the position.
    Left,
    /// Centred on it.
    Center,
    /// Ends at it.
    Right,
}

/// Splits `σ_{NMAD}` into `(text, shift)` runs: shift 0 normal, 1 subscript, −1 superscript.
fn runs(text: &str) -> Vec<(String, i8)> {
    let mut out: Vec<(String, i8)> = vec![(String::new(), 0)];
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        let shift = match c {
            '_' => 1,
            '^' => -1,
            _ => 0,
        };
        if shift != 0 && chars.peek() == Some(&'{') {
            chars.next();
            let inner: String = chars.by_ref().take_while(|&c| c != '}').collect();
            out.push((inner, shift));
            out.push((String::new(), 0));
        } else {
            out.last_mut().expect("never empty").0.push(c);
        }
    }
    out.retain(|(t, _)| !t.is_empty());
    out
}

fn run_style(size: f64, shift: i8, color: &RGBColor, rotated: bool) -> TextStyle<'static> {
    let size = if shift == 0 { size } else { 0.7 * size };
    let style = ("sans-serif", size)
        .into_font()
        .color(color)
        .pos(Pos::new(HPos::Left, VPos::Top));
    if rotated {
        style.transform(FontTransform::Rotate270)
    } else {
        style
    }
}

/// Width in pixels of `text` as [`rich_text`] draws it.
pub fn rich_width<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, text: &str, size: f64) -> i32 {
    runs(text)
        .iter()
        .map(|(t, shift)| {
            area.estimate_text_size(t, &run_style(size, *shift, &BLACK, false))
                .map_or(0, |(w, _)| w as i32)
        })
        .sum()
}

/// Draws `text` with `_{sub}` / `^{sup}` runs, its top at `y` (rotated: reading upwards, its
/// top at `x`, aligned along the vertical). `pos` is in the area's pixels.
pub fn rich_text<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    text: &str,
    pos: (i32, i32),
    size: f64,
    color: &RGBColor,
    align: Align,
    rotated: bool,
) -> Result<()> {
    let width = rich_width(area, text, size);
    let start = match align {
        Align::Left => 0,
        Align::Center => -width / 2,
        Align::Right => -width,
    };
    let mut advance = start;
    for (t, shift) in runs(text) {
        let style = run_style(size, shift, color, rotated);
        let drop = match shift {
            1 => (0.38 * size) as i32,
            -1 => (-0.12 * size) as i32,
            _ => 0,
        };
        let at = if rotated {
            (pos.0 + drop, pos.1 - advance)
        } else {
            (pos.0 + advance, pos.1 + drop)
        };
        drawn(area.draw_text(&t, &style, at))?;
        advance += area
            .estimate_text_size(&t, &style)
            .map_or(0, |(w, _)| w as i32);
    }
    Ok(())
}

/// A 2-D chart on `x` and `y` inside `area`: panel title (optional) on top, axis titles (rich
/// text) below and left, tick labels from the axes, light grid lines at the ticks.
pub type Chart<'a, DB> = ChartContext<'a, DB, Cartesian2d<Ticked, Ticked>>;

/// Builds a [`Chart`] (see its description).
pub fn chart<'a, DB: DrawingBackend>(
    area: &'a DrawingArea<DB, Shift>,
    x: &Axis,
    y: &Axis,
    xtitle: &str,
    ytitle: &str,
    title: Option<&str>,
) -> Result<Chart<'a, DB>> {
    let (w, h) = area.dim_in_pixel();
    let top = if let Some(t) = title {
        centred_title(area, t, 8)?;
        (TITLE_SIZE * 2.0) as i32
    } else {
        12
    };
    let tick_style: TextStyle = ("sans-serif", TICK_SIZE).into_font().into();
    let ylabel_w = y
        .ticks()
        .iter()
        .map(|&v| {
            area.estimate_text_size(&y.label(v), &tick_style)
                .map_or(0, |(w, _)| w)
        })
        .max()
        .unwrap_or(0) as i32
        + 12;
    let left_band = (AXIS_SIZE * 1.6) as i32;
    let bottom_band = (AXIS_SIZE * 1.8) as i32;
    let xlabel_h = (TICK_SIZE * 1.8) as i32;
    // Axis titles: centred on the plotting area (between the label areas and the right margin).
    let right = 18;
    let plot_left = left_band + ylabel_w;
    let plot_bottom = h as i32 - bottom_band - xlabel_h;
    rich_text(
        area,
        xtitle,
        (
            (plot_left + w as i32 - right) / 2,
            h as i32 - bottom_band + 4,
        ),
        AXIS_SIZE,
        &BLACK,
        Align::Center,
        false,
    )?;
    rich_text(
        area,
        ytitle,
        (6, (top + plot_bottom) / 2),
        AXIS_SIZE,
        &BLACK,
        Align::Center,
        true,
    )?;
    let mut chart = drawn(
        ChartBuilder::on(area)
            .margin_top(top)
            .margin_left(left_band)
            .margin_bottom(bottom_band)
            .margin_right(right)
            .x_label_area_size(xlabel_h)
            .y_label_area_size(ylabel_w)
            .build_cartesian_2d(x.coord(), y.coord()),
    )?;
    let (fx, fy) = (|v: &f64| x.label(*v), |v: &f64| y.label(*v));
    drawn(
        chart
            .configure_mesh()
            .x_label_formatter(&fx)
            .y_label_formatter(&fy)
            .label_style(tick_style.clone())
            .bold_line_style(BLACK.mix(0.08))
            .light_line_style(TRANSPARENT)
            .axis_style(BLACK)
            .draw(),
    )?;
    Ok(chart)
}

/// Draws the frame of the chart's plotting area (after the series, so it stays on top).
pub fn frame<DB: DrawingBackend>(chart: &mut Chart<'_, DB>, x: &Axis, y: &Axis) -> Result<()> {
    drawn(chart.draw_series(std::iter::once(Rectangle::new(
        [(x.lo, y.lo), (x.hi, y.hi)],
        BLACK.stroke_width(1),
    ))))?;
    Ok(())
}

/// A title centred at the top of `area`, its top `y` pixels down.
pub fn centred_title<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    text: &str,
    y: i32,
) -> Result<()> {
    let (w, _) = area.dim_in_pixel();
    rich_text(
        area,
        text,
        (w as i32 / 2, y),
        TITLE_SIZE,
        &BLACK,
        Align::Center,
        false,
    )
}

/// The legend of the series drawn with labels, at `position` (a white box, thin border).
pub fn legend<'a, DB: DrawingBackend + 'a>(
    chart: &mut Chart<'a, DB>,
    position: SeriesLabelPosition,
) -> Result<()> {
    drawn(
        chart
            .configure_series_labels()
            .position(position)
            .label_font(("sans-serif", TICK_SIZE))
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK.mix(0.4))
            .draw(),
    )
}

/// A block of rich-text lines on a white box with a thin border, its top-left or top-right
/// corner at `at` (pixels of `area`).
pub fn text_box<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    lines: &[String],
    at: (i32, i32),
    align: Align,
    size: f64,
) -> Result<()> {
    let line_h = (size * 1.45) as i32;
    let width = lines
        .iter()
        .map(|l| rich_width(area, l, size))
        .max()
        .unwrap_or(0);
    let pad = 8;
    let x0 = match align {
        Align::Right => at.0 - width - 2 * pad,
        Align::Center => at.0 - width / 2 - pad,
        Align::Left => at.0,
    };
    let y1 = at.1 + line_h * lines.len() as i32 + pad;
    drawn(area.draw(&Rectangle::new(
        [(x0, at.1), (x0 + width + 2 * pad, y1)],
        WHITE.mix(0.9).filled(),
    )))?;
    drawn(area.draw(&Rectangle::new(
        [(x0, at.1), (x0 + width + 2 * pad, y1)],
        BLACK.mix(0.4).stroke_width(1),
    )))?;
    for (i, l) in lines.iter().enumerate() {
        rich_text(
            area,
            l,
            (
                x0 + pad,
                at.1 + pad + line_h * i as i32 + (0.25 * size) as i32,
            ),
            size,
            &BLACK,
            Align::Left,
            false,
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_nice_and_labels_distinct() {
        let a = Axis::new(0.0, 1.0);
        assert_eq!(a.ticks().len(), 6);
        assert_eq!(a.label(a.ticks()[3]), "0.6");
        // The old bitmap plot printed "0.506, 0.506, 0.507" for a narrow range.
        for (lo, hi) in [
            (0.5055, 0.5072),
            (0.0, 1e-6),
            (1234.0, 1250.0),
            (-3.0, 27.0),
            (3e6, 9e6),
            (0.999_999, 1.000_001),
        ] {
            let a = Axis::new(lo, hi);
            let labels: Vec<String> = a.ticks().iter().map(|&t| a.label(t)).collect();
            assert!((3..=8).contains(&labels.len()), "{lo}..{hi}: {labels:?}");
            let mut u = labels.clone();
            u.dedup();
            assert_eq!(u, labels, "{lo}..{hi}: repeated labels");
            assert!(
                a.ticks()
                    .iter()
                    .all(|t| (lo - 1e-12..=hi + 1e-12).contains(t))
            );
        }
        assert_eq!(Axis::new(-1.0, 1.0).label(0.0), "0.0");
        assert_eq!(Axis::new(-1.0, 1.0).label(-1e-17), "0.0");
        assert_eq!(Axis::new(-1.0, 1.0).label(-0.5), "−0.5");
        assert_eq!(Axis::new(f64::NAN, 1.0), Axis::new(0.0, 1.0));
    }

    #[test]
    fn rich_text_runs() {
        assert_eq!(
            runs("σ_{NMAD} = 0.01"),
            vec![("σ".into(), 0), ("NMAD".into(), 1), (" = 0.01".into(), 0)]
        );
        assert_eq!(
            runs("10^{-3} x_1"),
            vec![("10".into(), 0), ("-3".into(), -1), (" x_1".into(), 0)]
        );
    }

    struct Demo;

    impl Figure for Demo {
        fn size(&self) -> (u32, u32) {
            (400, 300)
        }
        fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
            let (x, y) = (Axis::new(0.0, 1.0), Axis::new(0.0, 2.0));
            let mut c = chart(root, &x, &y, "z_{spec}", "counts", Some("demo"))?;
            frame(&mut c, &x, &y)
        }
        fn rasters(&self) -> Vec<Raster> {
            vec![Raster {
                at: (10, 10),
                size: (20, 20),
                width: 2,
                height: 2,
                rgb: vec![255, 0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0],
            }]
        }
    }

    #[test]
    fn saves_png_and_svg() {
        let dir = tempfile_dir();
        let [png, svg] = save(&Demo, &dir.join("demo")).unwrap();
        let bytes = std::fs::read(&png).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
        let text = std::fs::read_to_string(&svg).unwrap();
        assert!(
            text.contains("\nspec\n") && text.contains("\ndemo\n"),
            "{text}"
        );
        assert!(text.contains("data:image/png;base64,"));
        std::fs::remove_dir_all(&dir).ok();
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!("aion-plot-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}
