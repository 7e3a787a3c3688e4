//! What a scenario reports: a table on stdout, JSON with `--json`, an SVG with `--plot`.

use crate::stats::{Latency, Series};
use plotters::prelude::*;
use serde::Serialize;
use serde_json::Value;
use std::path::Path;

/// One goal from issue 5, checked against what was measured.
#[derive(Clone, Debug, Serialize)]
pub struct Target {
    pub name: String,
    pub goal: String,
    pub measured: f64,
    pub met: bool,
    /// False when there was nothing to judge against (a fraction of C with no ceiling).
    pub judged: bool,
}

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub scenario: String,
    pub machine: Machine,
    /// Requests/s of the load generator against the receiver alone (0 when skipped).
    pub ceiling_rps: f64,
    pub params: Value,
    /// Named measurements, in the order they print.
    pub results: Vec<(String, Value)>,
    pub targets: Vec<Target>,
    /// What `latency_hist` measures, e.g. "publish → receipt".
    pub latency_label: String,
    /// The latency distribution the plot draws: (µs, count).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub latency_hist: Vec<(u64, u64)>,
    /// Throughput over time: (label, [(seconds since start, per second)]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub throughput: Vec<(String, Vec<(f64, f64)>)>,
}

#[derive(Debug, Default, Serialize)]
pub struct Machine {
    pub nproc: usize,
    pub memory_mb: u64,
}

