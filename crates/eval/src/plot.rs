//! PNG charts for eval reports, drawn with `plotters`: grouped bars with 95 % error bars
//! (accuracy per domain per model), lines (interpolation curves, accuracy vs noise), a
//! reliability diagram and a histogram (preference strengths μ̂, with the μ̂ = 0 threshold). Text
//! is set in DejaVu Sans, embedded from `fonts/` (license beside it) and rendered by ab_glyph, so
//! no system font or C library is needed. Charts are drawn into an RGB buffer, encoded by `png`
//! and written atomically (temporary sibling + rename) through `rmtrain_core::write_atomic`, so a
//! crash never leaves half a PNG behind.

use crate::metrics::CalibrationBin;
use plotters::coord::types::RangedCoordf64;
use plotters::chart::MeshStyle;
use plotters::coord::Shift;
use plotters::coord::ranged1d::{KeyPointHint, NoDefaultFormatting, Ranged, ValueFormatter};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use rmtrain_core::CoreError;
use std::error::Error;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// A chart failed to draw, encode or write; each names the file it was for.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error("{path}: drawing the chart failed: {message}")]
    Draw { path: PathBuf, message: String },
    #[error("{path}: PNG encoding failed: {source}")]
    Encode { path: PathBuf, source: png::EncodingError },
    #[error(transparent)]
    Write(#[from] CoreError),
}

/// One series of [`bar_chart_grouped`]: `values[i]` is its bar in group `i`, and
/// `intervals[i]`, when given, the (low, high) ends of that bar's error bar (e.g. a 95 %
/// bootstrap interval). A missing or NaN value leaves a gap; a NaN interval draws no error bar.
#[derive(Debug, Clone, PartialEq)]
pub struct BarSeries {
    pub label: String,
    pub values: Vec<f64>,
    pub intervals: Option<Vec<(f64, f64)>>,
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;
type DrawResult<T = ()> = Result<T, Box<dyn Error>>;

const WIDTH: u32 = 960;
const HEIGHT: u32 = 600;
/// Bar charts widen up to this until every group name fits under its group.
const MAX_WIDTH: u32 = 2400;

const FONT: &str = "sans-serif";
/// DejaVu Sans 2.37 (Bitstream Vera license: `fonts/DejaVuSans-LICENSE.txt`): wide Unicode
/// coverage, so a "–", a "−" or an accented letter in a label renders as typed.
const DEJAVU_SANS: &[u8] = include_bytes!("../fonts/DejaVuSans.ttf");
const TITLE_SIZE: f64 = 26.0;
const LABEL_SIZE: f64 = 18.0;
const SMALL_SIZE: f64 = 13.0;

const INK: RGBColor = RGBColor(40, 40, 40);
const GRID: RGBColor = RGBColor(225, 225, 225);
const DIAGONAL: RGBColor = RGBColor(150, 150, 150);
/// Tableau 10: distinguishable, and still readable in grey scale by lightness.
const PALETTE: [RGBColor; 10] = [
    RGBColor(78, 121, 167),
    RGBColor(242, 142, 43),
    RGBColor(225, 87, 89),
    RGBColor(118, 183, 178),
    RGBColor(89, 161, 79),
    RGBColor(237, 201, 72),
    RGBColor(176, 122, 161),
    RGBColor(255, 157, 167),
    RGBColor(156, 117, 95),
    RGBColor(186, 176, 172),
];

fn color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

fn font(size: f64) -> TextStyle<'static> {
    (FONT, size).into_font().color(&INK)
}

/// plotters keeps fonts in a process-wide table; DejaVu Sans goes in once, as every style.
fn register_embedded_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, DEJAVU_SANS)
            .ok()
            .expect("the embedded DejaVuSans.ttf is a valid TrueType font");
    });
}

/// Width in pixels of `text` at `size` (0 if it cannot be measured: only layout depends on it).
fn text_width(text: &str, size: f64) -> u32 {
    register_embedded_font();
    (FONT, size).into_font().box_size(text).map_or(0, |(w, _)| w)
}

