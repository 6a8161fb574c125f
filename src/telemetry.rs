//! Logging: JSON lines by default (one object per event, with the request's span fields such as
//! the connection id and request id), or human-readable text.

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

#[cfg(test)]
mod tests {
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
