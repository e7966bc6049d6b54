//! Test helper shared by the `redis_*` tests: private `redis-server`s on free loopback ports, each
//! in its own temporary directory, with persistence off; killed (and their directories removed)
//! on drop. Plain TCP, TLS-only (`--tls-port`), or a 3-master Redis Cluster on loopback. Every
//! server also listens on a Unix socket, which the helper uses for readiness and its own queries
//! (so it needs neither TLS nor cluster routing). If `redis-server` (or, for clusters,
//! `redis-cli`) is not installed, or the server refuses its options (e.g. a build without TLS),
//! the test fails and says why.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const INSTALL: &str = "Install it with `apt-get install -y redis-server` (Debian/Ubuntu; redis-cli and \
                       redis-benchmark come with it in redis-tools) or put it on PATH.";

/// TLS files for a server: its certificate chain and key, and the CA that clients' certificates
/// must chain to when `auth_clients` is set.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
    pub auth_clients: bool,
}

#[derive(Clone, Debug, Default)]
struct Options {
    tls: Option<TlsFiles>,
    /// Cluster bus port, when the server is a cluster node.
    cluster_port: Option<u16>,
}

pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    options: Options,
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

fn temp_dir(tag: &str, port: u16) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tollgate-{tag}-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create temp dir");
    dir
}

impl RedisServer {
    /// Starts a plain-TCP server on a free port and waits until it answers PING.
    pub fn start() -> RedisServer {
        RedisServer::start_with(Options::default())
    }

    /// Starts a server that accepts only TLS on its TCP port (plain TCP is off).
    pub fn start_tls(files: TlsFiles) -> RedisServer {
        RedisServer::start_with(Options { tls: Some(files), cluster_port: None })
    }

