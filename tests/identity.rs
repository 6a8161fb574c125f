//! Who is connecting, with a Rust handler: the principal the gateway maps at `$connect` and the
//! attributes the handler sets there are kept on the session and given back on every later
//! message and disconnect, from the session and never from the later request; a forged header
//! is ignored; attributes beyond the limits refuse the connect. The same with an upstream app
//! behind `serve` processes is in `tests/identity_upstream.rs`.

mod common;

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use common::identity::{PRINCIPAL, lookup, post};
use common::*;
use http::StatusCode;
use socketless::handler::{Attributes, BoxFuture, MessageHandler, Rejection, RequestContext};

/// The identity a call carried, as text: `principal|name=value,...`.
fn seen(ctx: &RequestContext) -> String {
    let attributes: Vec<String> = ctx.attributes.iter().map(|(n, v)| format!("{n}={v}")).collect();
    format!(
        "{}|{}",
        ctx.principal_id.as_deref().unwrap_or("-"),
        attributes.join(",")
    )
}

/// A handler that tags each session with a tenant derived from its principal, answers every
/// message with the identity it sees, and records what each disconnect saw.
#[derive(Default)]
struct Tenants {
    disconnects: Mutex<Vec<String>>,
}

impl MessageHandler for Tenants {
    fn on_connect_with_attributes<'a>(
        &'a self,
        ctx: &'a RequestContext,
    ) -> BoxFuture<'a, Result<Attributes, Rejection>> {
        Box::pin(async move {
            let Some(principal) = ctx.principal_id.as_deref() else {
                return Err(Rejection::new(StatusCode::UNAUTHORIZED, "who are you?"));
            };
            assert!(ctx.attributes.is_empty(), "a connect starts with none");
            let mut attributes = Attributes::new();
            if principal == "greedy" {
                for i in 0..17 {
                    attributes.insert(format!("a{i}"), "v");
                }
                return Ok(attributes);
            }
            attributes.insert("tenant", format!("t-{principal}"));
            attributes.insert("plan", "gold");
            Ok(attributes)
        })
    }

    fn on_message<'a>(
        &'a self,
        ctx: &'a RequestContext,
        _body: Bytes,
    ) -> BoxFuture<'a, Result<Option<Bytes>, Rejection>> {
        Box::pin(async move { Ok(Some(Bytes::from(seen(ctx)))) })
    }

    fn on_disconnect<'a>(&'a self, ctx: &'a RequestContext) -> BoxFuture<'a, ()> {
        Box::pin(async move { self.disconnects.lock().unwrap().push(seen(ctx)) })
    }
}

#[tokio::test]
async fn a_rust_handler_sets_attributes_at_connect_and_every_later_call_gets_them_from_the_session() {
    let handler = Arc::new(Tenants::default());
    let b = start_with(args(), handler.clone()).await;
    let internal = b.internal_url("");
    let id = "AlIcE0000000000=";

    // Without a principal this handler refuses; with one, the session gets its attributes.
    assert_eq!(post(&b.url("/connect"), id, &[], "").await.0, StatusCode::UNAUTHORIZED);
    assert!(lookup(&internal, id).await.is_none());
    assert_eq!(
        post(&b.url("/connect"), id, &[(PRINCIPAL, "alice")], "").await.0,
        StatusCode::OK
    );
    let s = lookup(&internal, id).await.expect("session");
    assert_eq!(s["principalId"], "alice");
    assert_eq!(
        s["attributes"],
        serde_json::json!({"plan": "gold", "tenant": "t-alice"})
    );

    // Later messages see the stored identity; forged headers on them change nothing.
    let want = "alice|plan=gold,tenant=t-alice";
    assert_eq!(
        post(&b.url("/message"), id, &[], "hi").await,
        (StatusCode::OK, want.to_string())
    );
    let forged = [
        (PRINCIPAL, "mallory"),
        ("x-socketless-attribute-tenant", "t-mallory"),
        ("x-socketless-attribute-admin", "yes"),
    ];
    assert_eq!(
        post(&b.url("/message"), id, &forged, "hi").await,
        (StatusCode::OK, want.to_string())
    );
    // A message for a session that was never connected has no identity, whatever it claims.
    let stranger = "StRaNgEr0000000=";
    assert_eq!(
        post(&b.url("/message"), stranger, &forged, "hi").await,
        (StatusCode::OK, "-|".to_string())
    );
    assert_eq!(
        lookup(&internal, stranger).await.unwrap()["principalId"],
        serde_json::Value::Null
    );

    // The disconnect sees the session's identity too, not the forged one.
    assert_eq!(post(&b.url("/disconnect"), id, &forged, "").await.0, StatusCode::OK);
    assert_eq!(*handler.disconnects.lock().unwrap(), vec![want.to_string()]);
    assert!(lookup(&internal, id).await.is_none());

    // Attributes beyond the limits: 500 naming the rule, and no session.
    let greedy = "GrEeDy000000000=";
    let (status, body) = post(&b.url("/connect"), greedy, &[(PRINCIPAL, "greedy")], "").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(body.contains("more than 16 attributes"), "{body}");
    assert!(lookup(&internal, greedy).await.is_none());
}
