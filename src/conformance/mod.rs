//! `socketless conformance`: one suite of client-observable cases of Amazon API Gateway's
//! WebSocket contract, run against any target: `socketless gateway`, `socketless dev`, or a real
//! API Gateway stage deployed from `cfn/websocket-api.yml` with `ConformanceMapping=true` and
//! `socketless serve --conformance` behind it.
//!
//! Each case prints one line: `pass NAME`, `fail NAME: why`, `known-difference NAME:
//! docs/gateway.md#anchor` (socketless differs from AWS on purpose, or AWS behaviour is
//! unconfirmed; see [`known`]) or `not-run NAME: reason`. Then the counts, the last line being
//! exactly `N passed, N failed`; the exit status is non-zero on any failure.
//!
//! A target with a `$connect` REQUEST authorizer (identity source `?token=`) is declared with
//! `--auth-token-allow` / `--auth-token-deny` (see [`auth`]): the `auth-*` cases run, and every
//! other case connects with the allowed token. Without them the `auth-*` cases are not run.
//!
//! Credentials for `@connections` (see `credentials`): none with `--unsigned`, the
//! environment's keys (or a placeholder) for a loopback target, the default chain otherwise,
//! resolved once before any case so a missing key is one line, not one failure per case.

mod auth;
pub mod backend;
mod connections;
pub(crate) mod handshake;
pub mod known;
mod messages;
mod timeouts;
mod ws;

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

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
    args: ConformanceArgs,
    /// WebSocket URL without a query.
    url: String,
    stage: String,
    connections: String,
    region: String,
    integration_timeout: Duration,
    idle_timeout: Duration,
    max_duration: Duration,
    wait: Duration,
}

/// Waits longer than this need --slow.
const SLOW_BEYOND: Duration = defaults::CONFORMANCE_SLOW_BEYOND;

/// One run of the kit: the target and the validated settings every case shares.
pub struct Run {
    /// The WebSocket URL the cases connect to: the stage URL, with `?token=` the allowed
    /// token when the target has an authorizer.
    pub url: String,
    /// The stage URL without a query.
    pub stage_url: String,
    /// The authorizer's tokens, for the `auth-*` cases.
    pub auth: auth::Tokens,
    pub stage: String,
    pub connections: String,
    pub integration_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_duration: Duration,
    pub slow: bool,
    pub unsigned: bool,
    pub custom_route: bool,
    pub wait: Duration,
    pub sdk: aws_config::SdkConfig,
    /// How the idle timeout and the maximum duration ended a connection (waited for once).
    pub idle_result: tokio::sync::OnceCell<Result<(ws::Ended, Duration), String>>,
    pub duration_result: tokio::sync::OnceCell<Result<(ws::Ended, Duration), String>>,
}

impl Run {
    /// Whether a case that waits `d` may run; the reason when not.
    pub fn may_wait(&self, d: Duration) -> Result<(), String> {
        if d > SLOW_BEYOND && !self.slow {
            Err(format!("waits {} s; pass --slow to run it", d.as_secs()))
        } else {
            Ok(())
        }
    }
}

/// What one case found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    Fail(String),
    /// A listed known difference (see [`known::KNOWN`]), with what was observed when it was not
    /// socketless's documented choice.
    Known(&'static str, Option<String>),
    NotRun(String),
}

/// `Outcome::Fail` from anything printable.
pub fn fail(why: impl Into<String>) -> Outcome {
    Outcome::Fail(why.into())
}

/// Prints one case's line.
pub fn line(name: &str, outcome: &Outcome) -> String {
    match outcome {
        Outcome::Pass => format!("pass {name}"),
        Outcome::Fail(why) => format!("fail {name}: {why}"),
        Outcome::Known(id, None) => format!("known-difference {name}: {}", known::link(id)),
        Outcome::Known(id, Some(seen)) => {
            format!("known-difference {name}: {} (observed: {seen})", known::link(id))
        }
        Outcome::NotRun(why) => format!("not-run {name}: {why}"),
    }
}

