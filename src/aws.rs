//! Shared AWS SDK configuration: region, timeouts and the default credential chain (static
//! environment keys, IRSA web identity, EKS Pod Identity, profiles).
//!
//! Outgoing TLS is rustls on ring (the SDK's default HTTPS client uses aws-lc, which adds
//! several megabytes to a static binary). Root certificates come from the system bundle
//! (`/etc/ssl/certs/ca-certificates.crt`, or `SSL_CERT_FILE`), which the scratch image carries.

use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_dynamodb::config::SharedHttpClient;
use aws_smithy_http_client::proxy::ProxyConfig;
use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
use aws_smithy_http_client::{Builder, ConnectorBuilder};

use crate::defaults;

/// The settings every AWS client shares.
#[derive(Debug, Clone)]
pub struct AwsSettings {
    pub region: String,
    /// Bound on one whole operation, retries included. Past it the caller answers 503.
    pub timeout: Duration,
}

/// Region from the environment, the way the SDK reads it.
pub fn region_from_env() -> Option<String> {
    ["AWS_REGION", "AWS_DEFAULT_REGION"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.trim().is_empty()))
}

/// The HTTPS client every AWS SDK client here uses: the SDK's default hyper 1 client (connector
/// settings and timeouts from the SDK, `HTTPS_PROXY`/`NO_PROXY` honoured), with rustls on ring.
pub fn http_client() -> SharedHttpClient {
    Builder::new().build_with_connector_fn(|settings, components| {
        let mut connector = ConnectorBuilder::default().tls_provider(Provider::Rustls(CryptoMode::Ring));
        connector.set_connector_settings(settings.cloned());
        if let Some(components) = components {
            connector.set_sleep_impl(components.sleep_impl());
        }
        connector.set_proxy_config(Some(ProxyConfig::from_env()));
        connector.build()
    })
}

/// The SDK's bound on one attempt of an operation bounded by `timeout` (`--aws-timeout`).
pub fn attempt_timeout(timeout: Duration) -> Duration {
    timeout
        .mul_f64(defaults::AWS_ATTEMPT_SHARE)
        .max(defaults::AWS_MIN_ATTEMPT)
}

/// Loads the SDK configuration. Credentials resolve lazily, on the first call.
pub async fn load(settings: &AwsSettings) -> SdkConfig {
    let attempt = attempt_timeout(settings.timeout);
    let timeouts = TimeoutConfig::builder()
        .operation_timeout(settings.timeout)
        .operation_attempt_timeout(attempt)
        .connect_timeout(attempt.min(defaults::AWS_MAX_CONNECT))
        .build();
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(settings.region.clone()))
        .timeout_config(timeouts)
        .http_client(http_client())
        .load()
        .await
}

/// An SDK configuration with fixed credentials and no credential chain: for `dev`, whose
/// in-process gateway checks no signature, and for tests that sign with known keys.
pub fn static_config(access_key_id: &str, secret_access_key: &str, timeout: Duration) -> SdkConfig {
    use aws_credential_types::Credentials;
    use aws_credential_types::provider::SharedCredentialsProvider;
    SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(defaults::REGION))
        .http_client(http_client())
        .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
            access_key_id,
            secret_access_key,
            None,
            None,
            "socketless-static",
        )))
        .timeout_config(TimeoutConfig::builder().operation_timeout(timeout).build())
        .build()
}

/// Credentials from the SDK configuration's provider chain, kept until shortly before they
/// expire (the SDK's own clients keep them in its identity cache, which direct signing does not
/// go through): without it every signed call would ask the chain again, for IRSA a call to STS.
pub struct CachedCredentials {
    provider: Option<aws_credential_types::provider::SharedCredentialsProvider>,
    current: std::sync::Mutex<Option<(aws_credential_types::Credentials, std::time::SystemTime)>>,
    /// One refresh at a time; the others wait for it and take its result.
    refresh: tokio::sync::Mutex<()>,
}

impl CachedCredentials {
    pub fn new(sdk: &SdkConfig) -> Self {
        CachedCredentials {
            provider: sdk.credentials_provider(),
            current: std::sync::Mutex::new(None),
            refresh: tokio::sync::Mutex::new(()),
        }
    }

    fn cached(&self) -> Option<aws_credential_types::Credentials> {
        let current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let (credentials, expiry) = current.as_ref()?;
        let fresh = expiry
            .duration_since(std::time::SystemTime::now())
            .is_ok_and(|left| left > defaults::CREDENTIALS_REFRESH_BEFORE);
        fresh.then(|| credentials.clone())
    }

    /// Valid credentials: the cached ones, or the chain's, asked at most once at a time.
    pub async fn get(&self) -> Result<aws_credential_types::Credentials, String> {
        use aws_credential_types::provider::ProvideCredentials;
        if let Some(c) = self.cached() {
            return Ok(c);
        }
        let provider = self.provider.as_ref().ok_or("no AWS credentials to sign with")?;
        let _refreshing = self.refresh.lock().await;
        if let Some(c) = self.cached() {
            return Ok(c);
        }
        let credentials = provider
            .provide_credentials()
            .await
            .map_err(|e| format!("AWS credentials: {e}"))?;
        let expiry = credentials
            .expiry()
            .unwrap_or_else(|| std::time::SystemTime::now() + defaults::CREDENTIALS_DEFAULT_LIFETIME);
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some((credentials.clone(), expiry));
        Ok(credentials)
    }
}

/// Signs a request with SigV4 for `execute-api` in `region` (the `@connections` API and the
/// gateway's batch extension), with the cached credentials; `body` is the request's body.
pub async fn sign_execute_api<B>(
    credentials: &CachedCredentials,
    region: &str,
    req: &mut http::Request<B>,
    body: &[u8],
) -> Result<(), String> {
    use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
    let identity = credentials.get().await?.into();
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("execute-api")
        .time(std::time::SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| e.to_string())?
        .into();
    let uri = req.uri().to_string();
    let headers = req
        .headers()
        .iter()
        .filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?)));
    let signable = SignableRequest::new(req.method().as_str(), uri.as_str(), headers, SignableBody::Bytes(body))
        .map_err(|e| e.to_string())?;
    let (instructions, _) = sign(signable, &params).map_err(|e| e.to_string())?.into_parts();
    instructions.apply_to_request_http1x(req);
    Ok(())
}
