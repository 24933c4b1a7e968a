//! Plots of one run: `throughput.svg` (completions per second) and `latency.svg` (one point
//! per op, log-scale latency), with the nemesis's fault windows shaded behind the data.
//! The input is plain data (`OpSample`, `FaultWindow`); the harness converts its history.
//! Text is SVG `<text>` laid out by plotters' naive font estimate and drawn by the viewer,
//! so no font file or system library is needed. Output depends only on the input (no
//! hashing, no clock), and bucket, point and label counts are bounded.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// One completed operation, times in seconds since the test started.
#[derive(Clone, Debug, PartialEq)]
pub struct OpSample {
    /// The operation: "send", "poll", "assign", ...
    pub f: String,
    pub outcome: Outcome,
    pub invoke_s: f64,
    pub complete_s: f64,
}

/// How an operation completed, as in a Jepsen history.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Outcome {
    Ok,
    Fail,
    Info,
}

/// A span during which the nemesis held a fault. The kind is the label's first word.
#[derive(Clone, Debug, PartialEq)]
pub struct FaultWindow {
    pub start_s: f64,
    pub end_s: f64,
    /// "kill n3", "partition halves", "pause n1", ...
    pub label: String,
}

/// Everything one pair of plots shows.
#[derive(Clone, Copy, Debug)]
pub struct PlotSpec<'a> {
    pub title: &'a str,
    pub ops: &'a [OpSample],
    pub faults: &'a [FaultWindow],
    /// When the test ended, seconds since it started.
    pub end_s: f64,
}

#[derive(Debug)]
pub enum PlotError {
    /// Creating `dir` or writing a file failed.
    Io { path: PathBuf, source: std::io::Error },
    /// plotters refused to draw.
    Draw { file: &'static str, message: String },
}

impl fmt::Display for PlotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlotError::Io { path, source } => write!(f, "writing {}: {source}", path.display()),
            PlotError::Draw { file, message } => write!(f, "drawing {file}: {message}"),
        }
    }
}

impl std::error::Error for PlotError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            PlotError::Io { source, .. } => Some(source),
            PlotError::Draw { .. } => None,
        }
    }
}

pub const THROUGHPUT_FILE: &str = "throughput.svg";
pub const LATENCY_FILE: &str = "latency.svg";

/// Runs shorter than this get half-second buckets, so a short run still shows a shape.
const FINE_BUCKETS_BELOW_S: f64 = 60.0;
/// Bound on buckets per plot (a day at 1 s); longer runs get wider buckets.
const BUCKET_COUNT_MAX: usize = 86_400;
/// Bound on points in latency.svg (each is ~100 bytes of SVG). Failed and indeterminate
/// ops get up to half of it, so they survive sampling of a long run.
const LATENCY_POINTS_MAX: usize = 20_000;
/// Latency 0 has no place on a log axis; it is drawn at this floor.
const LATENCY_FLOOR_MS: f64 = 0.01;
/// Bound on per-window text labels; beyond it, only the legend names fault kinds.
const FAULT_LABELS_MAX: usize = 15;
/// Minimum time axis, so an empty run still draws a sensible frame.
const TIME_AXIS_MIN_S: f64 = 1.0;

const WIDTH_PX: u32 = 1280;
const HEIGHT_PX: u32 = 640;
/// The legend lives in its own panel right of the chart, so it never covers data.
const LEGEND_WIDTH_PX: u32 = 210;
const LEGEND_ROW_PX: i32 = 22;
const FONT: &str = "sans-serif";
/// Sizes as plotters takes them; its SVG backend writes `font-size` = size / 1.24.
const TITLE_FONT_PX: u32 = 24;
const AXIS_DESC_FONT_PX: u32 = 18;
const LABEL_FONT_PX: u32 = 15;
const LEGEND_FONT_PX: u32 = 17;
const BAND_LABEL_FONT_PX: u32 = 15;

/// Writes `throughput.svg` and `latency.svg` into `dir` (created if missing), returns
/// their paths.
pub fn plot_run(dir: &Path, spec: &PlotSpec) -> Result<Vec<PathBuf>, PlotError> {
    std::fs::create_dir_all(dir).map_err(|source| PlotError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let timeline = Timeline::new(spec);
    let bands = fault_bands(spec.faults, timeline.x_max_s);
    let kinds = fault_kinds(&bands);

    let throughput_path = dir.join(THROUGHPUT_FILE);
    let svg = render(THROUGHPUT_FILE, |root| {
        draw_throughput(root, spec, &timeline, &bands, &kinds)
    })?;
    write_file(&throughput_path, &svg)?;

    let latency_path = dir.join(LATENCY_FILE);
    let svg = render(LATENCY_FILE, |root| {
        draw_latency(root, spec, &timeline, &bands, &kinds)
    })?;
    write_file(&latency_path, &svg)?;

    Ok(vec![throughput_path, latency_path])
}

fn write_file(path: &Path, svg: &str) -> Result<(), PlotError> {
    assert!(svg.starts_with("<svg"), "plotters wrote no SVG root");
    std::fs::write(path, svg).map_err(|source| PlotError::Io {
        path: path.to_path_buf(),
        source,
    })
}

type Root<'a> = DrawingArea<SVGBackend<'a>, Shift>;

/// Draws into an in-memory SVG, so file errors surface as `PlotError::Io`, not as a
/// plotters error at drop time.
fn render(file: &'static str, draw: impl FnOnce(&Root) -> Result<(), String>) -> Result<String, PlotError> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH_PX, HEIGHT_PX)).into_drawing_area();
        root.fill(&WHITE)
            .map_err(|e| e.to_string())
            .and_then(|()| draw(&root))
            .and_then(|()| root.present().map_err(|e| e.to_string()))
            .map_err(|message| PlotError::Draw { file, message })?;
    }
    assert!(svg.trim_end().ends_with("</svg>"), "SVG not closed");
    Ok(svg)
}