/// Every case, in the order they run.
pub fn names() -> Vec<&'static str> {
    let mut all = Vec::new();
    all.extend_from_slice(handshake::NAMES);
    all.extend_from_slice(messages::NAMES);
    all.extend_from_slice(connections::NAMES);
    all.extend_from_slice(timeouts::NAMES);
    all.extend_from_slice(auth::NAMES);
    all
}

async fn run_one(name: &str, cx: &Run) -> Outcome {
    if let Some(o) = handshake::run(name, cx).await {
        return o;
    }
    if let Some(o) = messages::run(name, cx).await {
        return o;
    }
    if let Some(o) = connections::run(name, cx).await {
        return o;
    }
    if let Some(o) = timeouts::run(name, cx).await {
        return o;
    }
    if let Some(o) = auth::run(name, cx).await {
        return o;
    }
    fail("no such case")
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

/// The key used where no signature is checked: it reads nothing and needs nothing.
const PLACEHOLDER_KEY: &str = "socketless-conformance-unsigned";

/// Whether an `http(s)://host[:port]/...` URL names a loopback host.
fn is_loopback(url: &str) -> bool {
    let Ok(uri) = url.parse::<http::Uri>() else {
        return false;
    };
    match uri.host() {
        Some(h) if h.eq_ignore_ascii_case("localhost") => true,
        Some(h) => h
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => false,
    }
}

/// Keys from `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` (and `AWS_SESSION_TOKEN`), if set.
fn env_keys() -> Option<aws_credential_types::Credentials> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
    Some(aws_credential_types::Credentials::new(
        var("AWS_ACCESS_KEY_ID")?,
        var("AWS_SECRET_ACCESS_KEY")?,
        var("AWS_SESSION_TOKEN"),
        None,
        "environment",
    ))
}

/// The SDK configuration that signs `@connections` calls:
/// - `--unsigned`: a placeholder key; no credential provider chain is built, nothing is read;
/// - a loopback target (`socketless gateway` or `dev` on this machine): the environment's keys
///   when set (a gateway's `--sigv4-*` pair), else the placeholder; never the chain, so no
///   profile files or instance metadata are tried;
/// - any other target: the default chain (environment, profile, SSO, web identity, container,
///   instance metadata), resolved once here, within `wait`. Without credentials this is the
///   one error, naming the variables to set.
async fn credentials(
    args: &ConformanceArgs,
    connections: &str,
    region: String,
    wait: Duration,
) -> Result<aws_config::SdkConfig, String> {
    use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
    let fixed = |creds: aws_credential_types::Credentials| {
        crate::aws::static_config(PLACEHOLDER_KEY, PLACEHOLDER_KEY, wait)
            .to_builder()
            .region(aws_config::Region::new(region.clone()))
            .credentials_provider(SharedCredentialsProvider::new(creds))
            .build()
    };
    let placeholder =
        || aws_credential_types::Credentials::new(PLACEHOLDER_KEY, PLACEHOLDER_KEY, None, None, "placeholder");
    if args.unsigned {
        return Ok(fixed(placeholder()));
    }
    if is_loopback(connections) {
        return Ok(fixed(env_keys().unwrap_or_else(|| {
            eprintln!(
                "conformance: no AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY set; signing with a placeholder key (set them to the gateway's --sigv4-* keys if it checks signatures, or pass --unsigned)"
            );
            placeholder()
        })));
    }
    let sdk = crate::aws::load(&crate::aws::AwsSettings {
        region: region.clone(),
        timeout: wait,
    })
    .await;
    let missing = |why: &str| {
        format!(
            "no AWS credentials to sign @connections calls to {connections} ({why}): set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for temporary keys), or AWS_PROFILE; pass --unsigned if the target does not check signatures"
        )
    };
    let Some(provider) = sdk.credentials_provider() else {
        return Err(missing("no credential provider"));
    };
    match tokio::time::timeout(wait, provider.provide_credentials()).await {
        Ok(Ok(creds)) => Ok(fixed(creds)),
        Ok(Err(_)) => Err(missing("none found in the default chain")),
        Err(_) => Err(missing(&format!("none found within {} s", wait.as_secs()))),
    }
}

