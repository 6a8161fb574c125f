//! Property test of the WebSocket limits on real sockets: any message size and any split into
//! frames either comes back whole (at most 32 KiB per frame, 128 KiB per message) or closes the
//! connection with 1009. Never anything else.

mod common;

use common::gw::*;
use common::within;
use futures_util::SinkExt;
use proptest::prelude::*;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

const FRAME: usize = 32 * 1024;
const MESSAGE: usize = 128 * 1024;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    })
}

async fn exchange(url: &str, total: usize, frame: usize) -> Result<usize, u16> {
    let mut ws = connect(url).await;
    let body = "m".repeat(total);
    let chunks: Vec<&str> = body
        .as_bytes()
        .chunks(frame)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    let last = chunks.len() - 1;
    for (i, c) in chunks.iter().enumerate() {
        let op = if i == 0 {
            OpCode::Data(Data::Text)
        } else {
            OpCode::Data(Data::Continue)
        };
        if ws
            .send(Message::Frame(Frame::message(c.to_string(), op, i == last)))
            .await
            .is_err()
        {
            break; // the server already closed; read the close frame below
        }
    }
    loop {
        match within(futures_util::StreamExt::next(&mut ws)).await {
            Some(Ok(Message::Text(t))) => return Ok(t.len()),
            Some(Ok(Message::Close(Some(f)))) => return Err(u16::from(f.code)),
            Some(Ok(_)) => continue,
            other => panic!("neither a reply nor a close frame: {other:?}"),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn messages_come_back_whole_or_close_1009(total in 1usize..140 * 1024, frame in 1024usize..40 * 1024) {
        let outcome = runtime().block_on(async {
            let backend = FakeBackend::start().await;
            let gw = repo_gateway(&backend, |_| {}).await;
            exchange(&gw.url(), total, frame).await
        });
        let frame_used = frame.min(total);
        if frame_used > FRAME || total > MESSAGE {
            prop_assert_eq!(outcome, Err(1009), "total {} in frames of {}", total, frame);
        } else {
            prop_assert_eq!(outcome, Ok(total), "total {} in frames of {}", total, frame);
        }
    }
}
