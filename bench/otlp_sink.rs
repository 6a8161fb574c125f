//! The traces benchmark's collector (bench/tracing.py): an OTLP/HTTP sink that answers every
//! export with 200 and counts the spans in it (protobuf decoded; JSON by its `"spanId"` keys),
//! doing nothing else. `GET /count` answers the spans counted so far.
//!
//! otlp_sink 127.0.0.1:PORT

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

/// The spans in one export.
fn spans(content_type: &str, body: &[u8]) -> u64 {
    if content_type.starts_with("application/json") {
        let key = b"\"spanId\"";
        return body.windows(key.len()).filter(|w| *w == key).count() as u64;
    }
    match ExportTraceServiceRequest::decode(body) {
        Ok(req) => req
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len() as u64)
            .sum(),
        Err(_) => 0,
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:4318".into());
    let listener = tokio::net::TcpListener::bind(&addr).await.expect("bind");
    let count = Arc::new(AtomicU64::new(0));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let count = count.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let count = count.clone();
                async move {
                    if req.method() == hyper::Method::GET {
                        let n = count.load(Ordering::Relaxed).to_string();
                        return Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(n))));
                    }
                    let content_type = req
                        .headers()
                        .get(hyper::header::CONTENT_TYPE)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_owned();
                    let body = req
                        .into_body()
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    count.fetch_add(spans(&content_type, &body), Ordering::Relaxed);
                    Ok(hyper::Response::new(Full::new(Bytes::new())))
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
