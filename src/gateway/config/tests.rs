//! Tests of the gateway's settings: peer URL templates, and parameters read from variables.

use super::*;

const PARAMS: [&str; 2] = [
    "--param=IntegrationUri=http://127.0.0.1:8080",
    "--param=SharedSecret=0123456789abcdef",
];

fn problems(extra: &[&str]) -> Vec<String> {
    let flags = PARAMS.iter().chain(extra).copied();
    let args = GatewayArgs::from_flags(flags).expect("flags parse");
    match args.validate_with(Some(EMBEDDED_TEMPLATE.to_string()), Problems::new()) {
        Ok(_) => Vec::new(),
        Err(e) => e.0,
    }
}

fn peers(extra: &[&str]) -> PeerUrls {
    let flags = PARAMS.iter().chain(extra).copied();
    let args = GatewayArgs::from_flags(flags).expect("flags parse");
    args.validate_with(Some(EMBEDDED_TEMPLATE.to_string()), Problems::new())
        .expect("valid")
        .peers
}

#[test]
fn a_peer_url_template_has_one_ordinal_and_is_an_http_base_url() {
    let t = "--peer-url-template=http://rel-socketless-gateway-{ordinal}.rel-socketless-gateway-peers.ns.svc:8081/";
    assert_eq!(
        peers(&[t, "--ordinal=rel-socketless-gateway-3"]),
        PeerUrls::Template("http://rel-socketless-gateway-{ordinal}.rel-socketless-gateway-peers.ns.svc:8081".into())
    );
    assert_eq!(peers(&[]), PeerUrls::None);
    assert_eq!(
        peers(&["--peers=http://a:1,http://b:2"]),
        PeerUrls::List(vec!["http://a:1".into(), "http://b:2".into()])
    );
    for (bad, why) in [
        ("http://gw.peers:8081", "exactly once (it has it 0 times)"),
        (
            "http://gw-{ordinal}-{ordinal}.peers:8081",
            "exactly once (it has it 2 times)",
        ),
        ("https://gw-{ordinal}.peers:8081", "must be a base URL"),
        ("http://gw-{ordinal}.peers:8081/dev", "must be a base URL"),
        ("gw-{ordinal}.peers:8081", "is not an http:// or https:// URL"),
        ("http://gw.peers:80{ordinal}999", "must be a base URL"),
    ] {
        let found = problems(&[&format!("--peer-url-template={bad}")]);
        assert!(
            found
                .iter()
                .any(|p| p.contains("--peer-url-template") && p.contains(why)),
            "{bad}: {found:?}"
        );
    }
    let both = problems(&[
        "--peer-url-template=http://gw-{ordinal}.peers:8081",
        "--peers=http://a:1",
    ]);
    assert!(
        both.iter().any(|p| p.contains("give one of them, not both")),
        "{both:?}"
    );
}

#[test]
fn parameters_come_from_their_variables_unless_given() {
    let variables: BTreeMap<String, String> = [
        ("SOCKETLESS_GATEWAY_PARAM_SharedSecret", "from-the-variable-0123"),
        ("SOCKETLESS_GATEWAY_PARAM_StageName", "prod"),
        ("SOCKETLESS_GATEWAY_PARAM_NotInTheTemplate", "x"),
        ("SOCKETLESS_GATEWAY_PARAM_stagename", "wrong case"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let mut params = BTreeMap::from([("StageName".to_string(), "given".to_string())]);
    params_from_variables(EMBEDDED_TEMPLATE, &mut params, |name| variables.get(name).cloned());
    assert_eq!(params["SharedSecret"], "from-the-variable-0123");
    assert_eq!(params["StageName"], "given", "--param wins");
    assert!(!params.contains_key("NotInTheTemplate"));
    assert!(!params.contains_key("IntegrationUri"));
}