/// The time axis and its buckets.
#[derive(Clone, Copy, Debug)]
struct Timeline {
    x_max_s: f64,
    bucket_s: f64,
    bucket_count: usize,
}

impl Timeline {
    /// The axis ends at `end_s`, stretched to cover every completion and never shorter
    /// than `TIME_AXIS_MIN_S`; non-finite times are ignored.
    fn new(spec: &PlotSpec) -> Timeline {
        let latest_s = spec
            .ops
            .iter()
            .flat_map(|op| [op.invoke_s, op.complete_s])
            .chain([spec.end_s])
            .filter(|t| t.is_finite())
            .fold(TIME_AXIS_MIN_S, f64::max);
        let mut bucket_s = if latest_s < FINE_BUCKETS_BELOW_S { 0.5 } else { 1.0 };
        if latest_s / bucket_s > BUCKET_COUNT_MAX as f64 {
            bucket_s = (latest_s / BUCKET_COUNT_MAX as f64).ceil();
        }
        let bucket_count = (latest_s / bucket_s).ceil() as usize;
        let timeline = Timeline {
            x_max_s: bucket_count as f64 * bucket_s,
            bucket_s,
            bucket_count,
        };
        assert!(timeline.bucket_s > 0.0 && timeline.x_max_s >= latest_s);
        assert!((1..=BUCKET_COUNT_MAX).contains(&timeline.bucket_count));
        timeline
    }

    /// The bucket holding `t_s`; `None` for times off the axis.
    fn bucket_of(&self, t_s: f64) -> Option<usize> {
        if !(t_s.is_finite() && t_s >= 0.0) {
            return None;
        }
        let index = ((t_s / self.bucket_s) as usize).min(self.bucket_count - 1);
        Some(index)
    }

    fn bucket_mid_s(&self, index: usize) -> f64 {
        debug_assert!(index < self.bucket_count);
        (index as f64 + 0.5) * self.bucket_s
    }

    fn bucket_label(&self) -> String {
        format!("{} s buckets", self.bucket_s)
    }
}

/// Which operations get their own colour and marker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum OpKind {
    Send,
    Poll,
    Other,
}

impl OpKind {
    fn of(f: &str) -> OpKind {
        match f {
            "send" => OpKind::Send,
            "poll" => OpKind::Poll,
            _ => OpKind::Other,
        }
    }

    fn name(self) -> &'static str {
        match self {
            OpKind::Send => "send",
            OpKind::Poll => "poll",
            OpKind::Other => "other",
        }
    }
}

fn outcome_name(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Ok => "ok",
        Outcome::Fail => "fail",
        Outcome::Info => "info",
    }
}

/// One colour per (op, outcome), shared by both plots: blues/greens for ok,
/// reds for fail, oranges/browns for info.
fn series_color(kind: OpKind, outcome: Outcome) -> RGBColor {
    match (kind, outcome) {
        (OpKind::Send, Outcome::Ok) => RGBColor(31, 119, 180),
        (OpKind::Poll, Outcome::Ok) => RGBColor(44, 160, 44),
        (OpKind::Other, Outcome::Ok) => RGBColor(127, 127, 127),
        (OpKind::Send, Outcome::Fail) => RGBColor(214, 39, 40),
        (OpKind::Poll, Outcome::Fail) => RGBColor(227, 119, 194),
        (OpKind::Other, Outcome::Fail) => RGBColor(150, 20, 60),
        (OpKind::Send, Outcome::Info) => RGBColor(255, 127, 14),
        (OpKind::Poll, Outcome::Info) => RGBColor(140, 86, 75),
        (OpKind::Other, Outcome::Info) => RGBColor(188, 189, 34),
    }
}

/// How a line is stroked: ok solid, fail dashed, info dotted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dash {
    Solid,
    Dashed,
    Dotted,
}

fn outcome_dash(outcome: Outcome) -> Dash {
    match outcome {
        Outcome::Ok => Dash::Solid,
        Outcome::Fail => Dash::Dashed,
        Outcome::Info => Dash::Dotted,
    }
}

