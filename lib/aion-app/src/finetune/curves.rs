//! Line plots (learning curves) on the dependency-free canvas of [`crate::plot`].

use std::path::Path;

use anyhow::Result;

use crate::plot::{Canvas, ticks};

/// An RGB colour.
pub type Rgb = [u8; 3];
/// Blue.
pub const BLUE: Rgb = [31, 119, 180];
/// Light blue.
pub const LIGHT_BLUE: Rgb = [174, 199, 232];
/// Red.
pub const RED: Rgb = [214, 39, 40];
const BLACK: Rgb = [0, 0, 0];

fn label(v: f64) -> String {
    let s = if v.abs() >= 1000.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
    };
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    };
    if s == "-0" { "0".into() } else { s }
}

/// A named series of `(x, y)` points and its colour.
pub type Series<'a> = (&'a str, &'a [(f64, f64)], Rgb);

/// Draws named `(x, y)` series as lines (a single point as a dot) with axes, ticks and a legend.
pub fn line_png(
    path: &Path,
    series: &[Series<'_>],
    title: &str,
    xlabel: &str,
    ylabel: &str,
) -> Result<()> {
    let (w, h) = (900usize, 620usize);
    let (left, top, right, bottom) = (110i64, 60i64, 870i64, 540i64);
    let finite = |p: &&(f64, f64)| p.0.is_finite() && p.1.is_finite();
    let pts: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|s| s.1.iter().filter(finite).copied())
        .collect();
    let (mut x0, mut x1, mut y0, mut y1) = (
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
    );
    for &(x, y) in &pts {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    if pts.is_empty() {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    let (xs, ys) = (((x1 - x0) * 0.02).max(1e-9), ((y1 - y0) * 0.05).max(1e-9));
    let (x0, x1, y0, y1) = (x0 - xs, x1 + xs, y0 - ys, y1 + ys);
    let px = |x: f64, y: f64| -> (i64, i64) {
        (
            left + ((x - x0) / (x1 - x0) * (right - left) as f64).round() as i64,
            bottom - ((y - y0) / (y1 - y0) * (bottom - top) as f64).round() as i64,
        )
    };
    let mut c = Canvas::new(w, h);
    for (_, s, col) in series {
        let good: Vec<&(f64, f64)> = s.iter().filter(finite).collect();
        if good.len() == 1 {
            let (x, y) = px(good[0].0, good[0].1);
            c.rect(x - 2, y - 2, x + 2, y + 2, *col, 1.0);
        }
        for p in good.windows(2) {
            c.line(px(p[0].0, p[0].1), px(p[1].0, p[1].1), *col);
        }
    }
    for (a, b) in [
        ((left, bottom), (right, bottom)),
        ((left, top), (left, bottom)),
        ((right, top), (right, bottom)),
        ((left, top), (right, top)),
    ] {
        c.line(a, b, BLACK);
    }
    for t in ticks(x0, x1) {
        let (x, _) = px(t, y0);
        c.line((x, bottom), (x, bottom + 6), BLACK);
        let s = label(t);
        c.text(x - 6 * s.len() as i64, bottom + 10, &s, BLACK);
    }
    for t in ticks(y0, y1) {
        let (_, y) = px(x0, t);
        c.line((left - 6, y), (left, y), BLACK);
        let s = label(t);
        c.text(left - 10 - 12 * s.len() as i64, y - 7, &s, BLACK);
    }
    c.text(
        (left + right) / 2 - 6 * xlabel.len() as i64,
        bottom + 36,
        xlabel,
        BLACK,
    );
    c.text(8, top - 30, ylabel, BLACK);
    c.text((w as i64 - 12 * title.len() as i64) / 2, 12, title, BLACK);
    for (i, (name, _, col)) in series.iter().enumerate() {
        let y = top + 12 + 22 * i as i64;
        c.rect(right - 260, y + 4, right - 236, y + 8, *col, 1.0);
        c.text(right - 228, y, name, BLACK);
    }
    c.save_png(path)
}

#[cfg(test)]
mod tests {
    #[test]
    fn writes_a_png() {
        let dir = std::env::temp_dir().join(format!("aion-curves-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let a: Vec<(f64, f64)> = (0..100)
            .map(|i| (i as f64, 1.0 / (1.0 + i as f64)))
            .collect();
        let b = vec![(50.0, 0.1)];
        let p = dir.join("c.png");
        super::line_png(
            &p,
            &[("A", &a, super::BLUE), ("B", &b, super::RED)],
            "T",
            "STEP",
            "LOSS",
        )
        .unwrap();
        assert_eq!(&std::fs::read(&p).unwrap()[1..4], b"PNG");
        std::fs::remove_dir_all(&dir).ok();
    }
}
