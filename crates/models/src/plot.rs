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
