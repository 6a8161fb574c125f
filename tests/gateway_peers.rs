//! How a replica finds the owner of a connection and what it answers when it cannot reach it,
//! and how a replica leaves: peers named by a URL template (no list: a replica added later is
//! reached without touching the others), 410 only when the owner is known not to hold the
//! connection (a name that does not resolve, a refused connection), 503 when it exists but
//! does not answer (and `serve` then keeps the session), a draining replica that stays
//! reachable until its clients are gone, and `Connection: close` on every listener's answers
//! once shutdown has begun.

mod common;

use std::time::Duration;

use common::gw::*;
use common::*;
use socketless::gateway::PeerUrls;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An id in AWS's shape that names `ordinal` as its owner.
fn id_for(ordinal: u8) -> String {
    use base64::Engine;
    let mut bytes = [0x52u8; 11];
    bytes[0] = ordinal ^ bytes[10];
    base64::engine::general_purpose::URL_SAFE.encode(bytes)
}

fn id_of(seen: &Seen) -> String {
    seen.headers["x-socketless-connection-id"].to_str().unwrap().to_string()
}

fn encoded(id: &str) -> String {
    id.replace('=', "%3D")
}

/// A replica with this ordinal, listening on `port`, finding its peers through `peers`.
async fn replica(backend: &FakeBackend, port: u16, ordinal: u8, peers: PeerUrls) -> Gw {
    repo_gateway(backend, move |c| {
        c.listen = ([127, 0, 0, 1], port).into();
        c.ordinal = ordinal;
        c.peers = peers;
        c.peer_timeout = Duration::from_millis(500);
    })
    .await
}

