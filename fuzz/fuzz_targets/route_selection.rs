//! Route selection: any expression, any message.
#![no_main]
use libfuzzer_sys::fuzz_target;
use socketless::gateway::selection::{Expression, select};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (expr, message) = text.split_once('\n').unwrap_or((&text, "{}"));
    if let Ok(e) = Expression::parse(expr) {
        let _ = select(&e, message, |k| k == "$default" || k == "a", "$default");
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(message) {
            let _ = e.evaluate(&v);
        }
    }
});
