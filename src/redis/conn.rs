//! The connection every call goes through: one reconnecting multiplexed connection
//! ([`ConnectionManager`]) to a single server (`redis://`, `rediss://`, `redis+unix://`), or, with
//! the `redis-cluster` feature, a Redis Cluster connection that routes each command to the node
//! owning its key's slot (and follows `MOVED`/`ASK` on its own).

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::io::tcp::TcpSettings;
use redis::{Cmd, IntoConnectionInfo, Pipeline, RedisFuture, Value};

use super::SetupError;

/// Where a limiter connects.
#[derive(Clone, Debug)]
pub(crate) enum Target {
    /// One server, by URL.
    Single(String),
    /// Seed nodes of a Redis Cluster (the rest of the topology is discovered).
    #[cfg_attr(not(feature = "redis-cluster"), allow(dead_code))]
    Cluster(Vec<String>),
}

/// TLS settings beyond the URL scheme (feature `redis-tls`); empty otherwise.
#[derive(Clone, Debug, Default)]
pub(crate) struct TlsConfig {
    /// Trust anchors and client certificate; `None`: webpki's public roots, no client auth.
    #[cfg(feature = "redis-tls")]
    pub(crate) certs: Option<redis::TlsCertificates>,
}

#[cfg(feature = "redis-tls")]
impl TlsConfig {
    /// The certificate set, created empty on first use.
    pub(crate) fn certs_mut(&mut self) -> &mut redis::TlsCertificates {
        self.certs.get_or_insert(redis::TlsCertificates { client_tls: None, root_cert: None })
    }
}

/// A single-server or cluster connection; cheap to clone (clones share the connection).
#[derive(Clone)]
pub(crate) enum Connection {
    Single(ConnectionManager),
    #[cfg(feature = "redis-cluster")]
    Cluster(redis::cluster_async::ClusterConnection),
}

impl Connection {
    /// Whether commands of one pipeline may go to different nodes (so pipelines must not mix
    /// keys of different slots).
    pub(crate) fn is_cluster(&self) -> bool {
        match self {
            Connection::Single(_) => false,
            #[cfg(feature = "redis-cluster")]
            Connection::Cluster(_) => true,
        }
    }
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Single(conn) => conn.req_packed_command(cmd),
            #[cfg(feature = "redis-cluster")]
            Connection::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            #[cfg(feature = "redis-cluster")]
            Connection::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Single(conn) => conn.get_db(),
            #[cfg(feature = "redis-cluster")]
            Connection::Cluster(conn) => conn.get_db(),
        }
    }
}

/// Connects to `target`, the whole setup bounded by `timeout`.
pub(crate) async fn connect(
    target: &Target,
    tls: &TlsConfig,
    timeout: Duration,
    reconnect_max_delay: Duration,
) -> Result<Connection, SetupError> {
    #[cfg(feature = "redis-tls")]
    install_crypto_provider();
    let connect = async {
        match target {
            Target::Single(url) => connect_single(url, tls, timeout, reconnect_max_delay).await,
            Target::Cluster(nodes) => connect_cluster(nodes, tls, timeout, reconnect_max_delay).await,
        }
    };
    match tokio::time::timeout(timeout, connect).await {
        Ok(result) => result,
        Err(_) => Err(SetupError::Timeout { after: timeout }),
    }
}

/// A single-server connection that connects on its first command (and reconnects as any
/// other): `connect_lazy`.
pub(crate) fn connect_lazy(
    target: &Target,
    tls: &TlsConfig,
    timeout: Duration,
    reconnect_max_delay: Duration,
) -> Result<Connection, SetupError> {
    let Target::Single(url) = target else {
        return Err(SetupError::Connect {
            reason: "connect_lazy takes a single server: connect a cluster with connect()".to_owned(),
        });
    };
    if tokio::runtime::Handle::try_current().is_err() {
        return Err(SetupError::Connect {
            reason: "connect_lazy must be called within a tokio runtime".to_owned(),
        });
    }
    #[cfg(feature = "redis-tls")]
    install_crypto_provider();
    let client = client(url, tls)?;
    let conn = ConnectionManager::new_lazy_with_config(client, manager_config(timeout, reconnect_max_delay))
        .map_err(|e| connect_error(e, timeout))?;
    Ok(Connection::Single(conn))
}

fn manager_config(timeout: Duration, reconnect_max_delay: Duration) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(redis_timeout(timeout)))
        .set_response_timeout(Some(redis_timeout(timeout)))
        .set_min_delay(Duration::from_millis(5).min(reconnect_max_delay))
        .set_max_delay(reconnect_max_delay)
}

fn url_error(e: redis::RedisError) -> SetupError {
    SetupError::Url { reason: e.to_string() }
}

