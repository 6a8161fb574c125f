//! Settings shared by every verb: parsing helpers that collect every problem instead of stopping
//! at the first one, so a misconfigured pod reports all of its mistakes in one start.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use crate::http_server::{BodyPolicy, HttpLimits};

/// Any verb's flags, parsed from words (no program name) the way the command line would: every
/// flag not given takes its variable, then its default. `dev` and tests build settings this
/// way, so every default is read from [`crate::defaults`] by the clap attribute that declares it.
pub trait FromFlags: clap::Args + clap::FromArgMatches + Sized {
    fn from_flags<I, T>(flags: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let command = Self::augment_args(clap::Command::new("flags").no_binary_name(true));
        Self::from_arg_matches(&command.try_get_matches_from(flags)?)
    }
}

impl<A: clap::Args + clap::FromArgMatches> FromFlags for A {}

/// Every invalid setting found at start, reported together.
#[derive(Debug, Default)]
pub struct Problems(Vec<String>);

impl Problems {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, problem: impl Into<String>) {
        self.0.push(problem.into());
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }

    /// Parses `value` for setting `name` (flag and variable), recording a problem on failure.
    pub fn parse<T: FromStr>(&mut self, name: &str, value: &str) -> Option<T>
    where
        T::Err: fmt::Display,
    {
        match value.trim().parse::<T>() {
            Ok(v) => Some(v),
            Err(err) => {
                self.push(format!("{name}: {value:?} is not valid: {err}"));
                None
            }
        }
    }

    pub fn addr(&mut self, name: &str, value: &str) -> Option<SocketAddr> {
        match value.trim().parse::<SocketAddr>() {
            Ok(v) => Some(v),
            Err(_) => {
                self.push(format!("{name}: {value:?} is not an address like 0.0.0.0:8080"));
                None
            }
        }
    }

    pub fn duration(&mut self, name: &str, value: &str) -> Option<Duration> {
        match parse_duration(value) {
            Ok(v) => Some(v),
            Err(err) => {
                self.push(format!("{name}: {err}"));
                None
            }
        }
    }

    /// Parses a positive integer no larger than `max`.
    pub fn count(&mut self, name: &str, value: &str, max: u64) -> Option<u64> {
        match value.trim().parse::<u64>() {
            Ok(0) => {
                self.push(format!("{name}: must be at least 1"));
                None
            }
            Ok(v) if v > max => {
                self.push(format!("{name}: {v} is more than the maximum {max}"));
                None
            }
            Ok(v) => Some(v),
            Err(_) => {
                self.push(format!("{name}: {value:?} is not a whole number"));
                None
            }
        }
    }

    /// Checks an optional URL: http or https with a host.
    pub fn url(&mut self, name: &str, value: &str) -> Option<http::Uri> {
        let value = value.trim();
        match value.parse::<http::Uri>() {
            Ok(uri)
                if matches!(uri.scheme_str(), Some("http") | Some("https"))
                    && uri.host().is_some_and(|h| !h.is_empty()) =>
            {
                Some(uri)
            }
            _ => {
                self.push(format!("{name}: {value:?} is not an http:// or https:// URL"));
                None
            }
        }
    }

    /// One value from a fixed set.
    pub fn one_of<'a>(&mut self, name: &str, value: &str, allowed: &[&'a str]) -> Option<&'a str> {
        let v = value.trim();
        match allowed.iter().find(|a| a.eq_ignore_ascii_case(v)) {
            Some(a) => Some(a),
            None => {
                self.push(format!("{name}: {value:?} must be one of {}", allowed.join(", ")));
                None
            }
        }
    }

    /// Turns the collected problems into an error, if there are any.
    pub fn into_result(self) -> Result<(), ConfigError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ConfigError(self.0))
        }
    }
}

/// Each argument's label as problems name it, `--flag (VARIABLE)`, taken from clap's own
/// metadata so the flag and its variable are written once, on the argument.
pub struct Labels(Vec<(String, String)>);

impl Labels {
    /// The labels of a clap `Args` type's arguments.
    pub fn of<A: clap::Args>() -> Labels {
        Labels::of_command(&A::augment_args(clap::Command::new("labels")))
    }

    /// The labels of a command's arguments.
    pub fn of_command(command: &clap::Command) -> Labels {
        let labels = command
            .get_arguments()
            .map(|arg| {
                let id = arg.get_id().to_string();
                // A positional argument goes by its value name (`URL`), as in the usage line.
                let flag = match (arg.get_long(), arg.get_value_names().and_then(|v| v.first())) {
                    (Some(l), _) => format!("--{l}"),
                    (None, Some(name)) => name.to_string(),
                    (None, None) => id.clone(),
                };
                let label = match arg.get_env() {
                    Some(env) => format!("{flag} ({})", env.to_string_lossy()),
                    None => flag,
                };
                (id, label)
            })
            .collect();
        Labels(labels)
    }

    /// The label of the argument with this id (its field's name).
    pub fn get<'a>(&'a self, id: &'a str) -> &'a str {
        self.0
            .iter()
            .find(|(i, _)| i == id)
            .map(|(_, label)| label.as_str())
            .unwrap_or(id)
    }
}

