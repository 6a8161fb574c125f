//! The backend's context headers: any bytes as header values, one value per header of the
//! contract's table (in table order) and then the shared secret.
#![no_main]
use libfuzzer_sys::fuzz_target;
use socketless::contract;

fuzz_target!(|data: &[u8]| {
    let names = contract::headers()
        .map(|h| h.name)
        .chain([contract::SHARED_SECRET]);
    let mut headers = http::HeaderMap::new();
    for (name, value) in names.zip(data.split(|b| *b == 0)) {
        if let Ok(v) = http::HeaderValue::from_bytes(value) {
            headers.insert(name, v);
        }
    }
    let _ = socketless::backend::request_context(&headers);
});