/// A failed first connection; redis-rs' timeouts (a backstop, see [`redis_timeout`]) are
/// reported as the limiter's.
fn connect_error(e: redis::RedisError, timeout: Duration) -> SetupError {
    if e.is_timeout() {
        SetupError::Timeout { after: timeout }
    } else {
        SetupError::Connect { reason: e.to_string() }
    }
}

/// redis-rs' own connection and response timeouts: twice the limiter's. The limiter bounds every
/// call and the first connection itself (so that a late call is always
/// [`CheckError::Timeout`](crate::CheckError::Timeout), never a redis-rs "timed out" error
/// racing it); redis-rs' timeouts only bound what runs outside a call, such as reconnection
/// attempts in the background.
fn redis_timeout(timeout: Duration) -> Duration {
    timeout.saturating_mul(2)
}

/// A clear error for `rediss://` without the TLS feature (redis-rs' own is less direct).
fn check_scheme(url: &str) -> Result<(), SetupError> {
    if !cfg!(feature = "redis-tls") && url.starts_with("rediss://") {
        return Err(SetupError::Url { reason: "rediss:// needs tollgate's `redis-tls` feature".to_owned() });
    }
    Ok(())
}

/// `TCP_NODELAY` on: a check is a small request waiting for its answer, and with Nagle's
/// algorithm (redis-rs' default) a multiplexed connection's next small write can wait for the
/// previous one's ACK. Redis sets it on its side too.
fn tcp_settings() -> TcpSettings {
    TcpSettings::default().set_nodelay(true)
}

fn client(url: &str, tls: &TlsConfig) -> Result<redis::Client, SetupError> {
    check_scheme(url)?;
    let info = url.into_connection_info().map_err(url_error)?.set_tcp_settings(tcp_settings());
    #[cfg(feature = "redis-tls")]
    if let Some(certs) = &tls.certs {
        return redis::Client::build_with_tls(info, certs.clone())
            .map_err(|e| SetupError::Tls { reason: e.to_string() });
    }
    #[cfg(not(feature = "redis-tls"))]
    let _ = tls;
    redis::Client::open(info).map_err(url_error)
}

async fn connect_single(
    url: &str,
    tls: &TlsConfig,
    timeout: Duration,
    reconnect_max_delay: Duration,
) -> Result<Connection, SetupError> {
    let client = client(url, tls)?;
    // One plain attempt first, so that its error is the one reported: the manager retries a
    // refused or rejected first connection for ~390 ms, past the 50 ms default timeout, which
    // then said only "did not answer within 50ms" for a wrong port, password or database.
    let first = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(redis_timeout(timeout)))
        .set_response_timeout(Some(redis_timeout(timeout)));
    drop(
        client
            .get_multiplexed_async_connection_with_config(&first)
            .await
            .map_err(|e| connect_error(e, timeout))?,
    );
    let config = manager_config(timeout, reconnect_max_delay);
    let conn =
        ConnectionManager::new_with_config(client, config).await.map_err(|e| connect_error(e, timeout))?;
    Ok(Connection::Single(conn))
}

#[cfg(feature = "redis-cluster")]
async fn connect_cluster(
    nodes: &[String],
    tls: &TlsConfig,
    timeout: Duration,
    reconnect_max_delay: Duration,
) -> Result<Connection, SetupError> {
    for node in nodes {
        check_scheme(node)?;
    }
    let max_wait = u64::try_from(reconnect_max_delay.as_millis()).unwrap_or(u64::MAX).max(1);
    let builder = redis::cluster::ClusterClientBuilder::new(nodes.iter().map(String::as_str))
        .connection_timeout(redis_timeout(timeout))
        .response_timeout(redis_timeout(timeout))
        .min_retry_wait(1)
        .max_retry_wait(max_wait)
        .tcp_settings(tcp_settings());
    #[cfg(feature = "redis-tls")]
    let builder = match &tls.certs {
        Some(certs) => builder.certs(certs.clone()),
        None => builder,
    };
    #[cfg(not(feature = "redis-tls"))]
    let _ = tls;
    let client = builder.build().map_err(url_error)?;
    let conn = client.get_async_connection().await.map_err(|e| connect_error(e, timeout))?;
    Ok(Connection::Cluster(conn))
}

#[cfg(not(feature = "redis-cluster"))]
async fn connect_cluster(
    _nodes: &[String],
    _tls: &TlsConfig,
    _timeout: Duration,
    _reconnect_max_delay: Duration,
) -> Result<Connection, SetupError> {
    // Unreachable: cluster targets are only built by `cluster_builder` (feature-gated).
    Err(SetupError::Url { reason: "Redis Cluster needs tollgate's `redis-cluster` feature".to_owned() })
}

/// rustls needs a process-wide crypto provider; install ring's unless the application already
/// installed one (then that one is used). Without this, rustls would panic when more than one
/// provider is compiled in.
#[cfg(feature = "redis-tls")]
fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Err: another thread installed one first, which is just as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}
