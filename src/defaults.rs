//! Every default in one table: clap reads these for the flags of each verb, and `dev`, the
//! template loader and tests use them instead of writing the values again. clap takes a default
//! as text, so numbers and durations are written as the flag would be given; where a default is
//! one of the contract's limits, a test below keeps the two equal.

// Every verb.

pub const LOG_FORMAT: &str = "auto";
pub const LOG: &str = "info";

// Shared by `serve`, `gateway` and `dev`.

/// The AWS region: the gateway's `AWS::Region` and SigV4 scope, and the region used where
/// nothing names one and no AWS service needs the real one.
pub const REGION: &str = "us-east-1";
/// Idle keep-alive connections stay open this long; above an ALB's 60 s idle timeout.
pub const KEEP_ALIVE_TIMEOUT: &str = "75s";
/// Request line and headers together at most ([`crate::contract::MAX_HEADER_BYTES`]).
pub const MAX_HEADER_BYTES: &str = "10240";
/// A request body must arrive whole within this.
pub const BODY_TIMEOUT: &str = "10s";
/// Bytes of request bodies held at once across all requests (64 MiB).
pub const MAX_BUFFERED_BODY_BYTES: &str = "67108864";
/// After SIGTERM, keep serving (not ready) this long.
pub const SHUTDOWN_DELAY: &str = "5s";
/// Then wait at most this long for work in flight.
pub const DRAIN_TIMEOUT: &str = "20s";

// `socketless serve`.

pub const SERVE_LISTEN: &str = "0.0.0.0:8080";
pub const SERVE_INTERNAL_LISTEN: &str = "0.0.0.0:9090";
pub const STORE: &str = "memory";
pub const TABLE: &str = "socketless-sessions";
pub const REPLY_MODE: &str = "sync";
pub const CACHE_CAPACITY: &str = "100000";
pub const SYNC_INTERVAL: &str = "60s";
/// Longer than [`crate::contract::MAX_CONNECTION_SECS`], so live sessions never expire.
pub const SESSION_TTL: &str = "2h15m";
/// One message ([`crate::contract::MAX_MESSAGE_BYTES`]).
pub const MAX_BODY_BYTES: &str = "131072";
pub const AWS_TIMEOUT: &str = "3s";
pub const BROADCAST_CONCURRENCY: &str = "32";
/// Groups one connection may belong to at once.
pub const MAX_GROUPS_PER_CONNECTION: &str = "32";
/// `auto`: use the gateway's batch delivery when its `info` answers as a socketless gateway.
pub const PUSH_BATCH: &str = "auto";
/// `owner`: posts to a replicated socketless gateway go to the replica holding the connection.
pub const PUSH_ROUTE: &str = "owner";
/// Groups `x-socketless-groups` may name at connect, at most (also bounded by
/// `--max-groups-per-connection`).
pub const MAX_CONNECT_GROUPS: usize = 32;
/// Connection ids in one batch `deliver` call, at most (the extension's `maxIds`).
pub const DELIVER_MAX_IDS: usize = 10_000;
/// Members read per Query while a group is published to (DynamoDB's page of at most 1 MB holds
/// far more memberships than this).
pub const GROUP_PUBLISH_PAGE: usize = 1000;
pub const UPSTREAM_TIMEOUT: &str = "10s";
pub const UPSTREAM_CONCURRENCY: &str = "256";
pub const UPSTREAM_HEALTH_PATH: &str = "/healthz";
/// A session resumed by its key within this long after its connection went is the same session
/// (`0s`: resume off); its `/disconnect` waits this long instead of the grace.
pub const RESUME_WINDOW: &str = "2m";
/// Messages kept for a detached resumable session, at most.
pub const RESUME_BUFFER_MESSAGES: &str = "1000";
/// Bytes of messages kept for a detached resumable session, at most (256 KiB).
pub const RESUME_BUFFER_BYTES: &str = "262144";
/// The largest `--resume-buffer-bytes`: the buffer lives in one DynamoDB item (400 KB at most).
pub const RESUME_BUFFER_BYTES_MAX: u64 = 320 * 1024;
/// A `/disconnect` waits this long before the handler or the app is called: room for a
/// reconnecting client to resume the session and cancel it.
pub const DISCONNECT_GRACE: &str = "3s";
/// An app that fails or is down is retried with backoff for this long after the first claim,
/// then the disconnect is counted as abandoned and logged once.
pub const DISCONNECT_DEADLINE: &str = "10m";
/// A claim on a session's `/disconnect` holds this long (renewed before each retry): above one
/// call to the app ([`UPSTREAM_TIMEOUT`], 10 s) with room, so a live `serve` keeps its claim,
/// and short enough that a killed one's is taken over within a minute.
pub const DISCONNECT_LEASE: &str = "30s";
/// The sweep for sessions whose connection is gone without a `$disconnect` starts this often
/// (or right after the previous one, when a sweep takes longer).
pub const SWEEP_INTERVAL: &str = "30s";
/// GetConnection calls per second at most, per `serve` process. With [`SWEEP_INTERVAL`], a
/// table of up to 5,000 sessions is swept twice a minute: a dead gateway replica's sessions
/// get their `/disconnect` within two minutes (the README's guarantees table).
pub const SWEEP_RATE: &str = "100";
/// The sweep leaves a session created (or synced) less than this long ago for the next sweep:
/// its handshake may still be under way (serve writes the session during `$connect`, and the
/// gateway holds the connection only once `$connect` has returned), and GetConnection calls
/// such a connection gone. The integration answers within milliseconds of the write; 10 s is
/// room for a loaded gateway.
pub const SWEEP_MIN_AGE: &str = "10s";

