//! Timeout cases: the idle timeout and the maximum connection duration, scaled to what the
//! target was started with. Waits beyond a minute run only with `--slow`.

use std::time::{Duration, Instant};

use serde_json::json;

use super::handshake::cases;
use super::ws::{self, Ended};
use super::{Outcome, Run, fail};

cases! {
    "idle-timeout" => idle,
    "idle-close-code" => idle_code,
    "max-duration" => duration,
    "max-duration-close-code" => duration_code,
}

/// Slack allowed around a timeout: the gateway's timers are not exact.
fn slack(d: Duration) -> Duration {
    (d / 10).max(Duration::from_secs(2))
}

/// Opens a connection, stays idle, and reports how it ended and after how long.
async fn idle_close(cx: &Run) -> Result<(Ended, Duration), String> {
    let wait = cx.idle_timeout + slack(cx.idle_timeout);
    cx.may_wait(wait)?;
    let mut c = ws::open(&cx.url, &[], cx.wait).await.map_err(|e| e.to_string())?;
    let started = Instant::now();
    let ended = ws::closed(&mut c, wait).await;
    Ok((ended, started.elapsed()))
}

/// Opens a connection and keeps it active (a message every third of the idle timeout) until it
/// is closed.
async fn duration_close(cx: &Run) -> Result<(Ended, Duration), String> {
    let wait = cx.max_duration + slack(cx.max_duration);
    cx.may_wait(wait)?;
    let mut c = ws::open(&cx.url, &[], cx.wait).await.map_err(|e| e.to_string())?;
    let started = Instant::now();
    let beat = (cx.idle_timeout / 3).max(Duration::from_millis(200));
    loop {
        let left = wait.saturating_sub(started.elapsed());
        if left.is_zero() {
            return Ok((Ended::TimedOut, started.elapsed()));
        }
        let msg = json!({"action": "echo", "op": "echo", "data": "keep-alive"}).to_string();
        if ws::send(&mut c, &msg).await.is_err() {
            return Ok((ws::closed(&mut c, Duration::from_secs(2)).await, started.elapsed()));
        }
        match ws::next_data(&mut c, beat.min(left)).await {
            Ok(_) | Err(Ended::TimedOut) => {}
            Err(e) => return Ok((e, started.elapsed())),
        }
        tokio::time::sleep(beat.min(wait.saturating_sub(started.elapsed()))).await;
    }
}

/// Closed within the expected window?
fn judged(limit: Duration, ended: &Ended, after: Duration) -> Outcome {
    let early = limit.saturating_sub(slack(limit));
    match ended {
        Ended::TimedOut => fail(format!("still open after {} s", after.as_secs())),
        _ if after < early => fail(format!(
            "{ended} after {:.1} s, before the {} s limit",
            after.as_secs_f64(),
            limit.as_secs()
        )),
        Ended::Close(..) => Outcome::Pass,
        Ended::Dropped(_) => fail(format!("{ended} after {:.1} s", after.as_secs_f64())),
    }
}

/// Each timeout is waited for once; its two cases share the result.
async fn idle_once(cx: &Run) -> Result<(Ended, Duration), String> {
    cx.idle_result.get_or_init(|| idle_close(cx)).await.clone()
}

async fn duration_once(cx: &Run) -> Result<(Ended, Duration), String> {
    cx.duration_result.get_or_init(|| duration_close(cx)).await.clone()
}

async fn idle(cx: &Run) -> Outcome {
    match idle_once(cx).await {
        Ok((ended, after)) => judged(cx.idle_timeout, &ended, after),
        Err(why) => Outcome::NotRun(why),
    }
}

fn code_outcome(ended: &Ended) -> Outcome {
    match ended {
        Ended::Close(1001, _) => Outcome::Known("kd-timeout-close-codes", None),
        other => Outcome::Known("kd-timeout-close-codes", Some(other.to_string())),
    }
}

async fn idle_code(cx: &Run) -> Outcome {
    match idle_once(cx).await {
        Ok((ended, _)) => code_outcome(&ended),
        Err(why) => Outcome::NotRun(why),
    }
}

async fn duration(cx: &Run) -> Outcome {
    match duration_once(cx).await {
        Ok((ended, after)) => judged(cx.max_duration, &ended, after),
        Err(why) => Outcome::NotRun(why),
    }
}

async fn duration_code(cx: &Run) -> Outcome {
    match duration_once(cx).await {
        Ok((ended, _)) => code_outcome(&ended),
        Err(why) => Outcome::NotRun(why),
    }
}