/// A `{base}{ordinal}` port scheme with ordinals 0 to `n - 1` all free: a template can put the
/// ordinal in the port, since every replica of a test listens on 127.0.0.1.
fn template_ports(n: u16) -> (String, Vec<u16>) {
    let seed = u16::try_from(std::process::id() % 3000).unwrap();
    for step in 0..3000u16 {
        let base = 2000 + (seed + step * 7) % 4000;
        let ports: Vec<u16> = (0..n).map(|o| base * 10 + o).collect();
        if ports
            .iter()
            .all(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
        {
            return (base.to_string(), ports);
        }
    }
    panic!("no free run of ports")
}

/// The value of `socketless_gateway_forwarded_calls_total{result="…"}` on a replica.
async fn forwards(gw: &Gw, result: &str) -> f64 {
    let (_, body) = get(&format!("http://{}/metrics", gw.addr)).await;
    metric_value(
        &body,
        &format!("socketless_gateway_forwarded_calls_total{{result=\"{result}\"}}"),
    )
}

/// Drains a replica as SIGTERM would after its shutdown delay, and waits until it has stopped.
async fn terminate(mut gw: Gw) -> socketless::http_server::Drain {
    gw.lifecycle.begin_shutdown();
    gw.lifecycle.stop_accepting();
    within(&mut gw.task).await.expect("the replica's task ends")
}

#[tokio::test]
async fn a_template_names_every_owner_so_a_replica_added_later_is_reached_and_one_removed_is_gone() {
    let backend = FakeBackend::start().await;
    let (base, ports) = template_ports(3);
    // `localhost`, not an address: the owner's name goes through the resolver.
    let template = PeerUrls::Template(format!("http://localhost:{base}{{ordinal}}"));
    let gw0 = replica(&backend, ports[0], 0, template.clone()).await;
    let gw1 = replica(&backend, ports[1], 1, template.clone()).await;
    let mut ws1 = connect(&gw1.url()).await;
    let id1 = id_of(&backend.wait_for("/connect", 1).await[0]);
    assert_eq!(send("POST", &gw0.mgmt(&encoded(&id1)), &[], "to 1 via 0").await.0, 200);
    assert_eq!(next_text(&mut ws1).await, "to 1 via 0");

    // Scale out: replica 2 starts with the same setting; replicas 0 and 1 change nothing.
    let gw2 = replica(&backend, ports[2], 2, template.clone()).await;
    let mut ws2 = connect(&gw2.url()).await;
    let id2 = id_of(&backend.wait_for("/connect", 2).await[1]);
    for (via, gw) in [("0", &gw0), ("1", &gw1)] {
        let (status, _, body) = send("POST", &gw.mgmt(&encoded(&id2)), &[], format!("to 2 via {via}")).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(next_text(&mut ws2).await, format!("to 2 via {via}"));
    }
    let (status, _, body) = send("GET", &gw2.mgmt(&encoded(&id1)), &[], "").await;
    assert_eq!(status, 200, "the new replica reaches the old ones: {body}");

    // Scale in: replica 2 drains (its client gets 1001) and stops listening; its ids are gone.
    let drained = tokio::spawn(terminate(gw2));
    assert_eq!(close_code(&mut ws2).await.0, 1001);
    assert_eq!(drained.await.unwrap(), socketless::http_server::Drain::Complete);
    let (status, headers, _) = send("POST", &gw0.mgmt(&encoded(&id2)), &[], "too late").await;
    assert_eq!(status, 410, "nothing listens where replica 2 was");
    assert_eq!(headers["x-amzn-errortype"], "GoneException");
    assert_eq!(forwards(&gw0, "no_owner").await, 1.0);
    assert_eq!(forwards(&gw0, "relayed").await, 2.0);
}

#[tokio::test]
async fn an_owner_whose_name_does_not_resolve_is_gone() {
    let backend = FakeBackend::start().await;
    // `.invalid` never resolves (RFC 6761): the resolver answers that no such name exists.
    let template = PeerUrls::Template("http://socketless-gw-{ordinal}.peers.invalid:8081".into());
    let gw0 = replica(&backend, free_port(), 0, template).await;
    let (status, headers, body) = send("POST", &gw0.mgmt(&encoded(&id_for(3))), &[], "hi").await;
    assert_eq!(status, 410, "{body}");
    assert_eq!(headers["x-amzn-errortype"], "GoneException");
    assert_eq!(forwards(&gw0, "no_owner").await, 1.0);
    assert_eq!(forwards(&gw0, "owner_unavailable").await, 0.0);
}

/// A peer that reads a request and answers half of a response, then hangs up.
async fn breaks_off() -> (u16, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = accept_each(listener, |mut stream| async move {
        let mut buf = vec![0u8; 4096];
        let _ = stream.read(&mut buf).await;
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nhalf an ans")
            .await;
    });
    (port, task)
}

#[tokio::test]
async fn only_an_owner_known_not_to_exist_is_gone_and_one_that_breaks_off_is_unavailable() {
    let backend = FakeBackend::start().await;
    let me = free_port();
    let hung = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let (broken, _task) = breaks_off().await;
    let refused = free_port();
    let url = |p: u16| format!("http://127.0.0.1:{p}");
    let peers = PeerUrls::List(vec![
        url(me),
        url(hung.local_addr().unwrap().port()),
        url(broken),
        url(refused),
    ]);
    let gw0 = replica(&backend, me, 0, peers).await;
    let call = |o: u8| {
        let url = gw0.mgmt(&encoded(&id_for(o)));
        async move { send("POST", &url, &[], "hi").await }
    };

    // Accepts but never answers: the owner may be alive, so the caller should retry.
    let (status, headers, body) = call(1).await;
    assert_eq!(status.as_u16(), 503, "{body}");
    assert_eq!(headers["x-amzn-errortype"], "ServiceUnavailableException");
    assert_eq!(headers["retry-after"], "1");
    // Answers half, then hangs up.
    let (status, headers, body) = call(2).await;
    assert_eq!(status.as_u16(), 503, "{body}");
    assert_eq!(headers["x-amzn-errortype"], "ServiceUnavailableException");
    // Nothing listens: no gateway there, so nothing held there.
    let (status, headers, _) = call(3).await;
    assert_eq!(status.as_u16(), 410);
    assert_eq!(headers["x-amzn-errortype"], "GoneException");
    // Outside the list.
    assert_eq!(call(9).await.0.as_u16(), 410);

    assert_eq!(forwards(&gw0, "owner_unavailable").await, 2.0);
    assert_eq!(forwards(&gw0, "no_owner").await, 2.0);
    assert_eq!(forwards(&gw0, "relayed").await, 0.0);
}

#[tokio::test]
async fn serve_keeps_a_session_whose_owner_is_unavailable_and_deletes_one_whose_owner_is_gone() {
    let backend = FakeBackend::start().await;
    let me = free_port();
    let (broken, _task) = breaks_off().await;
    let refused = free_port();
    let url = |p: u16| format!("http://127.0.0.1:{p}");
    let gw0 = replica(
        &backend,
        me,
        0,
        PeerUrls::List(vec![url(me), url(broken), url(refused)]),
    )
    .await;
    let mut a = args();
    a.push_endpoint = Some(format!("http://{}/dev", gw0.addr));
    // Room for the SDK's retries of a 503.
    a.aws_timeout = "10s".into();
    let serve = start(a).await;
    let (unavailable, gone) = (id_for(1), id_for(2));
    for id in [&unavailable, &gone] {
        assert_eq!(call(&serve, "/connect", id, "").await.0, 200);
    }
    let push = |id: &str| {
        let url = serve.internal_url(&format!("/v1/connections/{}/messages", encoded(id)));
        async move { send("POST", &url, &[], "hello").await }
    };
    let (status, _, body) = push(&unavailable).await;
    assert_eq!(status, 502, "a failed push, not a gone connection: {body}");
    let (status, _) = get(&serve.internal_url(&format!("/v1/connections/{}", encoded(&unavailable)))).await;
    assert_eq!(status, 200, "the session of a connection that may be open is kept");
    assert!(forwards(&gw0, "owner_unavailable").await >= 1.0);

    let (status, _, body) = push(&gone).await;
    assert_eq!(status, 410, "{body}");
    let (status, _) = get(&serve.internal_url(&format!("/v1/connections/{}", encoded(&gone)))).await;
    assert_eq!(status, 404, "the session of a connection known to be gone is deleted");

    let (_, metrics) = get(&serve.internal_url("/metrics")).await;
    assert!(
        metric_sum(&metrics, "socketless_pushes_total", &["outcome=\"failed\""]) >= 1.0,
        "{metrics}"
    );
    assert_eq!(
        metric_sum(&metrics, "socketless_pushes_total", &["outcome=\"gone\""]),
        1.0,
        "{metrics}"
    );
}

#[tokio::test]
async fn a_draining_replica_answers_for_its_clients_until_they_are_gone() {
    let backend = FakeBackend::start().await;
    let ports = [free_port(), free_port()];
    let peers = PeerUrls::List(ports.iter().map(|p| format!("http://127.0.0.1:{p}")).collect());
    let gw0 = replica(&backend, ports[0], 0, peers.clone()).await;
    let mut gw1 = replica(&backend, ports[1], 1, peers).await;
    let mut ws = connect(&gw1.url()).await;
    let id = id_of(&backend.wait_for("/connect", 1).await[0]);
    // $disconnect takes a while, so the drain has to wait for it.
    backend.answer(
        "/disconnect",
        Answer {
            delay: Duration::from_millis(1500),
            ..Answer::default()
        },
    );
    let via_peer = gw0.mgmt(&encoded(&id));
    let direct = gw1.mgmt(&encoded(&id));

    // SIGTERM: not ready, still serving through the shutdown delay.
    gw1.lifecycle.begin_shutdown();
    let (status, _, body) = send("POST", &via_peer, &[], "while draining").await;
    assert_eq!(
        status, 200,
        "forwarded to a draining replica whose client is open: {body}"
    );
    assert_eq!(next_text(&mut ws).await, "while draining");
    let (status, headers, _) = send("POST", &direct, &[], "direct").await;
    assert_eq!(status, 200);
    assert_eq!(headers["connection"], "close");
    assert_eq!(next_text(&mut ws).await, "direct");
    let ready = get(&format!("http://{}/readyz", gw1.addr)).await.0;
    assert_eq!(ready, 503);
    let handshake = tokio_tungstenite::connect_async(gw1.url()).await;
    match handshake {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 503),
        other => panic!("a new handshake while draining: {other:?}"),
    }

    // The delay ends: the client is closed with 1001, and the replica waits for $disconnect
    // with its listener open.
    gw1.lifecycle.stop_accepting();
    assert_eq!(close_code(&mut ws).await.0, 1001);
    backend.wait_for("/disconnect", 1).await;
    let relayed_before = forwards(&gw0, "relayed").await;
    let (status, headers, _) = send("POST", &via_peer, &[], "after the close").await;
    assert_eq!(status, 410);
    assert_eq!(headers["x-amzn-errortype"], "GoneException");
    assert_eq!(
        forwards(&gw0, "relayed").await,
        relayed_before + 1.0,
        "the 410 came from the draining replica itself"
    );
    let (status, headers, _) = send("GET", &format!("http://{}/healthz", gw1.addr), &[], "").await;
    assert_eq!(status, 200);
    assert_eq!(headers["connection"], "close");
    assert!(!gw1.task.is_finished(), "the replica waits for $disconnect");

    // $disconnect done: the listener closes, and the peer finds nobody there.
    let drained = within(&mut gw1.task).await.unwrap();
    assert_eq!(drained, socketless::http_server::Drain::Complete);
    assert!(
        tokio::net::TcpStream::connect(gw1.addr).await.is_err(),
        "the listener is closed"
    );
    let (status, _, _) = send("POST", &via_peer, &[], "after the drain").await;
    assert_eq!(status, 410);
    assert_eq!(forwards(&gw0, "no_owner").await, 1.0);
}

