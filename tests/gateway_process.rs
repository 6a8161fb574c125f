//! The real binary: `gateway` start-up errors name the template resource, its peer flags are
//! checked at start, its template parameters come from variables (a `--param` wins, values are
//! never logged), `dev` prints its URL and serves the round trip, and `probe` exits 0 on the
//! expected reply and 1 otherwise.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::free_port;
use common::gw::{FakeBackend, connect};
use common::proc::{Proc, command, refused, wait_ready};

fn write_template(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("socketless-test-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("template.yml");
    std::fs::write(&path, text).unwrap();
    path
}

fn repo_template() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/cfn/websocket-api.yml")).unwrap()
}

#[test]
fn unsupported_template_constructs_are_start_up_errors_naming_the_resource() {
    let bad = repo_template().replace(
        "  MessageIntegration:\n    Type: AWS::ApiGatewayV2::Integration\n    Properties:\n      ApiId: !Ref Api\n",
        "  MessageIntegration:\n    Type: AWS::ApiGatewayV2::Integration\n    Properties:\n      ApiId: !Ref Api\n      RequestTemplates: { \"$default\": \"{}\" }\n",
    );
    assert_ne!(bad, repo_template(), "the replacement must apply");
    let bad = format!(
        "{bad}\n  Authorizer:\n    Type: AWS::ApiGatewayV2::Authorizer\n    Properties:\n      ApiId: !Ref Api\n"
    );
    // `Outputs` stays last in YAML order only if we insert before it; rebuild with the
    // authorizer inside Resources.
    let bad = bad.replace(
        "Outputs:",
        "  Authorizer2:\n    Type: AWS::ApiGatewayV2::Authorizer\n    Properties:\n      ApiId: !Ref Api\n      AuthorizerType: JWT\n      JwtConfiguration: { Audience: [a] }\n\nOutputs:",
    );
    let path = write_template("bad", &bad);
    // The gateway on this template, with `extra` flags.
    let gateway = |extra: &[&str]| {
        let template = ["gateway", "--cfn", path.to_str().unwrap(), "--listen", "127.0.0.1:0"];
        let params = [
            "--param",
            "IntegrationUri=http://127.0.0.1:1",
            "--param",
            "SharedSecret=0123456789abcdef",
        ];
        refused(command().args(template).args(params).args(extra))
    };
    let err = gateway(&["--param", "NoSuchParam=1"]);
    assert!(
        err.contains("--param NoSuchParam: the template has no such parameter"),
        "{err}"
    );
    let err = gateway(&[]);
    assert!(
        err.contains("resource MessageIntegration: property RequestTemplates"),
        "{err}"
    );
    assert!(
        err.contains(
            "resource Authorizer2: property JwtConfiguration of AWS::ApiGatewayV2::Authorizer cannot be emulated"
        ),
        "{err}"
    );
}

#[test]
fn required_parameters_and_bad_flags_are_reported_together() {
    let err = refused(
        command()
            .args([
                "gateway",
                "--listen",
                "nowhere",
                "--idle-timeout",
                "0s",
                "--param",
                "oops",
            ])
            .args(["--cfn", "/nonexistent/template.yml"]),
    );
    for needle in [
        "--listen (SOCKETLESS_GATEWAY_LISTEN)",
        "--idle-timeout: must be more than zero",
        "\"oops\" is not Key=Value",
        "cannot read \"/nonexistent/template.yml\"",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in {err}");
    }
    // The built-in template needs IntegrationUri and SharedSecret.
    let err = refused(command().args(["gateway", "--listen", "127.0.0.1:0"]));
    assert!(err.contains("parameter IntegrationUri has no Default"), "{err}");
    assert!(err.contains("parameter SharedSecret has no Default"), "{err}");
}

#[test]
fn peer_flags_are_checked_at_start() {
    let params = [
        "--param",
        "IntegrationUri=http://127.0.0.1:1",
        "--param",
        "SharedSecret=0123456789abcdef",
    ];
    let err = refused(
        command()
            .args(["gateway", "--listen", "127.0.0.1:0"])
            .args(params)
            .args([
                "--peer-url-template",
                "http://gw.peers.ns.svc:8081",
                "--peers",
                "http://127.0.0.1:1",
            ]),
    );
    for needle in [
        "--peer-url-template (SOCKETLESS_GATEWAY_PEER_URL_TEMPLATE): \"http://gw.peers.ns.svc:8081\" must contain {ordinal} exactly once",
        "--peers (SOCKETLESS_GATEWAY_PEERS) and --peer-url-template (SOCKETLESS_GATEWAY_PEER_URL_TEMPLATE): give one of them, not both",
    ] {
        assert!(err.contains(needle), "missing {needle:?} in {err}");
    }
    // The variable works as the flag does.
    let err = refused(
        command()
            .args(["gateway", "--listen", "127.0.0.1:0"])
            .args(params)
            .env("SOCKETLESS_GATEWAY_PEER_URL_TEMPLATE", "ftp://gw-{ordinal}.peers:8081"),
    );
    assert!(err.contains("SOCKETLESS_GATEWAY_PEER_URL_TEMPLATE"), "{err}");
}

