//! The end-of-training chart: training loss per step and held-out accuracy per epoch,
//! written as SVG with plotters (its SVG backend needs no fonts or system libraries).

use std::path::Path;

use plotters::prelude::*;

use crate::error::{ModelError, Result};

/// Draws `losses` (one per step) and `accuracy` (held-out top-1 per epoch, at the step
/// where each epoch ended) to an SVG file.
pub fn loss_and_accuracy(
    path: &Path,
    title: &str,
    losses: &[f32],
    accuracy: &[(usize, f32)],
) -> Result<()> {
    let fail = |e: String| ModelError::Config(format!("plot {}: {e}", path.display()));
    let root = SVGBackend::new(path, (900, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(e.to_string()))?;
    let (left, right) = root.split_horizontally(450);
    let steps = losses.len().max(2);
    let max_loss = losses
        .iter()
        .copied()
        .filter(|l| l.is_finite())
        .fold(0.1f32, f32::max);
    let mut chart = ChartBuilder::on(&left)
        .caption(format!("{title}: training loss"), ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(45)
        .build_cartesian_2d(0usize..steps, 0f32..max_loss * 1.05)
        .map_err(|e| fail(e.to_string()))?;
    chart
        .configure_mesh()
        .x_desc("step")
        .y_desc("loss")
        .draw()
        .map_err(|e| fail(e.to_string()))?;
    chart
        .draw_series(LineSeries::new(
            losses.iter().enumerate().map(|(i, &l)| (i, l)),
            &BLUE,
        ))
        .map_err(|e| fail(e.to_string()))?;
    let mut chart = ChartBuilder::on(&right)
        .caption("held-out top-1 accuracy", ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(45)
        .build_cartesian_2d(0usize..steps, 0f32..100f32)
        .map_err(|e| fail(e.to_string()))?;
    chart
        .configure_mesh()
        .x_desc("step")
        .y_desc("%")
        .draw()
        .map_err(|e| fail(e.to_string()))?;
    chart
        .draw_series(LineSeries::new(
            accuracy.iter().map(|&(s, a)| (s, a * 100.0)),
            &RED,
        ))
        .map_err(|e| fail(e.to_string()))?;
    chart
        .draw_series(
            accuracy
                .iter()
                .map(|&(s, a)| Circle::new((s, a * 100.0), 3, RED.filled())),
        )
        .map_err(|e| fail(e.to_string()))?;
    root.present().map_err(|e| fail(e.to_string()))
}

/// Several named curves `(x, y)` on one chart with a legend, as SVG: e.g. held-out
/// accuracy per epoch of several training methods. `y_range` bounds the y axis.
pub fn curves(
    path: &Path,
    title: &str,
    (x_desc, y_desc): (&str, &str),
    y_range: (f32, f32),
    series: &[(String, Vec<(f32, f32)>)],
) -> Result<()> {
    let fail = |e: String| ModelError::Config(format!("plot {}: {e}", path.display()));
    let root = SVGBackend::new(path, (760, 460)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(e.to_string()))?;
    let x_max = series
        .iter()
        .flat_map(|(_, points)| points.iter().map(|p| p.0))
        .fold(1.0f32, f32::max);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(32)
        .y_label_area_size(48)
        .build_cartesian_2d(0f32..x_max * 1.02, y_range.0..y_range.1)
        .map_err(|e| fail(e.to_string()))?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .draw()
        .map_err(|e| fail(e.to_string()))?;
    for (i, (name, points)) in series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(2),
            ))
            .map_err(|e| fail(e.to_string()))?
            .label(name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
        chart
            .draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))
            .map_err(|e| fail(e.to_string()))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| fail(e.to_string()))?;
    root.present().map_err(|e| fail(e.to_string()))
}
