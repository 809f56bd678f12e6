//! Results: a readable table on stdout and, with `--out`, JSON with the common fields.

use serde_json::{json, Value};

#[derive(Debug, Default, Clone)]
pub struct Latency {
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Latency {
    pub fn from_histogram(h: &hdrhistogram::Histogram<u64>) -> Self {
        // Recorded in microseconds, reported in milliseconds.
        let ms = |v: u64| v as f64 / 1000.0;
        Self {
            p50: ms(h.value_at_quantile(0.50)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        }
    }
}

#[derive(Debug, Default, Clone)]
pub struct Report {
    pub scenario: &'static str,
    pub sessions: u64,
    pub connections: u64,
    pub duration_s: f64,
    pub rss_per_session_bytes: Option<f64>,
    pub latency_ms: Latency,
    pub expected: u64,
    pub delivered: u64,
    pub errors: u64,
    pub throughput_per_s: f64,
    /// Scenario-specific numbers, shown in the table and saved in `extra`.
    pub extra: Vec<(&'static str, Value)>,
}

impl Report {
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "scenario": self.scenario,
            "sessions": self.sessions,
            "connections": self.connections,
            "duration_s": self.duration_s,
            "rss_per_session_bytes": self.rss_per_session_bytes,
            "latency_ms": {
                "p50": self.latency_ms.p50,
                "p99": self.latency_ms.p99,
                "p999": self.latency_ms.p999,
                "max": self.latency_ms.max,
            },
            "expected": self.expected,
            "delivered": self.delivered,
            "errors": self.errors,
            "throughput_per_s": self.throughput_per_s,
        });
        let extra: serde_json::Map<String, Value> = self
            .extra
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect();
        v["extra"] = Value::Object(extra);
        v
    }

    pub fn print(&self) {
        let rows: Vec<(String, String)> = vec![
            ("scenario".into(), self.scenario.into()),
            ("sessions".into(), self.sessions.to_string()),
            ("connections".into(), self.connections.to_string()),
            ("duration_s".into(), format!("{:.2}", self.duration_s)),
            (
                "rss_per_session_bytes".into(),
                self.rss_per_session_bytes
                    .map(|b| format!("{b:.0}"))
                    .unwrap_or_else(|| "n/a".into()),
            ),
            (
                "latency_ms p50/p99/p99.9/max".into(),
                format!(
                    "{:.3} / {:.3} / {:.3} / {:.3}",
                    self.latency_ms.p50,
                    self.latency_ms.p99,
                    self.latency_ms.p999,
                    self.latency_ms.max
                ),
            ),
            ("expected".into(), self.expected.to_string()),
            ("delivered".into(), self.delivered.to_string()),
            ("errors".into(), self.errors.to_string()),
            (
                "throughput_per_s".into(),
                format!("{:.1}", self.throughput_per_s),
            ),
        ]
        .into_iter()
        .chain(self.extra.iter().map(|(k, v)| (k.to_string(), readable(v))))
        .collect();
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        for (k, v) in rows {
            println!("{k:<width$}  {v}");
        }
    }

    pub fn save(&self, path: Option<&std::path::Path>) -> Result<(), String> {
        if let Some(path) = path {
            let text = serde_json::to_string_pretty(&self.to_json()).map_err(|e| e.to_string())?;
            std::fs::write(path, text + "\n")
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            println!("saved {}", path.display());
        }
        Ok(())
    }
}

/// A JSON value for the table: floats with at most 4 decimals, strings unquoted.
fn readable(v: &Value) -> String {
    match v {
        Value::Number(n) if n.is_f64() => {
            let text = format!("{:.4}", n.as_f64().unwrap_or(0.0));
            let text = text.trim_end_matches('0').trim_end_matches('.');
            if text.is_empty() || text == "-" {
                "0".into()
            } else {
                text.to_string()
            }
        }
        Value::String(s) => s.clone(),
        Value::Null => "n/a".into(),
        other => other.to_string(),
    }
}