// `socketless gateway`: API Gateway's own limits where it has one.

pub const GATEWAY_LISTEN: &str = "0.0.0.0:8081";
pub const MAX_CONNECTIONS: &str = "10000";
/// [`crate::contract::IDLE_TIMEOUT_SECS`].
pub const IDLE_TIMEOUT: &str = "10m";
/// [`crate::contract::MAX_CONNECTION_SECS`].
pub const MAX_CONNECTION_DURATION: &str = "2h";
/// [`crate::contract::MAX_MESSAGE_BYTES`].
pub const MAX_MESSAGE_BYTES: &str = "131072";
/// [`crate::contract::MAX_FRAME_BYTES`].
pub const MAX_FRAME_BYTES: &str = "32768";
/// [`crate::contract::INTEGRATION_TIMEOUT_MS`]: what an integration without `TimeoutInMillis`
/// gets, and what `conformance` expects of its target.
pub const INTEGRATION_TIMEOUT: &str = "29s";
pub const OUTBOUND_QUEUE: &str = "32";
pub const WRITE_TIMEOUT: &str = "30s";
// The gateway's memory budgets. The chart gives the gateway 512 MiB; its worst case is
//   baseline (about 10 MiB resident, idle)
//   + @connections bodies being received (MAX_BUFFERED_BODY_BYTES, 64 MiB)
//   + client messages held (MAX_PENDING_MESSAGE_BYTES, 32 MiB)
//   + frames queued for clients (MAX_OUTBOUND_BYTES, 32 MiB)
//   + per connection × MAX_CONNECTIONS (10,000): 32 KiB × 10,000 = 312.5 MiB, where 32 KiB is
//     23 KiB measured for a connection whose handshake carried a 9,000-byte User-Agent (the
//     largest a 10 KiB head allows), 4 KiB the protocol layer keeps after traffic at the frame
//     and post limits (measured: 3.6 KiB idle, 7.9 KiB after, ci/checks/check-memory.py), and the
//     first 4 KiB of a message, which the message budget does not count
//   = 450.5 MiB, an eighth below the limit. The per-connection term dominates: two 64 MiB
//   budgets would leave 2 MiB. `budgets_fit_the_charts_limit` below keeps the sum in step.
/// Bytes of client messages the gateway holds at once (32 MiB).
pub const MAX_PENDING_MESSAGE_BYTES: &str = "33554432";
/// A message must arrive whole within this, like a body within [`BODY_TIMEOUT`].
pub const MESSAGE_TIMEOUT: &str = "10s";
/// Bytes of `@connections` posts queued for clients at once (32 MiB).
pub const MAX_OUTBOUND_BYTES: &str = "33554432";
/// The gateway's memory limit in the chart's default values (MiB).
pub const CHART_GATEWAY_MEMORY_MIB: u64 = 512;
/// The gateway's idle resident size (MiB, measured) and its worst case per open connection
/// (bytes), as in the sum above.
pub const GATEWAY_BASELINE_MIB: u64 = 10;
pub const GATEWAY_PER_CONNECTION_BYTES: u64 = 32 * 1024;
pub const ORDINAL: &str = "0";
/// Below `serve`'s per-attempt AWS timeout (half of `--aws-timeout`, 1.5 s by default), so a
/// push to an owner that hangs gets the gateway's 503 and the SDK's retry within its budget.
pub const PEER_TIMEOUT: &str = "1s";

