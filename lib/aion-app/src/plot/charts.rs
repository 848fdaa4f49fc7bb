//! The figures the tools write: an evaluation of predictions against true values (scatter or
//! density, PIT histogram, interval coverage), a histogram, panels of curves (learning curves,
//! spectra) and grids of images (cutouts, generated images and maps).

use anyhow::Result;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::{
    AXIS_SIZE, Align, Axis, C_BLUE, C_GREY, C_ORANGE, C_RED, Figure, Raster, TICK_SIZE, TITLE_SIZE,
    centred_title, chart, drawn, frame, legend, rich_text, text_box,
};
use crate::metrics::{Evaluation, OUTLIER, PIT_BINS, coverage};

/// Rows above which the truth-vs-prediction panel shades a 2-D histogram instead of points.
pub const DENSITY_ABOVE: usize = 1500;
/// Cells per axis of that histogram.
const DENSITY_BINS: usize = 80;

/// `12.3 %`.
pub fn percent(x: f64) -> String {
    format!("{:.1} %", 100.0 * x)
}

/// A signed value with a true minus sign (`+0.0013`, `−0.0021`).
pub fn signed(x: f64, decimals: usize) -> String {
    format!("{x:+.decimals$}").replace('-', "−")
}

/// A value with 3 significant digits (`0.0173`, `12.3`).
pub fn sig3(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return format!("{x}");
    }
    let d = (2 - x.abs().log10().floor() as i32).max(0) as usize;
    format!("{x:.d$}").replace('-', "−")
}

/// Predictions against true values: the truth-vs-prediction panel (points, or a density when
/// they overlap, with the 1:1 line and the ±[`OUTLIER`]·(1 + true) lines), and with posteriors
/// the PIT histogram and the coverage of central intervals.
pub struct EvaluationFigure<'a> {
    /// True values.
    pub truth: &'a [f32],
    /// Point predictions.
    pub pred: &'a [f32],
    /// PIT of each scored row (empty without posteriors).
    pub pits: &'a [f64],
    /// The metrics.
    pub eval: &'a Evaluation,
    /// x axis title (rich text), e.g. `spectroscopic redshift z_{spec}`.
    pub truth_title: &'a str,
    /// y axis title, e.g. `photometric redshift z_{phot} (posterior median)`.
    pub pred_title: &'a str,
    /// The true value's symbol in plain text for the legend and the PIT axis (`z_spec`).
    pub truth_symbol: &'a str,
    /// Title over the figure.
    pub title: &'a str,
}