/// (dash length, gap) in pixels.
fn dash_pattern_px(dash: Dash) -> (u32, u32) {
    match dash {
        Dash::Solid => (1, 0),
        Dash::Dashed => (8, 5),
        Dash::Dotted => (2, 4),
    }
}

/// A fault window clipped to the time axis.
#[derive(Clone, Debug)]
struct Band {
    start_s: f64,
    end_s: f64,
    /// Index into the sorted list of fault kinds.
    kind_index: usize,
    label: String,
}

/// The kind of a fault: its label's first word ("kill n3" -> "kill").
fn fault_kind(label: &str) -> &str {
    label.split_whitespace().next().unwrap_or("fault")
}

/// Distinct fault kinds, sorted, so colours depend only on which kinds occur.
fn fault_kinds(bands: &[Band]) -> Vec<String> {
    let mut kinds: Vec<String> = bands
        .iter()
        .map(|band| fault_kind(&band.label).to_string())
        .collect();
    kinds.sort();
    kinds.dedup();
    kinds
}

/// Fixed colours for the nemesis's own kinds; others take the palette in order.
fn fault_color(kind: &str, index: usize) -> RGBColor {
    const PALETTE: [RGBColor; 6] = [
        RGBColor(23, 190, 207),
        RGBColor(188, 189, 34),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(127, 127, 127),
        RGBColor(31, 119, 180),
    ];
    match kind {
        "kill" => RGBColor(230, 50, 50),
        "partition" => RGBColor(148, 103, 189),
        "pause" => RGBColor(255, 165, 0),
        "clock" => RGBColor(23, 190, 207),
        _ => PALETTE[index % PALETTE.len()],
    }
}

/// Windows clipped to `[0, x_max_s]`, sorted by start; windows with a NaN time, an end
/// before their start or nothing left after clipping are dropped; an infinite end runs to
/// the end of the axis.
fn fault_bands(faults: &[FaultWindow], x_max_s: f64) -> Vec<Band> {
    let mut bands: Vec<Band> = faults
        .iter()
        .filter(|w| !w.start_s.is_nan() && !w.end_s.is_nan() && w.end_s >= w.start_s)
        .map(|w| Band {
            start_s: w.start_s.clamp(0.0, x_max_s),
            end_s: w.end_s.clamp(0.0, x_max_s),
            kind_index: 0,
            label: w.label.clone(),
        })
        // A window wholly off the axis, or of no length, has nothing to shade.
        .filter(|band| band.end_s > band.start_s)
        .collect();
    bands.sort_by(|a, b| a.start_s.total_cmp(&b.start_s));
    let kinds = fault_kinds(&bands);
    for band in &mut bands {
        let kind = fault_kind(&band.label);
        // The kind came from this very list of bands, so the search cannot miss.
        band.kind_index = kinds.iter().position(|k| k == kind).unwrap_or(0);
        assert!(band.start_s <= band.end_s);
    }
    bands
}

/// Completions per second per bucket, one series per (op, outcome) among send and poll.
fn throughput_series(ops: &[OpSample], timeline: &Timeline) -> BTreeMap<(OpKind, Outcome), Vec<f64>> {
    let mut counts: BTreeMap<(OpKind, Outcome), Vec<u32>> = BTreeMap::new();
    let mut counted: u64 = 0;
    for op in ops {
        let kind = OpKind::of(&op.f);
        if kind == OpKind::Other {
            continue;
        }
        let Some(bucket) = timeline.bucket_of(op.complete_s) else {
            continue;
        };
        let series = counts
            .entry((kind, op.outcome))
            .or_insert_with(|| vec![0; timeline.bucket_count]);
        series[bucket] += 1;
        counted += 1;
    }
    let total: u64 = counts.values().flatten().map(|&n| u64::from(n)).sum();
    assert_eq!(total, counted);
    counts
        .into_iter()
        .map(|(key, series)| {
            let rates = series.iter().map(|&n| f64::from(n) / timeline.bucket_s).collect();
            (key, rates)
        })
        .collect()
}

/// One op on the latency plot.
#[derive(Clone, Copy, Debug)]
struct LatencyPoint {
    invoke_s: f64,
    latency_ms: f64,
    kind: OpKind,
    outcome: Outcome,
}

/// Every op with finite times, latency floored at `LATENCY_FLOOR_MS`, in input order.
fn latency_points(ops: &[OpSample]) -> Vec<LatencyPoint> {
    ops.iter()
        .filter(|op| op.invoke_s.is_finite() && op.complete_s.is_finite())
        .map(|op| LatencyPoint {
            invoke_s: op.invoke_s.max(0.0),
            latency_ms: ((op.complete_s - op.invoke_s) * 1000.0).max(LATENCY_FLOOR_MS),
            kind: OpKind::of(&op.f),
            outcome: op.outcome,
        })
        .collect()
}

