//! Logging: JSON lines by default (one object per event, with the request's span fields such as
//! the connection id and request id), or human-readable text.

use std::sync::atomic::{AtomicU64, Ordering};

use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

/// Parses a log filter: a default level and per-target levels, comma-separated (`info`,
/// `socketless=debug,info`, `warn,socketless::gateway=trace`).
/// An empty filter is refused rather than read as "log nothing"; `off` says that explicitly.
pub fn parse_filter(filter: &str) -> Result<Targets, String> {
    if filter.trim().is_empty() {
        return Err("the filter is empty (use `off` to turn logging off)".to_owned());
    }
    filter
        .parse::<Targets>()
        .map_err(|e| format!("{filter:?} is not a valid filter: {e}"))
}

/// Installs the global subscriber with a filter that [`parse_filter`] accepts.
pub fn init(format: LogFormat, filter: &str) -> Result<(), String> {
    let targets = parse_filter(filter)?;
    let registry = tracing_subscriber::registry().with(targets);
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Json => registry
            .with(
                layer
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false),
            )
            .try_init(),
        LogFormat::Text => registry.with(layer.with_ansi(false)).try_init(),
    };
    result.map_err(|e| e.to_string())
}

/// Lets a repeated log line through at most once per interval and counts the ones it held
/// back, so an outage (thousands of failed calls a second) logs a line a second that says how
/// many were alike, instead of flooding the log pipeline.
pub struct LogThrottle {
    interval_ms: u64,
    /// Milliseconds since `start` when the next line may go through.
    next_ms: AtomicU64,
    held_back: AtomicU64,
    start: std::time::Instant,
}

impl LogThrottle {
    pub fn new(interval: std::time::Duration) -> Self {
        LogThrottle {
            interval_ms: interval.as_millis() as u64,
            next_ms: AtomicU64::new(0),
            held_back: AtomicU64::new(0),
            start: std::time::Instant::now(),
        }
    }

    /// `Some(n)` when a line may be logged now, `n` being how many were held back since the
    /// last one; `None` when this one is held back.
    pub fn admit(&self) -> Option<u64> {
        let now = self.start.elapsed().as_millis() as u64;
        let next = self.next_ms.load(Ordering::Relaxed);
        if now >= next
            && self
                .next_ms
                .compare_exchange(next, now + self.interval_ms, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.held_back.swap(0, Ordering::AcqRel));
        }
        self.held_back.fetch_add(1, Ordering::Relaxed);
        None
    }
}

impl Default for LogThrottle {
    fn default() -> Self {
        Self::new(std::time::Duration::from_secs(1))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_throttle_admits_one_line_per_interval_and_counts_the_rest() {
        let t = super::LogThrottle::new(std::time::Duration::from_millis(200));
        assert_eq!(t.admit(), Some(0));
        for _ in 0..99 {
            assert_eq!(t.admit(), None);
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
        assert_eq!(t.admit(), Some(99));
        assert_eq!(t.admit(), None);
    }

    use super::parse_filter;
    use tracing::Level;

    #[test]
    fn filters_set_a_default_and_per_target_levels() {
        let t = parse_filter("socketless::gateway=trace,warn").unwrap();
        assert!(t.would_enable("socketless::gateway", &Level::TRACE));
        assert!(t.would_enable("hyper", &Level::WARN));
        assert!(!t.would_enable("hyper", &Level::INFO));
        let off = parse_filter("off").unwrap();
        assert!(!off.would_enable("socketless", &Level::ERROR));
    }

    #[test]
    fn bad_filters_are_refused() {
        for bad in ["", "  ", "socketless=loud", "info,,=bad="] {
            let err = parse_filter(bad).unwrap_err();
            assert!(!err.is_empty(), "{bad:?}");
        }
    }
}