/// Runs the suite and prints its result; the exit code says whether every case held.
pub async fn run(config: ConformanceConfig) -> ExitCode {
    let ConformanceConfig {
        args,
        url,
        stage,
        connections,
        region,
        integration_timeout,
        idle_timeout,
        max_duration,
        wait,
    } = config;
    let sdk = match credentials(&args, &connections, region, wait).await {
        Ok(sdk) => sdk,
        Err(e) => {
            eprintln!("conformance: {e}");
            return ExitCode::from(2);
        }
    };
    let nonempty = |v: &Option<String>| v.clone().filter(|t| !t.is_empty());
    let tokens = auth::Tokens {
        allow: nonempty(&args.auth_token_allow),
        deny: nonempty(&args.auth_token_deny),
        principal: nonempty(&args.auth_principal),
    };
    let cx = Run {
        url: match &tokens.allow {
            Some(token) => auth::with_token(&url, token),
            None => url.clone(),
        },
        stage_url: url,
        auth: tokens,
        stage,
        connections,
        integration_timeout,
        idle_timeout,
        max_duration,
        slow: args.slow,
        unsigned: args.unsigned,
        custom_route: !args.no_custom_route,
        wait,
        sdk,
        idle_result: tokio::sync::OnceCell::new(),
        duration_result: tokio::sync::OnceCell::new(),
    };
    let mut out = std::io::stdout();
    let (mut passed, mut failed, mut known, mut not_run) = (0, 0, 0, 0);
    for name in names() {
        if !args.only.is_empty() && !args.only.iter().any(|p| name.starts_with(p.as_str())) {
            continue;
        }
        // Every case bounds its own waits; this is the backstop.
        let bound = wait * 3 + integration_timeout + max_duration.min(SLOW_BEYOND) + idle_timeout.min(SLOW_BEYOND);
        let bound = if args.slow {
            bound + max_duration + idle_timeout
        } else {
            bound
        };
        let outcome = match tokio::time::timeout(bound, run_one(name, &cx)).await {
            Ok(o) => o,
            Err(_) => fail(format!("no result within {} s", bound.as_secs())),
        };
        match outcome {
            Outcome::Pass => passed += 1,
            Outcome::Fail(_) => failed += 1,
            Outcome::Known(..) => known += 1,
            Outcome::NotRun(_) => not_run += 1,
        }
        let _ = writeln!(out, "{}", line(name, &outcome));
        let _ = out.flush();
    }
    let _ = writeln!(out, "{known} known differences, {not_run} not run");
    let _ = writeln!(out, "{passed} passed, {failed} failed");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
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
    fn loopback_targets_are_recognised() {
        for url in [
            "http://127.0.0.1:8081/dev",
            "http://localhost:8081/dev",
            "http://[::1]:8081/dev",
            "http://127.1.2.3/dev",
        ] {
            assert!(is_loopback(url), "{url}");
        }
        for url in [
            "https://abc.execute-api.us-east-1.amazonaws.com/prod",
            "http://10.0.0.1:8081/dev",
            "not a url",
        ] {
            assert!(!is_loopback(url), "{url}");
        }
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

    #[test]
    fn case_names_are_unique() {
        let all = names();
        let mut sorted = all.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), all.len());
    }

    #[test]
    fn lines_have_the_documented_shape() {
        assert_eq!(line("a", &Outcome::Pass), "pass a");
        assert_eq!(line("a", &fail("why")), "fail a: why");
        assert_eq!(line("a", &Outcome::NotRun("r".into())), "not-run a: r");
        let kd = line("a", &Outcome::Known(known::KNOWN[0].id, None));
        assert!(kd.starts_with("known-difference a: docs/gateway.md#kd-"), "{kd}");
    }
}
