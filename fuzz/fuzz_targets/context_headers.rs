//! The backend's context headers: any bytes as header values.
#![no_main]
use libfuzzer_sys::fuzz_target;
use socketless::contract;

fuzz_target!(|data: &[u8]| {
    let names = [
        contract::CONNECTION_ID,
        contract::CONNECTED_AT,
        contract::DISCONNECT_STATUS,
        contract::DISCONNECT_REASON,
        contract::SOURCE_IP,
        contract::REQUEST_ID,
    ];
    let mut headers = http::HeaderMap::new();
    for (name, value) in names.iter().zip(data.split(|b| *b == 0)) {
        if let Ok(v) = http::HeaderValue::from_bytes(value) {
            headers.insert(*name, v);
        }
    }
    let _ = socketless::backend::request_context(&headers);
});