// `socketless dev`: loopback only, and quick to stop.

pub const DEV_LISTEN: &str = "127.0.0.1:8081";
pub const DEV_INTERNAL_LISTEN: &str = "127.0.0.1:9090";
pub const DEV_STAGE: &str = "dev";
/// `dev` has no load balancer to wait for.
pub const DEV_SHUTDOWN_DELAY: &str = "0s";
pub const DEV_DRAIN_TIMEOUT: &str = "5s";
/// How long `dev --upstream` waits for the app: a minute covers an interpreter's or a JVM's
/// start, and a typo'd URL still fails within it.
pub const DEV_UPSTREAM_WAIT: &str = "60s";

// `socketless probe` and `socketless conformance`.

pub const PROBE_MESSAGE: &str = "hello";
/// How long a probe, or a conformance case, waits for an answer.
pub const WAIT: &str = "10s";

// Tunables that are not flags: typed, since nothing parses them. Each says why its value.

use std::time::Duration;

/// The gateway's integration pool reuses an idle connection for at most this long: below the
/// backend's keep-alive ([`KEEP_ALIVE_TIMEOUT`], 75 s), so the gateway never sends on a
/// connection the backend is closing.
pub const INTEGRATION_POOL_IDLE: Duration = Duration::from_secs(60);
/// Idle integration connections kept per backend address: a burst of up to 256 calls in flight
/// to one address finds its connections again; beyond that a returned connection is closed, so
/// a spike does not leave thousands of idle sockets behind.
pub const INTEGRATION_POOL_MAX_IDLE: usize = 256;
/// A backend that has not accepted a connection in this long is down, not slow: the call fails
/// well within the integration timeout ([`INTEGRATION_TIMEOUT`], 29 s).
pub const INTEGRATION_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Idle connections to peer replicas: well below the peers' own keep-alive
/// ([`KEEP_ALIVE_TIMEOUT`], 75 s), so a forwarded push never races the peer's close.
pub const PEER_POOL_IDLE: Duration = Duration::from_secs(30);
/// Idle connections kept per peer: twice the pushes one `serve` replica has in flight at once
/// ([`BROADCAST_CONCURRENCY`], 32), so a broadcast forwarded to a peer reuses its connections.
pub const PEER_POOL_MAX_IDLE: usize = 64;
/// Forwarded calls signed further than this from the owner's clock are refused: replicas'
/// clocks agree within seconds, and a minute bounds how long a captured call can be replayed.
pub const PEER_MAX_SKEW_MS: i64 = 60_000;
/// Largest answer relayed from a peer: an AWS error body or a GetConnection document is a few
/// hundred bytes; 64 KiB is far above either and still bounded.
pub const PEER_MAX_ANSWER_BYTES: usize = 64 * 1024;
/// Idle connections to the upstream app are kept this long: long enough to carry steady
/// traffic from one message to the next, short enough that an app scaled in or restarted
/// has its sockets freed soon.
pub const UPSTREAM_POOL_IDLE: Duration = Duration::from_secs(30);
/// While `serve` waits for the upstream app to answer, it asks this often: quick to turn ready,
/// ten requests a second at most.
pub const UPSTREAM_WAIT_POLL: Duration = Duration::from_millis(100);
/// ... and says it is still waiting this often, so a log shows why the pod is not ready
/// without a line per poll.
pub const UPSTREAM_WAIT_LOG_EVERY: Duration = Duration::from_secs(5);
/// `@connections` clients kept at once, one per `https://{domain}/{stage}`: a deployment
/// pushes to one or a few stages; 64 bounds the map if events name many.
pub const PUSH_MAX_CLIENTS: usize = 64;
/// The SDK's per-attempt timeout is this share of `--aws-timeout`, so a hung attempt leaves
/// time for one retry within the operation's budget.
pub const AWS_ATTEMPT_SHARE: f64 = 0.5;
/// ... but never below this: a TLS handshake to AWS takes tens of milliseconds.
pub const AWS_MIN_ATTEMPT: Duration = Duration::from_millis(100);
/// Connecting to AWS takes at most this (and at most one attempt): a region endpoint that has
/// not accepted in 2 s is better retried on a fresh connection.
pub const AWS_MAX_CONNECT: Duration = Duration::from_secs(2);
/// Credentials used for direct SigV4 signing are asked for again this long before they
/// expire (the SDK's identity cache refreshes on a similar margin).
pub const CREDENTIALS_REFRESH_BEFORE: Duration = Duration::from_secs(60);
/// ... and credentials that carry no expiry (static keys) are asked for again after this, as
/// the SDK's identity cache does.
pub const CREDENTIALS_DEFAULT_LIFETIME: Duration = Duration::from_secs(15 * 60);
/// Idle connections from `serve` to a plain-HTTP push endpoint are closed after this.
pub const PUSH_POOL_IDLE: Duration = Duration::from_secs(30);
/// ... and at most this many idle ones are kept per endpoint: the pushes of a broadcast in
/// flight at once ([`BROADCAST_CONCURRENCY`], 32) and the replies of a busy replica find their
/// connections again, and a spike does not leave thousands of idle sockets behind.
pub const PUSH_POOL_MAX_IDLE: usize = 256;
/// `--aws-timeout` below this is refused: it is [`AWS_MIN_ATTEMPT`], the shortest attempt.
pub const AWS_MIN_TIMEOUT: Duration = AWS_MIN_ATTEMPT;
/// After its listeners drained, `serve` waits at most this long for pushes still queued: short,
/// so the shutdown delay, the drain timeout and this stay within the chart's 60 s grace period
/// (tested below).
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(2);
/// A conformance case that waits longer than this runs only with `--slow`: a minute keeps the
/// default run short enough for CI.
pub const CONFORMANCE_SLOW_BEYOND: Duration = Duration::from_secs(60);
/// A lingering close waits this long for the peer's remaining bytes: a peer that sent them
/// before it saw our close has them on the wire within a round trip, far below 2 s.
pub const LINGER_TIME: Duration = Duration::from_secs(2);
/// ... and reads at most this many: more than a request body in flight
/// ([`MAX_BODY_BYTES`], 128 KiB) with room, and still bounded against a peer that never stops.
pub const LINGER_BYTES: usize = 1024 * 1024;
/// Sockets lingering at once; past this a closing socket is dropped at once: the gateway's
/// connection limit ([`MAX_CONNECTIONS`], 10,000), so a mass close lingers for every one.
pub const MAX_LINGERING: usize = 10_000;
/// The first retry of a failed `/disconnect` waits this long; each later one twice as long as
/// the one before, up to [`DISCONNECT_MAX_BACKOFF`].
pub const DISCONNECT_FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// ... so an app that is down for minutes is asked every 10 s, not hammered, and one that comes
/// back hears within 10 s.
pub const DISCONNECT_MAX_BACKOFF: Duration = Duration::from_secs(10);
/// `/disconnect`s waiting out the grace are taken together: each is called between the grace
/// and the grace plus this, and the waiting wakes `serve` at most once per this.
pub const DISCONNECT_GRACE_TICK: Duration = Duration::from_millis(20);
/// Sessions read per Scan page by the sweep: a page of ~400-byte items is about 40 KB (ten read
/// units), answered well within one AWS attempt even by a loaded table; the read units of a
/// sweep are the same whatever the page size.
pub const SWEEP_PAGE: usize = 100;
/// GetConnection calls of one sweep in flight at once: at the default rate (100/s) and a 30 ms
/// answer, three are in flight; 32 bounds a gateway that hangs (at most 32 × the AWS timeout).
pub const SWEEP_IN_FLIGHT: usize = 32;
/// How often the allocator returns freed memory to the system: often enough that the resident
/// size follows a drop in load within seconds, rarely enough that the collection's cost stays
/// spread thin.
pub const MEMORY_COLLECT_EVERY: Duration = Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{FromFlags, parse_duration};
    use crate::contract;

    fn secs(text: &str) -> u64 {
        parse_duration(text).unwrap().as_secs()
    }

    #[test]
    fn the_contract_and_the_flags_agree() {
        assert_eq!(MAX_HEADER_BYTES, contract::MAX_HEADER_BYTES.to_string());
        assert_eq!(MAX_BODY_BYTES, contract::MAX_MESSAGE_BYTES.to_string());
        assert_eq!(MAX_MESSAGE_BYTES, contract::MAX_MESSAGE_BYTES.to_string());
        assert_eq!(MAX_FRAME_BYTES, contract::MAX_FRAME_BYTES.to_string());
        assert_eq!(secs(IDLE_TIMEOUT), contract::IDLE_TIMEOUT_SECS);
        assert_eq!(secs(MAX_CONNECTION_DURATION), contract::MAX_CONNECTION_SECS);
        assert_eq!(
            parse_duration(INTEGRATION_TIMEOUT).unwrap().as_millis(),
            u128::from(contract::INTEGRATION_TIMEOUT_MS)
        );
        assert!(secs(SESSION_TTL) > contract::MAX_CONNECTION_SECS);
        assert!(MAX_BUFFERED_BODY_BYTES.parse::<usize>().unwrap() >= contract::MAX_POST_BYTES);
        assert!(parse_duration(PEER_TIMEOUT).unwrap() < parse_duration(AWS_TIMEOUT).unwrap() / 2);
    }

    /// The chart's default values, read by the tests below so the chart and the binary cannot
    /// drift apart.
    const CHART_VALUES: &str = include_str!("../chart/socketless/values.yaml");

    /// A whole number from the chart's values: `path` is a top-level key or `section.key`
    /// (a key directly inside a top-level section). Enough YAML for `values.yaml`'s numbers.
    fn chart_number(path: &str) -> u64 {
        let (section, key) = match path.split_once('.') {
            Some((s, k)) => (Some(s), k),
            None => (None, path),
        };
        let mut inside = section.is_none();
        for line in CHART_VALUES.lines() {
            let text = line.split('#').next().unwrap_or_default().trim_end();
            if text.trim().is_empty() {
                continue;
            }
            let indent = text.len() - text.trim_start().len();
            if let Some(section) = section {
                if indent == 0 {
                    inside = text == format!("{section}:");
                    continue;
                }
                if !inside || indent != 2 {
                    continue;
                }
            } else if indent != 0 {
                continue;
            }
            if let Some(value) = text.trim().strip_prefix(&format!("{key}:")) {
                return value
                    .trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("chart value {path} is {value:?}, not a whole number"));
            }
        }
        panic!("chart/socketless/values.yaml has no {path}");
    }

    #[test]
    fn the_chart_values_are_read() {
        assert_eq!(chart_number("terminationGracePeriodSeconds"), 60);
        assert_eq!(chart_number("gateway.terminationGracePeriodSeconds"), 35);
        assert_eq!(chart_number("ingress.idleTimeoutSeconds"), 60);
        assert_eq!(chart_number("gateway.keepAliveTimeoutSeconds"), 75);
    }

    #[test]
    fn the_chart_sweeps_at_the_binarys_rate() {
        assert_eq!(chart_number("config.sweepRate"), SWEEP_RATE.parse::<u64>().unwrap());
        // A live `serve` keeps its claim through a retry's longest wait.
        assert!(DISCONNECT_MAX_BACKOFF < parse_duration(DISCONNECT_LEASE).unwrap() / 2);
        assert!(parse_duration(UPSTREAM_TIMEOUT).unwrap() <= parse_duration(DISCONNECT_LEASE).unwrap() / 2);
    }

    #[test]
    fn idle_timeouts_close_from_the_client_side_first() {
        let keep_alive = parse_duration(KEEP_ALIVE_TIMEOUT).unwrap();
        let chart_keep_alive = Duration::from_secs(chart_number("config.keepAliveTimeoutSeconds"));
        let chart_gateway_keep_alive = Duration::from_secs(chart_number("gateway.keepAliveTimeoutSeconds"));
        let alb_idle = Duration::from_secs(chart_number("ingress.idleTimeoutSeconds"));
        // The chart renders the binary's default, for serve and for the gateway.
        assert_eq!(chart_keep_alive, keep_alive, "config.keepAliveTimeoutSeconds");
        assert_eq!(chart_gateway_keep_alive, keep_alive, "gateway.keepAliveTimeoutSeconds");
        // The gateway drops an idle integration connection before the backend closes it.
        assert!(INTEGRATION_POOL_IDLE < keep_alive);
        assert!(INTEGRATION_POOL_IDLE < chart_keep_alive);
        // The ALB drops an idle target connection before the backend closes it, with the
        // binary's default and with the chart's.
        assert!(alb_idle < keep_alive, "ALB idle {alb_idle:?} against {keep_alive:?}");
        assert!(alb_idle < chart_keep_alive);
        // The same for the other pools: peers and the upstream app (whose keep-alive, when it
        // is another socketless, is ours).
        assert!(PEER_POOL_IDLE < keep_alive);
        assert!(UPSTREAM_POOL_IDLE < keep_alive);
    }

    #[test]
    fn a_hung_peer_answers_within_one_push_attempt() {
        let attempt = crate::aws::attempt_timeout(parse_duration(AWS_TIMEOUT).unwrap());
        assert_eq!(attempt, Duration::from_millis(1500));
        assert!(parse_duration(PEER_TIMEOUT).unwrap() < attempt);
        assert!(AWS_MAX_CONNECT <= parse_duration(AWS_TIMEOUT).unwrap());
        assert_eq!(crate::aws::attempt_timeout(AWS_MIN_TIMEOUT), AWS_MIN_ATTEMPT);
    }

    #[test]
    fn shutdown_fits_the_charts_grace_period() {
        let serve = chart_number("config.shutdownDelaySeconds") + chart_number("config.drainTimeoutSeconds");
        let grace = Duration::from_secs(chart_number("terminationGracePeriodSeconds"));
        assert!(Duration::from_secs(serve) + FLUSH_TIMEOUT < grace);
        let binary = parse_duration(SHUTDOWN_DELAY).unwrap() + parse_duration(DRAIN_TIMEOUT).unwrap();
        assert!(binary + FLUSH_TIMEOUT < grace);
        assert!(INTEGRATION_CONNECT_TIMEOUT < parse_duration(INTEGRATION_TIMEOUT).unwrap());
    }

    #[test]
    fn budgets_fit_the_charts_limit() {
        let n = |t: &str| t.parse::<u64>().unwrap();
        let worst = GATEWAY_BASELINE_MIB * 1024 * 1024
            + n(MAX_BUFFERED_BODY_BYTES)
            + n(MAX_PENDING_MESSAGE_BYTES)
            + n(MAX_OUTBOUND_BYTES)
            + GATEWAY_PER_CONNECTION_BYTES * n(MAX_CONNECTIONS);
        let limit = CHART_GATEWAY_MEMORY_MIB * 1024 * 1024;
        // Room to spare: at least a tenth of the limit.
        assert!(
            worst <= limit / 10 * 9,
            "worst case {worst} bytes against a {limit}-byte limit"
        );
        // Each budget holds at least one message or post.
        assert!(n(MAX_PENDING_MESSAGE_BYTES) >= contract::MAX_MESSAGE_BYTES as u64);
        assert!(n(MAX_OUTBOUND_BYTES) >= contract::MAX_POST_BYTES as u64);
        assert_eq!(secs(MESSAGE_TIMEOUT), secs(BODY_TIMEOUT));
        assert_eq!(MAX_LINGERING as u64, n(MAX_CONNECTIONS));
        assert!(LINGER_BYTES >= n(MAX_BODY_BYTES) as usize);
    }

    #[test]
    fn every_default_is_valid() {
        let serve = crate::serve::ServeArgs::from_flags(Vec::<String>::new()).unwrap();
        assert!(serve.validate().is_ok(), "{:?}", serve.validate().err());
        let dev = crate::dev::DevArgs::from_flags(Vec::<String>::new()).unwrap();
        assert!(dev.validate().is_ok());
    }
}
