//! The flags of `socketless conformance` and their validation into the suite's settings.

use std::time::Duration;

use super::names;
use crate::config::{ConfigError, Labels, Problems};
use crate::defaults;

/// Flags of `socketless conformance`.
#[derive(clap::Args, Debug, Clone)]
pub struct ConformanceArgs {
    /// The stage's WebSocket URL: wss://{api}.execute-api.{region}.amazonaws.com/{stage}, or
    /// ws://127.0.0.1:PORT/{stage} for a local gateway.
    #[arg(long, env = "SOCKETLESS_CONFORMANCE_URL")]
    pub url: String,
    /// The `@connections` endpoint: https://{api}.execute-api.{region}.amazonaws.com/{stage}, or
    /// http://127.0.0.1:PORT/{stage}.
    #[arg(long, env = "SOCKETLESS_CONFORMANCE_CONNECTIONS")]
    pub connections: String,
    /// Region for SigV4; falls back to AWS_REGION / AWS_DEFAULT_REGION, then us-east-1.
    #[arg(long, env = "SOCKETLESS_CONFORMANCE_REGION")]
    pub region: Option<String>,
    /// The integration timeout the target applies (the template's IntegrationTimeoutMs, or the
    /// local gateway's --integration-timeout).
    #[arg(
        long,
        env = "SOCKETLESS_CONFORMANCE_INTEGRATION_TIMEOUT",
        default_value = defaults::INTEGRATION_TIMEOUT
    )]
    pub integration_timeout: String,
    /// The target's idle timeout (API Gateway: 10 minutes).
    #[arg(long, env = "SOCKETLESS_CONFORMANCE_IDLE_TIMEOUT", default_value = defaults::IDLE_TIMEOUT)]
    pub idle_timeout: String,
    /// The target's maximum connection duration (API Gateway: 2 hours).
    #[arg(
        long,
        env = "SOCKETLESS_CONFORMANCE_MAX_DURATION",
        default_value = defaults::MAX_CONNECTION_DURATION
    )]
    pub max_duration: String,
    /// Also run cases that wait longer than a minute (the idle and duration timeouts at AWS's
    /// values). Without it they are reported as not run.
    #[arg(long, env = "SOCKETLESS_CONFORMANCE_SLOW", default_value_t = false)]
    pub slow: bool,
    /// The target does not check SigV4 signatures on `@connections` (`socketless dev`, or a
    /// gateway started without --sigv4-*): the wrong-key case is not run.
    #[arg(long, env = "SOCKETLESS_CONFORMANCE_UNSIGNED", default_value_t = false)]
    pub unsigned: bool,
    /// The stack has no custom route `conformance` (deployed without ConformanceMapping=true).
    #[arg(long, env = "SOCKETLESS_CONFORMANCE_NO_CUSTOM_ROUTE", default_value_t = false)]
    pub no_custom_route: bool,
    /// How long to wait for each reply, close or API answer.
    #[arg(long, env = "SOCKETLESS_CONFORMANCE_WAIT", default_value = defaults::WAIT)]
    pub wait: String,
    /// A token the target's `$connect` authorizer allows (`?token=`): the `auth-*` cases run,
    /// and every other case connects with it.
    #[arg(long, env = "SOCKETLESS_CONFORMANCE_AUTH_TOKEN_ALLOW", hide_env_values = true)]
    pub auth_token_allow: Option<String>,
    /// A token the target's `$connect` authorizer denies (`auth-denied-403`).
    #[arg(long, env = "SOCKETLESS_CONFORMANCE_AUTH_TOKEN_DENY", hide_env_values = true)]
    pub auth_token_deny: Option<String>,
    /// The `principalId` the authorizer returns for --auth-token-allow; without it
    /// `auth-allowed-principal` checks only that one arrives.
    #[arg(long, env = "SOCKETLESS_CONFORMANCE_AUTH_PRINCIPAL")]
    pub auth_principal: Option<String>,
    /// Run only the cases whose name starts with one of these (repeatable; comma-separated in
    /// the variable).
    #[arg(long, env = "SOCKETLESS_CONFORMANCE_ONLY", value_delimiter = ',')]
    pub only: Vec<String>,
}

/// The suite's validated settings.
#[derive(Debug, Clone)]
pub struct ConformanceConfig {
    pub(super) args: ConformanceArgs,
    /// WebSocket URL without a query.
    pub(super) url: String,
    pub(super) stage: String,
    pub(super) connections: String,
    pub(super) region: String,
    pub(super) integration_timeout: Duration,
    pub(super) idle_timeout: Duration,
    pub(super) max_duration: Duration,
    pub(super) wait: Duration,
}

