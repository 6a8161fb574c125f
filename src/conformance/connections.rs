//! `@connections` cases through the AWS SDK (SigV4 with the default credential chain): POST,
//! GET, DELETE, 410 for unknown and closed ids, 413 over 131072 bytes, 403 for a wrong key.

use std::time::Duration;

use aws_credential_types::Credentials;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sdk_apigatewaymanagement::Client;
use aws_sdk_apigatewaymanagement::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_apigatewaymanagement::primitives::Blob;

use super::handshake::cases;
use super::ws::{self, Ended, Ws};
use super::{Outcome, Run, fail};

cases! {
    "connections-post" => post,
    "connections-post-131072-accepted" => post_at_limit,
    "connections-post-over-131072-413" => post_too_large,
    "connections-get" => get,
    "connections-delete" => delete,
    "connections-gone-after-close" => gone_after_close,
    "connections-unknown-id-410" => unknown_id,
    "connections-sigv4-wrong-key-403" => wrong_key,
}

fn client(cx: &Run, sdk: &aws_config::SdkConfig) -> Client {
    let conf = aws_sdk_apigatewaymanagement::config::Builder::from(sdk)
        .endpoint_url(&cx.connections)
        .build();
    Client::from_conf(conf)
}

type Resp = aws_sdk_apigatewaymanagement::config::http::HttpResponse;

/// HTTP status and error code of a failed call.
fn status_code<E: ProvideErrorMetadata + std::error::Error + 'static>(
    err: &SdkError<E, Resp>,
) -> (Option<u16>, String) {
    match err {
        SdkError::ServiceError(e) => (
            Some(e.raw().status().as_u16()),
            e.err().code().unwrap_or("").to_string(),
        ),
        other => (None, DisplayErrorContext(other).to_string()),
    }
}

/// A new connection and its id.
async fn connected(cx: &Run) -> Result<(Ws, String), String> {
    let mut c = ws::open(&cx.url, &[], cx.wait).await.map_err(|e| e.to_string())?;
    let id = ws::connection_id(&mut c, cx.wait).await?;
    Ok((c, id))
}

async fn post_data(cx: &Run, data: Vec<u8>) -> Outcome {
    let (mut c, id) = match connected(cx).await {
        Ok(x) => x,
        Err(e) => return fail(e),
    };
    let len = data.len();
    let r = client(cx, &cx.sdk)
        .post_to_connection()
        .connection_id(&id)
        .data(Blob::new(data))
        .send()
        .await;
    let o = match r {
        Ok(_) => match ws::next_data(&mut c, cx.wait).await {
            Ok(m) if m.len() == len => Outcome::Pass,
            Ok(m) => fail(format!("a {}-byte frame arrived, want {len}", m.len())),
            Err(e) => fail(format!("posted, but {e}")),
        },
        Err(e) => fail(format!("{:?}", status_code(&e))),
    };
    let _ = c.close(None).await;
    o
}

async fn post(cx: &Run) -> Outcome {
    post_data(cx, b"from @connections".to_vec()).await
}

async fn post_at_limit(cx: &Run) -> Outcome {
    post_data(cx, vec![b'p'; 131_072]).await
}

/// Expects a call to fail with `status` and error `code`.
fn expect_error<E>(r: Result<impl std::fmt::Debug, SdkError<E, Resp>>, status: u16, code: &str) -> Outcome
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match r {
        Ok(v) => fail(format!("succeeded ({v:?}), want {status} {code}")),
        Err(e) => match status_code(&e) {
            (Some(s), c) if s == status && (code.is_empty() || c == code) => Outcome::Pass,
            (s, c) => fail(format!("{s:?} {c:?}, want {status} {code}")),
        },
    }
}

