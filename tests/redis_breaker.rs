//! What the Redis limiter's circuit breaker counts and what `connect` probes, against real
//! redis-servers (review findings): only outages open the breaker, a batch is one call judged by
//! its entries, the cooldown runs on a real clock, and `connect` needs no `SCRIPT` command.
#![cfg(feature = "redis")]

mod redis_support;

use std::process::{Command, Stdio};
use std::time::Duration;

use redis_support::RedisServer;
use tollgate::redis::{FailurePolicy, RedisLimiter};
use tollgate::{CheckError, ManualClock, Origin, Quota};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

fn quota() -> Quota {
    Quota::per_hour(1000).unwrap()
}

/// An ACL user allowed everything but `SCRIPT` (ops teams deny it for `SCRIPT FLUSH`/`KILL`):
/// its checks work (`EVALSHA`, `EVAL` after `NOSCRIPT`), so `connect` accepts it (it used to
/// refuse it: its probe was `SCRIPT LOAD`).
#[test]
fn an_acl_user_without_script_connects() {
    let server = RedisServer::start();
    let _: String = server.query(
        redis::cmd("ACL")
            .arg("SETUSER")
            .arg("app")
            .arg("on")
            .arg(">pw")
            .arg("~*")
            .arg("+@all")
            .arg("-script"),
    );
    let url = format!("redis://app:pw@127.0.0.1:{}/", server.port());
    rt().block_on(async {
        let redis = RedisLimiter::builder(url.clone(), quota()).connect().await.expect("connects");
        let d = redis.check(b"k", 1).await.expect("checks work for this user");
        assert_eq!((d.origin(), d.remaining()), (Origin::Remote, 999));
        // A user who may not run scripts at all is still refused, naming Redis' reply.
        let _: String = server.query(
            redis::cmd("ACL")
                .arg("SETUSER")
                .arg("noeval")
                .arg("on")
                .arg(">pw")
                .arg("~*")
                .arg("+@all")
                .arg("-@scripting"),
        );
        let url = format!("redis://noeval:pw@127.0.0.1:{}/", server.port());
        match RedisLimiter::builder(url, quota()).connect().await.map(drop) {
            Err(tollgate::redis::SetupError::Connect { reason }) => {
                assert!(reason.contains("NOPERM") || reason.contains("permission"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
    });
}

/// `rename-command SCRIPT ""`-style hardening: `connect` works, as the checks do.
#[test]
fn a_renamed_script_command_connects() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = std::env::temp_dir().join(format!("tollgate-breaker-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut child = Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &port.to_string(), "--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(&dir)
        .args(["--rename-command", "SCRIPT", "SCRIPT-RENAMED-AWAY"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("redis://127.0.0.1:{port}/");
    for _ in 0..500 {
        if redis::Client::open(url.as_str()).and_then(|c| c.get_connection()).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let result = rt().block_on(async {
        let redis = RedisLimiter::builder(url, quota()).connect().await?;
        Ok::<_, tollgate::redis::SetupError>(redis.check(b"k", 1).await.map(|d| d.origin()))
    });
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(result, Ok(Ok(Origin::Remote)));
}

/// A per-key error (one key holding a value of another type: `WRONGTYPE`) comes from a healthy
/// server: checks of that key fail (here answered by the policy), the breaker stays closed, and
/// other keys are still sent (before, three checks of the one key opened it for every key, and
/// FailOpen then limited nothing).
#[test]
fn one_bad_key_does_not_open_the_breaker() {
    let server = RedisServer::start();
    rt().block_on(async {
        let redis = RedisLimiter::builder(server.url(), quota())
            .failure_policy(FailurePolicy::FailOpen)
            .deny_cache_capacity(0)
            .connect()
            .await
            .unwrap();
        let bad = redis.redis_key(b"bad");
        let _: i64 = server.query(redis::cmd("HSET").arg(&bad).arg("f").arg("v"));
        for _ in 0..10 {
            let d = redis.check(b"bad", 1).await.unwrap();
            assert_eq!(d.origin(), Origin::Fallback);
        }
        let many = redis.check_many(&["bad", "bad"], 1).await;
        assert!(many.iter().all(|r| r.as_ref().is_ok_and(|d| d.origin() == Origin::Fallback)));
        assert!(!redis.circuit_open());
        let good = redis.check(b"good", 1).await.unwrap();
        assert_eq!((good.origin(), good.remaining()), (Origin::Remote, 999));
    });
}

/// A read-only replica (after a failover: every check fails `READONLY`) is an outage, for
/// checks and batches alike: batches whose every entry fails open the breaker, and a failed
/// batch probe does not close it (before, a batch with any reply counted as a success).
#[test]
fn batches_whose_every_entry_fails_count_as_failures() {
    let server = RedisServer::start();
    rt().block_on(async {
        let redis = RedisLimiter::builder(server.url(), quota())
            .deny_cache_capacity(0)
            .circuit_breaker(3, Duration::from_millis(100))
            .connect()
            .await
            .unwrap();
        // A replica of a master that is not there.
        let _: String = server.query(redis::cmd("REPLICAOF").arg("127.0.0.1").arg("1"));
        let e = redis.check(b"k", 1).await.unwrap_err();
        assert!(format!("{e:?}").to_lowercase().contains("read only"), "{e:?}");
        assert!(!redis.circuit_open(), "one failure");
        for _ in 0..2 {
            let r = redis.check_many(&["a", "b"], 1).await;
            assert!(r.iter().all(|r| r.is_err()));
        }
        assert!(redis.circuit_open(), "a check and two failed batches open it");
        tokio::time::sleep(Duration::from_millis(150)).await;
        let r = redis.check_many(&["a", "b"], 1).await; // the probe: every entry fails
        assert!(r
            .iter()
            .all(|r| matches!(r, Err(CheckError::Backend { reason }) if !reason.contains("not sent"))));
        match redis.check(b"k", 1).await {
            Err(CheckError::Backend { reason }) => assert!(reason.contains("not sent"), "{reason}"),
            other => panic!("the failed probe closed the breaker: {other:?}"),
        }
        // Promoted again: the next probe closes it.
        let _: String = server.query(redis::cmd("REPLICAOF").arg("NO").arg("ONE"));
        tokio::time::sleep(Duration::from_millis(150)).await;
        let d = redis.check(b"k", 1).await.unwrap();
        assert_eq!(d.origin(), Origin::Remote);
        assert!(!redis.circuit_open());
    });
}

/// The breaker's cooldown runs on its own clock: with a `ManualClock` that never moves (the
/// builder's clock is the deny cache's), the breaker still probes after an outage and closes
/// (before, it never sent a call again).
#[test]
fn the_breaker_probes_under_a_manual_clock() {
    let server = RedisServer::start();
    rt().block_on(async {
        let redis = RedisLimiter::builder(server.url(), quota())
            .timeout(Duration::from_millis(50))
            .deny_cache_capacity(0)
            .clock(ManualClock::new())
            .connect()
            .await
            .unwrap();
        let _: String = server.query(redis::cmd("CLIENT").arg("PAUSE").arg(300).arg("ALL"));
        for _ in 0..3 {
            assert!(redis.check(b"k", 1).await.is_err());
        }
        assert!(redis.circuit_open());
        tokio::time::sleep(Duration::from_millis(600)).await; // the server answers again
        let mut remote = false;
        for _ in 0..100 {
            if redis.check(b"k", 1).await.is_ok_and(|d| d.origin() == Origin::Remote) {
                remote = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(remote, "2 s after a 300 ms outage the breaker is still open");
        assert!(!redis.circuit_open());
    });
}