impl EvaluationFigure<'_> {
    fn panels(&self) -> usize {
        if self.pits.is_empty() { 1 } else { 3 }
    }

    fn scatter<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Result<()> {
        let pairs: Vec<(f64, f64)> = self
            .truth
            .iter()
            .zip(self.pred)
            .filter(|(t, p)| t.is_finite() && p.is_finite())
            .map(|(&t, &p)| (f64::from(t), f64::from(p)))
            .collect();
        let ax = Axis::fit(pairs.iter().flat_map(|&(t, p)| [t, p]), 0.03);
        let dense = pairs.len() > DENSITY_ABOVE;
        let (plot_area, bar_area) = if dense {
            let (w, _) = area.dim_in_pixel();
            let (a, b) = area.split_horizontally(w as i32 - 100);
            (a, Some(b))
        } else {
            (area.clone(), None)
        };
        let mut c = chart(
            &plot_area,
            &ax,
            &ax,
            self.truth_title,
            self.pred_title,
            None,
        )?;
        if dense {
            let counts = histogram2d(&pairs, &ax);
            let max = counts.iter().copied().max().unwrap_or(1).max(1);
            let cell = (ax.hi - ax.lo) / DENSITY_BINS as f64;
            let cells = counts
                .iter()
                .enumerate()
                .filter(|(_, n)| **n > 0)
                .map(|(k, &n)| {
                    let (i, j) = (k % DENSITY_BINS, k / DENSITY_BINS);
                    let (x0, y0) = (ax.lo + i as f64 * cell, ax.lo + j as f64 * cell);
                    Rectangle::new(
                        [(x0, y0), (x0 + cell, y0 + cell)],
                        density_colour(n, max).filled(),
                    )
                });
            drawn(c.draw_series(cells))?;
            if let Some(b) = &bar_area {
                colour_bar(b, max)?;
            }
        } else {
            let alpha = (400.0 / pairs.len().max(1) as f64).clamp(0.25, 0.8);
            drawn(
                c.draw_series(
                    pairs
                        .iter()
                        .map(|&p| Circle::new(p, 3, C_BLUE.mix(alpha).filled())),
                ),
            )?;
        }
        let line = |k: f64| {
            vec![
                (ax.lo, ax.lo + k * (1.0 + ax.lo)),
                (ax.hi, ax.hi + k * (1.0 + ax.hi)),
            ]
        };
        drawn(c.draw_series(LineSeries::new(line(0.0), C_RED.stroke_width(2))))?
            .label("1:1")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], C_RED.stroke_width(2)));
        for (i, k) in [OUTLIER, -OUTLIER].into_iter().enumerate() {
            let s =
                drawn(c.draw_series(DashedLineSeries::new(line(k), 7, 5, C_GREY.stroke_width(2))))?;
            if i == 0 {
                s.label(format!(
                    "±{OUTLIER} (1 + {}): outlier limits",
                    self.truth_symbol
                ))
                .legend(|(x, y)| {
                    PathElement::new(vec![(x, y), (x + 24, y)], C_GREY.stroke_width(2))
                });
            }
        }
        legend(&mut c, SeriesLabelPosition::UpperLeft)?;
        frame(&mut c, &ax, &ax)?;
        let p = &self.eval.point;
        let mut lines = vec![
            format!("N = {}", p.n),
            format!("σ_{{NMAD}} = {}", sig3(p.sigma_nmad)),
            format!("outliers = {}", percent(p.outlier_fraction)),
            format!("bias = {}", signed(p.bias, 4)),
        ];
        if let Some(cal) = &self.eval.calibration {
            lines.push(format!("CRPS = {}", sig3(cal.crps)));
        }
        let r = c.plotting_area().get_pixel_range();
        let (px1, py1) = (r.0.end, r.1.end);
        let (ox, oy) = plot_area.get_base_pixel();
        let n = lines.len() as i32;
        text_box(
            &plot_area,
            &lines,
            (px1 - ox - 10, py1 - oy - 16 - (TICK_SIZE * 1.45) as i32 * n),
            Align::Right,
            TICK_SIZE,
        )
    }

    fn pit<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Result<()> {
        let hist = self
            .eval
            .calibration
            .as_ref()
            .map(|c| c.pit_histogram.clone())
            .unwrap_or_default();
        let n: usize = hist.iter().sum();
        let expect = n as f64 / PIT_BINS as f64;
        let dens: Vec<f64> = hist.iter().map(|&k| k as f64 / expect.max(1e-9)).collect();
        let top = dens.iter().copied().fold(1.5f64, f64::max) * 1.12;
        let (x, y) = (Axis::new(0.0, 1.0), Axis::new(0.0, top));
        let mut c = chart(
            area,
            &x,
            &y,
            &format!("PIT = F({})", self.truth_symbol),
            "density (1 = calibrated)",
            None,
        )?;
        let w = 1.0 / PIT_BINS as f64;
        drawn(c.draw_series(dens.iter().enumerate().map(|(i, &d)| {
            Rectangle::new(
                [(i as f64 * w + 0.004, 0.0), ((i + 1) as f64 * w - 0.004, d)],
                C_BLUE.mix(0.75).filled(),
            )
        })))?;
        drawn(c.draw_series(DashedLineSeries::new(
            vec![(0.0, 1.0), (1.0, 1.0)],
            7,
            5,
            C_RED.stroke_width(2),
        )))?
        .label("calibrated (flat)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], C_RED.stroke_width(2)));
        legend(&mut c, SeriesLabelPosition::UpperMiddle)?;
        frame(&mut c, &x, &y)
    }

    fn coverage<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Result<()> {
        let ax = Axis::new(0.0, 1.0);
        let mut c = chart(
            area,
            &ax,
            &ax,
            "central interval: nominal probability",
            "share of true values inside",
            None,
        )?;
        drawn(c.draw_series(DashedLineSeries::new(
            vec![(0.0, 0.0), (1.0, 1.0)],
            7,
            5,
            C_RED.stroke_width(2),
        )))?
        .label("calibrated")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], C_RED.stroke_width(2)));
        let curve: Vec<(f64, f64)> = (0..=100)
            .map(|i| {
                let l = f64::from(i) / 100.0;
                (l, coverage(self.pits, l))
            })
            .collect();
        drawn(c.draw_series(LineSeries::new(curve, C_BLUE.stroke_width(2))))?
            .label("these posteriors")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], C_BLUE.stroke_width(2)));
        let marks: Vec<(f64, f64)> = [0.68, 0.95]
            .into_iter()
            .map(|l| (l, coverage(self.pits, l)))
            .collect();
        drawn(c.draw_series(marks.iter().map(|&p| Circle::new(p, 5, C_ORANGE.filled()))))?;
        legend(&mut c, SeriesLabelPosition::UpperLeft)?;
        frame(&mut c, &ax, &ax)?;
        let r = c.plotting_area().get_pixel_range();
        let (ox, oy) = area.get_base_pixel();
        let lines: Vec<String> = marks
            .iter()
            .map(|&(l, v)| format!("{:.0} % interval: {} inside", 100.0 * l, percent(v)))
            .collect();
        text_box(
            area,
            &lines,
            (
                r.0.end - ox - 10,
                r.1.end - oy - 16 - (TICK_SIZE * 2.9) as i32,
            ),
            Align::Right,
            TICK_SIZE,
        )
    }
}

