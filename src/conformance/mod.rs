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

mod args;
mod auth;
pub mod backend;
mod connections;
mod content;
pub(crate) mod handshake;
pub mod known;
mod messages;
mod timeouts;
mod ws;

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

pub use args::{ConformanceArgs, ConformanceConfig};

use crate::defaults;

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
    all.extend_from_slice(content::NAMES);
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
    if let Some(o) = content::run(name, cx).await {
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
