//! The report's plot, as hand-written SVG: line charts over categorical x axes (no plotting
//! crate needed for three small panels).

use std::fmt::Write;

pub struct Series {
    pub name: String,
    pub values: Vec<Option<f64>>,
    pub dashed: bool,
}

pub struct Panel {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub categories: Vec<String>,
    pub series: Vec<Series>,
    /// Horizontal reference lines (a goal), with their label.
    pub goals: Vec<(f64, String)>,
    /// A logarithmic y axis (latencies spanning milliseconds to seconds).
    pub log_y: bool,
}

const COLORS: &[&str] = &[
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
];
const PANEL_W: f64 = 440.0;
const PANEL_H: f64 = 330.0;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A round step giving about five ticks up to `max`.
fn tick_step(max: f64) -> f64 {
    let raw = max / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let norm = raw / mag;
    let nice = if norm <= 1.0 {
        1.0
    } else if norm <= 2.0 {
        2.0
    } else if norm <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

fn fmt_tick(v: f64) -> String {
    if v >= 1000.0 {
        format!("{}k", v / 1000.0)
    } else if v.fract() == 0.0 {
        format!("{v}")
    } else if v >= 0.1 {
        format!("{v:.1}")
    } else {
        format!("{v}")
    }
}

fn panel(out: &mut String, ox: f64, oy: f64, p: &Panel) {
    // Plot area inside the panel, leaving room for labels and the legend.
    let (left, right, top, bottom) = (
        ox + 60.0,
        ox + PANEL_W - 15.0,
        oy + 40.0,
        oy + PANEL_H - 90.0,
    );
    let values: Vec<f64> = p
        .series
        .iter()
        .flat_map(|s| s.values.iter().flatten().copied())
        .chain(p.goals.iter().map(|g| g.0))
        .filter(|v| v.is_finite())
        .collect();
    let max = values.iter().copied().fold(0.0f64, f64::max);
    let n = p.categories.len().max(1);
    let x_of = |i: usize| left + (right - left) * (i as f64 + 0.5) / n as f64;
    // The y axis: linear from 0 with round steps, or log10 between powers of ten.
    let (ticks, y_of): (Vec<f64>, Box<dyn Fn(f64) -> f64>) = if p.log_y {
        let min = values
            .iter()
            .copied()
            .filter(|v| *v > 0.0)
            .fold(f64::INFINITY, f64::min);
        let lo = if min.is_finite() {
            min.log10().floor()
        } else {
            0.0
        };
        let hi = max.max(10f64.powf(lo + 1.0)).log10().ceil();
        let ticks = (lo as i32..=hi as i32).map(|e| 10f64.powi(e)).collect();
        let f = move |v: f64| bottom - (bottom - top) * (v.max(1e-12).log10() - lo) / (hi - lo);
        (ticks, Box::new(f))
    } else {
        let step = tick_step(if max > 0.0 { max * 1.1 } else { 1.0 });
        let y_max = (max * 1.1 / step).ceil().max(1.0) * step;
        let ticks = (0..=(y_max / step).round() as usize)
            .map(|i| i as f64 * step)
            .collect();
        let f = move |v: f64| bottom - (bottom - top) * v / y_max;
        (ticks, Box::new(f))
    };

    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" font-size="14" font-weight="bold" text-anchor="middle">{}</text>"#,
        ox + PANEL_W / 2.0,
        oy + 22.0,
        esc(&p.title)
    );
    // Axes, grid and ticks.
    let _ = writeln!(
        out,
        r##"<path d="M{left},{top} L{left},{bottom} L{right},{bottom}" stroke="#333" fill="none"/>"##
    );
    for v in ticks {
        let y = y_of(v);
        let _ = writeln!(
            out,
            r##"<line x1="{left}" y1="{y}" x2="{right}" y2="{y}" stroke="#ddd"/><text x="{}" y="{}" font-size="11" text-anchor="end">{}</text>"##,
            left - 5.0,
            y + 4.0,
            fmt_tick(v)
        );
    }
    for (i, c) in p.categories.iter().enumerate() {
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" font-size="11" text-anchor="middle">{}</text>"#,
            x_of(i),
            bottom + 16.0,
            esc(c)
        );
    }
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" font-size="12" text-anchor="middle">{}</text>"#,
        (left + right) / 2.0,
        bottom + 34.0,
        esc(&p.x_label)
    );
    let _ = writeln!(
        out,
        r#"<text x="{x}" y="{y}" font-size="12" text-anchor="middle" transform="rotate(-90 {x} {y})">{}</text>"#,
        esc(&p.y_label),
        x = ox + 16.0,
        y = (top + bottom) / 2.0
    );
    for (value, label) in &p.goals {
        let y = y_of(*value);
        let _ = writeln!(
            out,
            r##"<line x1="{left}" y1="{y}" x2="{right}" y2="{y}" stroke="#c00" stroke-dasharray="2,3"/><text x="{}" y="{}" font-size="10" fill="#c00" text-anchor="end">{}</text>"##,
            right - 2.0,
            y - 3.0,
            esc(label)
        );
    }
    // The series, then their legend below the axis.
    for (k, s) in p.series.iter().enumerate() {
        let color = COLORS[k % COLORS.len()];
        let dash = if s.dashed {
            r#" stroke-dasharray="6,4""#
        } else {
            ""
        };
        let pts: Vec<String> = s
            .values
            .iter()
            .enumerate()
            .filter_map(|(i, v)| v.map(|v| format!("{:.1},{:.1}", x_of(i), y_of(v))))
            .collect();
        if pts.len() > 1 {
            let _ = writeln!(
                out,
                r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"{dash}/>"#,
                pts.join(" ")
            );
        }
        for pt in &pts {
            let (x, y) = pt.split_once(',').unwrap_or(("0", "0"));
            let _ = writeln!(out, r#"<circle cx="{x}" cy="{y}" r="3" fill="{color}"/>"#);
        }
        let lx = left + (k % 3) as f64 * 125.0;
        let ly = bottom + 52.0 + (k / 3) as f64 * 16.0;
        let _ = writeln!(
            out,
            r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="2"{dash}/><text x="{}" y="{}" font-size="11">{}</text>"#,
            lx + 18.0,
            lx + 22.0,
            ly + 4.0,
            esc(&s.name)
        );
    }
}

/// Panels side by side, under a title line.
pub fn svg(title: &str, panels: &[Panel]) -> String {
    let width = PANEL_W * panels.len().max(1) as f64;
    let height = PANEL_H + 30.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif">"#
    );
    let _ = writeln!(
        out,
        r##"<rect width="100%" height="100%" fill="white"/><text x="10" y="18" font-size="12" fill="#555">{}</text>"##,
        esc(title)
    );
    for (i, p) in panels.iter().enumerate() {
        panel(&mut out, i as f64 * PANEL_W, 30.0, p);
    }
    out.push_str("</svg>\n");
    out
}