/// Draws a `width` × `height` chart with `draw` on a white canvas and writes it as a PNG.
fn render_png(path: &Path, (width, height): (u32, u32), draw: impl FnOnce(&Area) -> DrawResult) -> Result<(), PlotError> {
    register_embedded_font();
    let mut rgb = vec![255u8; width as usize * height as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (width, height)).into_drawing_area();
        draw(&root)
            .and_then(|()| Ok(root.present()?))
            .map_err(|e| PlotError::Draw { path: path.into(), message: e.to_string() })?;
    }
    let png = encode_png(width, height, &rgb).map_err(|source| PlotError::Encode { path: path.into(), source })?;
    Ok(rmtrain_core::write_atomic(path, &png)?)
}

/// 8-bit RGB, row-major, as a PNG.
fn encode_png(width: u32, height: u32, rgb: &[u8]) -> Result<Vec<u8>, png::EncodingError> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(rgb)?;
    writer.finish()?;
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Title and legend

/// How a legend entry is marked.
enum Mark {
    Fill(RGBAColor),
    Line(RGBColor),
    Dashed(RGBColor),
    ErrorBar,
}

const LEGEND_ROW: i32 = 28;
const LEGEND_MARK: i32 = 26;

fn legend_width(entries: &[(&str, Mark)]) -> u32 {
    entries.iter().map(|(label, _)| text_width(label, LABEL_SIZE)).max().map_or(0, |w| w + LEGEND_MARK as u32 + 30)
}

/// The title across the top, the legend in a column on the right; returns the area left for
/// the chart itself.
fn frame<'a>(root: &Area<'a>, title: &str, legend: &[(&str, Mark)]) -> DrawResult<Area<'a>> {
    root.fill(&WHITE)?;
    let body = root.titled(title, font(TITLE_SIZE))?;
    let (width, _) = body.dim_in_pixel();
    let (chart, side) = body.split_horizontally(width.saturating_sub(legend_width(legend)));
    for (i, (label, mark)) in legend.iter().enumerate() {
        let y = 30 + i as i32 * LEGEND_ROW; // middle of the row
        let (x0, x1) = (4, 4 + LEGEND_MARK);
        match mark {
            Mark::Fill(c) => side.draw(&Rectangle::new([(x0, y - 8), (x1, y + 8)], c.filled()))?,
            Mark::Line(c) => {
                side.draw(&PathElement::new([(x0, y), (x1, y)], c.stroke_width(3)))?;
                side.draw(&Circle::new(((x0 + x1) / 2, y), 4, c.filled()))?;
            }
            Mark::Dashed(c) => {
                for x in (x0..x1).step_by(10) {
                    side.draw(&PathElement::new([(x, y), ((x + 6).min(x1), y)], c.stroke_width(2)))?;
                }
            }
            Mark::ErrorBar => {
                let xm = (x0 + x1) / 2;
                let style = INK.stroke_width(2);
                side.draw(&PathElement::new([(xm, y - 10), (xm, y + 10)], style))?;
                side.draw(&PathElement::new([(xm - 6, y - 10), (xm + 6, y - 10)], style))?;
                side.draw(&PathElement::new([(xm - 6, y + 10), (xm + 6, y + 10)], style))?;
            }
        }
        let style = font(LABEL_SIZE).pos(Pos::new(HPos::Left, VPos::Center));
        side.draw(&Text::new(label.to_string(), (x1 + 10, y), style))?;
    }
    Ok(chart)
}

/// An x–y chart on `area`, both axes labelled, a light grid: what the line chart and the
/// reliability diagram share. `top`: the margin above the plot (room for labels over bars); the
/// right margin leaves room for the last x tick label, centred on the frame's edge.
fn xy_chart<'a, 'b>(
    area: &'a Area<'b>,
    x: Range<f64>,
    y: Range<f64>,
    (x_label, y_label): (&str, &str),
    top: u32,
) -> DrawResult<ChartContext<'a, BitMapBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>> {
    let mut chart = plot_area(area).margin_top(top).build_cartesian_2d(x.clone(), y.clone())?;
    let (x_decimals, y_decimals) = (tick_decimals(&x), tick_decimals(&y));
    house_mesh(chart.configure_mesh().x_desc(x_label).y_desc(y_label))
        .x_label_formatter(&|&v| tick_label(v, x_decimals))
        .y_label_formatter(&|&v| tick_label(v, y_decimals))
        .draw()?;
    Ok(chart)
}