/// Checks the request limits every listener shares, given as their flags give them (the
/// arguments `keep_alive_timeout`, `max_header_bytes`, `body_timeout` and
/// `max_buffered_body_bytes`, labelled by `l`). The buffered-body budget must hold at least
/// `min_budget`, a number of bytes and what it stands for. `None` when any value is invalid.
pub fn http_limits(
    p: &mut Problems,
    l: &Labels,
    keep_alive_timeout: &str,
    max_header_bytes: &str,
    body_timeout: &str,
    max_buffered_body_bytes: &str,
    min_budget: Option<(u64, &str)>,
) -> Option<(HttpLimits, BodyPolicy)> {
    let keep_alive = p.duration(l.get("keep_alive_timeout"), keep_alive_timeout);
    let max_header = p.count(l.get("max_header_bytes"), max_header_bytes, 1024 * 1024);
    if max_header.is_some_and(|m| m < 1024) {
        p.push(format!("{}: must be at least 1024", l.get("max_header_bytes")));
    }
    let body_timeout = p.duration(l.get("body_timeout"), body_timeout);
    let budget_label = l.get("max_buffered_body_bytes");
    let budget = p.count(budget_label, max_buffered_body_bytes, u32::MAX as u64);
    if let (Some(budget), Some((least, what))) = (budget, min_budget) {
        if budget < least {
            p.push(format!("{budget_label}: must be at least {what}"));
        }
    }
    for (id, d) in [("keep_alive_timeout", keep_alive), ("body_timeout", body_timeout)] {
        if d.is_some_and(|d| d.is_zero()) {
            p.push(format!("{}: must be more than zero", l.get(id)));
        }
    }
    let keep_alive = keep_alive.filter(|d| !d.is_zero())?;
    let body_timeout = body_timeout.filter(|d| !d.is_zero())?;
    let http = HttpLimits {
        keep_alive,
        max_header_bytes: max_header.filter(|m| *m >= 1024)? as usize,
    };
    Some((http, BodyPolicy::new(body_timeout, budget? as usize)))
}

/// Invalid configuration: every problem found.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError(pub Vec<String>);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} invalid setting(s):", self.0.len())?;
        for p in &self.0 {
            writeln!(f, "  - {p}")?;
        }
        Ok(())
    }
}

/// Parses durations such as `250ms`, `5s`, `10m`, `2h`, `2h15m`, or a bare number of seconds.
pub fn parse_duration(value: &str) -> Result<Duration, String> {
    let bad = || format!("{value:?} is not a duration like 250ms, 5s, 10m, 2h or 2h15m");
    let mut rest = value.trim();
    if rest.is_empty() {
        return Err(bad());
    }
    let mut secs = 0.0f64;
    while !rest.is_empty() {
        let split = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, tail) = rest.split_at(split);
        let n: f64 = num.parse().map_err(|_| bad())?;
        let unit_len = tail.find(|c: char| c.is_ascii_digit()).unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        secs += match unit.trim() {
            "ms" => n / 1000.0,
            "" | "s" => n,
            "m" => n * 60.0,
            "h" => n * 3600.0,
            _ => return Err(format!("{value:?} has an unknown unit (use ms, s, m or h)")),
        };
        rest = tail;
    }
    if !secs.is_finite() || !(0.0..=31_536_000.0).contains(&secs) {
        return Err(format!("{value:?} is out of range"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("5").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse_duration("2h15m").unwrap(), Duration::from_secs(8100));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn labels_come_from_clap() {
        let labels = Labels::of::<crate::serve::ServeArgs>();
        assert_eq!(
            labels.get("sync_interval"),
            "--sync-interval (SOCKETLESS_SYNC_INTERVAL)"
        );
        assert_eq!(labels.get("no_such_flag"), "no_such_flag");
    }

    #[test]
    fn http_limits_are_checked_together() {
        let l = Labels::of::<crate::serve::ServeArgs>();
        let mut p = Problems::new();
        let ok = http_limits(&mut p, &l, "75s", "10240", "10s", "4096", Some((1024, "one body")));
        let (http, body) = ok.expect("valid limits");
        assert_eq!(http.keep_alive, Duration::from_secs(75));
        assert_eq!(http.max_header_bytes, 10240);
        assert_eq!(body.timeout, Duration::from_secs(10));
        assert!(p.is_empty());
        assert!(http_limits(&mut p, &l, "0s", "100", "0s", "10", Some((1024, "one body"))).is_none());
        let found: Vec<&str> = p.iter().collect();
        assert_eq!(found.len(), 4, "{found:?}");
        assert!(
            found[0].starts_with("--max-header-bytes (SOCKETLESS_MAX_HEADER_BYTES)"),
            "{found:?}"
        );
        assert!(found[1].ends_with("must be at least one body"), "{found:?}");
    }

    #[test]
    fn problems_collect() {
        let mut p = Problems::new();
        assert!(p.addr("--listen", "nope").is_none());
        assert!(p.count("--n", "0", 10).is_none());
        assert!(p.count("--n", "11", 10).is_none());
        assert_eq!(p.count("--n", "7", 10), Some(7));
        assert!(p.url("--u", "ftp://x").is_none());
        assert!(p.url("--u", "http://127.0.0.1:1/dev").is_some());
        assert_eq!(p.len(), 4);
        let msg = p.into_result().unwrap_err().to_string();
        assert!(msg.contains("4 invalid setting(s)"), "{msg}");
    }
}