impl Figure for EvaluationFigure<'_> {
    fn size(&self) -> (u32, u32) {
        (580 * self.panels() as u32, 620)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        centred_title(root, self.title, 10)?;
        let body = root.margin((TITLE_SIZE * 2.0) as i32, 0, 0, 0);
        let panels = body.split_evenly((1, self.panels()));
        self.scatter(&panels[0])?;
        if panels.len() == 3 {
            // A gap after the first panel's colour bar.
            self.pit(&panels[1].margin(0, 0, 24, 0))?;
            self.coverage(&panels[2].margin(0, 0, 12, 0))?;
        }
        Ok(())
    }
}

/// Counts of `pairs` in a [`DENSITY_BINS`]² grid over `ax` × `ax` (row-major in y).
fn histogram2d(pairs: &[(f64, f64)], ax: &Axis) -> Vec<usize> {
    let mut counts = vec![0usize; DENSITY_BINS * DENSITY_BINS];
    let cell = |v: f64| {
        (((v - ax.lo) / (ax.hi - ax.lo) * DENSITY_BINS as f64) as usize).min(DENSITY_BINS - 1)
    };
    for &(x, y) in pairs {
        counts[cell(y) * DENSITY_BINS + cell(x)] += 1;
    }
    counts
}

/// Viridis on a logarithmic scale of `n` in `1..=max`.
fn density_colour(n: usize, max: usize) -> RGBColor {
    let f = (n as f64).ln() / (max as f64).ln().max(1e-9);
    ViridisRGB::get_color(f.clamp(0.0, 1.0) as f32)
}

/// A vertical colour bar for [`density_colour`], labelled at powers of ten.
fn colour_bar<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, max: usize) -> Result<()> {
    let (_, h) = area.dim_in_pixel();
    let (top, bottom) = (40i32, h as i32 - 90);
    let (x0, x1) = (8i32, 26i32);
    let steps = 64;
    for s in 0..steps {
        let f0 = s as f64 / steps as f64;
        let y = |f: f64| bottom - ((bottom - top) as f64 * f) as i32;
        let col = ViridisRGB::get_color(f0 as f32);
        drawn(area.draw(&Rectangle::new(
            [(x0, y(f0 + 1.0 / steps as f64)), (x1, y(f0))],
            col.filled(),
        )))?;
    }
    drawn(area.draw(&Rectangle::new(
        [(x0, top), (x1, bottom)],
        BLACK.stroke_width(1),
    )))?;
    let lmax = (max as f64).ln().max(1e-9);
    let mut v = 1usize;
    while v <= max {
        let y = bottom - ((bottom - top) as f64 * (v as f64).ln() / lmax) as i32;
        drawn(area.draw(&PathElement::new(vec![(x1, y), (x1 + 4, y)], BLACK)))?;
        rich_text(
            area,
            &v.to_string(),
            (x1 + 6, y - (TICK_SIZE * 0.45) as i32),
            TICK_SIZE * 0.9,
            &BLACK,
            Align::Left,
            false,
        )?;
        v *= 10;
    }
    rich_text(
        area,
        "objects per cell",
        (x1 + 50, (top + bottom) / 2),
        TICK_SIZE,
        &BLACK,
        Align::Center,
        true,
    )
}