/// At most `LATENCY_POINTS_MAX` points, taken at an even stride: failed and indeterminate
/// ops first (up to half the budget), ok ops fill the rest.
fn sample_points(points: &[LatencyPoint]) -> Vec<LatencyPoint> {
    let (ok, not_ok): (Vec<&LatencyPoint>, Vec<&LatencyPoint>) =
        points.iter().partition(|p| p.outcome == Outcome::Ok);
    let not_ok_budget = not_ok.len().min(LATENCY_POINTS_MAX / 2);
    let ok_budget = LATENCY_POINTS_MAX - not_ok_budget;
    let mut sampled: Vec<LatencyPoint> = stride(&not_ok, not_ok_budget);
    sampled.extend(stride(&ok, ok_budget));
    assert!(sampled.len() <= LATENCY_POINTS_MAX);
    assert!(sampled.len() == points.len() || points.len() > LATENCY_POINTS_MAX);
    sampled
}

fn stride(points: &[&LatencyPoint], budget: usize) -> Vec<LatencyPoint> {
    if budget == 0 {
        return Vec::new();
    }
    let step = points.len().div_ceil(budget).max(1);
    points.iter().step_by(step).map(|&&p| p).collect()
}

/// Nearest-rank p50 and p99 of latency per invoke bucket, for send and poll.
/// Each entry is (bucket middle s, p50 ms, p99 ms); empty buckets are skipped.
fn latency_quantiles(points: &[LatencyPoint], timeline: &Timeline) -> BTreeMap<OpKind, Vec<(f64, f64, f64)>> {
    let mut buckets: BTreeMap<OpKind, Vec<Vec<f64>>> = BTreeMap::new();
    for point in points.iter().filter(|p| p.kind != OpKind::Other) {
        let Some(bucket) = timeline.bucket_of(point.invoke_s) else {
            continue;
        };
        buckets
            .entry(point.kind)
            .or_insert_with(|| vec![Vec::new(); timeline.bucket_count])[bucket]
            .push(point.latency_ms);
    }
    let mut lines = BTreeMap::new();
    for (kind, per_bucket) in buckets {
        let mut line = Vec::new();
        for (index, mut latencies_ms) in per_bucket.into_iter().enumerate() {
            if latencies_ms.is_empty() {
                continue;
            }
            latencies_ms.sort_by(f64::total_cmp);
            let p50_ms = nearest_rank(&latencies_ms, 0.50);
            let p99_ms = nearest_rank(&latencies_ms, 0.99);
            assert!(p50_ms <= p99_ms);
            line.push((timeline.bucket_mid_s(index), p50_ms, p99_ms));
        }
        lines.insert(kind, line);
    }
    lines
}

fn nearest_rank(sorted: &[f64], quantile: f64) -> f64 {
    assert!(!sorted.is_empty() && (0.0..=1.0).contains(&quantile));
    let rank = (quantile * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// What a legend row shows left of its label.
#[derive(Clone, Copy, Debug)]
enum Swatch {
    Line(RGBColor, Dash),
    Band(RGBColor),
    Marker(OpKind, RGBColor),
}

#[derive(Clone, Debug)]
struct LegendEntry {
    label: String,
    swatch: Swatch,
}

fn fault_legend(kinds: &[String]) -> Vec<LegendEntry> {
    kinds
        .iter()
        .enumerate()
        .map(|(index, kind)| LegendEntry {
            label: format!("fault: {kind}"),
            swatch: Swatch::Band(fault_color(kind, index)),
        })
        .collect()
}

/// Splits the canvas into the chart (left) and the legend panel (right).
fn split_legend<'a>(root: &Root<'a>) -> (Root<'a>, Root<'a>) {
    root.split_horizontally(WIDTH_PX - LEGEND_WIDTH_PX)
}

fn draw_throughput(
    root: &Root,
    spec: &PlotSpec,
    timeline: &Timeline,
    bands: &[Band],
    kinds: &[String],
) -> Result<(), String> {
    let (chart_area, legend_area) = split_legend(root);
    let series = throughput_series(spec.ops, timeline);
    let rate_max = series.values().flatten().copied().fold(0.0, f64::max);
    // Headroom above the highest line, for the fault labels.
    let y_max = (rate_max * 1.2).max(1.0);

    let mut chart = ChartBuilder::on(&chart_area)
        .caption(spec.title, (FONT, TITLE_FONT_PX))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..timeline.x_max_s, 0.0..y_max)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("time (s)")
        .y_desc(format!("ops/s ({})", timeline.bucket_label()))
        .x_label_formatter(&|s| format_tick(*s))
        .y_label_formatter(&|rate| format_tick(*rate))
        .label_style((FONT, LABEL_FONT_PX))
        .axis_desc_style((FONT, AXIS_DESC_FONT_PX))
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(|e| e.to_string())?;
    draw_bands(&mut chart, bands, kinds, (0.0, y_max))?;

    let mut legend = Vec::new();
    for (&(kind, outcome), rates) in &series {
        let color = series_color(kind, outcome);
        let dash = outcome_dash(outcome);
        let points: Vec<(f64, f64)> = rates
            .iter()
            .enumerate()
            .map(|(index, &rate)| (timeline.bucket_mid_s(index), rate))
            .collect();
        draw_line(&mut chart, points, color, dash)?;
        legend.push(LegendEntry {
            label: format!("{} {}", kind.name(), outcome_name(outcome)),
            swatch: Swatch::Line(color, dash),
        });
    }
    legend.extend(fault_legend(kinds));
    draw_legend(&legend_area, &legend)
}