/// The margins and label areas of an x-y chart (line charts, reliability diagram, histogram).
fn plot_area<'a, 'b>(area: &'a Area<'b>) -> ChartBuilder<'a, 'b, BitMapBackend<'b>> {
    let mut builder = ChartBuilder::on(area);
    builder.margin(10).margin_right(24).x_label_area_size(60).y_label_area_size(80);
    builder
}

/// The house style of a chart's mesh: fonts, ink, major grid lines only.
fn house_mesh<'m, 'a, 'b, X: Ranged, Y: Ranged, DB: DrawingBackend>(mesh: &'m mut MeshStyle<'a, 'b, X, Y, DB>) -> &'m mut MeshStyle<'a, 'b, X, Y, DB> {
    mesh.label_style(font(LABEL_SIZE)).axis_desc_style(font(LABEL_SIZE)).axis_style(INK).bold_line_style(GRID).light_line_style(TRANSPARENT)
}

/// Decimals that tell ticks apart: plotters puts about ten of them on an axis, at multiples of
/// 1, 2 or 5 × 10^k, so a tenth of the axis sets the last digit that changes.
fn tick_decimals(range: &Range<f64>) -> usize {
    let step = (range.end - range.start) / 10.0;
    if step > 0.0 && step.is_finite() { (-step.log10().floor()).max(0.0) as usize } else { 0 }
}

/// A tick value with `decimals` decimals; a tick a rounding error below 0 reads "0.0", not "-0.0".
fn tick_label(v: f64, decimals: usize) -> String {
    let text = format!("{v:.decimals$}");
    match text.strip_prefix('-') {
        Some(rest) if rest.chars().all(|c| c == '0' || c == '.') => rest.to_string(),
        _ => text,
    }
}

fn finite_range(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    values.filter(|v| v.is_finite()).fold(None, |acc, v| match acc {
        None => Some((v, v)),
        Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
    })
}

/// (lo, hi) widened by `pad` of its length on each side; a point becomes a unit interval around
/// it, and nothing becomes [0, 1].
fn padded(range: Option<(f64, f64)>, pad: f64) -> Range<f64> {
    match range {
        None => 0.0..1.0,
        Some((lo, hi)) if hi - lo < 1e-12 => lo - 0.5..hi + 0.5,
        Some((lo, hi)) => lo - pad * (hi - lo)..hi + pad * (hi - lo),
    }
}

// ---------------------------------------------------------------------------------------------
// Charts

/// The x axis of grouped bars: group `i` spans [i, i + 1), with its tick and name at i + 0.5
/// (plotters' own f64 axes would put ticks at round numbers, between the groups).
struct GroupAxis(usize);

impl Ranged for GroupAxis {
    type FormatOption = NoDefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, (lo, hi): (i32, i32)) -> i32 {
        lo + (value / self.0.max(1) as f64 * (hi - lo) as f64).round() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, _: Hint) -> Vec<f64> {
        (0..self.0).map(|i| i as f64 + 0.5).collect()
    }

    fn range(&self) -> Range<f64> {
        0.0..self.0.max(1) as f64
    }
}

impl ValueFormatter<f64> for GroupAxis {
    fn format(_: &f64) -> String {
        unreachable!("group names come from the chart's x_label_formatter")
    }
}

