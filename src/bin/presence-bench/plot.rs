//! `--plot FILE.svg`: the latency distribution as a percentile curve, hand-written SVG.
//!
//! The x axis is the percentile on a log scale of 1 / (1 - q) (0%, 90%, 99%, 99.9%, ...), so
//! the tail gets as much room as the median; the y axis is the latency in milliseconds.

use std::fmt::Write as _;
use std::path::Path;

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 440.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 40.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;

/// Writes the plot of `histogram` (microseconds) to `path`, if given.
pub fn save(
    path: Option<&Path>,
    title: &str,
    histogram: &hdrhistogram::Histogram<u64>,
) -> Result<(), String> {
    let Some(path) = path else {
        return Ok(());
    };
    std::fs::write(path, svg(title, histogram))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    println!("saved {}", path.display());
    Ok(())
}

/// A step of 1, 2 or 5 times a power of ten giving about five ticks up to `max`.
fn nice_step(max: f64) -> f64 {
    let raw = (max / 5.0).max(1e-6);
    let magnitude = 10f64.powf(raw.log10().floor());
    let fraction = raw / magnitude;
    let nice = if fraction <= 1.0 {
        1.0
    } else if fraction <= 2.0 {
        2.0
    } else if fraction <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * magnitude
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

pub fn svg(title: &str, histogram: &hdrhistogram::Histogram<u64>) -> String {
    let ms = |us: u64| us as f64 / 1000.0;
    let count = histogram.len();
    // As far into the tail as the sample size allows (at least to 99%, at most 99.999%).
    let decades = if count > 1 {
        (count as f64).log10().clamp(2.0, 5.0)
    } else {
        2.0
    };
    let x_max = decades.ceil();
    let mut points: Vec<(f64, f64)> = Vec::new();
    if count > 0 {
        for k in 0..=400 {
            let x = decades * k as f64 / 400.0;
            let q = 1.0 - 10f64.powf(-x);
            points.push((x, ms(histogram.value_at_quantile(q))));
        }
        points.push((decades, ms(histogram.max())));
    }
    let y_top = points.iter().map(|p| p.1).fold(0.0, f64::max).max(0.001);
    let step = nice_step(y_top);
    let y_max = (y_top / step).ceil() * step;
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let px = |x: f64| LEFT + x / x_max * plot_w;
    let py = |y: f64| TOP + plot_h - y / y_max * plot_h;

    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        out,
        r#"<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>"#
    );
    let _ = writeln!(
        out,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>"#,
        WIDTH / 2.0,
        escape(title)
    );
    // Grid and y ticks.
    let mut y = 0.0;
    while y <= y_max + step / 2.0 {
        let _ = writeln!(
            out,
            r##"<line x1="{LEFT}" y1="{0:.1}" x2="{1:.1}" y2="{0:.1}" stroke="#ddd"/><text x="{2:.1}" y="{3:.1}" text-anchor="end">{4}</text>"##,
            py(y),
            LEFT + plot_w,
            LEFT - 6.0,
            py(y) + 4.0,
            format_ms(y, step)
        );
        y += step;
    }
    // x ticks: 0%, 90%, 99%, ...
    for decade in 0..=(x_max as u32) {
        let label = match decade {
            0 => "0%".to_string(),
            d => {
                let nines = 100.0 - 100.0 * 10f64.powi(-(d as i32));
                format!("{nines:.*}%", (d as usize).saturating_sub(2))
            }
        };
        let x = px(decade as f64);
        let _ = writeln!(
            out,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{0:.1}" stroke="#ddd"/><text x="{x:.1}" y="{1:.1}" text-anchor="middle">{label}</text>"##,
            TOP + plot_h,
            TOP + plot_h + 18.0
        );
    }
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">percentile (log scale of 1/(1-q))</text>"#,
        LEFT + plot_w / 2.0,
        HEIGHT - 10.0
    );
    let _ = writeln!(
        out,
        r#"<text x="16" y="{:.1}" text-anchor="middle" transform="rotate(-90 16 {:.1})">latency (ms)</text>"#,
        TOP + plot_h / 2.0,
        TOP + plot_h / 2.0
    );
    let _ = writeln!(
        out,
        r#"<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="black"/>"#
    );
    if !points.is_empty() {
        let path: Vec<String> = points
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", px(*x), py(*y)))
            .collect();
        let _ = writeln!(
            out,
            r##"<polyline fill="none" stroke="#1f77b4" stroke-width="2" points="{}"/>"##,
            path.join(" ")
        );
    }
    let summary = format!(
        "n={}  p50 {:.3} ms  p99 {:.3} ms  p99.9 {:.3} ms  max {:.3} ms",
        count,
        ms(histogram.value_at_quantile(0.5)),
        ms(histogram.value_at_quantile(0.99)),
        ms(histogram.value_at_quantile(0.999)),
        ms(histogram.max())
    );
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}">{}</text>"#,
        LEFT + 10.0,
        TOP + 18.0,
        escape(&summary)
    );
    out.push_str("</svg>\n");
    out
}

fn format_ms(value: f64, step: f64) -> String {
    let decimals = if step >= 1.0 {
        0
    } else {
        (-step.log10()).ceil() as usize
    };
    format!("{value:.decimals$}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_a_curve_with_percentile_ticks() {
        let mut h = hdrhistogram::Histogram::<u64>::new(3).unwrap();
        for v in 1..=10_000u64 {
            h.record(v * 10).unwrap();
        }
        let svg = svg("t <1>", &h);
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("<polyline"));
        assert!(svg.contains(">99.9%<"));
        assert!(svg.contains("t &lt;1&gt;"));
        assert!(svg.trim_end().ends_with("</svg>"));
        // An empty histogram still gives a valid picture.
        let empty = hdrhistogram::Histogram::<u64>::new(3).unwrap();
        assert!(svg_is_closed(&super::svg("empty", &empty)));
    }

    fn svg_is_closed(s: &str) -> bool {
        s.trim_end().ends_with("</svg>")
    }

    #[test]
    fn steps_are_nice() {
        assert_eq!(nice_step(10.0), 2.0);
        assert_eq!(nice_step(1.0), 0.2);
        assert_eq!(nice_step(23.0), 5.0);
    }
}
