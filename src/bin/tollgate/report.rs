//! Output of `bench`: the table (stdout), the JSON document, and the SVG plot.

use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;

use crate::bench::{Cell, Report};
use crate::CliError;

fn fmt_ns(ns: u64) -> String {
    match ns {
        0..=9_999 => format!("{ns}"),
        10_000..=9_999_999 => format!("{:.0}µ", ns as f64 / 1e3),
        _ => format!("{:.0}m", ns as f64 / 1e6),
    }
}

fn fmt_opt(v: Option<f64>, decimals: usize, suffix: &str) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{v:.decimals$}{suffix}"))
}

/// The human-readable table with its header (references) and notes.
pub(crate) fn table(report: &Report) -> String {
    let mut out = String::new();
    let r = &report.references;
    let _ = writeln!(
        out,
        "tollgate bench {} — {} CPUs, {}, {:.2} s per cell, {} keys, deny-ratio target {}",
        report.version,
        report.cpus,
        report.os,
        report.duration_per_cell_s,
        report.distribution,
        report.deny_ratio_target
    );
    let mut refs = format!("physical references: clock read {:.1} ns", r.clock_read_ns);
    if let Some(c) = r.cached_clock_read_ns {
        let _ = write!(refs, " · cached clock read {c:.1} ns");
    }
    let _ = write!(refs, " · uncontended CAS {:.1} ns", r.cas_ns);
    if !r.papaya_get_ns.is_empty() {
        let mut sizes: Vec<(usize, f64)> =
            r.papaya_get_ns.iter().filter_map(|(k, v)| k.parse().ok().map(|k| (k, *v))).collect();
        sizes.sort_by_key(|&(k, _)| k);
        let list: Vec<String> = sizes
            .iter()
            .map(|(k, v)| format!("{k} key{} {v:.1} ns", if *k == 1 { "" } else { "s" }))
            .collect();
        let _ = write!(refs, " · papaya get: {}", list.join(", "));
    }
    let _ = writeln!(out, "{refs}\n");
    let header = [
        "algorithm",
        "clock",
        "keys",
        "thr",
        "library",
        "Mops/s",
        "ns/op",
        "p50",
        "p99",
        "p99.9",
        "max",
        "denied",
        "vs gov",
        "×floor",
        "B/key",
        "B/key est",
    ];
    let rows: Vec<[String; 16]> = report
        .cells
        .iter()
        .map(|c: &Cell| {
            [
                c.algorithm.to_string(),
                c.clock.to_string(),
                c.keys.clone(),
                c.threads.to_string(),
                c.library.to_string(),
                format!("{:.1}", c.ops_per_sec / 1e6),
                format!("{:.1}", c.ns_per_op),
                fmt_ns(c.latency_ns.p50),
                fmt_ns(c.latency_ns.p99),
                fmt_ns(c.latency_ns.p999),
                fmt_ns(c.latency_ns.max),
                format!("{:.1}%", c.denied_share * 100.0),
                fmt_opt(c.ratio_vs_governor, 2, "×"),
                format!("{:.1}", c.times_floor),
                fmt_opt(c.bytes_per_key_rss, 1, ""),
                fmt_opt(c.bytes_per_key_estimate, 1, ""),
            ]
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            let pad = w.saturating_sub(cell.chars().count());
            if i < 5 {
                let _ = write!(s, "{cell}{}  ", " ".repeat(pad));
            } else {
                let _ = write!(s, "{}{cell}  ", " ".repeat(pad));
            }
        }
        s.trim_end().to_string()
    };
    let _ = writeln!(out, "{}", line(header.to_vec()));
    for row in &rows {
        let _ = writeln!(out, "{}", line(row.iter().map(String::as_str).collect()));
    }
    let _ =
        writeln!(out, "\nlatencies in ns (µ = µs, m = ms); vs gov = throughput ratio (> 1: tollgate faster)");
    for note in &report.notes {
        let _ = writeln!(out, "note: {note}");
    }
    out
}