async fn post_too_large(cx: &Run) -> Outcome {
    let (mut c, id) = match connected(cx).await {
        Ok(x) => x,
        Err(e) => return fail(e),
    };
    let r = client(cx, &cx.sdk)
        .post_to_connection()
        .connection_id(&id)
        .data(Blob::new(vec![b'p'; 131_073]))
        .send()
        .await;
    let o = expect_error(r, 413, "PayloadTooLargeException");
    let _ = c.close(None).await;
    o
}

async fn get(cx: &Run) -> Outcome {
    let (mut c, id) = match connected(cx).await {
        Ok(x) => x,
        Err(e) => return fail(e),
    };
    let r = client(cx, &cx.sdk).get_connection().connection_id(&id).send().await;
    let _ = c.close(None).await;
    match r {
        Ok(out) => {
            let mut missing = Vec::new();
            if out.connected_at().is_none() {
                missing.push("connectedAt");
            }
            if out.last_active_at().is_none() {
                missing.push("lastActiveAt");
            }
            match out.identity() {
                Some(i) if i.source_ip().is_some_and(|s| !s.is_empty()) => {}
                _ => missing.push("identity.sourceIp"),
            }
            if missing.is_empty() {
                Outcome::Pass
            } else {
                fail(format!("missing {}", missing.join(", ")))
            }
        }
        Err(e) => fail(format!("{:?}", status_code(&e))),
    }
}

async fn delete(cx: &Run) -> Outcome {
    let (mut c, id) = match connected(cx).await {
        Ok(x) => x,
        Err(e) => return fail(e),
    };
    let r = client(cx, &cx.sdk).delete_connection().connection_id(&id).send().await;
    if let Err(e) = r {
        let _ = c.close(None).await;
        return fail(format!("{:?}", status_code(&e)));
    }
    match ws::closed(&mut c, cx.wait).await {
        Ended::Close(1000, _) => Outcome::Pass,
        other => fail(format!("after DELETE the client saw: {other}, want close 1000")),
    }
}

async fn gone_after_close(cx: &Run) -> Outcome {
    let (mut c, id) = match connected(cx).await {
        Ok(x) => x,
        Err(e) => return fail(e),
    };
    let _ = c.close(None).await;
    let _ = ws::closed(&mut c, Duration::from_secs(2)).await;
    // The gateway forgets the connection once the close completes; allow it a moment.
    let mut last = fail("not tried");
    for _ in 0..10 {
        let r = client(cx, &cx.sdk).get_connection().connection_id(&id).send().await;
        last = expect_error(r, 410, "GoneException");
        if last == Outcome::Pass {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    last
}

async fn unknown_id(cx: &Run) -> Outcome {
    let r = client(cx, &cx.sdk)
        .post_to_connection()
        .connection_id("AAAAAAAAAAAAAAA=")
        .data(Blob::new(b"nobody".to_vec()))
        .send()
        .await;
    expect_error(r, 410, "GoneException")
}

async fn wrong_key(cx: &Run) -> Outcome {
    if cx.unsigned {
        return Outcome::NotRun("--unsigned: the target does not check signatures".into());
    }
    let Some(provider) = cx.sdk.credentials_provider() else {
        return fail("no AWS credentials (default chain)");
    };
    let creds = match provider.provide_credentials().await {
        Ok(c) => c,
        Err(e) => return fail(format!("no AWS credentials: {e}")),
    };
    let wrong = Credentials::new(
        creds.access_key_id(),
        format!("{}-wrong", creds.secret_access_key()),
        creds.session_token().map(str::to_string),
        None,
        "conformance-wrong-key",
    );
    let sdk = cx
        .sdk
        .to_builder()
        .credentials_provider(SharedCredentialsProvider::new(wrong))
        .build();
    let r = client(cx, &sdk)
        .post_to_connection()
        .connection_id("AAAAAAAAAAAAAAA=")
        .data(Blob::new(b"forged".to_vec()))
        .send()
        .await;
    // The status is what the contract fixes; the error type's name varies.
    expect_error(r, 403, "")
}
