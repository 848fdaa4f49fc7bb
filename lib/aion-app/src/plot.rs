//! Diagnostic PNG plots drawn without a plotting library or system fonts: predicted-vs-true
//! scatter and histograms, with a 5×7 bitmap font ([`font`]).

pub mod font;

use std::path::Path;

use anyhow::{Context, Result};

type Rgb = [u8; 3];
const WHITE: Rgb = [255, 255, 255];
const BLACK: Rgb = [0, 0, 0];
const GREY: Rgb = [150, 150, 150];
const BLUE: Rgb = [31, 119, 180];
const RED: Rgb = [214, 39, 40];
const SCALE: usize = 2;

/// An RGB raster.
pub struct Canvas {
    w: usize,
    h: usize,
    px: Vec<Rgb>,
    clip: Option<(i64, i64, i64, i64)>,
}

impl Canvas {
    /// A white canvas.
    pub fn new(w: usize, h: usize) -> Self {
        Self {
            w,
            h,
            px: vec![WHITE; w * h],
            clip: None,
        }
    }

    fn blend(&mut self, x: i64, y: i64, c: Rgb, alpha: f32) {
        if x < 0 || y < 0 || x as usize >= self.w || y as usize >= self.h {
            return;
        }
        if let Some((x0, y0, x1, y1)) = self.clip
            && (x < x0 || x > x1 || y < y0 || y > y1)
        {
            return;
        }
        let p = &mut self.px[y as usize * self.w + x as usize];
        for k in 0..3 {
            p[k] = (f32::from(p[k]) * (1.0 - alpha) + f32::from(c[k]) * alpha).round() as u8;
        }
    }

    /// A straight line (Bresenham).
    pub fn line(&mut self, (x0, y0): (i64, i64), (x1, y1): (i64, i64), c: Rgb) {
        let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
        let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
        let (mut x, mut y, mut err) = (x0, y0, dx + dy);
        loop {
            self.blend(x, y, c, 1.0);
            if x == x1 && y == y1 {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x += sx;
            }
            if e2 <= dx {
                err += dx;
                y += sy;
            }
        }
    }

    /// A filled rectangle.
    pub fn rect(&mut self, x0: i64, y0: i64, x1: i64, y1: i64, c: Rgb, alpha: f32) {
        for y in y0.min(y1)..=y0.max(y1) {
            for x in x0.min(x1)..=x0.max(x1) {
                self.blend(x, y, c, alpha);
            }
        }
    }

    /// Text at (x, y) (top-left); returns its width in pixels.
    pub fn text(&mut self, x: i64, y: i64, s: &str, c: Rgb) -> i64 {
        for (i, ch) in s.chars().enumerate() {
            let g = font::glyph(ch);
            let ox = x + (i * 6 * SCALE) as i64;
            for (r, bits) in g.iter().enumerate() {
                for col in 0..5 {
                    if bits & (0x10 >> col) != 0 {
                        let (px, py) = (ox + (col * SCALE) as i64, y + (r * SCALE) as i64);
                        self.rect(px, py, px + SCALE as i64 - 1, py + SCALE as i64 - 1, c, 1.0);
                    }
                }
            }
        }
        text_width(s)
    }

    /// Writes the canvas as an 8-bit RGB PNG, all at once (temporary file + rename), with the
    /// text chunk that marks it as ours ([`crate::guard::PNG_SOFTWARE`]).
    pub fn save_png(&self, path: &Path) -> Result<()> {
        crate::guard::write_file(path, |file| {
            let mut enc = png::Encoder::new(file, self.w as u32, self.h as u32);
            enc.set_color(png::ColorType::Rgb);
            enc.set_depth(png::BitDepth::Eight);
            let (key, value) = crate::guard::PNG_SOFTWARE;
            enc.add_text_chunk(key.to_string(), value.to_string())
                .context("PNG text")?;
            let mut writer = enc.write_header().context("PNG header")?;
            let bytes: Vec<u8> = self.px.iter().flatten().copied().collect();
            writer.write_image_data(&bytes).context("PNG data")?;
            writer.finish().context("PNG end")?;
            Ok(())
        })
        .with_context(|| format!("cannot write {}", path.display()))
    }
}

fn text_width(s: &str) -> i64 {
    (s.chars().count() * 6 * SCALE) as i64
}

/// Tick positions: 4–10 "nice" values (1, 2, 5 × 10^k steps) covering [lo, hi].
pub fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    let span = (hi - lo).max(1e-12);
    let raw = span / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| span / s <= 6.0)
        .unwrap_or(10.0 * mag);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    (first..=last).map(|k| k as f64 * step).collect()
}

fn fmt_tick(v: f64) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".into() } else { s.into() }
}

/// Plot frame mapping data coordinates to pixels.
struct Frame {
    x: (f64, f64),
    y: (f64, f64),
    left: i64,
    top: i64,
    right: i64,
    bottom: i64,
}

impl Frame {
    fn px(&self, x: f64, y: f64) -> (i64, i64) {
        let fx = (x - self.x.0) / (self.x.1 - self.x.0);
        let fy = (y - self.y.0) / (self.y.1 - self.y.0);
        (
            self.left + (fx * (self.right - self.left) as f64).round() as i64,
            self.bottom - (fy * (self.bottom - self.top) as f64).round() as i64,
        )
    }