/// Grouped bars: one group per entry of `groups` (e.g. domains), one bar per series (e.g. models)
/// whose `i`-th value belongs to group `i`, labelled with its value, and an error bar where the
/// series has intervals. `y_range` fixes the y axis (bars and error bars are clipped to it); None
/// fits it to the values and intervals with a margin and includes 0. Bars rise from 0 when the
/// range contains it, otherwise from the bottom of the range. The image widens from 960 up to
/// 2400 pixels until every group name fits under its group.
pub fn bar_chart_grouped(
    path: &Path,
    title: &str,
    groups: &[String],
    series: &[BarSeries],
    y_range: Option<(f64, f64)>,
) -> Result<(), PlotError> {
    let (y_lo, y_hi) = y_range.unwrap_or_else(|| {
        let ends = series.iter().flat_map(|s| s.intervals.iter().flatten().flat_map(|&(lo, hi)| [lo, hi]));
        let values = series.iter().flat_map(|s| s.values.iter().copied());
        let (lo, hi) = finite_range(values.chain(ends).chain([0.0])).expect("0 is finite");
        let pad = 0.08 * (hi - lo); // room for the value labels, on the sides that have bars
        (if lo < 0.0 { lo - pad } else { lo }, if hi > 0.0 { hi + pad } else { hi + 1.0 })
    });
    let mut legend: Vec<(&str, Mark)> =
        series.iter().enumerate().map(|(i, s)| (s.label.as_str(), Mark::Fill(color(i).to_rgba()))).collect();
    if series.iter().any(|s| s.intervals.is_some()) {
        legend.push(("95% interval", Mark::ErrorBar));
    }
    let widest = groups.iter().map(|g| text_width(g, LABEL_SIZE)).max().unwrap_or(0);
    let wanted = 120 + legend_width(&legend) + groups.len() as u32 * (widest + 24);
    let width = wanted.clamp(WIDTH, MAX_WIDTH);

    render_png(path, (width, HEIGHT), |root| {
        let area = frame(root, title, &legend)?;
        let mut chart = ChartBuilder::on(&area)
            .margin(10)
            .margin_top(24) // value labels above the tallest bars
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(GroupAxis(groups.len()), y_lo..y_hi)?;
        let decimals = tick_decimals(&(y_lo..y_hi));
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(groups.len())
            .x_label_formatter(&|x| groups.get(x.floor() as usize).cloned().unwrap_or_default())
            .y_label_formatter(&|&y| tick_label(y, decimals))
            .label_style(font(LABEL_SIZE))
            .axis_style(INK)
            .bold_line_style(GRID)
            .light_line_style(TRANSPARENT)
            .draw()?;

        let clip = |v: f64| v.clamp(y_lo, y_hi);
        let base = clip(0.0);
        let bar = 0.8 / series.len().max(1) as f64; // in group widths; 10 % margin each side
        let (plot_width, _) = chart.plotting_area().dim_in_pixel();
        let bar_px = plot_width as f64 / groups.len().max(1) as f64 * bar;
        let gap = (1.5 / bar_px).min(0.1 * bar); // ~3 px between neighbouring bars
        let whisker = (bar_px * 0.2).clamp(2.0, 7.0) as i32; // half width, in pixels
        for (s, one) in series.iter().enumerate() {
            for (g, &v) in one.values.iter().enumerate().take(groups.len()).filter(|(_, v)| v.is_finite()) {
                let x0 = g as f64 + 0.1 + s as f64 * bar;
                let (xc, top) = (x0 + bar / 2.0, clip(v));
                chart.draw_series([Rectangle::new([(x0 + gap, base), (x0 + bar - gap, top)], color(s).filled())])?;
                let interval = one.intervals.as_ref().and_then(|iv| iv.get(g)).filter(|(lo, hi)| lo.is_finite() && hi.is_finite());
                if let Some(&(lo, hi)) = interval {
                    // Drawn by hand: plotters' ErrorBar also circles the value, which hides the
                    // bar's top edge. An end cut off by the axis gets no whisker.
                    let style = INK.stroke_width(2);
                    chart.draw_series([PathElement::new([(xc, clip(lo)), (xc, clip(hi))], style)])?;
                    for end in [lo, hi].into_iter().filter(|e| (y_lo..=y_hi).contains(e)) {
                        chart.draw_series([EmptyElement::at((xc, end)) + PathElement::new([(-whisker, 0), (whisker, 0)], style)])?;
                    }
                }
                // The value sits beyond the end of the bar and of its error bar.
                let label = format!("{v:.3}");
                if f64::from(text_width(&label, SMALL_SIZE)) <= bar_px {
                    let (at, anchor, dy) = if v >= base {
                        (interval.map_or(top, |&(_, hi)| clip(hi).max(top)), VPos::Bottom, -4)
                    } else {
                        (interval.map_or(top, |&(lo, _)| clip(lo).min(top)), VPos::Top, 4)
                    };
                    let style = font(SMALL_SIZE).pos(Pos::new(HPos::Center, anchor));
                    chart.draw_series([EmptyElement::at((xc, at)) + Text::new(label, (0, dy), style)])?;
                }
            }
        }
        chart.draw_series([PathElement::new([(0.0, base), (groups.len().max(1) as f64, base)], INK)])?;
        Ok(())
    })
}