type Chart<'a, 'b, Y> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, Y>>;

fn draw_line<Y>(
    chart: &mut Chart<'_, '_, Y>,
    points: Vec<(f64, f64)>,
    color: RGBColor,
    dash: Dash,
) -> Result<(), String>
where
    Y: Ranged<ValueType = f64>,
{
    let style = color.stroke_width(2);
    match dash {
        Dash::Solid => chart.draw_series(LineSeries::new(points, style)).map(|_| ()),
        Dash::Dashed | Dash::Dotted => {
            let (size_px, gap_px) = dash_pattern_px(dash);
            chart
                .draw_series(DashedLineSeries::new(points, size_px, gap_px, style))
                .map(|_| ())
        }
    }
    .map_err(|e| e.to_string())
}

/// Shades each fault window from `y_lo` to `y_hi` and, when there are at most
/// `FAULT_LABELS_MAX` (more would overprint each other; the legend names the kinds),
/// labels them at the top, staggered over three rows so neighbours don't collide.
fn draw_bands<Y>(
    chart: &mut Chart<'_, '_, Y>,
    bands: &[Band],
    kinds: &[String],
    (y_lo, y_hi): (f64, f64),
) -> Result<(), String>
where
    Y: Ranged<ValueType = f64>,
{
    let fill = |band: &Band| {
        let color = fault_color(&kinds[band.kind_index], band.kind_index);
        color.mix(0.18).filled()
    };
    chart
        .draw_series(
            bands
                .iter()
                .map(|band| Rectangle::new([(band.start_s, y_lo), (band.end_s, y_hi)], fill(band))),
        )
        .map_err(|e| e.to_string())?;
    let font = (FONT, BAND_LABEL_FONT_PX)
        .into_font()
        .color(&RGBColor(60, 60, 60));
    let shown = if bands.len() <= FAULT_LABELS_MAX {
        bands.len()
    } else {
        0
    };
    let labels = bands.iter().take(shown).enumerate();
    chart
        .draw_series(labels.map(|(index, band)| {
            let row_px = 4 + 16 * (index % 3) as i32;
            EmptyElement::at((band.start_s, y_hi)) + Text::new(band.label.clone(), (3, row_px), font.clone())
        }))
        .map_err(|e| e.to_string())?;
    Ok(())
}

fn draw_latency(
    root: &Root,
    spec: &PlotSpec,
    timeline: &Timeline,
    bands: &[Band],
    kinds: &[String],
) -> Result<(), String> {
    let (chart_area, legend_area) = split_legend(root);
    let all = latency_points(spec.ops);
    let shown = sample_points(&all);
    let (lo_ms, hi_ms) = latency_range_ms(&all);

    let caption = if shown.len() < all.len() {
        format!(
            "{} (latency; {} of {} ops shown)",
            spec.title,
            shown.len(),
            all.len()
        )
    } else {
        spec.title.to_string()
    };
    let mut chart = ChartBuilder::on(&chart_area)
        .caption(caption, (FONT, TITLE_FONT_PX))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(0.0..timeline.x_max_s, (lo_ms..hi_ms).log_scale())
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("time (s)")
        .y_desc("latency (ms)")
        .x_label_formatter(&|s| format_tick(*s))
        .y_label_formatter(&|ms| format_tick(*ms))
        .label_style((FONT, LABEL_FONT_PX))
        .axis_desc_style((FONT, AXIS_DESC_FONT_PX))
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(|e| e.to_string())?;
    draw_bands(&mut chart, bands, kinds, (lo_ms, hi_ms))?;

    let mut legend = draw_points(&mut chart, &shown)?;
    legend.extend(draw_quantiles(&mut chart, &all, timeline)?);
    legend.extend(fault_legend(kinds));
    draw_legend(&legend_area, &legend)
}

/// The y range: a decade-ish margin around the data, or 1..1000 ms with no data.
fn latency_range_ms(points: &[LatencyPoint]) -> (f64, f64) {
    let lo_ms = points.iter().map(|p| p.latency_ms).fold(f64::INFINITY, f64::min);
    let hi_ms = points.iter().map(|p| p.latency_ms).fold(0.0, f64::max);
    let range = if points.is_empty() {
        (1.0, 1000.0)
    } else {
        // Headroom on top, for the fault labels.
        (
            (lo_ms / 2.0).max(LATENCY_FLOOR_MS / 2.0),
            (hi_ms * 4.0).max(lo_ms * 10.0),
        )
    };
    assert!(range.0 > 0.0 && range.1 > range.0 && range.1.is_finite());
    range
}

/// Whole numbers without a fraction ("20", not "20.0"); others as short as they go.
fn format_tick(value: f64) -> String {
    if (value - value.round()).abs() < 1e-9 {
        format!("{value:.0}")
    } else {
        format!("{}", (value * 1000.0).round() / 1000.0)
    }
}