    fn draw_axes(&self, c: &mut Canvas, title: &str, xlabel: &str, ylabel: &str) {
        c.line((self.left, self.bottom), (self.right, self.bottom), BLACK);
        c.line((self.left, self.top), (self.left, self.bottom), BLACK);
        c.line((self.right, self.top), (self.right, self.bottom), BLACK);
        c.line((self.left, self.top), (self.right, self.top), BLACK);
        for t in ticks(self.x.0, self.x.1) {
            let (px, _) = self.px(t, self.y.0);
            c.line((px, self.bottom), (px, self.bottom + 6), BLACK);
            let s = fmt_tick(t);
            c.text(px - text_width(&s) / 2, self.bottom + 10, &s, BLACK);
        }
        for t in ticks(self.y.0, self.y.1) {
            let (_, py) = self.px(self.x.0, t);
            c.line((self.left - 6, py), (self.left, py), BLACK);
            let s = fmt_tick(t);
            c.text(self.left - 10 - text_width(&s), py - 7, &s, BLACK);
        }
        c.text(
            (self.left + self.right) / 2 - text_width(xlabel) / 2,
            self.bottom + 36,
            xlabel,
            BLACK,
        );
        c.text(8, self.top - 30, ylabel, BLACK);
        c.text((c.w as i64 - text_width(title)) / 2, 12, title, BLACK);
    }
}

fn range(v: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = v
        .filter(|x| x.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
            (a.min(x), b.max(x))
        });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.05).max(1e-6);
    (lo - pad, hi + pad)
}

/// Predicted vs true scatter with the 1:1 line and the ±[`crate::metrics::OUTLIER`]·(1+z) band.
pub fn scatter_png(
    path: &Path,
    truth: &[f32],
    pred: &[f32],
    title: &str,
    xlabel: &str,
    ylabel: &str,
) -> Result<()> {
    let mut c = Canvas::new(900, 800);
    let (lo, hi) = range(truth.iter().chain(pred).map(|&v| f64::from(v)));
    let f = Frame {
        x: (lo, hi),
        y: (lo, hi),
        left: 110,
        top: 70,
        right: 870,
        bottom: 720,
    };
    let alpha = (300.0 / truth.len().max(1) as f32).clamp(0.15, 0.9);
    for (&t, &p) in truth.iter().zip(pred) {
        if t.is_finite() && p.is_finite() {
            let (x, y) = f.px(f64::from(t), f64::from(p));
            c.rect(x - 2, y - 2, x + 2, y + 2, BLUE, alpha);
        }
    }
    let band = crate::metrics::OUTLIER;
    c.clip = Some((f.left, f.top, f.right, f.bottom));
    for (k, col) in [(0.0, RED), (band, GREY), (-band, GREY)] {
        let a = f.px(lo, lo + k * (1.0 + lo));
        let b = f.px(hi, hi + k * (1.0 + hi));
        c.line(a, b, col);
    }
    c.clip = None;
    f.draw_axes(&mut c, title, xlabel, ylabel);
    c.save_png(path)
}

/// Histogram of `values` in `bins` bins.
pub fn histogram_png(
    path: &Path,
    values: &[f32],
    bins: usize,
    title: &str,
    xlabel: &str,
) -> Result<()> {
    let mut c = Canvas::new(900, 700);
    let (lo, hi) = range(values.iter().map(|&v| f64::from(v)));
    let mut counts = vec![0usize; bins.max(1)];
    for &v in values.iter().filter(|v| v.is_finite()) {
        let k = (((f64::from(v) - lo) / (hi - lo)) * bins as f64).floor() as usize;
        counts[k.min(bins - 1)] += 1;
    }
    let top = *counts.iter().max().unwrap_or(&1) as f64 * 1.1;
    let f = Frame {
        x: (lo, hi),
        y: (0.0, top.max(1.0)),
        left: 110,
        top: 70,
        right: 870,
        bottom: 620,
    };
    for (k, &n) in counts.iter().enumerate() {
        let x0 = lo + (hi - lo) * k as f64 / bins as f64;
        let x1 = lo + (hi - lo) * (k + 1) as f64 / bins as f64;
        let (a, b) = (f.px(x0, 0.0), f.px(x1, n as f64));
        c.rect(a.0 + 1, b.1, b.0 - 1, a.1, BLUE, 0.8);
    }
    f.draw_axes(&mut c, title, xlabel, "COUNT");
    c.save_png(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_ticks() {
        assert_eq!(
            ticks(0.0, 1.0),
            vec![0.0, 0.2, 0.4, 0.6000000000000001, 0.8, 1.0]
        );
        assert_eq!(fmt_tick(0.6000000000000001), "0.6");
        assert!(ticks(-3.0, 27.0).len() >= 4);
    }

    #[test]
    fn writes_valid_pngs() {
        let dir = std::env::temp_dir().join(format!("aion-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let t: Vec<f32> = (0..200).map(|i| i as f32 / 200.0).collect();
        let p: Vec<f32> = t.iter().map(|x| x + 0.01).collect();
        scatter_png(
            &dir.join("s.png"),
            &t,
            &p,
            "TOK_Z: N=200",
            "Z TRUE",
            "Z PRED",
        )
        .unwrap();
        histogram_png(&dir.join("h.png"), &p, 30, "TOK_Z", "Z PRED").unwrap();
        for f in ["s.png", "h.png"] {
            let bytes = std::fs::read(dir.join(f)).unwrap();
            assert_eq!(&bytes[1..4], b"PNG");
        }
        std::fs::remove_dir_all(&dir).ok();
    }
}