/// A histogram of `values` (finite ones) in about 40 bins.
pub struct HistogramFigure<'a> {
    /// Values.
    pub values: &'a [f64],
    /// x axis title.
    pub xtitle: &'a str,
    /// Title.
    pub title: &'a str,
}

impl Figure for HistogramFigure<'_> {
    fn size(&self) -> (u32, u32) {
        (820, 600)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        let x = Axis::fit(self.values.iter().copied(), 0.02);
        let bins = 40;
        let w = (x.hi - x.lo) / bins as f64;
        let mut counts = vec![0usize; bins];
        for &v in self.values.iter().filter(|v| v.is_finite()) {
            counts[(((v - x.lo) / w) as usize).min(bins - 1)] += 1;
        }
        let top = counts.iter().copied().max().unwrap_or(1).max(1) as f64 * 1.1;
        let y = Axis::new(0.0, top);
        let mut c = chart(root, &x, &y, self.xtitle, "objects", Some(self.title))?;
        drawn(
            c.draw_series(
                counts
                    .iter()
                    .enumerate()
                    .filter(|(_, n)| **n > 0)
                    .map(|(i, &n)| {
                        let x0 = x.lo + i as f64 * w;
                        Rectangle::new([(x0, 0.0), (x0 + w, n as f64)], C_BLUE.mix(0.75).filled())
                    }),
            ),
        )?;
        frame(&mut c, &x, &y)
    }
}

/// One curve of a [`Panel`].
pub struct Series {
    /// Legend entry.
    pub name: String,
    /// Colour.
    pub colour: RGBColor,
    /// Points (non-finite ones are gaps).
    pub points: Vec<(f64, f64)>,
    /// Dashed instead of solid.
    pub dashed: bool,
    /// Line width.
    pub width: u32,
}

impl Series {
    /// A solid line of width 2.
    pub fn line(name: impl Into<String>, colour: RGBColor, points: Vec<(f64, f64)>) -> Self {
        Self {
            name: name.into(),
            colour,
            points,
            dashed: false,
            width: 2,
        }
    }
}

/// A chart of curves.
pub struct Panel {
    /// Title over the chart (rich text).
    pub title: String,
    /// x axis title.
    pub xtitle: String,
    /// y axis title.
    pub ytitle: String,
    /// Curves.
    pub series: Vec<Series>,
    /// Fixed y range (else fitted to the curves).
    pub y_range: Option<(f64, f64)>,
    /// Fixed x range (else fitted).
    pub x_range: Option<(f64, f64)>,
    /// Where the legend goes.
    pub legend: SeriesLabelPosition,
}

impl Panel {
    /// A panel with its axes fitted to the curves and the legend at the upper right.
    pub fn new(
        title: impl Into<String>,
        xtitle: impl Into<String>,
        ytitle: impl Into<String>,
        series: Vec<Series>,
    ) -> Self {
        Self {
            title: title.into(),
            xtitle: xtitle.into(),
            ytitle: ytitle.into(),
            series,
            y_range: None,
            x_range: None,
            legend: SeriesLabelPosition::UpperRight,
        }
    }
}

/// Panels of curves on a grid of `columns` (learning curves, spectra).
pub struct CurvesFigure {
    /// Title over the figure (rich text; empty for none).
    pub title: String,
    /// Panels, row by row.
    pub panels: Vec<Panel>,
    /// Panels per row.
    pub columns: usize,
    /// Size of one panel.
    pub panel_size: (u32, u32),
}

impl CurvesFigure {
    fn rows(&self) -> usize {
        self.panels.len().div_ceil(self.columns.max(1)).max(1)
    }

    fn top(&self) -> u32 {
        if self.title.is_empty() {
            0
        } else {
            (TITLE_SIZE * 2.0) as u32
        }
    }
}

