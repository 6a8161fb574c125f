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
pub const UPSTREAM_TIMEOUT: &str = "10s";
pub const UPSTREAM_CONCURRENCY: &str = "256";
pub const UPSTREAM_HEALTH_PATH: &str = "/healthz";

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

// `socketless probe` and `socketless conformance`.

pub const PROBE_MESSAGE: &str = "hello";
/// How long a probe, or a conformance case, waits for an answer.
pub const WAIT: &str = "10s";

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
    }

    #[test]
    fn every_default_is_valid() {
        let serve = crate::serve::ServeArgs::from_flags(Vec::<String>::new()).unwrap();
        assert!(serve.validate().is_ok(), "{:?}", serve.validate().err());
        let dev = crate::dev::DevArgs::from_flags(Vec::<String>::new()).unwrap();
        assert!(dev.validate().is_ok());
    }
}
