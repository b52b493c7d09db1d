//! PNG plots for eval reports without a plotting dependency: an RGB canvas, a 5×7 bitmap font
//! (digits, A–Z with lower case drawn as upper case, `.-_:%[]()=,/+?`), a minimal PNG encoder
//! (zlib by flate2, CRC-32 from a table) and three charts: grouped bars (accuracy per domain per
//! model), lines (interpolation curves, accuracy vs noise) and a reliability diagram. Files are
//! written atomically (temporary sibling + rename) through `rmtrain_core::write_atomic`.

use crate::metrics::CalibrationBin;
use flate2::{Compression, write::ZlibEncoder};
use rmtrain_core::CoreError;
use std::io::Write;
use std::path::Path;

type Rgb = [u8; 3];

const WIDTH: i64 = 960;
const HEIGHT: i64 = 600;
const MAX_WIDTH: i64 = 2400;
const INK: Rgb = [40, 40, 40];
const GRID: Rgb = [228, 228, 228];
const DIAGONAL: Rgb = [150, 150, 150];
/// Tableau 10: distinguishable, and still readable in grey scale by lightness.
const PALETTE: [Rgb; 10] = [
    [78, 121, 167],
    [242, 142, 43],
    [225, 87, 89],
    [118, 183, 178],
    [89, 161, 79],
    [237, 201, 72],
    [176, 122, 161],
    [255, 157, 167],
    [156, 117, 95],
    [186, 176, 172],
];

// ---------------------------------------------------------------------------------------------
// PNG encoding

const PNG_SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1a, b'\n'];

const CRC_TABLE: [u32; 256] = crc_table();

/// The CRC-32 (IEEE, reflected 0xEDB88320) table PNG chunks use.
const fn crc_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut n = 0;
    while n < 256 {
        let mut c = n as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
            k += 1;
        }
        table[n] = c;
        n += 1;
    }
    table
}

fn crc32(bytes: &[u8]) -> u32 {
    !bytes.iter().fold(!0u32, |c, &b| CRC_TABLE[((c ^ b as u32) & 0xff) as usize] ^ (c >> 8))
}

fn push_chunk(png: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    let len = u32::try_from(data.len()).expect("a plot's chunk is far below 4 GiB");
    png.extend_from_slice(&len.to_be_bytes());
    let start = png.len();
    png.extend_from_slice(kind);
    png.extend_from_slice(data);
    let crc = crc32(&png[start..]);
    png.extend_from_slice(&crc.to_be_bytes());
}

/// Encodes 8-bit RGB pixels (row-major, `width * height * 3` bytes) as a PNG: one IHDR, one IDAT
/// holding the zlib stream of rows each prefixed by filter byte 0, one IEND.
///
/// # Panics
/// When `rgb` is not `width * height * 3` bytes long.
pub fn encode_png(width: u32, height: u32, rgb: &[u8]) -> Vec<u8> {
    let row_bytes = width as usize * 3;
    assert_eq!(rgb.len(), row_bytes * height as usize, "rgb holds width * height * 3 bytes");
    let mut raw = Vec::with_capacity(height as usize * (1 + row_bytes));
    for row in rgb.chunks_exact(row_bytes.max(1)) {
        raw.push(0); // filter type None
        raw.extend_from_slice(row);
    }
    let mut z = ZlibEncoder::new(Vec::new(), Compression::default());
    z.write_all(&raw).expect("writing into a Vec cannot fail");
    let idat = z.finish().expect("writing into a Vec cannot fail");

    let mut ihdr = Vec::with_capacity(13);
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // bit depth 8, colour type RGB, deflate, no filter, no interlace
    let mut png = PNG_SIGNATURE.to_vec();
    push_chunk(&mut png, b"IHDR", &ihdr);
    push_chunk(&mut png, b"IDAT", &idat);
    push_chunk(&mut png, b"IEND", &[]);
    png
}

// ---------------------------------------------------------------------------------------------
// 5×7 font: one byte per row, top to bottom, bit 4 = leftmost column.

