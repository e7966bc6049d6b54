//! Bytes per key: populate `n` keys in a fresh process and report the RSS growth (Linux
//! `/proc/self/status`). A fresh process keeps earlier cells' freed memory out of the figure.

use std::process::Command;

use crate::spec::{AlgoKind, ClockKind, Keys};
use crate::subjects::{self, Subject, Visitor};

/// Hidden subcommand the parent runs in a child process.
pub(crate) const PROBE_SUBCOMMAND: &str = "mem-probe";

/// Resident set size of this process, in bytes.
fn rss_bytes() -> Result<u64, String> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("cannot read /proc/self/status: {e}"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .ok_or_else(|| "no VmRSS line in /proc/self/status".to_string())?;
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("cannot parse {line:?}"))?;
    Ok(kb * 1024)
}

/// Reads the RSS while the populated limiter is still alive.
struct RssNow;

impl Visitor for RssNow {
    type Out = Result<u64, String>;
    fn visit<S: Subject>(self, subject: &S) -> Self::Out {
        let rss = rss_bytes();
        std::hint::black_box(subject);
        rss
    }
}

/// Child side: populates `n` keys and prints the RSS growth per key.
pub(crate) fn probe(library: &str, algorithm: &str, n: usize) -> Result<f64, String> {
    let algo = AlgoKind::ALL
        .into_iter()
        .find(|a| a.name() == algorithm && a.available())
        .ok_or_else(|| format!("unknown algorithm {algorithm:?}"))?;
    let keys = crate::measure::key_list(n, 0x3e3e ^ n as u64);
    let quota = subjects::allow_all_quota(algo)?;
    let before = rss_bytes()?;
    let after = match library {
        "tollgate" => {
            subjects::with_tollgate(algo, ClockKind::Quanta, Keys::Keyed(n), false, quota, &keys, RssNow)?
        }
        "governor" => subjects::with_governor(ClockKind::Quanta, Keys::Keyed(n), quota, &keys, RssNow)?,
        other => return Err(format!("unknown library {other:?}")),
    }?;
    Ok(after.saturating_sub(before) as f64 / n as f64)
}

/// Parent side: runs [`probe`] in a child process of this executable.
pub(crate) fn probe_in_child(library: &str, algorithm: &str, n: usize) -> Result<f64, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find own executable: {e}"))?;
    let output = Command::new(exe)
        .args([PROBE_SUBCOMMAND, "--library", library, "--algorithm", algorithm, "--keys", &n.to_string()])
        .output()
        .map_err(|e| format!("cannot run memory probe: {e}"))?;
    if !output.status.success() {
        return Err(format!("memory probe failed: {}", String::from_utf8_lossy(&output.stderr).trim()));
    }
    let text = String::from_utf8_lossy(&output.stdout);
    text.trim().parse::<f64>().map_err(|_| format!("memory probe printed {text:?}"))
}
