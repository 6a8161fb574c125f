//! The `@connections` path parser: any raw path.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Some(id) = socketless::gateway::parse_connections_path(&text, "dev") {
        assert!(!id.is_empty());
    }
});