/// Writes the JSON document.
pub(crate) fn write_json(report: &Report, path: &Path) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(report).map_err(CliError::internal)?;
    std::fs::write(path, text + "\n")
        .map_err(|e| CliError::Io(format!("cannot write {}: {e}", path.display())))
}

const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

type Series = Vec<(String, Vec<(f64, f64)>)>;

/// Groups cells of the first algorithm and clock into lines: `label(cell)` names the line,
/// `x(cell)` places the point (None: not on this chart); y is Mops/s.
fn series(report: &Report, label: impl Fn(&Cell) -> String, x: impl Fn(&Cell) -> Option<f64>) -> Series {
    let Some(first) = report.cells.first() else { return Vec::new() };
    let mut out: Series = Vec::new();
    for c in report.cells.iter().filter(|c| c.algorithm == first.algorithm && c.clock == first.clock) {
        let Some(x) = x(c) else { continue };
        let name = label(c);
        let point = (x, c.ops_per_sec / 1e6);
        match out.iter_mut().find(|(n, _)| *n == name) {
            Some((_, points)) => points.push(point),
            None => out.push((name, vec![point])),
        }
    }
    for (_, points) in &mut out {
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    out
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    title: &str,
    x_desc: &str,
    log_x: bool,
    lines: &Series,
) -> Result<(), String> {
    let xs = lines.iter().flat_map(|(_, p)| p.iter().map(|q| q.0));
    let (x_min, x_max) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| (lo.min(x), hi.max(x)));
    let y_max = lines.iter().flat_map(|(_, p)| p.iter().map(|q| q.1)).fold(0.0, f64::max) * 1.15 + 1e-9;
    if !x_min.is_finite() {
        return Ok(());
    }
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    let mut builder = ChartBuilder::on(area);
    builder.caption(title, ("sans-serif", 20)).margin(15).x_label_area_size(40).y_label_area_size(60);
    macro_rules! draw {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart.configure_mesh().x_desc(x_desc).y_desc("Mops/s (all threads)").draw().map_err(err)?;
            for (i, (name, points)) in lines.iter().enumerate() {
                let color = PALETTE[i % PALETTE.len()];
                chart
                    .draw_series(LineSeries::new(points.iter().copied(), color.stroke_width(2)))
                    .map_err(err)?
                    .label(name.as_str())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
                chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled()))).map_err(err)?;
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .position(SeriesLabelPosition::UpperRight)
                .draw()
                .map_err(err)?;
        }};
    }
    if log_x {
        draw!(builder.build_cartesian_2d((x_min * 0.5..x_max * 2.0).log_scale(), 0.0..y_max).map_err(err)?);
    } else {
        draw!(builder.build_cartesian_2d(x_min - 0.5..x_max + 0.5, 0.0..y_max).map_err(err)?);
    }
    Ok(())
}

/// Throughput vs threads and vs keys, tollgate and governor, as an SVG.
pub(crate) fn write_plot(report: &Report, path: &Path) -> Result<(), CliError> {
    let by_threads =
        series(report, |c| format!("{} · {} keys", c.library, c.keys), |c| Some(c.threads as f64));
    let by_keys =
        series(report, |c| format!("{} · {} thr", c.library, c.threads), |c| c.keys.parse::<f64>().ok());
    let title =
        report.cells.first().map_or_else(String::new, |c| format!("{}, {} clock", c.algorithm, c.clock));
    let root = SVGBackend::new(path, (1000, 900)).into_drawing_area();
    let result = (|| -> Result<(), String> {
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let (top, bottom) = root.split_vertically(450);
        draw_panel(&top, &format!("throughput vs threads ({title})"), "threads", false, &by_threads)?;
        draw_panel(&bottom, &format!("throughput vs keys ({title})"), "keys (log scale)", true, &by_keys)?;
        root.present().map_err(|e| e.to_string())
    })();
    result.map_err(|e| CliError::Io(format!("cannot draw {}: {e}", path.display())))
}