fn glyph(c: char) -> [u8; 7] {
    match c.to_ascii_uppercase() {
        '0' => [0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
        '1' => [0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
        '2' => [0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
        '3' => [0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
        '4' => [0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02],
        '5' => [0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
        '6' => [0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E],
        '7' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => [0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E],
        '9' => [0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
        'A' => [0x0E, 0x11, 0x11, 0x11, 0x1F, 0x11, 0x11],
        'B' => [0x1E, 0x11, 0x11, 0x1E, 0x11, 0x11, 0x1E],
        'C' => [0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E],
        'D' => [0x1C, 0x12, 0x11, 0x11, 0x11, 0x12, 0x1C],
        'E' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F],
        'F' => [0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10],
        'G' => [0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F],
        'H' => [0x11, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11],
        'I' => [0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E],
        'J' => [0x07, 0x02, 0x02, 0x02, 0x02, 0x12, 0x0C],
        'K' => [0x11, 0x12, 0x14, 0x18, 0x14, 0x12, 0x11],
        'L' => [0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x1F],
        'M' => [0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11],
        'N' => [0x11, 0x11, 0x19, 0x15, 0x13, 0x11, 0x11],
        'O' => [0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'P' => [0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10],
        'Q' => [0x0E, 0x11, 0x11, 0x11, 0x15, 0x12, 0x0D],
        'R' => [0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11],
        'S' => [0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E],
        'T' => [0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04],
        'U' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        'V' => [0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04],
        'W' => [0x11, 0x11, 0x11, 0x15, 0x15, 0x15, 0x0A],
        'X' => [0x11, 0x11, 0x0A, 0x04, 0x0A, 0x11, 0x11],
        'Y' => [0x11, 0x11, 0x11, 0x0A, 0x04, 0x04, 0x04],
        'Z' => [0x1F, 0x01, 0x02, 0x04, 0x08, 0x10, 0x1F],
        ' ' => [0; 7],
        '.' => [0, 0, 0, 0, 0, 0x0C, 0x0C],
        '-' | '–' | '−' => [0, 0, 0, 0x1F, 0, 0, 0],
        '_' => [0, 0, 0, 0, 0, 0, 0x1F],
        ':' => [0, 0x0C, 0x0C, 0, 0x0C, 0x0C, 0],
        '%' => [0x18, 0x19, 0x02, 0x04, 0x08, 0x13, 0x03],
        '[' => [0x0E, 0x08, 0x08, 0x08, 0x08, 0x08, 0x0E],
        ']' => [0x0E, 0x02, 0x02, 0x02, 0x02, 0x02, 0x0E],
        '(' => [0x02, 0x04, 0x08, 0x08, 0x08, 0x04, 0x02],
        ')' => [0x08, 0x04, 0x02, 0x02, 0x02, 0x04, 0x08],
        '=' => [0, 0, 0x1F, 0, 0x1F, 0, 0],
        ',' => [0, 0, 0, 0, 0x0C, 0x04, 0x08],
        '/' => [0, 0x01, 0x02, 0x04, 0x08, 0x10, 0],
        '+' => [0, 0x04, 0x04, 0x1F, 0x04, 0x04, 0],
        _ => [0x0E, 0x11, 0x01, 0x02, 0x04, 0, 0x04], // '?' for anything else
    }
}

/// Width in pixels of `s` drawn at `scale` (a 5-pixel glyph plus 1 pixel of spacing each).
fn text_width(s: &str, scale: i64) -> i64 {
    (s.chars().count() as i64 * 6 - 1).max(0) * scale
}

// ---------------------------------------------------------------------------------------------
// Canvas

struct Canvas {
    width: i64,
    height: i64,
    rgb: Vec<u8>,
}

impl Canvas {
    fn new(width: i64, height: i64) -> Self {
        Self { width, height, rgb: vec![255; (width * height * 3) as usize] }
    }

    /// Mixes `c` into the pixel with weight `alpha` (1 = opaque); outside the canvas is ignored.
    fn blend(&mut self, x: i64, y: i64, c: Rgb, alpha: f64) {
        if x < 0 || y < 0 || x >= self.width || y >= self.height {
            return;
        }
        let i = ((y * self.width + x) * 3) as usize;
        for (channel, &target) in self.rgb[i..i + 3].iter_mut().zip(&c) {
            let old = *channel as f64;
            *channel = (old + alpha * (target as f64 - old)).round() as u8;
        }
    }

    /// Fills [x0, x1) × [y0, y1), corners in any order.
    fn fill_rect(&mut self, x0: i64, y0: i64, x1: i64, y1: i64, c: Rgb, alpha: f64) {
        for y in y0.min(y1)..y0.max(y1) {
            for x in x0.min(x1)..x0.max(x1) {
                self.blend(x, y, c, alpha);
            }
        }
    }

    /// Diagonal stripes over [x0, x1) × [y0, y1), which stay readable over a filled bar.
    fn hatch_rect(&mut self, x0: i64, y0: i64, x1: i64, y1: i64, c: Rgb) {
        for y in y0.min(y1)..y0.max(y1) {
            for x in (x0.min(x1)..x0.max(x1)).filter(|x| (x + y).rem_euclid(8) < 3) {
                self.blend(x, y, c, 1.0);
            }
        }
    }

    /// A line of `thickness` pixels, optionally dashed (`dash` pixels on, `dash` off).
    fn line(&mut self, (x0, y0): (f64, f64), (x1, y1): (f64, f64), thickness: i64, c: Rgb, dash: Option<f64>) {
        let len = (x1 - x0).hypot(y1 - y0);
        let steps = len.ceil().max(1.0) as i64;
        let half = thickness / 2;
        for i in 0..=steps {
            let t = i as f64 / steps as f64;
            if dash.is_some_and(|d| ((t * len / d) as i64) % 2 == 1) {
                continue;
            }
            let (x, y) = ((x0 + t * (x1 - x0)).round() as i64, (y0 + t * (y1 - y0)).round() as i64);
            self.fill_rect(x - half, y - half, x - half + thickness, y - half + thickness, c, 1.0);
        }
    }

    /// Draws `s` with its top-left corner at (x, y); `upward` rotates it 90° counter-clockwise
    /// (then (x, y) is the bottom-left corner and the text reads bottom to top).
    fn text(&mut self, x: i64, y: i64, s: &str, scale: i64, c: Rgb, upward: bool) {
        for (i, ch) in s.chars().enumerate() {
            for (row, bits) in glyph(ch).iter().enumerate() {
                for col in 0..5 {
                    if bits & (0x10 >> col) == 0 {
                        continue;
                    }
                    let along = (i as i64 * 6 + col) * scale; // along the reading direction
                    let across = row as i64 * scale; // from the top of the glyph
                    let (px, py) = if upward { (x + across, y - along - scale) } else { (x + along, y + across) };
                    self.fill_rect(px, py, px + scale, py + scale, c, 1.0);
                }
            }
        }
    }

    fn text_centered(&mut self, cx: i64, y: i64, s: &str, scale: i64, c: Rgb) {
        self.text(cx - text_width(s, scale) / 2, y, s, scale, c, false);
    }

    fn save(&self, path: &Path) -> Result<(), CoreError> {
        let (w, h) = (u32::try_from(self.width), u32::try_from(self.height));
        let (w, h) = (w.expect("canvas sizes are small"), h.expect("canvas sizes are small"));
        rmtrain_core::write_atomic(path, &encode_png(w, h, &self.rgb))
    }
}

// ---------------------------------------------------------------------------------------------
// Axes

/// Ticks at multiples of 1, 2 or 5 × 10^k inside [lo, hi], the step closest to a fifth of the
/// range (so 3 to 10 intervals), and the decimals their labels need.
fn nice_ticks(lo: f64, hi: f64) -> (Vec<f64>, usize) {
    let raw = (hi - lo) / 5.0;
    if !(raw > 0.0 && raw.is_finite()) {
        return (vec![lo], 0);
    }
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .map(|m| m * magnitude)
        .into_iter()
        .min_by(|a, b| (a - raw).abs().total_cmp(&(b - raw).abs()))
        .expect("four candidates");
    let decimals = (-step.log10().floor()).max(0.0) as usize;
    let first = (lo / step - 1e-9).ceil() as i64;
    let last = (hi / step + 1e-9).floor() as i64;
    ((first..=last).map(|k| k as f64 * step).collect(), decimals)
}

/// [lo, hi] widened to whole tick steps, and to a unit interval around a single value.
fn nice_range(lo: f64, hi: f64) -> (f64, f64) {
    if !(lo.is_finite() && hi.is_finite()) {
        return (0.0, 1.0);
    }
    if hi - lo < 1e-12 {
        return (lo - 0.5, hi + 0.5);
    }
    let (ticks, _) = nice_ticks(lo, hi);
    let step = if ticks.len() >= 2 { ticks[1] - ticks[0] } else { hi - lo };
    // The 1e-9 keeps a bound that already sits on a tick from growing by a whole step.
    ((lo / step + 1e-9).floor() * step, (hi / step - 1e-9).ceil() * step)
}

fn finite_range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    values.filter(|v| v.is_finite()).fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)))
}

/// The plot area in pixels and the data ranges it maps.
struct Frame {
    left: i64,
    top: i64,
    right: i64,
    bottom: i64,
    x: (f64, f64),
    y: (f64, f64),
}

impl Frame {
    fn px(&self, x: f64) -> f64 {
        self.left as f64 + (x - self.x.0) / (self.x.1 - self.x.0) * (self.right - self.left) as f64
    }
    fn py(&self, y: f64) -> f64 {
        self.bottom as f64 - (y - self.y.0) / (self.y.1 - self.y.0) * (self.bottom - self.top) as f64
    }
}

const TITLE_SCALE: i64 = 3;
const LABEL_SCALE: i64 = 2;

/// Title, legend on the right, horizontal grid with y tick labels, axis lines and axis labels;
/// numeric x ticks when `x_numeric`. Returns the frame the caller draws data into.
fn draw_chart(
    canvas: &mut Canvas,
    title: &str,
    legend: &[(&str, Rgb)],
    (x_range, y_range): ((f64, f64), (f64, f64)),
    (x_label, y_label): (&str, &str),
    x_numeric: bool,
) -> Frame {
    let legend_width = legend_width(legend);
    let frame = Frame {
        left: if y_label.is_empty() { 80 } else { 100 },
        top: 70,
        right: canvas.width - 30 - legend_width,
        bottom: canvas.height - if x_label.is_empty() { 60 } else { 85 },
        x: x_range,
        y: y_range,
    };
    canvas.text_centered(canvas.width / 2, 18, title, TITLE_SCALE, INK);

    let (y_ticks, y_decimals) = nice_ticks(y_range.0, y_range.1);
    for &t in &y_ticks {
        let y = frame.py(t).round() as i64;
        canvas.fill_rect(frame.left, y, frame.right, y + 1, GRID, 1.0);
        canvas.fill_rect(frame.left - 6, y, frame.left, y + 1, INK, 1.0);
        let label = format!("{t:.y_decimals$}");
        canvas.text(frame.left - 10 - text_width(&label, LABEL_SCALE), y - 7, &label, LABEL_SCALE, INK, false);
    }
    if x_numeric {
        let (x_ticks, x_decimals) = nice_ticks(x_range.0, x_range.1);
        for &t in &x_ticks {
            let x = frame.px(t).round() as i64;
            canvas.fill_rect(x, frame.top, x + 1, frame.bottom, GRID, 1.0);
            canvas.fill_rect(x, frame.bottom, x + 1, frame.bottom + 6, INK, 1.0);
            canvas.text_centered(x, frame.bottom + 12, &format!("{t:.x_decimals$}"), LABEL_SCALE, INK);
        }
    }
    canvas.fill_rect(frame.left - 1, frame.top, frame.left + 1, frame.bottom + 1, INK, 1.0);
    canvas.fill_rect(frame.left - 1, frame.bottom - 1, frame.right, frame.bottom + 1, INK, 1.0);

    if !x_label.is_empty() {
        canvas.text_centered((frame.left + frame.right) / 2, frame.bottom + 42, x_label, LABEL_SCALE, INK);
    }
    if !y_label.is_empty() {
        let y = (frame.top + frame.bottom) / 2 + text_width(y_label, LABEL_SCALE) / 2;
        canvas.text(16, y, y_label, LABEL_SCALE, INK, true);
    }
    for (i, (label, color)) in legend.iter().enumerate() {
        let (x, y) = (frame.right + 20, frame.top + 10 + i as i64 * 26);
        canvas.fill_rect(x, y, x + 14, y + 14, *color, 1.0);
        canvas.text(x + 22, y, label, LABEL_SCALE, INK, false);
    }
    frame
}

fn legend_width(legend: &[(&str, Rgb)]) -> i64 {
    legend.iter().map(|(s, _)| text_width(s, LABEL_SCALE)).max().map_or(0, |w| w + 40)
}

fn color(i: usize) -> Rgb {
    PALETTE[i % PALETTE.len()]
}

// ---------------------------------------------------------------------------------------------
// Charts

/// Grouped bars: one group per entry of `groups` (e.g. domains), one bar per series (e.g. models)
/// whose `i`-th value belongs to group `i`; missing or NaN values leave a gap. `y_range` fixes
/// the y axis (values are clipped to it); None fits it to the data with a margin and includes 0.
/// Bars rise from 0 when the range contains it, otherwise from the bottom of the range.
pub fn bar_chart_grouped(
    path: &Path,
    title: &str,
    groups: &[String],
    series: &[(String, Vec<f64>)],
    y_range: Option<(f64, f64)>,
) -> Result<(), CoreError> {
    let y_range = y_range.unwrap_or_else(|| {
        let (lo, hi) = finite_range(series.iter().flat_map(|(_, v)| v.iter().copied()));
        let (lo, hi) = (lo.min(0.0), hi.max(0.0));
        let pad = 0.05 * (hi - lo); // room for the value labels, on the sides that have bars
        nice_range(if lo < 0.0 { lo - pad } else { lo }, if hi > 0.0 { hi + pad } else { hi })
    });
    let legend: Vec<(&str, Rgb)> = series.iter().enumerate().map(|(i, (name, _))| (name.as_str(), color(i))).collect();
    // The canvas widens (up to MAX_WIDTH) until every group name fits its slot in the large font.
    let widest = groups.iter().map(|g| text_width(g, LABEL_SCALE)).max().unwrap_or(0);
    let wanted = 110 + legend_width(&legend) + groups.len() as i64 * (widest + 16);
    let mut canvas = Canvas::new(wanted.clamp(WIDTH, MAX_WIDTH), HEIGHT);
    let frame = draw_chart(&mut canvas, title, &legend, ((0.0, 1.0), y_range), ("", ""), false);

    let (_, y_decimals) = nice_ticks(y_range.0, y_range.1);
    let slot = (frame.right - frame.left) as f64 / groups.len().max(1) as f64;
    let bar = slot * 0.8 / series.len().max(1) as f64;
    let base = frame.py(0.0f64.clamp(y_range.0, y_range.1)).round() as i64;
    // Group names share one size: the large font when every name fits its slot, else the small
    // one, with names cut to the slot.
    let label_scale = if widest <= slot as i64 - 12 { LABEL_SCALE } else { 1 };
    let label_chars = ((slot as i64 - 4) / label_scale / 6).max(1) as usize;
    canvas.fill_rect(frame.left, base, frame.right, base + 1, INK, 1.0);
    for (g, group) in groups.iter().enumerate() {
        let slot_left = frame.left as f64 + g as f64 * slot;
        for (s, (_, values)) in series.iter().enumerate() {
            let Some(&v) = values.get(g).filter(|v| v.is_finite()) else { continue };
            let x0 = (slot_left + 0.1 * slot + s as f64 * bar).round() as i64;
            let x1 = (slot_left + 0.1 * slot + (s + 1) as f64 * bar).round() as i64 - 2;
            let top = frame.py(v.clamp(y_range.0, y_range.1)).round() as i64;
            canvas.fill_rect(x0, top, x1, base, color(s), 1.0);
            let label = format!("{v:.prec$}", prec = y_decimals + 1);
            if text_width(&label, 1) <= x1 - x0 {
                let y = if v >= 0.0 { top - 10 } else { top + 3 };
                canvas.text_centered((x0 + x1) / 2, y, &label, 1, INK);
            }
        }
        let cx = (slot_left + slot / 2.0).round() as i64;
        let name: String = group.chars().take(label_chars).collect();
        canvas.text_centered(cx, frame.bottom + 12, &name, label_scale, INK);
    }
    canvas.save(path)
}

/// Lines through each series' (x, y) points in the order given, with square markers; the x axis
/// spans the data, the y axis the data plus a 5 % margin, both rounded out to ticks.
pub fn line_chart(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(String, Vec<(f64, f64)>)],
) -> Result<(), CoreError> {
    let points = || series.iter().flat_map(|(_, p)| p.iter().copied());
    let (x_lo, x_hi) = finite_range(points().map(|p| p.0));
    let (y_lo, y_hi) = finite_range(points().map(|p| p.1));
    let pad = 0.05 * (y_hi - y_lo); // keeps markers off the frame
    let ranges = (nice_range(x_lo, x_hi), nice_range(y_lo - pad, y_hi + pad));
    let mut canvas = Canvas::new(WIDTH, HEIGHT);
    let legend: Vec<(&str, Rgb)> = series.iter().enumerate().map(|(i, (name, _))| (name.as_str(), color(i))).collect();
    let frame = draw_chart(&mut canvas, title, &legend, ranges, (x_label, y_label), true);

    for (s, (_, pts)) in series.iter().enumerate() {
        let pixels: Vec<(f64, f64)> = pts
            .iter()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .map(|&(x, y)| (frame.px(x), frame.py(y)))
            .collect();
        for pair in pixels.windows(2) {
            canvas.line(pair[0], pair[1], 3, color(s), None);
        }
        for &(x, y) in &pixels {
            let (x, y) = (x.round() as i64, y.round() as i64);
            canvas.fill_rect(x - 4, y - 4, x + 5, y + 5, color(s), 1.0);
        }
    }
    canvas.save(path)
}

/// Reliability diagram of calibration bins (from `ece_p` or `ece_toplabel`): a bar per bin over
/// [lo, hi) as high as its accuracy, the gap to its mean confidence shaded red, the diagonal of
/// perfect calibration dashed and the bin counts on top. The title gets the ECE the bins imply.
pub fn reliability_diagram(path: &Path, title: &str, bins: &[CalibrationBin]) -> Result<(), CoreError> {
    const ACCURACY: Rgb = [78, 121, 167];
    const GAP: Rgb = [225, 87, 89];
    let total: usize = bins.iter().map(|b| b.count).sum();
    let ece: f64 = bins.iter().map(|b| b.count as f64 / total.max(1) as f64 * b.gap).sum();
    let title = format!("{title} (ECE = {ece:.3})");
    let legend = [("accuracy", ACCURACY), ("gap", GAP), ("ideal", DIAGONAL)];
    let mut canvas = Canvas::new(WIDTH, HEIGHT);
    let frame = draw_chart(&mut canvas, &title, &legend, ((0.0, 1.0), (0.0, 1.0)), ("confidence", "accuracy"), true);

    for b in bins {
        let (x0, x1) = (frame.px(b.lo).round() as i64 + 1, frame.px(b.hi).round() as i64 - 1);
        let (acc, conf) = (frame.py(b.accuracy).round() as i64, frame.py(b.mean_conf).round() as i64);
        canvas.fill_rect(x0, acc, x1, frame.bottom - 1, ACCURACY, 1.0);
        canvas.hatch_rect(x0, acc, x1, conf, GAP);
        canvas.fill_rect(x0, conf - 1, x1, conf + 1, GAP, 1.0);
        canvas.text_centered((x0 + x1) / 2, acc.min(conf) - 12, &format!("n={}", b.count), 1, INK);
    }
    let (start, end) = ((frame.px(0.0), frame.py(0.0)), (frame.px(1.0), frame.py(1.0)));
    canvas.line(start, end, 2, DIAGONAL, Some(8.0));
    canvas.save(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// Checks the signature, IHDR size and chunk CRCs, and that IDAT inflates to
    /// height·(1 + 3·width) bytes; returns (width, height).
    fn check_png(png: &[u8]) -> (u32, u32) {
        assert_eq!(png[..8], PNG_SIGNATURE);
        let (mut pos, mut size, mut idat) = (8, (0, 0), Vec::new());
        while pos < png.len() {
            let be32 = |at: usize| u32::from_be_bytes(png[at..at + 4].try_into().expect("4 bytes"));
            let len = be32(pos) as usize;
            let (kind, data) = (&png[pos + 4..pos + 8], &png[pos + 8..pos + 8 + len]);
            assert_eq!(crc32(&png[pos + 4..pos + 8 + len]), be32(pos + 8 + len), "crc of {kind:?}");
            match kind {
                b"IHDR" => size = (be32(pos + 8), be32(pos + 12)),
                b"IDAT" => idat.extend_from_slice(data),
                _ => {}
            }
            pos += 12 + len;
        }
        let mut raw = Vec::new();
        flate2::read::ZlibDecoder::new(&idat[..]).read_to_end(&mut raw).expect("IDAT is a zlib stream");
        assert_eq!(raw.len(), size.1 as usize * (1 + 3 * size.0 as usize));
        size
    }

    #[test]
    fn crc32_known_values() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b"IEND"), 0xAE42_6082);
    }

    #[test]
    fn encode_png_small_image() {
        let rgb: Vec<u8> = (0..7 * 3 * 3).map(|i| i as u8).collect();
        let png = encode_png(7, 3, &rgb);
        assert_eq!(check_png(&png), (7, 3));
    }

    #[test]
    fn font_covers_the_label_alphabet() {
        let unknown = glyph('\u{1F600}');
        for c in "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz.-_:%[]()=,/+".chars() {
            assert_ne!(glyph(c), unknown, "{c:?} has no glyph");
        }
    }

    #[test]
    fn every_chart_writes_a_valid_png() {
        let dir = tempfile::tempdir().expect("temp dir");
        let bars = dir.path().join("bars.png");
        let groups = vec!["helpful".to_string(), "harmless".to_string()];
        let series = vec![("warm".to_string(), vec![0.8, 0.7]), ("best member".to_string(), vec![0.75, f64::NAN])];
        bar_chart_grouped(&bars, "accuracy", &groups, &series, Some((0.5, 1.0))).expect("bar chart");
        let lines = dir.path().join("lines.png");
        let curve = vec![("warm".to_string(), vec![(0.0, 0.6), (0.5, 0.7), (1.0, 0.65)])];
        line_chart(&lines, "interpolation", "lambda", "accuracy", &curve).expect("line chart");
        let reliability = dir.path().join("reliability.png");
        let d = [1.0, -0.75, 3.0, 0.0, 0.75, -0.75];
        reliability_diagram(&reliability, "toplabel", &crate::metrics::ece_toplabel(&d).bins).expect("diagram");
        for path in [bars, lines, reliability] {
            let png = std::fs::read(&path).expect("written");
            assert_eq!(check_png(&png), (WIDTH as u32, HEIGHT as u32));
        }
        let mut left: Vec<_> = std::fs::read_dir(dir.path()).expect("dir").map(|e| e.expect("entry").file_name()).collect();
        left.sort();
        assert_eq!(left, ["bars.png", "lines.png", "reliability.png"], "no temporary file left behind");
    }

    #[test]
    fn charts_survive_empty_input() {
        let dir = tempfile::tempdir().expect("temp dir");
        bar_chart_grouped(&dir.path().join("a.png"), "empty", &[], &[], None).expect("empty bars");
        line_chart(&dir.path().join("b.png"), "empty", "x", "y", &[]).expect("empty lines");
        reliability_diagram(&dir.path().join("c.png"), "empty", &[]).expect("empty diagram");
    }
}
