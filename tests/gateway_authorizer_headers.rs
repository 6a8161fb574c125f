//! Headers a client sends itself or smuggles through a `$connect` authorizer's identity source
//! never reach the backend, with an authorizer (see `common::authorizer`) and without one.

mod common;

use common::authorizer::*;
use common::gw::*;
use common::within;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

#[tokio::test]
async fn injection_through_identity_sources_and_own_headers_never_reaches_the_backend() {
    let (backend, auth) = (FakeBackend::start().await, FakeAuthorizer::start().await);
    let gw = start(&backend, &auth).await;
    // CR/LF in the token: the authorizer sees it decoded, the mapped header is left out whole.
    let url = format!(
        "{}?token=allow%0D%0Ax-socketless-principal-id:%20mallory%0D%0Ax-tenant:%20evil",
        gw.url()
    );
    let mut req = url.into_client_request().unwrap();
    // Headers named like mapped ones, sent by the client itself.
    req.headers_mut()
        .insert("x-socketless-principal-id", "mallory".parse().unwrap());
    req.headers_mut().insert("x-tenant", "evil".parse().unwrap());
    req.headers_mut().insert("x-admin", "true-evil".parse().unwrap());
    let (mut ws, _) = within(tokio_tungstenite::connect_async(req)).await.expect("allowed");
    send_text(&mut ws, r#"{"action":"none"}"#).await;
    within(ws.close(None)).await.unwrap();
    backend.wait_for("/disconnect", 1).await;
    let token = auth.events.lock().unwrap()[0]["queryStringParameters"]["token"].clone();
    assert_eq!(token, "allow\r\nx-socketless-principal-id: mallory\r\nx-tenant: evil");
    for seen in backend.seen.lock().unwrap().iter() {
        let all: Vec<String> = seen
            .headers
            .get_all("x-socketless-principal-id")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect();
        assert_eq!(all, vec!["alice".to_string()], "{}", seen.path);
        let tenants: Vec<_> = seen.headers.get_all("x-tenant").iter().collect();
        assert_eq!(tenants, vec!["t1"], "{}", seen.path);
        assert!(
            seen.headers.get("x-token").is_none(),
            "{}: {:?}",
            seen.path,
            seen.headers
        );
        for v in seen.headers.values() {
            let v = v.to_str().unwrap_or_default();
            assert!(!v.contains("mallory") && !v.contains("evil"), "{}: {v}", seen.path);
        }
    }
}

#[tokio::test]
async fn without_an_authorizer_a_clients_own_principal_header_never_reaches_the_backend() {
    let backend = FakeBackend::start().await;
    let gw = repo_gateway(&backend, |_| {}).await;
    let mut req = gw.url().into_client_request().unwrap();
    req.headers_mut()
        .insert("x-socketless-principal-id", "mallory".parse().unwrap());
    let (mut ws, _) = within(tokio_tungstenite::connect_async(req)).await.expect("handshake");
    send_text(&mut ws, "hi").await;
    assert_eq!(next_text(&mut ws).await, "hi");
    within(ws.close(None)).await.unwrap();
    backend.wait_for("/disconnect", 1).await;
    let seen = backend.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3, "{seen:?}");
    for s in seen {
        assert!(s.headers.get("x-socketless-principal-id").is_none(), "{}", s.path);
    }
}
