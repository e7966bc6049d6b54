//! The Redis limiter over TLS (`rediss://`) against a real `redis-server` that accepts only TLS:
//! a private CA generated at test time (rcgen) is trusted through
//! `tls_root_certificates`; untrusted servers are refused; mutual TLS with a client certificate;
//! typed errors for unusable TLS settings.
#![cfg(feature = "redis-tls")]

mod redis_support;

use std::path::PathBuf;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use redis_support::{RedisServer, TlsFiles};
use tollgate::redis::{RedisAlgorithm, RedisLimiter, SetupError};
use tollgate::{Origin, Quota};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// A CA, a server certificate (for 127.0.0.1 and localhost unless told otherwise), and a client certificate, all signed by
/// the CA; PEM files in a temporary directory removed on drop.
struct Pki {
    dir: PathBuf,
    ca_pem: String,
    client_cert_pem: String,
    client_key_pem: String,
}

impl Pki {
    fn new(tag: &str) -> Pki {
        Pki::for_names(tag, &["127.0.0.1", "localhost"])
    }

    /// A PKI whose server certificate names only `names`.
    fn for_names(tag: &str, names: &[&str]) -> Pki {
        let dir = std::env::temp_dir().join(format!("tollgate-tls-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, format!("tollgate test CA {tag}"));
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        let ca_key = KeyPair::generate().unwrap();
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);

        let leaf = |names: Vec<String>, usages: Vec<ExtendedKeyUsagePurpose>| {
            let mut params = CertificateParams::new(names).unwrap();
            params.distinguished_name.push(DnType::CommonName, "tollgate test");
            params.extended_key_usages = usages;
            let key = KeyPair::generate().unwrap();
            let cert = params.signed_by(&key, &issuer).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let (server_cert, server_key) =
            // Client use too: cluster nodes present it to each other on the TLS cluster bus.
            leaf(
                names.iter().map(|n| n.to_string()).collect(),
                vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth],
            );
        let (client_cert_pem, client_key_pem) =
            leaf(vec!["client.test".into()], vec![ExtendedKeyUsagePurpose::ClientAuth]);
        let ca_pem = ca_cert.pem();
        std::fs::write(dir.join("ca.crt"), &ca_pem).unwrap();
        std::fs::write(dir.join("server.crt"), server_cert).unwrap();
        std::fs::write(dir.join("server.key"), server_key).unwrap();
        Pki { dir, ca_pem, client_cert_pem, client_key_pem }
    }

    fn server_files(&self, auth_clients: bool) -> TlsFiles {
        TlsFiles {
            cert: self.dir.join("server.crt"),
            key: self.dir.join("server.key"),
            ca: self.dir.join("ca.crt"),
            auth_clients,
        }
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn quota() -> Quota {
    Quota::per_day(2).unwrap()
}

/// Every algorithm over TLS with the private CA trusted: exact decisions, peek, reset,
/// check_many, and the state really lands in the TLS-only server.
#[test]
fn rediss_with_a_private_ca() {
    let pki = Pki::new("ca");
    let server = RedisServer::start_tls(pki.server_files(false));
    assert!(server.url().starts_with("rediss://127.0.0.1:"));
    rt().block_on(async {
        for algorithm in [
            RedisAlgorithm::Gcra,
            RedisAlgorithm::FixedWindow,
            RedisAlgorithm::SlidingWindow,
            RedisAlgorithm::SlidingLog,
        ] {
            let redis = RedisLimiter::builder(server.url(), quota())
                .algorithm(algorithm)
                .tls_root_certificates(pki.ca_pem.as_bytes())
                .timeout(Duration::from_secs(5))
                .connect()
                .await
                .unwrap();
            let mut got = Vec::new();
            for _ in 0..3 {
                let d = redis.check(b"alice", 1).await.unwrap();
                got.push((d.is_allowed(), d.remaining(), d.origin()));
            }
            let expected = [(true, 1, Origin::Remote), (true, 0, Origin::Remote), (false, 0, Origin::Remote)];
            assert_eq!(got, expected, "{algorithm:?}");
            let exists: i64 = server.query(redis::cmd("EXISTS").arg(redis.redis_key(b"alice")));
            assert_eq!(exists, 1, "{algorithm:?}");
            assert!(!redis.peek(b"alice").await.unwrap().is_allowed());
            redis.reset(b"alice").await.unwrap();
            let many = redis.check_many(&["alice", "bob", "alice", "alice"], 1).await;
            let many: Vec<bool> = many.into_iter().map(|r| r.unwrap().is_allowed()).collect();
            assert_eq!(many, [true, true, true, false], "{algorithm:?}");
        }
    });
}

/// Without the private CA (public webpki roots only), trusting another CA, or with a certificate
/// for another name, the server is refused: a typed connection error, not a hang or a panic.
#[test]
fn untrusted_server_certificate_is_refused() {
    let pki = Pki::new("untrusted");
    let other = Pki::new("other");
    let server = RedisServer::start_tls(pki.server_files(false));
    rt().block_on(async {
        let public_roots =
            RedisLimiter::builder(server.url(), quota()).timeout(Duration::from_secs(5)).connect().await;
        assert!(
            matches!(&public_roots, Err(SetupError::Connect { reason }) if reason.contains("certificate"))
        );
        let wrong_ca = RedisLimiter::builder(server.url(), quota())
            .tls_root_certificates(other.ca_pem.as_bytes())
            .timeout(Duration::from_secs(5))
            .connect()
            .await;
        assert!(matches!(&wrong_ca, Err(SetupError::Connect { reason }) if reason.contains("certificate")));
        // The right CA but a name the certificate does not carry.
        let elsewhere = Pki::for_names("elsewhere", &["redis.test"]);
        let server = RedisServer::start_tls(elsewhere.server_files(false));
        let wrong_name = RedisLimiter::builder(server.url(), quota())
            .tls_root_certificates(elsewhere.ca_pem.as_bytes())
            .timeout(Duration::from_secs(2))
            .connect()
            .await;
        assert!(
            matches!(&wrong_name, Err(SetupError::Connect { reason }) if reason.contains("certificate")),
            "{wrong_name:?}"
        );
    });
}

/// Mutual TLS: a server with `tls-auth-clients yes` serves a client presenting a certificate
/// from the CA, and refuses one without (at connect or at its first call, depending on when the
/// TLS 1.3 alert arrives; either way a typed error).
#[test]
fn mutual_tls_client_certificate() {
    let pki = Pki::new("mtls");
    let server = RedisServer::start_tls(pki.server_files(true));
    rt().block_on(async {
        let redis = RedisLimiter::builder(server.url(), quota())
            .tls_root_certificates(pki.ca_pem.as_bytes())
            .tls_client_certificate(pki.client_cert_pem.as_bytes(), pki.client_key_pem.as_bytes())
            .timeout(Duration::from_secs(5))
            .connect()
            .await
            .unwrap();
        let d = redis.check(b"k", 2).await.unwrap();
        assert_eq!((d.is_allowed(), d.remaining()), (true, 0));

        let anonymous = RedisLimiter::builder(server.url(), quota())
            .tls_root_certificates(pki.ca_pem.as_bytes())
            .timeout(Duration::from_secs(2))
            .connect()
            .await;
        match anonymous {
            Err(SetupError::Connect { .. }) | Err(SetupError::Timeout { .. }) => {}
            Ok(limiter) => {
                let r = limiter.check(b"k", 1).await;
                assert!(r.is_err(), "{r:?}");
            }
            Err(other) => panic!("unexpected error {other:?}"),
        }
    });
}

/// Unusable TLS settings are typed setup errors.
#[test]
fn bad_tls_settings_are_typed_errors() {
    rt().block_on(async {
        let bad_key = RedisLimiter::builder("rediss://127.0.0.1:1/", quota())
            .tls_client_certificate("not a certificate", "not a key")
            .connect()
            .await;
        assert!(matches!(bad_key, Err(SetupError::Tls { .. })), "{bad_key:?}");
        let plain_url = RedisLimiter::builder("redis://127.0.0.1:1/", quota())
            .tls_root_certificates("-----BEGIN CERTIFICATE-----\n")
            .connect()
            .await;
        assert!(matches!(plain_url, Err(SetupError::Tls { .. })), "{plain_url:?}");
    });
}

/// A Redis Cluster that speaks only TLS (clients and bus), with both features: the cluster
/// client uses the private CA for every node it discovers.
#[cfg(feature = "redis-cluster")]
#[test]
fn tls_cluster() {
    let pki = Pki::new("cluster");
    let cluster = redis_support::RedisCluster::start_tls(3, pki.server_files(false));
    assert!(cluster.urls().iter().all(|u| u.starts_with("rediss://")));
    rt().block_on(async {
        let redis = RedisLimiter::cluster_builder(cluster.urls(), quota())
            .tls_root_certificates(pki.ca_pem.as_bytes())
            .timeout(Duration::from_secs(5))
            .connect()
            .await
            .unwrap();
        let keys: Vec<String> = (0..60).map(|i| format!("k{i}")).collect();
        for expected in [(true, 1), (true, 0)] {
            let got: Vec<(bool, u64)> = redis
                .check_many(&keys, 1)
                .await
                .into_iter()
                .map(|r| r.map(|d| (d.is_allowed(), d.remaining())).unwrap())
                .collect();
            assert_eq!(got, vec![expected; keys.len()]);
        }
        for key in &keys {
            assert!(!redis.check(key.as_bytes(), 1).await.unwrap().is_allowed());
        }
        let counts: Vec<i64> = cluster.query_all(&redis::cmd("DBSIZE"));
        assert_eq!(counts.iter().sum::<i64>(), 60);
        assert!(counts.iter().all(|&c| c > 0), "{counts:?}");
    });
}