fn draw_panel<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, p: &Panel) -> Result<()> {
    let finite = |&&(x, y): &&(f64, f64)| x.is_finite() && y.is_finite();
    let pts = || p.series.iter().flat_map(|s| s.points.iter().filter(finite));
    let x = match p.x_range {
        Some((a, b)) => Axis::new(a, b),
        None => Axis::fit(pts().map(|q| q.0), 0.0),
    };
    let y = match p.y_range {
        Some((a, b)) => Axis::new(a, b),
        None => Axis::fit(pts().map(|q| q.1), 0.06),
    };
    let title = (!p.title.is_empty()).then_some(p.title.as_str());
    let mut c = chart(area, &x, &y, &p.xtitle, &p.ytitle, title)?;
    for s in &p.series {
        // Split at non-finite points so gaps stay gaps.
        let mut parts: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
        for &q in &s.points {
            if q.0.is_finite() && q.1.is_finite() {
                parts.last_mut().expect("never empty").push(q);
            } else if !parts.last().expect("never empty").is_empty() {
                parts.push(Vec::new());
            }
        }
        // plotters strokes wide lines with miter joins: on dense, jagged curves (spectra, a
        // loss per step) they spike far past the data, so those are drawn 1 pixel wide.
        let dense = s.points.len() > 300;
        let style = s.colour.stroke_width(if dense { 1 } else { s.width });
        let mut labelled = false;
        for part in parts.into_iter().filter(|q| !q.is_empty()) {
            let anno = if part.len() == 1 {
                drawn(c.draw_series(std::iter::once(Circle::new(part[0], 4, s.colour.filled()))))?
            } else if s.dashed {
                drawn(c.draw_series(DashedLineSeries::new(part, 7, 5, style)))?
            } else {
                drawn(c.draw_series(LineSeries::new(part, style)))?
            };
            if !labelled && !s.name.is_empty() {
                labelled = true;
                anno.label(s.name.clone())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], style));
            }
        }
    }
    if p.series.iter().any(|s| !s.name.is_empty()) {
        legend(&mut c, p.legend.clone())?;
    }
    frame(&mut c, &x, &y)
}

impl Figure for CurvesFigure {
    fn size(&self) -> (u32, u32) {
        let cols = self.columns.clamp(1, self.panels.len().max(1));
        (
            self.panel_size.0 * cols as u32,
            self.panel_size.1 * self.rows() as u32 + self.top(),
        )
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        if !self.title.is_empty() {
            centred_title(root, &self.title, 10)?;
        }
        let body = root.margin(self.top() as i32, 0, 0, 0);
        let cols = self.columns.clamp(1, self.panels.len().max(1));
        let areas = body.split_evenly((self.rows(), cols));
        for (a, p) in areas.iter().zip(&self.panels) {
            draw_panel(a, p)?;
        }
        Ok(())
    }
}

/// One image of an [`ImageGrid`]: RGB pixels and a caption under it.
pub struct Cell {
    /// Width.
    pub width: usize,
    /// Height.
    pub height: usize,
    /// `width · height · 3` bytes.
    pub rgb: Vec<u8>,
    /// Caption (rich text).
    pub caption: String,
}

/// Images on a grid: row titles on the left, column titles on top, a caption under each.
pub struct ImageGrid {
    /// Title over the figure.
    pub title: String,
    /// Row titles.
    pub row_titles: Vec<String>,
    /// Column titles.
    pub col_titles: Vec<String>,
    /// Cells, row by row (`None` = empty).
    pub cells: Vec<Vec<Option<Cell>>>,
    /// A note under the grid (e.g. the stretch used).
    pub note: String,
}

const CELL: u32 = 150;
const CELL_GAP: u32 = 14;
const CAPTION_H: u32 = 26;
const ROW_TITLE_W: u32 = 150;

impl ImageGrid {
    fn cols(&self) -> usize {
        self.cells.iter().map(Vec::len).max().unwrap_or(0).max(1)
    }

    /// Pixels above the first row: the title and the column titles.
    const TOP: u32 = (TITLE_SIZE * 2.0) as u32 + (AXIS_SIZE * 1.6) as u32;

    fn grid_width(&self) -> u32 {
        ROW_TITLE_W + self.cols() as u32 * (CELL + CELL_GAP) + 10
    }

