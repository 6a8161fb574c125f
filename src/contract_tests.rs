//! Tests of the wire contract: the context table against the template's mappings and the
//! conformance kit's checks.

use super::*;

/// Every `integration.request.header.x-socketless-*: context.X` line of the template names a
/// row of [`CONTEXT`] with that header, and every header of the table is mapped there (the
/// principal's when the template has an authorizer that supplies it).
#[test]
fn template_maps_the_table() {
    let template = include_str!("../cfn/websocket-api.yml");
    let mut mapped = Vec::new();
    for line in template.lines() {
        let Some(rest) = line.trim().strip_prefix("integration.request.header.") else {
            continue;
        };
        let Some((name, value)) = rest.split_once(':') else {
            continue;
        };
        let Some(at) = value.find("context.") else {
            continue;
        };
        let variable: String = value[at + "context.".len()..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '.')
            .collect();
        let row = context_variable(&variable).unwrap_or_else(|| panic!("context.{variable} is not in the table"));
        assert_eq!(row.header.map(|h| h.name), Some(name), "context.{variable}");
        mapped.push(name.to_string());
    }
    let has_authorizer = template.contains("AWS::ApiGatewayV2::Authorizer");
    for row in CONTEXT {
        if row.supply == Supply::AuthorizerPrincipalId && !has_authorizer {
            continue;
        }
        if let Some(h) = row.header {
            assert!(
                mapped.iter().any(|m| m == h.name),
                "{} is not mapped by the template",
                h.name
            );
        }
    }
}

/// The authorizer's principal is a row with its header, which the gateway supplies from the
/// authorizer's answer; any other `context.authorizer.<key>` is the pattern row.
#[test]
fn the_principal_is_a_row_and_other_authorizer_keys_a_pattern() {
    let v = context_variable("authorizer.principalId").expect("a known variable");
    assert_eq!(v.header.map(|h| h.name), Some(PRINCIPAL_ID));
    assert!(v.supply == Supply::AuthorizerPrincipalId);
    assert_eq!(authorizer_context_key("authorizer.principalId"), None);
    assert_eq!(authorizer_context_key("authorizer.tenant"), Some("tenant"));
    assert!(context_variable("authorizer.tenant").is_none());
}

/// Every header row of [`CONTEXT`] reaches every consumer: the backend reads it into the
/// [`RequestContext`], `serve --upstream` passes the same value on to the app, and the
/// conformance kit checks it on `$connect` or on a message (only what those calls cannot
/// show goes unchecked).
#[test]
fn every_header_row_reaches_every_consumer() {
    use crate::conformance::handshake::{Call, Expect, context_header_problems, expect};
    use serde_json::json;

    // A distinct value per header, valid for every row: a header kept in, or passed on
    // from, another row's field shows.
    let value = |i: usize| (100 + i).to_string();
    let mut sent = http::HeaderMap::new();
    for (i, h) in headers().enumerate() {
        sent.insert(h.name, HeaderValue::from_str(&value(i)).unwrap());
    }
    let ctx = crate::backend::request_context(&sent).unwrap();
    let passed_on: Vec<(&str, String)> = crate::backend::upstream::context_headers(&ctx).collect();
    let want: Vec<(&str, String)> = headers().enumerate().map(|(i, h)| (h.name, value(i))).collect();
    assert_eq!(
        passed_on, want,
        "read by the backend and passed on to the upstream app unchanged"
    );
    assert!(
        passed_on.iter().any(|(name, _)| *name == PRINCIPAL_ID),
        "{PRINCIPAL_ID} is passed on"
    );

    // A `whoami` answer meeting every expectation passes the conformance case...
    let (id, stage) = ("conn-1=", "dev");
    let mut me = json!({"connectionId": id, "headers": {}, "connectHeaders": {}});
    for call in [Call::Message, Call::Connect] {
        for (row, h) in header_rows() {
            let v = match expect(row.supply, call) {
                Expect::ConnectionId => id,
                Expect::Stage => stage,
                Expect::Present => "x",
                Expect::Number => "1700000000000",
                Expect::Is(v) => v,
                Expect::Unchecked(_) => continue,
            };
            me[call.part()][h.name] = json!(v);
        }
    }
    assert_eq!(context_header_problems(&me, stage), Vec::<String>::new());
    // ...and without any header it checks, the case fails naming it.
    for (row, h) in header_rows() {
        let mut checked = false;
        for call in [Call::Message, Call::Connect] {
            if let Expect::Unchecked(_) = expect(row.supply, call) {
                continue;
            }
            checked = true;
            let mut without = me.clone();
            without[call.part()].as_object_mut().unwrap().remove(h.name);
            assert_eq!(
                context_header_problems(&without, stage),
                vec![format!("{}.{} missing", call.part(), h.name)]
            );
        }
        assert!(
            checked
                || matches!(
                    row.supply,
                    Supply::UserAgent
                        | Supply::DisconnectStatus
                        | Supply::DisconnectReason
                        | Supply::AuthorizerPrincipalId
                ),
            "{} is not checked by the conformance kit",
            h.name
        );
    }
}