/// Sends `GET path` on an open keep-alive connection and reads the answer's head.
async fn get_on(stream: &mut tokio::net::TcpStream, path: &str) -> String {
    let request = format!("GET {path} HTTP/1.1\r\nhost: test\r\n\r\n");
    within(stream.write_all(request.as_bytes())).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(within(stream.read(&mut byte)).await.unwrap(), 1, "the answer's head");
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    within(stream.read_exact(&mut body)).await.unwrap();
    head
}

#[tokio::test]
async fn every_listener_says_connection_close_once_shutdown_begins_and_closes_the_connection() {
    let serve = start(args()).await;
    let backend = FakeBackend::start().await;
    let gw = repo_gateway(&backend, |_| {}).await;
    let mut streams = Vec::new();
    for addr in [serve.public, serve.internal, gw.addr] {
        let mut s = within(tokio::net::TcpStream::connect(addr)).await.unwrap();
        let head = get_on(&mut s, "/healthz").await;
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert!(
            !head.contains("connection: close"),
            "before shutdown, connections are kept: {head}"
        );
        streams.push(s);
    }
    serve.lifecycle.begin_shutdown();
    gw.lifecycle.begin_shutdown();
    for mut s in streams {
        // The same keep-alive connection: this answer is its last.
        let head = get_on(&mut s, "/healthz").await;
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert!(head.contains("connection: close"), "{head}");
        let mut rest = [0u8; 16];
        assert_eq!(
            within(s.read(&mut rest)).await.unwrap(),
            0,
            "the server closed the connection"
        );
    }
}