    /// Top-left corner of cell `(r, c)`; the grid is centred when the title is wider.
    fn origin(&self, r: usize, c: usize) -> (i32, i32) {
        let top = Self::TOP;
        let left = (self.size().0 - self.grid_width()) / 2;
        (
            (left + ROW_TITLE_W + c as u32 * (CELL + CELL_GAP)) as i32,
            (top + r as u32 * (CELL + CAPTION_H + CELL_GAP)) as i32,
        )
    }
}

impl Figure for ImageGrid {
    fn size(&self) -> (u32, u32) {
        let top = Self::TOP;
        let height = top + self.cells.len() as u32 * (CELL + CAPTION_H + CELL_GAP) + 40;
        // Wide enough for the title (DejaVu Sans averages about half an em per character).
        let title = (self.title.chars().count() as f64 * 0.5 * TITLE_SIZE) as u32 + 40;
        (self.grid_width().max(title), height)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<()> {
        let (_, h) = root.dim_in_pixel();
        centred_title(root, &self.title, 10)?;
        for (c, t) in self.col_titles.iter().enumerate() {
            let (x, y) = self.origin(0, c);
            rich_text(
                root,
                t,
                (x + CELL as i32 / 2, y - (AXIS_SIZE * 1.5) as i32),
                TICK_SIZE,
                &BLACK,
                Align::Center,
                false,
            )?;
        }
        for (r, row) in self.cells.iter().enumerate() {
            let (x, y) = self.origin(r, 0);
            if let Some(t) = self.row_titles.get(r) {
                rich_text(
                    root,
                    t,
                    (x - 10, y + CELL as i32 / 2 - 8),
                    TICK_SIZE,
                    &BLACK,
                    Align::Right,
                    false,
                )?;
            }
            for (c, cell) in row.iter().enumerate() {
                let (x, y) = self.origin(r, c);
                let Some(cell) = cell else { continue };
                drawn(root.draw(&Rectangle::new(
                    [(x - 1, y - 1), (x + CELL as i32, y + CELL as i32)],
                    BLACK.mix(0.5).stroke_width(1),
                )))?;
                rich_text(
                    root,
                    &cell.caption,
                    (x + CELL as i32 / 2, y + CELL as i32 + 4),
                    TICK_SIZE * 0.9,
                    &BLACK,
                    Align::Center,
                    false,
                )?;
            }
        }
        rich_text(
            root,
            &self.note,
            (10, h as i32 - 30),
            TICK_SIZE * 0.9,
            &C_GREY,
            Align::Left,
            false,
        )
    }

    fn rasters(&self) -> Vec<Raster> {
        let mut out = Vec::new();
        for (r, row) in self.cells.iter().enumerate() {
            for (c, cell) in row.iter().enumerate() {
                if let Some(cell) = cell {
                    out.push(Raster {
                        at: self.origin(r, c),
                        size: (CELL, CELL),
                        width: cell.width,
                        height: cell.height,
                        rgb: cell.rgb.clone(),
                    });
                }
            }
        }
        out
    }
}

/// An RGB composite of three bands `(blue, green, red)` (each `h · w`, row 0 at the top) with
/// the arcsinh stretch of Lupton et al. (2004): `I = mean of the bands`,
/// `f = asinh(I / soft) / I`, channels `f · band` scaled so that the 99.5th percentile of `f · I`
/// is white; NaN pixels are grey.
pub fn lupton_rgb(bands: [&[f32]; 3], w: usize, h: usize) -> Vec<u8> {
    let n = w * h;
    let intensity: Vec<f64> = (0..n)
        .map(|i| bands.iter().map(|b| f64::from(b[i])).sum::<f64>() / 3.0)
        .collect();
    let mut finite: Vec<f64> = intensity
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .collect();
    finite.sort_by(f64::total_cmp);
    let q = |p: f64| {
        finite
            .get(((finite.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or(1.0)
    };
    // Softening at the noise level (spread of the faint half), so the sky stays dark.
    let soft = (q(0.5) - q(0.16))
        .abs()
        .max(1e-6 * q(0.995).abs())
        .max(1e-12);
    let stretch = |i: f64| if i > 0.0 { (i / soft).asinh() / i } else { 0.0 };
    let top = (q(0.995) * stretch(q(0.995))).max(1e-12);
    let mut rgb = vec![0u8; n * 3];
    for i in 0..n {
        let f = stretch(intensity[i]);
        for (ch, band) in [bands[2], bands[1], bands[0]].iter().enumerate() {
            let v = f64::from(band[i]);
            rgb[i * 3 + ch] = if v.is_finite() && intensity[i].is_finite() {
                (255.0 * (f * v / top).clamp(0.0, 1.0)) as u8
            } else {
                128
            };
        }
    }
    rgb
}

/// The three bands of a multi-band cutout shown as blue, green and red: the first bands named
/// g, r and i or z (any survey prefix, any case), else the first three (two bands: the first
/// as blue and green; one band: grey).
pub fn rgb_bands(names: &[String]) -> [usize; 3] {
    let find = |suffixes: &[&str]| {
        names.iter().position(|n| {
            let n = n.trim().to_ascii_lowercase();
            suffixes.iter().any(|s| n.ends_with(s))
        })
    };
    match (
        find(&["g"]),
        find(&["r"]),
        find(&["i"]).or_else(|| find(&["z"])),
    ) {
        (Some(b), Some(g), Some(r)) => [b, g, r],
        _ if names.len() >= 3 => [0, 1, 2],
        _ if names.len() == 2 => [0, 0, 1],
        _ => [0, 0, 0],
    }
}

/// A cutout `(bands, h, w)` (row-major) as an RGB [`Cell`] with [`lupton_rgb`].
pub fn cutout_cell(pixels: &[f32], names: &[String], h: usize, w: usize, caption: String) -> Cell {
    let band = |i: usize| &pixels[i * h * w..(i + 1) * h * w];
    let [b, g, r] = rgb_bands(names);
    Cell {
        width: w,
        height: h,
        rgb: lupton_rgb([band(b), band(g), band(r)], w, h),
        caption,
    }
}

/// A single-channel map in `[lo, hi]` through viridis (NaN: grey).
pub fn viridis_rgb(values: &[f32], lo: f32, hi: f32) -> Vec<u8> {
    values
        .iter()
        .flat_map(|&v| {
            if v.is_finite() {
                let c = ViridisRGB::get_color(((v - lo) / (hi - lo).max(1e-12)).clamp(0.0, 1.0));
                [c.0, c.1, c.2]
            } else {
                [128, 128, 128]
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{Binned, Posterior};

    fn svg_of(fig: &impl Figure) -> String {
        let dir = std::env::temp_dir().join(format!("aion-charts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let [png, svg] = super::super::save(fig, &dir.join("f")).unwrap();
        std::fs::copy(
            &png,
            std::env::temp_dir().join("aion-charts-evaluation.png"),
        )
        .unwrap();
        assert_eq!(&std::fs::read(png).unwrap()[1..4], b"PNG");
        let s = std::fs::read_to_string(svg).unwrap();
        std::fs::remove_dir_all(&dir).ok();
        s
    }

    #[test]
    fn evaluation_figure_names_its_axes_and_metrics() {
        let truth: Vec<f32> = (0..3000)
            .map(|i| 0.02 + 0.3 * (i as f32 / 3000.0))
            .collect();
        let pred: Vec<f32> = truth
            .iter()
            .enumerate()
            .map(|(i, t)| t + 0.01 * ((i % 7) as f32 - 3.0) / 3.0)
            .collect();
        let (probs, edges) = ([0.5, 0.5], [0.0, 0.2, 0.4]);
        let post = Binned {
            probs: &probs,
            edges: &edges,
        };
        let scores: Vec<_> = truth
            .iter()
            .map(|&t| post.score(f64::from(t)).unwrap())
            .collect();
        let pits: Vec<f64> = scores.iter().map(|s| s.pit).collect();
        let eval = Evaluation::new(&pred, &truth, &scores).unwrap();
        let svg = svg_of(&EvaluationFigure {
            truth: &truth,
            pred: &pred,
            pits: &pits,
            eval: &eval,
            truth_title: "spectroscopic redshift z_{spec}",
            pred_title: "photometric redshift z_{phot}",
            truth_symbol: "z_spec",
            title: "test",
        });
        for s in [
            "spectroscopic redshift z",
            "\nspec\n",
            "photometric redshift z",
            "\nNMAD\n",
            "PIT = F(z_spec)",
            "objects per cell",
            "1:1",
        ] {
            assert!(svg.contains(s), "{s} missing");
        }
    }
}