/// Starts the gateway binary with the built-in template, its parameters from `vars` (and
/// `extra` flags); its output goes to `log`.
fn gateway_with(port: u16, vars: &[(&str, String)], extra: &[&str], log: &std::path::Path) -> Proc {
    let file = std::fs::File::create(log).unwrap();
    let mut cmd = command();
    cmd.args([
        "gateway",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--shutdown-delay",
        "0s",
    ])
    .args(extra)
    .env("SOCKETLESS_LOG", "debug")
    .stdout(Stdio::from(file.try_clone().unwrap()))
    .stderr(Stdio::from(file));
    for (k, v) in vars {
        cmd.env(k, v);
    }
    Proc::spawn(&mut cmd)
}

// Two workers: the fake backend keeps answering while the test waits for the process to exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn template_parameters_come_from_their_variables_a_param_wins_and_no_value_is_logged() {
    let backend = FakeBackend::start().await;
    let from_variable = "secret-from-a-variable-0123";
    let from_flag = "secret-from-the-flag-4567";
    let vars = [
        ("SOCKETLESS_GATEWAY_PARAM_IntegrationUri", backend.uri()),
        ("SOCKETLESS_GATEWAY_PARAM_SharedSecret", from_variable.to_string()),
        ("SOCKETLESS_GATEWAY_PARAM_StageName", "dev".to_string()),
    ];
    let dir = std::env::temp_dir().join(format!("socketless-test-{}-params", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (n, (extra, expected)) in [
        (&[][..], from_variable),
        (&["--param", "SharedSecret=secret-from-the-flag-4567"][..], from_flag),
    ]
    .into_iter()
    .enumerate()
    {
        let port = free_port();
        let log = dir.join(format!("gateway{n}.log"));
        let mut gw = gateway_with(port, &vars, extra, &log);
        wait_ready(port).await;
        let ws = connect(&format!("ws://127.0.0.1:{port}/dev")).await;
        let seen = backend.wait_for("/connect", n + 1).await;
        assert_eq!(seen[n].headers["x-socketless-secret"], expected);
        drop(ws);
        gw.signal("TERM");
        assert_eq!(gw.wait_exit(Duration::from_secs(15)).code(), Some(0));
        let output = std::fs::read_to_string(&log).unwrap();
        assert!(output.contains("socketless gateway ready"), "{output}");
        for secret in [from_variable, from_flag] {
            assert!(!output.contains(secret), "a parameter's value was logged: {output}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A probe that failed: exit code 1 and the reason on stderr.
fn assert_probe_failed(out: &std::process::Output, reason: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(reason), "expected {reason:?} in {stderr}");
}

#[test]
fn dev_prints_its_url_and_probe_round_trips() {
    let port = free_port();
    let iport = free_port();
    let mut dev = Proc::spawn(
        command()
            .args([
                "dev",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--internal-listen",
                &format!("127.0.0.1:{iport}"),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null()),
    );
    let mut line = String::new();
    let mut stdout = BufReader::new(dev.0.stdout.take().unwrap());
    stdout.read_line(&mut line).unwrap();
    let url = line.split_whitespace().last().unwrap().to_string();
    assert_eq!(url, format!("ws://127.0.0.1:{port}/dev"), "{line}");

    let probe = |extra: &[&str]| command().arg("probe").arg(&url).args(extra).output().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let ok = loop {
        let out = probe(&["--message", "hello"]);
        if out.status.success() || Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert!(String::from_utf8_lossy(&ok.stdout).starts_with("probe: ok"));

    let out = probe(&["--message", "hello", "--expect", "something else", "--timeout", "500ms"]);
    assert_probe_failed(&out, "no expected reply within");

    let out = command()
        .args([
            "probe",
            &format!("ws://127.0.0.1:{}/dev", free_port()),
            "--timeout",
            "2s",
        ])
        .output()
        .unwrap();
    assert_probe_failed(&out, "cannot connect");

    // A URL that is not a WebSocket URL is an invalid setting: exit 2 before any connection.
    let err = refused(command().args(["probe", "http://example.invalid/"]));
    assert!(err.contains("must start with ws:// or wss://"), "{err}");

    // Ctrl-C: dev shuts down cleanly.
    dev.signal("INT");
    let status = dev.wait_exit(Duration::from_secs(15));
    assert_eq!(status.code(), Some(0));
}
