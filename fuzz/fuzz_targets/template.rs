//! The template loader: any YAML text, with the parameters the built-in template needs.
#![no_main]
use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use socketless::gateway::template::load;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let params = BTreeMap::from([
        ("IntegrationUri".to_string(), "http://127.0.0.1:1".to_string()),
        ("SharedSecret".to_string(), "0123456789abcdef".to_string()),
    ]);
    let _ = load(&text, &params, "local");
    let _ = load(&text, &BTreeMap::new(), "local");
});
