//! The OTLP exporter, set up only when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set: spans go in batches, as OTLP/HTTP with protobuf
//! bodies (`OTEL_EXPORTER_OTLP_PROTOCOL=http/json` for JSON; see `protocol` below), through the
//! process's own hyper client (plain HTTP: a collector on the same host or pod). The SDK reads
//! the other standard variables itself: `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES`,
//! `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`, `OTEL_EXPORTER_OTLP_HEADERS`,
//! `OTEL_EXPORTER_OTLP_TIMEOUT` and the `OTEL_BSP_*` batch settings.

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::{HttpClient, HttpError};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;

/// The variables that turn exporting on.
pub const ENDPOINT_VARIABLES: [&str; 2] = ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"];

/// The variables that choose the body's encoding, the first set one winning.
const PROTOCOL_VARIABLES: [&str; 2] = ["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"];

/// Idle connections kept to the collector: the batch processor sends one export at a time.
const EXPORT_MAX_IDLE: usize = 2;

/// Largest answer read from the collector.
const MAX_ANSWER_BYTES: usize = 1 << 20;

/// The SDK's batch processor exports from a thread of its own, outside the runtime: each
/// export is sent as a task on the runtime and awaited from there.
#[derive(Clone)]
struct HyperClient {
    client: std::sync::Arc<crate::http_client::Pool>,
    runtime: tokio::runtime::Handle,
    /// Bound on one export, connecting and the answer included.
    timeout: std::time::Duration,
}

#[async_trait::async_trait]
impl HttpClient for HyperClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let client = self.client.clone();
        let call = async move {
            let (parts, body) = request.into_parts();
            let (parts, body) = client
                .call(Request::from_parts(parts, Full::new(body)), MAX_ANSWER_BYTES)
                .await?;
            Ok::<_, HttpError>(Response::from_parts(parts, body))
        };
        let timeout = self.timeout;
        let bounded = async move {
            tokio::time::timeout(timeout, call)
                .await
                .map_err(|_| HttpError::from(format!("no answer within {timeout:?}")))?
        };
        self.runtime.spawn(bounded).await?
    }
}

impl std::fmt::Debug for HyperClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HyperClient").field("timeout", &self.timeout).finish()
    }
}

/// Exports until dropped; dropping it sends the spans still waiting.
pub struct Exporting(SdkTracerProvider);

impl Drop for Exporting {
    fn drop(&mut self) {
        if let Err(e) = self.0.shutdown() {
            tracing::warn!(error = %e, "the last spans could not be exported");
        }
    }
}

/// `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT` or `OTEL_EXPORTER_OTLP_TIMEOUT` (milliseconds), else the
/// specification's 10 s.
fn export_timeout() -> std::time::Duration {
    ["OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "OTEL_EXPORTER_OTLP_TIMEOUT"]
        .iter()
        .find_map(|v| std::env::var(v).ok()?.trim().parse::<u64>().ok())
        .map_or(std::time::Duration::from_secs(10), std::time::Duration::from_millis)
}

/// The encoding the environment asks for, as `read` gives the variables: protobuf unless one of
/// [`PROTOCOL_VARIABLES`] says `http/json`. Protobuf is the specification's default; the exporter
/// crate, built with both encodings, would otherwise pick (pretty-printed) JSON. `grpc`, or any
/// other value, is refused: nothing would reach a collector that expects it.
fn protocol(read: impl Fn(&str) -> Option<String>) -> Result<Protocol, String> {
    let set = PROTOCOL_VARIABLES
        .iter()
        .find_map(|name| Some((*name, read(name).filter(|v| !v.trim().is_empty())?)));
    let Some((name, value)) = set else {
        return Ok(Protocol::HttpBinary);
    };
    match value.trim().to_ascii_lowercase().as_str() {
        "http/protobuf" => Ok(Protocol::HttpBinary),
        "http/json" => Ok(Protocol::HttpJson),
        _ => Err(format!(
            "{name}={value}: spans are exported over OTLP/HTTP only, as `http/protobuf` (the default) or `http/json`"
        )),
    }
}

/// Whether the environment asks for spans to be exported.
pub fn requested() -> bool {
    ENDPOINT_VARIABLES
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()))
}

/// Starts exporting when the environment asks for it (`None` otherwise: no span is ever made).
/// `service` names the process unless `OTEL_SERVICE_NAME` does.
pub fn init(service: &'static str, runtime: tokio::runtime::Handle) -> Result<Option<Exporting>, String> {
    if !requested() {
        return Ok(None);
    }
    let protocol = protocol(|name| std::env::var(name).ok())?;
    let client = HyperClient {
        client: std::sync::Arc::new(crate::http_client::Pool::new(
            crate::defaults::PUSH_POOL_IDLE,
            EXPORT_MAX_IDLE,
            export_timeout(),
        )),
        runtime,
        timeout: export_timeout(),
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(client)
        .with_protocol(protocol)
        .build()
        .map_err(|e| format!("the OTLP exporter: {e}"))?;
    let mut resource = Resource::builder();
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name(service);
    }
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build();
    super::install(provider.tracer("socketless"));
    let encoding = if protocol == Protocol::HttpJson {
        "JSON"
    } else {
        "protobuf"
    };
    tracing::info!(encoding, "exporting traces over OTLP/HTTP");
    Ok(Some(Exporting(provider)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(vars: &[(&str, &str)]) -> Result<Protocol, String> {
        protocol(|name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string()))
    }

    #[test]
    fn the_encoding_is_protobuf_unless_json_is_asked_for() {
        assert_eq!(with(&[]), Ok(Protocol::HttpBinary));
        assert_eq!(with(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "")]), Ok(Protocol::HttpBinary));
        assert_eq!(
            with(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")]),
            Ok(Protocol::HttpJson)
        );
        assert_eq!(
            with(&[("OTEL_EXPORTER_OTLP_PROTOCOL", " HTTP/JSON ")]),
            Ok(Protocol::HttpJson)
        );
        assert_eq!(
            with(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")]),
            Ok(Protocol::HttpBinary)
        );
        // The traces' own variable wins over the general one.
        let both = [
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ];
        assert_eq!(with(&both), Ok(Protocol::HttpBinary));
    }

    #[test]
    fn an_encoding_that_cannot_be_sent_is_refused_with_its_variable() {
        for value in ["grpc", "http", "json"] {
            let err = with(&[("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", value)]).unwrap_err();
            assert!(
                err.starts_with(&format!("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL={value}:")),
                "{err}"
            );
        }
    }
}