/// Draws one marker per op, grouped by (op, outcome); returns the legend rows.
fn draw_points<Y>(chart: &mut Chart<'_, '_, Y>, points: &[LatencyPoint]) -> Result<Vec<LegendEntry>, String>
where
    Y: Ranged<ValueType = f64>,
{
    let mut groups: BTreeMap<(OpKind, Outcome), Vec<(f64, f64)>> = BTreeMap::new();
    for p in points {
        groups
            .entry((p.kind, p.outcome))
            .or_default()
            .push((p.invoke_s, p.latency_ms));
    }
    let mut legend = Vec::new();
    for ((kind, outcome), coords) in groups {
        let color = series_color(kind, outcome);
        // Ok ops are many; fainter markers keep dense regions readable.
        let alpha = if outcome == Outcome::Ok { 0.35 } else { 0.8 };
        let style = color.mix(alpha).filled();
        chart
            .draw_series(coords.into_iter().map(|xy| marker(kind, xy, style, 1)))
            .map_err(|e| e.to_string())?;
        legend.push(LegendEntry {
            label: format!("{} {}", kind.name(), outcome_name(outcome)),
            swatch: Swatch::Marker(kind, color),
        });
    }
    Ok(legend)
}

/// Send: circle; poll: triangle; others: cross. `scale` enlarges legend swatches.
fn marker<DB: DrawingBackend, C: Clone + 'static>(
    kind: OpKind,
    xy: C,
    style: ShapeStyle,
    scale: i32,
) -> DynElement<'static, DB, C> {
    assert!(scale >= 1);
    match kind {
        OpKind::Send => Circle::new(xy, 2 * scale, style).into_dyn(),
        OpKind::Poll => TriangleMarker::new(xy, 3 * scale, style).into_dyn(),
        OpKind::Other => Cross::new(xy, 3 * scale, style.stroke_width(1)).into_dyn(),
    }
}

fn quantile_color(kind: OpKind) -> RGBColor {
    match kind {
        OpKind::Send => RGBColor(10, 40, 150),
        OpKind::Poll => RGBColor(0, 110, 40),
        OpKind::Other => RGBColor(0, 0, 0),
    }
}

/// p50 (solid) and p99 (dashed) per bucket for send and poll, over all ops (not only
/// the sampled points); returns the legend rows.
fn draw_quantiles<Y>(
    chart: &mut Chart<'_, '_, Y>,
    points: &[LatencyPoint],
    timeline: &Timeline,
) -> Result<Vec<LegendEntry>, String>
where
    Y: Ranged<ValueType = f64>,
{
    let mut legend = Vec::new();
    for (kind, line) in latency_quantiles(points, timeline) {
        let color = quantile_color(kind);
        let p50: Vec<(f64, f64)> = line.iter().map(|&(x, p50, _)| (x, p50)).collect();
        let p99: Vec<(f64, f64)> = line.iter().map(|&(x, _, p99)| (x, p99)).collect();
        draw_line(chart, p50, color, Dash::Solid)?;
        draw_line(chart, p99, color, Dash::Dashed)?;
        legend.push(LegendEntry {
            label: format!("{} p50", kind.name()),
            swatch: Swatch::Line(color, Dash::Solid),
        });
        legend.push(LegendEntry {
            label: format!("{} p99", kind.name()),
            swatch: Swatch::Line(color, Dash::Dashed),
        });
    }
    Ok(legend)
}