/// Lines through each series' (x, y) points in the order given, with round markers; the x axis
/// spans the data, the y axis the data plus a 5 % margin. Non-finite points are skipped.
pub fn line_chart(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(String, Vec<(f64, f64)>)],
) -> Result<(), PlotError> {
    let finite = |s: &[(f64, f64)]| -> Vec<(f64, f64)> {
        s.iter().copied().filter(|(x, y)| x.is_finite() && y.is_finite()).collect()
    };
    let points: Vec<Vec<(f64, f64)>> = series.iter().map(|(_, pts)| finite(pts)).collect();
    let x_range = padded(finite_range(points.iter().flatten().map(|p| p.0)), 0.0);
    let y_range = padded(finite_range(points.iter().flatten().map(|p| p.1)), 0.05); // keeps markers off the frame
    let legend: Vec<(&str, Mark)> = series.iter().enumerate().map(|(i, (name, _))| (name.as_str(), Mark::Line(color(i)))).collect();

    render_png(path, (WIDTH, HEIGHT), |root| {
        let area = frame(root, title, &legend)?;
        let mut chart = xy_chart(&area, x_range, y_range, (x_label, y_label), 10)?;
        for (s, pts) in points.into_iter().enumerate() {
            chart.draw_series(LineSeries::new(pts.iter().copied(), color(s).stroke_width(3)))?;
            chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 5, color(s).filled())))?;
        }
        Ok(())
    })
}

/// Reliability diagram of calibration bins (from `ece_toplabel`, or `ece_p`): a bar per bin over
/// [lo, hi) as high as its accuracy, the gap to its mean confidence shaded red with a red line at
/// the mean confidence, the diagonal of perfect calibration dashed and each bin's count on top.
/// The title gets the ECE the bins imply.
pub fn reliability_diagram(path: &Path, title: &str, bins: &[CalibrationBin]) -> Result<(), PlotError> {
    const ACCURACY: RGBColor = PALETTE[0];
    const GAP: RGBColor = PALETTE[2];
    let total: usize = bins.iter().map(|b| b.count).sum();
    let ece: f64 = bins.iter().map(|b| b.count as f64 / total.max(1) as f64 * b.gap).sum();
    let title = format!("{title} (ECE = {ece:.3})");
    let legend = [
        ("accuracy", Mark::Fill(ACCURACY.to_rgba())),
        ("gap to confidence", Mark::Fill(GAP.mix(0.45))),
        ("perfect calibration", Mark::Dashed(DIAGONAL)),
    ];

    render_png(path, (WIDTH, HEIGHT), |root| {
        let area = frame(root, &title, &legend)?;
        let mut chart = xy_chart(&area, 0.0..1.0, 0.0..1.0, ("confidence", "accuracy"), 24)?; // room for bin counts above bars
        for b in bins {
            let (x0, x1) = (b.lo + 0.004, b.hi - 0.004);
            chart.draw_series([Rectangle::new([(x0, 0.0), (x1, b.accuracy)], ACCURACY.filled())])?;
            // Translucent, so a gap inside the bar (an underconfident bin) shows as purple.
            chart.draw_series([Rectangle::new([(x0, b.accuracy), (x1, b.mean_conf)], GAP.mix(0.45).filled())])?;
            chart.draw_series([PathElement::new([(x0, b.mean_conf), (x1, b.mean_conf)], GAP.stroke_width(2))])?;
            let style = font(SMALL_SIZE).pos(Pos::new(HPos::Center, VPos::Bottom));
            let label = Text::new(format!("n={}", b.count), (0, -6), style);
            chart.draw_series([EmptyElement::at(((b.lo + b.hi) / 2.0, b.accuracy.max(b.mean_conf))) + label])?;
        }
        chart.draw_series(DashedLineSeries::new([(0.0, 0.0), (1.0, 1.0)], 8, 6, DIAGONAL.stroke_width(2)))?;
        Ok(())
    })
}

