//! Shared AWS SDK configuration: region, timeouts and the default credential chain (static
//! environment keys, IRSA web identity, EKS Pod Identity, profiles).
//!
//! Outgoing TLS is rustls. Root certificates come from the system bundle
//! (`/etc/ssl/certs/ca-certificates.crt`, or `SSL_CERT_FILE`), which the scratch image carries.

use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};

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

/// Loads the SDK configuration. Credentials resolve lazily, on the first call.
pub async fn load(settings: &AwsSettings) -> SdkConfig {
    let attempt = settings.timeout.mul_f64(0.5).max(Duration::from_millis(100));
    let timeouts = TimeoutConfig::builder()
        .operation_timeout(settings.timeout)
        .operation_attempt_timeout(attempt)
        .connect_timeout(attempt.min(Duration::from_secs(2)))
        .build();
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(settings.region.clone()))
        .timeout_config(timeouts)
        .load()
        .await
}