/// The stage: the URL's first path segment.
fn stage_of(url: &str) -> Option<String> {
    let rest = url.split_once("://")?.1;
    let path = rest.split_once('/')?.1;
    let stage = path.split(['/', '?']).next()?.to_string();
    (!stage.is_empty()).then_some(stage)
}

impl ConformanceArgs {
    /// Checks every setting and reports all problems at once.
    pub fn validate(&self) -> Result<ConformanceConfig, ConfigError> {
        let mut p = Problems::new();
        let l = Labels::of::<ConformanceArgs>();
        let url = self
            .url
            .split('?')
            .next()
            .unwrap_or_default()
            .trim_end_matches('/')
            .to_string();
        let stage = if !(url.starts_with("ws://") || url.starts_with("wss://")) {
            p.push(format!(
                "{}: {:?} must start with ws:// or wss://",
                l.get("url"),
                self.url
            ));
            None
        } else {
            let stage = stage_of(&url);
            if stage.is_none() {
                p.push(format!("{}: {:?} names no stage", l.get("url"), self.url));
            }
            stage
        };
        let connections = p
            .url(l.get("connections"), &self.connections)
            .map(|_| self.connections.trim().trim_end_matches('/').to_string());
        if self.region.as_deref().is_some_and(|r| r.trim().is_empty()) {
            p.push(format!("{}: must not be empty", l.get("region")));
        }
        let mut d = |id: &str, value: &str| {
            let d = p.duration(l.get(id), value);
            if d.is_some_and(|d| d.is_zero()) {
                p.push(format!("{}: must be more than zero", l.get(id)));
            }
            d.filter(|d| !d.is_zero())
        };
        let integration_timeout = d("integration_timeout", &self.integration_timeout);
        let idle_timeout = d("idle_timeout", &self.idle_timeout);
        let max_duration = d("max_duration", &self.max_duration);
        let wait = d("wait", &self.wait);
        let all = names();
        for prefix in &self.only {
            if !all.iter().any(|name| name.starts_with(prefix.as_str())) {
                p.push(format!("{}: {prefix:?} names no case", l.get("only")));
            }
        }
        p.into_result()?;
        match (
            stage,
            connections,
            integration_timeout,
            idle_timeout,
            max_duration,
            wait,
        ) {
            (
                Some(stage),
                Some(connections),
                Some(integration_timeout),
                Some(idle_timeout),
                Some(max_duration),
                Some(wait),
            ) => Ok(ConformanceConfig {
                args: self.clone(),
                url,
                stage,
                connections,
                region: self
                    .region
                    .clone()
                    .or_else(crate::aws::region_from_env)
                    .unwrap_or_else(|| defaults::REGION.to_string()),
                integration_timeout,
                idle_timeout,
                max_duration,
                wait,
            }),
            _ => Err(ConfigError(vec!["the suite's settings are incomplete".into()])),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_is_the_first_path_segment() {
        assert_eq!(
            stage_of("wss://abc.execute-api.us-east-1.amazonaws.com/prod").as_deref(),
            Some("prod")
        );
        assert_eq!(stage_of("ws://127.0.0.1:8081/dev?x=1").as_deref(), Some("dev"));
        assert_eq!(stage_of("ws://127.0.0.1:8081/"), None);
    }

    #[test]
    fn valid_settings_are_kept() {
        use crate::config::FromFlags;
        let args = ConformanceArgs::from_flags([
            "--url",
            "ws://127.0.0.1:8081/dev/?x=1",
            "--connections",
            "http://127.0.0.1:8081/dev/",
            "--region",
            "eu-west-1",
            "--idle-timeout",
            "3s",
            "--only",
            "handshake",
        ])
        .unwrap();
        let c = args.validate().unwrap();
        assert_eq!(c.url, "ws://127.0.0.1:8081/dev");
        assert_eq!(c.stage, "dev");
        assert_eq!(c.connections, "http://127.0.0.1:8081/dev");
        assert_eq!(c.region, "eu-west-1");
        assert_eq!(c.idle_timeout, Duration::from_secs(3));
        assert_eq!(c.integration_timeout, Duration::from_secs(29));
        assert_eq!(c.wait, Duration::from_secs(10));
    }
}