/// Equal-width bins over [min, max] of the finite values (a single value's range widened to
/// ±0.5), the maximum in the last bin: the x range and the count per bin; None when no value is
/// finite.
fn histogram_bins(values: &[f64], bins: usize) -> Option<(Range<f64>, Vec<usize>)> {
    let (lo, hi) = match finite_range(values.iter().copied())? {
        (lo, hi) if hi - lo < 1e-12 => (lo - 0.5, hi + 0.5),
        range => range,
    };
    let bins = bins.max(1);
    let width = (hi - lo) / bins as f64;
    let mut counts = vec![0; bins];
    for v in values.iter().filter(|v| v.is_finite()) {
        counts[(((v - lo) / width).floor() as usize).min(bins - 1)] += 1;
    }
    Some((lo..hi, counts))
}

/// Histogram of `values`: `bins` equal-width bins (at least 1) over [min, max] of the finite values
/// (widened by ±0.5 when they are all equal), bar height = count, and a dashed red line at x = 0
/// when 0 lies in the range (for μ̂, the paper's threshold below which a label is likely wrong).
/// Non-finite values are skipped; none finite is an error, as there is no range to draw. Labels are
/// set glyph by glyph, so a combining mark (the hat of "μ̂") is not placed over its letter: write
/// "mean gap μ" or "mu-hat".
pub fn histogram(path: &Path, title: &str, x_label: &str, values: &[f64], bins: usize) -> Result<(), PlotError> {
    const BARS: RGBColor = PALETTE[0];
    const ZERO: RGBColor = PALETTE[2];
    let (x, counts) = histogram_bins(values, bins)
        .ok_or_else(|| PlotError::Draw { path: path.into(), message: "no finite value to draw a histogram of".into() })?;
    let width = (x.end - x.start) / counts.len() as f64;
    let tallest = counts.iter().copied().max().unwrap_or(0) as u32;
    let top = (f64::from(tallest) * 1.05).ceil() as u32 + 1; // bars never touch the frame

    render_png(path, (WIDTH, HEIGHT), |root| {
        let area = frame(root, title, &[])?;
        // Counts on an integer axis, so ticks never fall between whole numbers.
        let mut chart = plot_area(&area).build_cartesian_2d(x.clone(), 0u32..top)?;
        let decimals = tick_decimals(&x);
        house_mesh(chart.configure_mesh().x_desc(x_label).y_desc("count")).x_label_formatter(&|&v| tick_label(v, decimals)).draw()?;
        for (i, &count) in counts.iter().enumerate().filter(|&(_, &c)| c > 0) {
            let corners = [(x.start + i as f64 * width, 0), (x.start + (i + 1) as f64 * width, count as u32)];
            chart.draw_series([Rectangle::new(corners, BARS.filled())])?;
            chart.draw_series([Rectangle::new(corners, WHITE.stroke_width(1))])?; // sets neighbours apart
        }
        if x.contains(&0.0) || x.end == 0.0 {
            chart.draw_series(DashedLineSeries::new([(0.0, 0), (0.0, top)], 8, 6, ZERO.stroke_width(2)))?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (width, height) from the PNG signature and the IHDR chunk that must follow it.
    fn png_size(png: &[u8]) -> (u32, u32) {
        assert_eq!(png[..8], [0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1a, b'\n'], "PNG signature");
        assert_eq!(&png[12..16], b"IHDR", "IHDR comes first");
        let be32 = |at: usize| u32::from_be_bytes(png[at..at + 4].try_into().expect("4 bytes"));
        assert_eq!(be32(8), 13, "IHDR length");
        (be32(16), be32(20))
    }

    /// The decoded RGB pixels, which also checks every chunk and the zlib stream.
    fn pixels(path: &Path) -> Vec<u8> {
        let file = std::fs::File::open(path).expect("written");
        let mut reader = png::Decoder::new(std::io::BufReader::new(file)).read_info().expect("a PNG header");
        let mut buf = vec![0; reader.output_buffer_size().expect("a small image")];
        let info = reader.next_frame(&mut buf).expect("a decodable frame");
        buf.truncate(info.buffer_size());
        buf
    }

    fn assert_png(path: &Path, size: (u32, u32)) {
        assert_eq!(png_size(&std::fs::read(path).expect("written")), size);
        assert_eq!(pixels(path).len(), (size.0 * size.1 * 3) as usize);
    }

    fn groups() -> Vec<String> {
        vec!["helpful".into(), "harmless".into(), "shp".into()]
    }

    fn bars(intervals: Option<Vec<(f64, f64)>>) -> Vec<BarSeries> {
        let warm = BarSeries { label: "WARM".into(), values: vec![0.81, 0.7, 0.64], intervals };
        let best = BarSeries { label: "best member".into(), values: vec![0.78, f64::NAN, 0.62], intervals: None };
        vec![warm, best]
    }

    #[test]
    fn bar_chart_grouped_writes_a_960x600_png() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("bars.png");
        let intervals = vec![(0.79, 0.83), (0.68, 0.72), (0.61, 0.67)];
        bar_chart_grouped(&path, "accuracy per domain", &groups(), &bars(Some(intervals)), Some((0.5, 1.0))).expect("bars");
        assert_png(&path, (WIDTH, HEIGHT));
        let left: Vec<_> = std::fs::read_dir(dir.path()).expect("dir").map(|e| e.expect("entry").file_name()).collect();
        assert_eq!(left, ["bars.png"], "no temporary file left behind");
    }

    #[test]
    fn bar_chart_widens_for_many_long_group_names() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("wide.png");
        let groups: Vec<String> = (0..12).map(|i| format!("a rather long domain name {i}")).collect();
        let series = [BarSeries { label: "WARM".into(), values: vec![0.7; 12], intervals: None }];
        bar_chart_grouped(&path, "wide", &groups, &series, None).expect("bars");
        assert_png(&path, (MAX_WIDTH, HEIGHT));
    }

    #[test]
    fn error_bars_change_the_bar_chart() {
        let dir = tempfile::tempdir().expect("temp dir");
        let draw = |name: &str, intervals: Option<Vec<(f64, f64)>>| {
            let path = dir.path().join(name);
            bar_chart_grouped(&path, "accuracy", &groups(), &bars(intervals), Some((0.5, 1.0))).expect("bars");
            pixels(&path)
        };
        let without = draw("without.png", None);
        let narrow = draw("narrow.png", Some(vec![(0.80, 0.82), (0.69, 0.71), (0.63, 0.65)]));
        let wide = draw("wide.png", Some(vec![(0.70, 0.90), (0.60, 0.80), (0.55, 0.75)]));
        assert_ne!(without, narrow, "intervals draw error bars");
        // Same legend and axes: only the error bars (and the labels above them) can differ.
        assert_ne!(narrow, wide, "error bars follow the intervals");
    }

    #[test]
    fn line_chart_writes_a_960x600_png() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("lines.png");
        let curves = vec![
            ("helpful accuracy".to_string(), vec![(0.0, 0.6), (0.5, 0.7), (1.0, 0.65)]),
            ("helpful loss".to_string(), vec![(0.0, 0.66), (0.5, 0.58), (1.0, f64::NAN)]),
        ];
        line_chart(&path, "interpolation", "t (0 = A, 1 = B)", "accuracy / loss", &curves).expect("lines");
        assert_png(&path, (WIDTH, HEIGHT));
    }

    #[test]
    fn reliability_diagram_writes_a_960x600_png() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("reliability.png");
        let d = [1.0, -0.75, 3.0, 0.0, 0.75, -0.75, 2.0, 0.2, -0.1];
        reliability_diagram(&path, "WARM, top-label", &crate::metrics::ece_toplabel(&d).bins).expect("diagram");
        assert_png(&path, (WIDTH, HEIGHT));
    }

    #[test]
    fn charts_survive_empty_input() {
        let dir = tempfile::tempdir().expect("temp dir");
        bar_chart_grouped(&dir.path().join("a.png"), "empty", &[], &[], None).expect("empty bars");
        line_chart(&dir.path().join("b.png"), "empty", "x", "y", &[]).expect("empty lines");
        reliability_diagram(&dir.path().join("c.png"), "empty", &[]).expect("empty diagram");
        for name in ["a.png", "b.png", "c.png"] {
            assert_png(&dir.path().join(name), (WIDTH, HEIGHT));
        }
    }

    /// Regression: a histogram's tick a rounding error below 0 read "-0.0".
    #[test]
    fn tick_labels_never_read_minus_zero() {
        assert_eq!(tick_label(-1e-17, 1), "0.0");
        assert_eq!(tick_label(-0.0, 0), "0");
        assert_eq!(tick_label(-0.04, 1), "0.0");
        assert_eq!(tick_label(-0.06, 1), "-0.1");
        assert_eq!(tick_label(-1.5, 2), "-1.50");
    }

    #[test]
    fn histogram_bins_by_hand() {
        // [-1, 1] in 4 bins of 0.5: -1 → 0, 0 → 2, 0.5 → 3, 1 (the maximum) → 3; NaN and ∞ skipped.
        let (x, counts) = histogram_bins(&[-1.0, 0.0, 0.5, 1.0, f64::NAN, f64::INFINITY], 4).expect("finite values");
        assert_eq!((x, counts), (-1.0..1.0, vec![1, 0, 1, 2]));
        assert_eq!(histogram_bins(&[2.0, 2.0], 2), Some((1.5..2.5, vec![0, 2])), "one value widened by ±0.5");
        assert_eq!(histogram_bins(&[3.0], 0), Some((2.5..3.5, vec![1])), "at least one bin");
        assert_eq!(histogram_bins(&[f64::NAN], 4), None);
    }

    #[test]
    fn histogram_writes_a_960x600_png_with_the_zero_line() {
        let dir = tempfile::tempdir().expect("temp dir");
        let red = |path: &Path| pixels(path).chunks(3).any(|p| p == [225, 87, 89]);
        let around_zero = dir.path().join("mu.png");
        let mu = [-0.8, -0.1, 0.2, 0.4, 0.5, 0.9, 1.3, f64::NAN];
        histogram(&around_zero, "preference strength", "μ (mean reward gap)", &mu, 20).expect("histogram");
        assert_png(&around_zero, (WIDTH, HEIGHT));
        assert!(red(&around_zero), "0 is in the range: the zero line is drawn");
        let positive = dir.path().join("positive.png");
        histogram(&positive, "preference strength", "μ", &[1.0, 2.0, 2.5], 5).expect("histogram");
        assert_png(&positive, (WIDTH, HEIGHT));
        assert!(!red(&positive), "0 is outside the range: no zero line");
    }

    #[test]
    fn histogram_of_no_finite_value_is_an_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("nan.png");
        let err = histogram(&path, "nothing", "μ", &[f64::NAN, f64::NAN], 10).expect_err("nothing to draw");
        assert!(matches!(&err, PlotError::Draw { path: p, .. } if p == &path), "{err}");
        assert!(err.to_string().contains("nan.png"), "{err}");
        assert!(!path.exists(), "no file written");
    }
}
