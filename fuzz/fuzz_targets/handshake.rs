//! The handshake request parser: any bytes, read as an HTTP/1.1 request head the way the
//! gateway's listener reads one, then checked as a WebSocket handshake.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    let Ok(httparse::Status::Complete(_)) = req.parse(data) else { return };
    let mut builder = http::Request::builder()
        .method(req.method.unwrap_or("GET"))
        .uri(req.path.unwrap_or("/"));
    for h in req.headers.iter() {
        builder = builder.header(h.name, h.value);
    }
    let Ok(request) = builder.body(()) else { return };
    if let Ok(hs) = socketless::gateway::parse_handshake(&request) {
        assert!(!hs.key.is_empty() || request.headers().contains_key("sec-websocket-key"));
    }
});
