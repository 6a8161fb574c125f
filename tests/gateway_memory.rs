//! The gateway's memory budgets on real sockets, at small scale: a fragment past the message
//! budget closes its connection with 1009, a message that does not complete in time closes with
//! 1008, and a full outbound budget answers 429 to the client over its fair share and closes it
//! with 1013 when another client needs the room. Each case checks the close code, the metric,
//! the bytes the budget holds, and that the honest client next to the offender is unaffected.

mod common;

use std::time::Duration;

use common::gw::*;
use common::{metric_value, send, within};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

const KIB: usize = 1024;

async fn metrics(gw: &Gw) -> String {
    send("GET", &format!("http://{}/metrics", gw.addr), &[], "").await.2
}

async fn metric(gw: &Gw, series: &str) -> f64 {
    metric_value(&metrics(gw).await, series)
}

/// Waits until a metric has this value (the gateway applies frames asynchronously).
async fn until_metric(gw: &Gw, series: &str, want: f64) {
    within(async {
        loop {
            if metric(gw, series).await == want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
}

const PENDING: &str = "socketless_gateway_pending_message_bytes";
const QUEUED: &str = "socketless_gateway_queued_outbound_bytes";
const CLOSED_BUDGET: &str = "socketless_gateway_memory_closes_total{reason=\"message_budget\"}";
const CLOSED_TIMEOUT: &str = "socketless_gateway_memory_closes_total{reason=\"message_timeout\"}";
const CLOSED_OUTBOUND: &str = "socketless_gateway_memory_closes_total{reason=\"outbound_budget\"}";

/// Sends `frames` text frames of `size` bytes as the start of one message, never the last one.
async fn hold_fragments(ws: &mut Ws, frames: usize, size: usize) {
    for i in 0..frames {
        let op = if i == 0 {
            OpCode::Data(Data::Text)
        } else {
            OpCode::Data(Data::Continue)
        };
        within(ws.send(Message::Frame(Frame::message("x".repeat(size), op, false))))
            .await
            .expect("fragment sent");
    }
}

async fn echo(ws: &mut Ws, text: &str) {
    send_text(ws, text).await;
    assert_eq!(next_text(ws).await, text);
}

#[tokio::test]
async fn a_fragment_past_the_message_budget_closes_its_connection_with_1009() {
    let backend = FakeBackend::start().await;
    let gw = repo_gateway(&backend, |c| c.max_pending_message_bytes = 256 * KIB).await;
    let mut honest = connect(&gw.url()).await;
    echo(&mut honest, "before").await;

    // Two clients each hold 128 KiB of a message they never finish: 124 KiB each is charged
    // (a message's first 4 KiB are free), 248 KiB of the 256 KiB budget.
    let mut a = connect(&gw.url()).await;
    let mut b = connect(&gw.url()).await;
    hold_fragments(&mut a, 4, 32 * KIB).await;
    hold_fragments(&mut b, 4, 32 * KIB).await;
    until_metric(&gw, PENDING, (248 * KIB) as f64).await;

    // A third one's first 32 KiB fragment does not fit: closed with 1009, nothing charged.
    let mut c = connect(&gw.url()).await;
    hold_fragments(&mut c, 1, 32 * KIB).await;
    let (code, reason) = close_code(&mut c).await;
    assert_eq!(code, 1009, "{reason}");
    assert_eq!(metric(&gw, CLOSED_BUDGET).await, 1.0);
    assert_eq!(metric(&gw, PENDING).await, (248 * KIB) as f64);

    // The honest client's small messages are never charged and still go through, and the
    // clients holding fragments are still open.
    echo(&mut honest, "during").await;
    echo(&mut honest, &"y".repeat(3 * KIB)).await;

    // The holders leave: their bytes are given back.
    drop((a, b));
    until_metric(&gw, PENDING, 0.0).await;
    echo(&mut honest, "after").await;
    // A large fragmented message fits again, and is held only until the backend answered.
    let mut big = connect(&gw.url()).await;
    hold_fragments(&mut big, 3, 32 * KIB).await;
    within(big.send(Message::Frame(Frame::message(
        "z".repeat(32 * KIB),
        OpCode::Data(Data::Continue),
        true,
    ))))
    .await
    .unwrap();
    assert_eq!(next_text(&mut big).await.len(), 128 * KIB);
    until_metric(&gw, PENDING, 0.0).await;
    assert_eq!(metric(&gw, CLOSED_BUDGET).await, 1.0);
}

#[tokio::test]
async fn a_message_that_does_not_complete_in_time_is_closed_with_1008() {
    let backend = FakeBackend::start().await;
    let gw = repo_gateway(&backend, |c| c.message_timeout = Duration::from_millis(400)).await;
    let mut honest = connect(&gw.url()).await;
    let mut slow = connect(&gw.url()).await;
    hold_fragments(&mut slow, 2, 16 * KIB).await;
    until_metric(&gw, PENDING, (28 * KIB) as f64).await;

    // The honest client keeps talking while the slow one's message stalls.
    for i in 0..3 {
        echo(&mut honest, &format!("message {i}")).await;
    }
    let (code, reason) = close_code(&mut slow).await;
    assert_eq!((code, reason.as_str()), (1008, "Message not completed in time"));
    assert_eq!(metric(&gw, CLOSED_TIMEOUT).await, 1.0);
    until_metric(&gw, PENDING, 0.0).await;
    let disconnect = backend.wait_for("/disconnect", 1).await;
    assert_eq!(disconnect[0].headers["x-socketless-disconnect-status"], "1008");

    // A fragmented message that completes within the timeout is delivered.
    echo(&mut honest, "still open").await;
    hold_fragments(&mut honest, 1, 8 * KIB).await;
    within(honest.send(Message::Frame(Frame::message(
        "e".to_string(),
        OpCode::Data(Data::Continue),
        true,
    ))))
    .await
    .unwrap();
    assert_eq!(next_text(&mut honest).await.len(), 8 * KIB + 1);
    assert_eq!(metric(&gw, CLOSED_TIMEOUT).await, 1.0);
}

/// A client whose socket takes almost nothing until it reads.
async fn connect_small_window(url: &str) -> Ws {
    let addr = url.trim_start_matches("ws://").split('/').next().unwrap().to_string();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = within(socket.connect(addr.parse().unwrap())).await.unwrap();
    let (ws, _) = within(tokio_tungstenite::client_async(
        url,
        tokio_tungstenite::MaybeTlsStream::Plain(stream),
    ))
    .await
    .expect("handshake");
    ws
}

async fn post(gw: &Gw, id: &str, body: String) -> (u16, String) {
    let (status, headers, _) = send("POST", &gw.mgmt(id), &[], body).await;
    let kind = headers
        .get("x-amzn-errortype")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status.as_u16(), kind)
}

#[tokio::test]
async fn a_full_outbound_budget_answers_429_then_closes_the_client_over_its_share_with_1013() {
    let backend = FakeBackend::start().await;
    let gw = repo_gateway(&backend, |c| {
        c.max_outbound_bytes = 256 * KIB;
        c.outbound_queue = 1000;
    })
    .await;
    let mut slow = connect_small_window(&gw.url()).await;
    let slow_id = connection_id(&backend.wait_for("/connect", 1).await[0]);
    let mut honest = connect(&gw.url()).await;
    let honest_id = connection_id(&backend.wait_for("/connect", 2).await[1]);

    // Posts to a client that never reads are accepted until the kernel's buffers and then the
    // budget are full; then 429, and the queue never holds more than the budget.
    let mut refused = None;
    for i in 0..2000 {
        match post(&gw, &slow_id, "s".repeat(64 * KIB)).await {
            (200, _) => {}
            other => {
                refused = Some((i, other));
                break;
            }
        }
    }
    let (accepted, (status, kind)) = refused.expect("the budget filled up");
    assert_eq!((status, kind.as_str()), (429, "LimitExceededException"));
    let queued = metric(&gw, QUEUED).await;
    assert!(queued <= (256 * KIB) as f64 && queued > (128 * KIB) as f64, "{queued}");
    eprintln!("{accepted} posts accepted before the budget was full; {queued} bytes queued");
    assert_eq!(metric(&gw, CLOSED_OUTBOUND).await, 0.0);

    // Another client is under its share: its post makes room by closing the slow one (1013).
    assert_eq!(post(&gw, &honest_id, "h".repeat(64 * KIB)).await.0, 200);
    assert_eq!(next_text(&mut honest).await.len(), 64 * KIB);
    assert_eq!(metric(&gw, CLOSED_OUTBOUND).await, 1.0);
    let (code, reason) = within(async {
        loop {
            match slow.next().await {
                Some(Ok(Message::Close(Some(f)))) => return (u16::from(f.code), f.reason.to_string()),
                Some(Ok(_)) => continue,
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    })
    .await;
    assert_eq!(code, 1013, "{reason}");
    until_metric(&gw, QUEUED, 0.0).await;
    assert_eq!(post(&gw, &slow_id, "late".into()).await.0, 410);

    // The honest client goes on receiving.
    for _ in 0..3 {
        assert_eq!(post(&gw, &honest_id, "h".repeat(100 * KIB)).await.0, 200);
        assert_eq!(next_text(&mut honest).await.len(), 100 * KIB);
    }
    assert_eq!(metric(&gw, CLOSED_OUTBOUND).await, 1.0);
}

#[tokio::test]
async fn a_client_that_stays_over_its_share_of_a_full_outbound_budget_is_closed_by_the_sweep() {
    let backend = FakeBackend::start().await;
    let gw = repo_gateway(&backend, |c| {
        c.max_outbound_bytes = 256 * KIB;
        c.outbound_queue = 1000;
        c.message_timeout = Duration::from_millis(400);
    })
    .await;
    let mut slow = connect_small_window(&gw.url()).await;
    let slow_id = connection_id(&backend.wait_for("/connect", 1).await[0]);
    let mut refused = false;
    for _ in 0..2000 {
        if post(&gw, &slow_id, "s".repeat(64 * KIB)).await.0 == 429 {
            refused = true;
            break;
        }
    }
    assert!(refused, "the budget filled up");
    // Refused for being over its share, and still over it at the next sweep (the client has
    // not read): closed. A client that caught up before the sweep would be left open.
    until_metric(&gw, CLOSED_OUTBOUND, 1.0).await;
    let (code, _) = within(async {
        loop {
            match slow.next().await {
                Some(Ok(Message::Close(Some(f)))) => return (u16::from(f.code), f.reason.to_string()),
                Some(Ok(_)) => continue,
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    })
    .await;
    assert_eq!(code, 1013);
    assert_eq!(metric(&gw, CLOSED_OUTBOUND).await, 1.0);
    until_metric(&gw, QUEUED, 0.0).await;
}

#[tokio::test]
async fn messages_sent_back_to_back_survive_the_protocol_layer_being_renewed() {
    // After a message with a large frame, the gateway starts its protocol layer afresh on the
    // same socket (so a 32 KiB read buffer is not kept for the life of the connection), but
    // only when nothing past that message was read. Pipelined messages, large and small,
    // fragmented or not, with pings between them, all come back whole and in order.
    let backend = FakeBackend::start().await;
    let gw = repo_gateway(&backend, |_| {}).await;
    let mut ws = connect(&gw.url()).await;
    let mut sent = Vec::new();
    for round in 0..5 {
        for (i, size) in [20 * KIB, 10, 32 * KIB - 16, 2 * KIB, 5].into_iter().enumerate() {
            let text = format!("{round}-{i}-{}", "m".repeat(size));
            within(ws.feed(Message::text(text.clone()))).await.unwrap();
            within(ws.feed(Message::Ping(vec![1, 2, 3].into()))).await.unwrap();
            sent.push(text);
        }
        let text = format!("{round}-f-{}", "f".repeat(40 * KIB));
        let (a, b) = text.split_at(20 * KIB);
        within(ws.feed(Message::Frame(Frame::message(
            a.to_string(),
            OpCode::Data(Data::Text),
            false,
        ))))
        .await
        .unwrap();
        within(ws.feed(Message::Frame(Frame::message(
            b.to_string(),
            OpCode::Data(Data::Continue),
            true,
        ))))
        .await
        .unwrap();
        sent.push(text);
    }
    within(ws.flush()).await.unwrap();
    for want in &sent {
        assert_eq!(&next_text(&mut ws).await, want);
    }
    // One at a time, each large message ends what was read: the layer is renewed each time.
    for i in 0..5 {
        echo(&mut ws, &format!("{i}-{}", "o".repeat(30 * KIB))).await;
        echo(&mut ws, "small").await;
    }
    until_metric(&gw, PENDING, 0.0).await;
    echo(&mut ws, "last").await;
}