    fn start_with(options: Options) -> RedisServer {
        let port = free_port();
        let mut server = RedisServer { child: None, port, dir: temp_dir("redis", port), options };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let port = self.port.to_string();
        let mut cmd = Command::new("redis-server");
        cmd.args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]);
        cmd.arg("--dir").arg(&self.dir);
        cmd.arg("--unixsocket").arg(self.socket());
        cmd.arg("--logfile").arg(self.log());
        match &self.options.tls {
            Some(tls) => {
                cmd.args(["--port", "0", "--tls-port", &port]);
                cmd.arg("--tls-cert-file").arg(&tls.cert);
                cmd.arg("--tls-key-file").arg(&tls.key);
                cmd.arg("--tls-ca-cert-file").arg(&tls.ca);
                cmd.args(["--tls-auth-clients", if tls.auth_clients { "yes" } else { "no" }]);
            }
            None => {
                cmd.args(["--port", &port]);
            }
        }
        if let Some(bus) = self.options.cluster_port {
            cmd.args(["--cluster-enabled", "yes", "--cluster-port", &bus.to_string()]);
            cmd.arg("--cluster-config-file").arg(self.dir.join("nodes.conf"));
            cmd.args(["--cluster-node-timeout", "5000"]);
            if self.options.tls.is_some() {
                cmd.args(["--tls-cluster", "yes"]);
            }
        }
        let child = match cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn() {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                panic!("redis-server not found: the Redis tests need it. {INSTALL}")
            }
            Err(e) => panic!("cannot start redis-server: {e}"),
        };
        self.child = Some(child);
        self.wait_ready();
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("redis.sock")
    }

    fn log(&self) -> PathBuf {
        self.dir.join("redis.log")
    }

    /// Polls PING on the Unix socket until the server answers (up to 10 s: a readiness wait,
    /// not a timing check); fails with the server's own words if it exited.
    fn wait_ready(&mut self) {
        for _ in 0..1000 {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    let mut stderr = String::new();
                    if let Some(mut pipe) = child.stderr.take() {
                        let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
                    }
                    let log = std::fs::read_to_string(self.log()).unwrap_or_default();
                    panic!(
                        "redis-server exited ({status}) instead of starting with {:?}. Its output:\n{stderr}\n{log}\n\
                         (For TLS the server must be built with TLS support, as Debian's is.)",
                        self.options
                    );
                }
            }
            if let Ok(mut conn) = redis::Client::open(self.unix_url()).and_then(|c| c.get_connection()) {
                if redis::cmd("PING").query::<String>(&mut conn).is_ok() {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("redis-server on port {} did not answer PING within 10 s", self.port);
    }

    /// The URL clients use: `redis://127.0.0.1:PORT/`, or `rediss://` for a TLS server.
    pub fn url(&self) -> String {
        let scheme = if self.options.tls.is_some() { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}/", self.port)
    }

    /// The same server through its Unix socket.
    pub fn unix_url(&self) -> String {
        format!("redis+unix://{}", self.socket().display())
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// SIGKILLs the server (no clean shutdown, like a crash).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port (with empty data).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Runs one command on a fresh synchronous connection (through the Unix socket).
    pub fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> T {
        let mut conn =
            redis::Client::open(self.unix_url()).and_then(|c| c.get_connection()).expect("connect");
        cmd.query(&mut conn).expect("query")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A Redis Cluster of `masters` nodes (no replicas) on loopback, each on a free port with its own
/// free bus port (`--cluster-port`), joined with `redis-cli --cluster create`; stopped on drop.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts the nodes, creates the cluster and waits until every node reports
    /// `cluster_state:ok` with all 16384 slots assigned.
    pub fn start(masters: usize) -> RedisCluster {
        RedisCluster::start_with(masters, None)
    }

    /// The same over TLS: clients and the cluster bus (`--tls-cluster yes`) speak only TLS.
    pub fn start_tls(masters: usize, files: TlsFiles) -> RedisCluster {
        RedisCluster::start_with(masters, Some(files))
    }

    fn start_with(masters: usize, tls: Option<TlsFiles>) -> RedisCluster {
        let nodes: Vec<RedisServer> = (0..masters)
            .map(|_| {
                let bus = free_port();
                let port = loop {
                    let port = free_port();
                    if port != bus {
                        break port;
                    }
                };
                let mut server = RedisServer {
                    child: None,
                    port,
                    dir: temp_dir("cluster", port),
                    options: Options { tls: tls.clone(), cluster_port: Some(bus) },
                };
                server.spawn();
                server
            })
            .collect();
        let addresses: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        let mut redis_cli = Command::new("redis-cli");
        if let Some(tls) = &tls {
            redis_cli.arg("--tls").arg("--cacert").arg(&tls.ca);
        }
        let child = redis_cli
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let mut child = match child {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                panic!("redis-cli not found: the Redis Cluster tests need it. {INSTALL}")
            }
            Err(e) => panic!("cannot run redis-cli: {e}"),
        };
        // Bounded (30 s, a readiness limit, not a timing check): a cluster whose nodes cannot
        // meet would leave redis-cli waiting forever.
        let mut status = None;
        for _ in 0..3000 {
            status = child.try_wait().expect("redis-cli status");
            if status.is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        if status.is_none() {
            let _ = child.kill();
        }
        let output = child.wait_with_output().expect("redis-cli output");
        assert!(
            status.is_some_and(|s| s.success()),
            "redis-cli --cluster create failed ({status:?}):\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let cluster = RedisCluster { nodes };
        cluster.wait_ok();
        cluster
    }

    /// Polls CLUSTER INFO on every node (up to 20 s: a readiness wait, not a timing check).
    fn wait_ok(&self) {
        for _ in 0..2000 {
            let ready = self.nodes.iter().all(|node| {
                let info: String = node.query(redis::cmd("CLUSTER").arg("INFO"));
                info.contains("cluster_state:ok")
                    && info.contains("cluster_slots_ok:16384")
                    && info.contains(&format!("cluster_known_nodes:{}", self.nodes.len()))
            });
            if ready {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("the cluster did not reach cluster_state:ok within 20 s");
    }

    /// Seed URLs for a cluster client.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// Runs `cmd` on every node; results in node order.
    pub fn query_all<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Vec<T> {
        self.nodes.iter().map(|n| n.query(cmd)).collect()
    }
}

/// A limiter on `server` running `algorithm` for `quota`, with a 5 s timeout and a
/// `ManualClock` (which only the deny cache reads: checks take Redis' time).
pub async fn manual_limiter(
    server: &RedisServer,
    quota: tollgate::Quota,
    algorithm: tollgate::redis::RedisAlgorithm,
) -> tollgate::redis::RedisLimiter<tollgate::ManualClock> {
    tollgate::redis::RedisLimiter::builder(server.url(), quota)
        .algorithm(algorithm)
        .timeout(Duration::from_secs(5))
        .clock(tollgate::ManualClock::new())
        .connect()
        .await
        .expect("connect to the test redis-server")
}