impl Machine {
    pub fn read() -> Self {
        let memory_mb = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find_map(|l| l.strip_prefix("MemTotal:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
            .map_or(0, |kb| kb / 1024);
        Self {
            nproc: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_mb,
        }
    }
}

impl Report {
    pub fn new(scenario: &str, params: Value) -> Self {
        Self {
            scenario: scenario.to_owned(),
            machine: Machine::read(),
            params,
            ..Self::default()
        }
    }

    pub fn add(&mut self, name: &str, value: impl Serialize) {
        let value = serde_json::to_value(value).expect("a measurement serializes");
        self.results.push((name.to_owned(), value));
    }

    pub fn add_latency(&mut self, name: &str, l: Latency) {
        self.add(name, l);
    }

    /// The distribution the plot draws, and what it measures.
    pub fn plot_latency_of(&mut self, label: &str, hist: Vec<(u64, u64)>) {
        self.latency_label = label.to_owned();
        self.latency_hist = hist;
    }

    /// A rate target "≥ fraction × C".
    pub fn target_fraction(&mut self, name: &str, measured: f64, fraction: f64) {
        let goal = fraction * self.ceiling_rps;
        let text = if self.ceiling_rps > 0.0 {
            format!(
                "≥ {fraction} C = {goal:.0}/s (measured {:.3} C)",
                measured / self.ceiling_rps
            )
        } else {
            format!("≥ {fraction} C, not judged: no ceiling was measured")
        };
        self.targets.push(Target {
            name: name.to_owned(),
            goal: text,
            measured,
            met: self.ceiling_rps > 0.0 && measured >= goal,
            judged: self.ceiling_rps > 0.0,
        });
    }

    pub fn target(&mut self, name: &str, goal: String, measured: f64, met: bool) {
        self.targets.push(Target {
            name: name.to_owned(),
            goal,
            measured,
            met,
            judged: true,
        });
    }

    pub fn add_series(&mut self, label: &str, series: &Series, origin_us: u64) {
        self.throughput
            .push((label.to_owned(), series.rates(origin_us)));
    }

    pub fn print(&self) {
        println!(
            "\n== {} ({} cores, {} MB)",
            self.scenario, self.machine.nproc, self.machine.memory_mb
        );
        println!("params: {}", self.params);
        let width = self
            .results
            .iter()
            .map(|(k, _)| k.len())
            .chain(std::iter::once(12))
            .max()
            .unwrap_or(12);
        if self.ceiling_rps > 0.0 {
            println!(
                "{:<width$}  {:.0} requests/s",
                "ceiling C", self.ceiling_rps
            );
        }
        for (k, v) in &self.results {
            println!("{k:<width$}  {}", show(v));
        }
        for t in &self.targets {
            let verdict = match (t.judged, t.met) {
                (false, _) => "n/a",
                (true, true) => "met",
                (true, false) => "NOT met",
            };
            println!(
                "target: {:<width$}  {verdict:<7}  measured {:.3}, goal {}",
                t.name, t.measured, t.goal
            );
        }
    }

    pub fn write_json(&self, path: &Path) -> anyhow::Result<()> {
        std::fs::write(path, serde_json::to_vec_pretty(self)?)?;
        Ok(())
    }

    /// Latency distribution (left) and throughput over time (right).
    pub fn plot(&self, path: &Path) -> anyhow::Result<()> {
        let root = SVGBackend::new(path, (1200, 480)).into_drawing_area();
        root.fill(&WHITE)?;
        let (left, right) = root.split_horizontally(600);
        self.plot_latency(&left)?;
        self.plot_throughput(&right)?;
        root.present()?;
        Ok(())
    }

    fn plot_latency<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, plotters::coord::Shift>,
    ) -> anyhow::Result<()>
    where
        DB::ErrorType: 'static,
    {
        let total: u64 = self.latency_hist.iter().map(|(_, c)| c).sum();
        if total == 0 {
            area.draw(&Text::new(
                "no latency recorded",
                (200, 200),
                ("sans-serif", 18),
            ))?;
            return Ok(());
        }
        let max_ms = self
            .latency_hist
            .last()
            .map_or(1.0, |(v, _)| *v as f64 / 1000.0)
            .max(0.01);
        let min_ms = self
            .latency_hist
            .first()
            .map_or(0.001, |(v, _)| *v as f64 / 1000.0)
            .clamp(0.001, max_ms / 2.0);
        let mut chart = ChartBuilder::on(area)
            .caption(
                format!("{}: {} (CDF)", self.scenario, self.latency_label),
                ("sans-serif", 18),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d((min_ms..max_ms * 1.05).log_scale(), 0.0..1.0)?;
        chart
            .configure_mesh()
            .x_desc("latency (ms, log scale)")
            .y_desc("fraction ≤ x")
            .draw()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut seen = 0u64;
        let points: Vec<(f64, f64)> = self
            .latency_hist
            .iter()
            .map(|(v, c)| {
                seen += c;
                (
                    (*v as f64 / 1000.0).max(min_ms),
                    seen as f64 / total.max(1) as f64,
                )
            })
            .collect();
        chart
            .draw_series(LineSeries::new(points, &BLUE))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(())
    }

    fn plot_throughput<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, plotters::coord::Shift>,
    ) -> anyhow::Result<()>
    where
        DB::ErrorType: 'static,
    {
        let all = self.throughput.iter().flat_map(|(_, s)| s.iter());
        let (mut t_max, mut y_max) = (1.0f64, 1.0f64);
        for (t, y) in all {
            t_max = t_max.max(*t);
            y_max = y_max.max(*y);
        }
        let mut chart = ChartBuilder::on(area)
            .caption(
                format!("{}: throughput over time", self.scenario),
                ("sans-serif", 18),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..t_max * 1.02, 0.0..y_max * 1.1)?;
        chart
            .configure_mesh()
            .x_desc("seconds since start")
            .y_desc("per second (100 ms bins)")
            .draw()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let colours = [RED, BLUE, GREEN, MAGENTA, CYAN];
        for (i, (label, series)) in self.throughput.iter().enumerate() {
            let colour = colours[i % colours.len()];
            chart
                .draw_series(LineSeries::new(series.iter().copied(), &colour))
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .label(label.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], colour));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(())
    }
}

fn show(v: &Value) -> String {
    match v {
        Value::Number(n) => match n.as_f64() {
            Some(f) if f.fract() != 0.0 => format!("{f:.2}"),
            _ => n.to_string(),
        },
        Value::Object(m) => m
            .iter()
            .map(|(k, v)| format!("{k} {}", show(v)))
            .collect::<Vec<_>>()
            .join(", "),
        other => other.to_string(),
    }
}