/// One row per entry: a swatch, then the label.
fn draw_legend(area: &Root, entries: &[LegendEntry]) -> Result<(), String> {
    const TOP_PX: i32 = 60;
    const SWATCH_X_PX: i32 = 8;
    const SWATCH_W_PX: i32 = 30;
    let font = (FONT, LEGEND_FONT_PX)
        .into_font()
        .into_text_style(area)
        .pos(Pos::new(HPos::Left, VPos::Center));
    for (index, entry) in entries.iter().enumerate() {
        let y = TOP_PX + LEGEND_ROW_PX * index as i32;
        let (x0, x1) = (SWATCH_X_PX, SWATCH_X_PX + SWATCH_W_PX);
        match entry.swatch {
            Swatch::Line(color, dash) => {
                let (size_px, gap_px) = dash_pattern_px(dash);
                let style = color.stroke_width(2);
                let mut x = x0;
                while x < x1 {
                    let end = (x + size_px as i32).min(x1);
                    area.draw(&PathElement::new(vec![(x, y), (end, y)], style))
                        .map_err(|e| e.to_string())?;
                    x = end + gap_px as i32;
                }
            }
            Swatch::Band(color) => {
                let rect = Rectangle::new([(x0, y - 7), (x1, y + 7)], color.mix(0.35).filled());
                area.draw(&rect).map_err(|e| e.to_string())?;
            }
            Swatch::Marker(kind, color) => {
                let style = color.mix(0.8).filled();
                area.draw(&marker(kind, (x0 + SWATCH_W_PX / 2, y), style, 2))
                    .map_err(|e| e.to_string())?;
            }
        }
        let text = Text::new(entry.label.as_str(), (x1 + 8, y), font.clone());
        area.draw(&text).map_err(|e| e.to_string())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TITLE: &str = "gregor-jepsen seed 7: kill,partition, 5 nodes";

    /// A deterministic 120 s run at ~100 ops/s (60 send, 40 poll): node n3 is killed
    /// from 30 s to 45 s (sends fail or time out), the cluster is partitioned from 70 s
    /// to 90 s (polls stall), and a few "assign" ops happen at the start.
    fn synthetic_run() -> (Vec<OpSample>, Vec<FaultWindow>) {
        let mut seed: u64 = 7;
        let mut next_unit = move || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 11) as f64 / (1u64 << 53) as f64
        };
        let mut ops = Vec::new();
        for index in 0..12_000u32 {
            let invoke_s = f64::from(index) / 100.0 + next_unit() * 0.01;
            let f = if index % 5 < 3 { "send" } else { "poll" };
            let in_kill = (30.0..45.0).contains(&invoke_s);
            let in_partition = (70.0..90.0).contains(&invoke_s);
            let roll = next_unit();
            let (outcome, latency_s) = match (f, in_kill, in_partition) {
                ("send", true, _) if roll < 0.3 => (Outcome::Info, 5.0),
                ("send", true, _) if roll < 0.5 => (Outcome::Fail, 0.05 + roll * 0.1),
                ("poll", _, true) if roll < 0.4 => (Outcome::Info, 2.0 + roll),
                (_, true, _) | (_, _, true) => (Outcome::Ok, 0.02 + roll * 0.5),
                _ => (Outcome::Ok, 0.002 + roll * roll * 0.03),
            };
            ops.push(OpSample {
                f: f.to_string(),
                outcome,
                invoke_s,
                complete_s: invoke_s + latency_s,
            });
        }
        for index in 0..5u32 {
            let invoke_s = f64::from(index) * 0.1;
            ops.push(OpSample {
                f: "assign".to_string(),
                outcome: Outcome::Ok,
                invoke_s,
                complete_s: invoke_s + 0.2,
            });
        }
        let faults = vec![
            FaultWindow {
                start_s: 30.0,
                end_s: 45.0,
                label: "kill n3".to_string(),
            },
            FaultWindow {
                start_s: 70.0,
                end_s: 90.0,
                label: "partition halves".to_string(),
            },
        ];
        (ops, faults)
    }

    fn read(path: &Path) -> String {
        std::fs::read_to_string(path).expect("plot file readable")
    }

    /// A cheap well-formedness check: one root, and every `<text>` closed.
    fn assert_svg(svg: &str) {
        assert!(svg.starts_with("<svg"), "no SVG root");
        assert!(svg.trim_end().ends_with("</svg>"), "SVG not closed");
        assert_eq!(svg.matches("<svg").count(), 1);
        assert_eq!(svg.matches("<text").count(), svg.matches("</text>").count());
    }

    fn plot(dir: &Path, ops: &[OpSample], faults: &[FaultWindow], end_s: f64) -> Vec<PathBuf> {
        let spec = PlotSpec {
            title: TITLE,
            ops,
            faults,
            end_s,
        };
        let paths = plot_run(dir, &spec).expect("plot_run");
        assert_eq!(paths, vec![dir.join(THROUGHPUT_FILE), dir.join(LATENCY_FILE)]);
        for path in &paths {
            assert_svg(&read(path));
        }
        paths
    }

    #[test]
    fn synthetic_run_plots_title_axes_legend_and_faults() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (ops, faults) = synthetic_run();
        let paths = plot(dir.path(), &ops, &faults, 120.0);
        let throughput = read(&paths[0]);
        let latency = read(&paths[1]);
        for svg in [&throughput, &latency] {
            for needle in [
                TITLE,
                "time (s)",
                "send ok",
                "poll ok",
                "send fail",
                "send info",
                "poll info",
                "fault: kill",
                "fault: partition",
                "kill n3",
                "partition halves",
            ] {
                assert!(svg.contains(needle), "missing {needle:?}");
            }
        }
        assert!(throughput.contains("ops/s (1 s buckets)"));
        assert!(
            !throughput.contains("other ok"),
            "throughput shows only send and poll"
        );
        for needle in ["latency (ms)", "send p50", "send p99", "poll p99", "other ok"] {
            assert!(latency.contains(needle), "missing {needle:?}");
        }
        if let Some(example_dir) = std::env::var_os("GREGOR_JEPSEN_PLOT_EXAMPLE_DIR") {
            plot(Path::new(&example_dir), &ops, &faults, 120.0);
        }
    }

    #[test]
    fn same_input_same_bytes() {
        let (ops, faults) = synthetic_run();
        let first = tempfile::tempdir().expect("tempdir");
        let second = tempfile::tempdir().expect("tempdir");
        let a = plot(first.path(), &ops[..3000], &faults, 30.0);
        let b = plot(second.path(), &ops[..3000], &faults, 30.0);
        for (a, b) in a.iter().zip(&b) {
            assert_eq!(read(a), read(b));
        }
    }

    #[test]
    fn degenerate_inputs_do_not_panic() {
        let one = |f: &str, invoke_s: f64, complete_s: f64| OpSample {
            f: f.to_string(),
            outcome: Outcome::Ok,
            invoke_s,
            complete_s,
        };
        let window = |start_s: f64, end_s: f64, label: &str| FaultWindow {
            start_s,
            end_s,
            label: label.to_string(),
        };
        let cases: Vec<(Vec<OpSample>, Vec<FaultWindow>, f64)> = vec![
            (vec![], vec![], 0.0),
            (vec![], vec![], -5.0),
            (vec![], vec![], f64::NAN),
            (vec![], vec![window(0.0, 0.0, "")], 0.0),
            (vec![one("send", 0.0, 0.0)], vec![], 0.0),
            (vec![one("poll", 0.2, 0.2), one("send", 0.2, 0.3)], vec![], 0.25),
            (vec![one("assign", 1.0, 2.0)], vec![], 3.0),
            (
                vec![one("send", 5.0, 4.0)],
                vec![window(3.0, 1.0, "kill n1")],
                10.0,
            ),
            (
                vec![one("send", f64::NAN, 1.0), one("poll", 0.0, f64::INFINITY)],
                vec![
                    window(f64::NAN, 1.0, "pause n1"),
                    window(2.0, f64::INFINITY, "pause n2"),
                ],
                5.0,
            ),
            (
                vec![one("send", 1e9, 1e9 + 1.0)],
                vec![window(-10.0, 1e12, "clock skew")],
                1.0,
            ),
        ];
        for (ops, faults, end_s) in cases {
            let dir = tempfile::tempdir().expect("tempdir");
            plot(dir.path(), &ops, &faults, end_s);
        }
    }

    #[test]
    fn timeline_buckets() {
        let spec = |end_s| PlotSpec {
            title: "",
            ops: &[],
            faults: &[],
            end_s,
        };
        let short = Timeline::new(&spec(10.0));
        assert_eq!((short.bucket_s, short.bucket_count), (0.5, 20));
        assert_eq!(
            short.bucket_of(10.0),
            Some(19),
            "the end belongs to the last bucket"
        );
        assert_eq!(short.bucket_of(-0.1), None);
        let long = Timeline::new(&spec(120.0));
        assert_eq!((long.bucket_s, long.bucket_count), (1.0, 120));
        let huge = Timeline::new(&spec(1e7));
        assert!(huge.bucket_count <= BUCKET_COUNT_MAX);
        assert!(huge.x_max_s >= 1e7);
        let empty = Timeline::new(&spec(0.0));
        assert_eq!(empty.x_max_s, TIME_AXIS_MIN_S);
    }

    #[test]
    fn throughput_counts_send_and_poll_completions_per_second() {
        let (ops, _) = synthetic_run();
        let timeline = Timeline::new(&PlotSpec {
            title: "",
            ops: &ops,
            faults: &[],
            end_s: 120.0,
        });
        let series = throughput_series(&ops, &timeline);
        assert!(series.keys().all(|(kind, _)| *kind != OpKind::Other));
        let completions: f64 = series.values().flatten().sum::<f64>() * timeline.bucket_s;
        assert_eq!(completions, 12_000.0);
        let send_ok = &series[&(OpKind::Send, Outcome::Ok)];
        assert!(
            (55.0..=65.0).contains(&send_ok[10]),
            "~60 sends/s, got {}",
            send_ok[10]
        );
    }

    #[test]
    fn latency_sampling_is_bounded_and_keeps_failures() {
        let point = |outcome| LatencyPoint {
            invoke_s: 1.0,
            latency_ms: 1.0,
            kind: OpKind::Send,
            outcome,
        };
        let mut points = vec![point(Outcome::Ok); 100_000];
        points.extend(vec![point(Outcome::Fail); 50]);
        let sampled = sample_points(&points);
        assert!(sampled.len() <= LATENCY_POINTS_MAX);
        assert_eq!(sampled.iter().filter(|p| p.outcome == Outcome::Fail).count(), 50);
        let few = vec![point(Outcome::Info); 10];
        assert_eq!(sample_points(&few).len(), 10);
    }

    #[test]
    fn quantiles_and_fault_kinds() {
        let sorted: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(nearest_rank(&sorted, 0.5), 50.0);
        assert_eq!(nearest_rank(&sorted, 0.99), 99.0);
        assert_eq!(nearest_rank(&[3.0], 0.99), 3.0);
        assert_eq!(fault_kind("partition halves"), "partition");
        assert_eq!(fault_kind("kill"), "kill");
        assert_eq!(fault_kind("  "), "fault");
        assert_eq!(format_tick(20.0), "20");
        assert_eq!(format_tick(0.5), "0.5");
        assert_eq!(format_tick(0.01), "0.01");
    }
}
