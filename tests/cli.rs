//! The `tollgate` CLI end to end: `bench` JSON shape and sanity (no speed is asserted),
//! `simulate` against analytic admitted counts, and bad arguments → exit code 2.
#![cfg(feature = "cli")]

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

fn tollgate(args: &[&str]) -> Output {
    match Command::new(env!("CARGO_BIN_EXE_tollgate")).args(args).output() {
        Ok(output) => output,
        Err(e) => panic!("cannot run tollgate: {e}"),
    }
}

fn temp_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("tollgate-cli-test-{}-{name}", std::process::id()))
}

fn read_json(path: &PathBuf) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let _ = std::fs::remove_file(path);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("bad JSON: {e}\n{text}"))
}

/// Every number anywhere in the document is finite and not negative.
fn all_numbers_finite_nonnegative(v: &Value, at: &str) {
    match v {
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or(f64::NAN);
            assert!(x.is_finite() && x >= 0.0, "{at} = {x}");
        }
        Value::Array(items) => items
            .iter()
            .enumerate()
            .for_each(|(i, x)| all_numbers_finite_nonnegative(x, &format!("{at}[{i}]"))),
        Value::Object(map) => {
            map.iter().for_each(|(k, x)| all_numbers_finite_nonnegative(x, &format!("{at}.{k}")))
        }
        _ => {}
    }
}

fn positive(cell: &Value, field: &str) -> f64 {
    let x =
        cell.pointer(field).and_then(Value::as_f64).unwrap_or_else(|| panic!("{field} missing in {cell}"));
    assert!(x.is_finite() && x > 0.0, "{field} = {x} in {cell}");
    x
}

#[test]
fn bench_json_has_every_cell_and_sane_figures() {
    let json = temp_path("bench.json");
    let plot = temp_path("bench.svg");
    let out = tollgate(&[
        "bench",
        "--duration",
        "20ms",
        "--keys",
        "direct,1,10000",
        "--threads",
        "1,2",
        "--json",
        json.to_str().unwrap_or_default(),
        "--plot",
        plot.to_str().unwrap_or_default(),
    ]);
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("physical references"), "{stdout}");
    assert!(stdout.contains("governor"), "{stdout}");
    let svg = std::fs::read_to_string(&plot).unwrap_or_default();
    let _ = std::fs::remove_file(&plot);
    assert!(svg.starts_with("<svg") && svg.contains("throughput vs keys"), "plot: {svg:.200}");

    let doc = read_json(&json);
    all_numbers_finite_nonnegative(&doc, "$");
    positive(&doc, "/references/clock_read_ns");
    positive(&doc, "/references/cas_ns");
    positive(&doc, "/references/papaya_get_ns/10000");
    let cells = doc["cells"].as_array().cloned().unwrap_or_default();
    // 3 key counts × 2 thread counts × (tollgate + governor).
    assert_eq!(cells.len(), 12);
    for cell in &cells {
        for field in [
            "/ops_per_sec",
            "/ns_per_op",
            "/floor_ns",
            "/times_floor",
            "/latency_ns/p50",
            "/latency_ns/p99",
            "/latency_ns/p999",
            "/latency_ns/max",
            "/latency_ns/samples",
        ] {
            positive(cell, field);
        }
        let ops = positive(cell, "/ops");
        assert!(ops >= 1024.0, "at least one batch: {cell}");
        // Allow-all quota: nothing is denied.
        assert_eq!(cell["denied_share"].as_f64(), Some(0.0), "{cell}");
        let p = |f: &str| cell.pointer(f).and_then(Value::as_f64).unwrap_or(0.0);
        assert!(p("/latency_ns/p50") <= p("/latency_ns/p99") && p("/latency_ns/p99") <= p("/latency_ns/max"));
        match cell["library"].as_str() {
            Some("tollgate") => {
                positive(cell, "/ratio_vs_governor");
            }
            Some("governor") => assert!(cell["ratio_vs_governor"].is_null()),
            other => panic!("library {other:?}"),
        }
        if cell["keys"] == "10000" {
            positive(cell, "/bytes_per_key_rss");
            if cell["library"] == "tollgate" {
                // papaya: 16384 slots × 9 B / 10⁴ keys + one 32-byte heap entry per key.
                let est = positive(cell, "/bytes_per_key_estimate");
                assert!((est - (16384.0 * 9.0 / 10_000.0 + 32.0)).abs() < 1e-9, "{est}");
            }
        } else {
            assert!(cell["bytes_per_key_rss"].is_null(), "{cell}");
        }
    }
}

#[test]
fn bench_with_deny_ratio_and_zipf_reports_a_share() {
    let json = temp_path("deny.json");
    let out = tollgate(&[
        "bench",
        "--duration",
        "20ms",
        "--keys",
        "100",
        "--threads",
        "1",
        "--distribution",
        "zipf:1.1",
        "--deny-ratio",
        "0.5",
        "--clock",
        "cached",
        "--json",
        json.to_str().unwrap_or_default(),
    ]);
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let doc = read_json(&json);
    all_numbers_finite_nonnegative(&doc, "$");
    let cells = doc["cells"].as_array().cloned().unwrap_or_default();
    assert_eq!(cells.len(), 2);
    for cell in &cells {
        assert_eq!(cell["distribution"], "zipf:1.1");
        assert_eq!(cell["clock"], "cached");
        let share = cell["denied_share"].as_f64().unwrap_or(-1.0);
        assert!((0.0..=1.0).contains(&share), "{cell}");
        positive(cell, "/ops_per_sec");
    }
    positive(&doc, "/references/cached_clock_read_ns");
    // The quota was calibrated by pilots, and the report says so (and names any cell that missed).
    let notes = doc["notes"].as_array().cloned().unwrap_or_default();
    assert!(
        notes.iter().any(|n| n.as_str().is_some_and(|n| n.contains("calibrated by pilot runs"))),
        "{notes:?}"
    );
}

/// `--pin`: tollgate's keyed checks go through `KeyedLimiter::pin`; decisions are unchanged
/// (the calibrated deny share is reached), and the report says how it was measured.
#[test]
fn bench_pinned_checks_report_their_mode_and_deny_share() {
    let json = temp_path("pin.json");
    let out = tollgate(&[
        "bench",
        "--pin",
        "--duration",
        "50ms",
        "--keys",
        "direct,100",
        "--threads",
        "1,2",
        "--algorithm",
        "gcra,log",
        "--deny-ratio",
        "0.5",
        "--no-memory",
        "--json",
        json.to_str().unwrap_or_default(),
    ]);
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let doc = read_json(&json);
    all_numbers_finite_nonnegative(&doc, "$");
    let notes = doc["notes"].as_array().cloned().unwrap_or_default();
    assert!(notes.iter().any(|n| n.as_str().unwrap_or_default().starts_with("--pin")), "{notes:?}");
    let cells = doc["cells"].as_array().cloned().unwrap_or_default();
    // direct and 100 keys × 1 and 2 threads: gcra with governor (2 each), log alone (1 each).
    assert_eq!(cells.len(), 12);
    let mut denying = 0;
    for cell in cells.iter().filter(|c| c["library"] == "tollgate") {
        let share = cell["denied_share"].as_f64().unwrap_or(-1.0);
        assert!((0.0..1.0).contains(&share), "{cell}");
        denying += usize::from(share > 0.0);
        positive(cell, "/ops_per_sec");
    }
    // The quota is calibrated to the measured speed; a noisy machine may slow a cell below it,
    // but not every one.
    assert!(denying > 0, "no tollgate cell denied anything: {cells:?}");
}

fn simulate_json(args: &[&str]) -> Value {
    let json = temp_path(&format!("sim-{}.json", args.join("_").replace(['/', ':'], "-")));
    let mut all = vec!["simulate"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--json", json.to_str().unwrap_or_default()]);
    let out = tollgate(&all);
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("exact-log"));
    read_json(&json)
}

fn algo<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["algorithms"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["algorithm"] == name))
        .unwrap_or_else(|| panic!("{name} missing in {doc}"))
}

fn per_second_admitted(run: &Value) -> Vec<u64> {
    run["per_second"]
        .as_array()
        .map(|s| s.iter().filter_map(|x| x["admitted"].as_u64()).collect())
        .unwrap_or_default()
}

#[test]
fn simulate_overload_matches_analytic_counts() {
    // Quota 10/s (burst 10, T = 100 ms); an arrival every 10 ms for 10 s: 1000 arrivals.
    let doc = simulate_json(&[
        "--quota",
        "10/s",
        "--algorithm",
        "all",
        "--arrivals",
        "uniform:100/s",
        "--duration",
        "10s",
    ]);
    assert_eq!(doc["total_arrivals"], 1000);
    // Exact log: 10 in every window (t − 1 s, t] → exactly 10 a second, 100 in all.
    let log = algo(&doc, "exact-log");
    assert_eq!(per_second_admitted(log), vec![10; 10]);
    assert_eq!(log["denied"], 900);
    assert_eq!(log["peak_in_window"], 10);
    // GCRA: the 11 arrivals at 0..=100 ms pass (burst 10 plus the cell refilled at 100 ms; the
    // 12th would need TAT − now = 1200 − 110 > τ + T = 1000 ms), then one every 100 ms from
    // 200 ms: 8 more in the first second, then 10 a second.
    let gcra = algo(&doc, "gcra");
    assert_eq!(per_second_admitted(gcra), vec![19, 10, 10, 10, 10, 10, 10, 10, 10, 10]);
    assert_eq!(gcra["admitted"], 109);
    assert_eq!(gcra["delta_vs_log"], 9);
    assert_eq!(gcra["abs_deviation_vs_log"], 9);
    assert_eq!(gcra["peak_in_window"], 19); // 2n − 1
                                            // Fixed window [k s, k+1 s): the first 10 arrivals of each window. Sliding log: exact.
    for name in ["fixed", "log"] {
        let run = algo(&doc, name);
        assert_eq!(per_second_admitted(run), vec![10; 10], "{name}");
        assert_eq!(run["abs_deviation_vs_log"], 0, "{name}");
    }
    assert_eq!(algo(&doc, "log")["peak_in_window"], 10);
    // The sliding-window counter is an approximation: never above the limit in any window here.
    let sliding = algo(&doc, "sliding");
    assert!(sliding["peak_in_window"].as_u64().is_some_and(|p| p <= 10), "{sliding}");
}

/// With `;burst=`, GCRA's peak in a window is `burst + n − 1`, not `2n − 1`: a full bucket of 30
/// (33 arrivals pass in the first 320 ms while three cells come back), then one every 100 ms:
/// 39 in the first second. The footer states that bound, from the quota's own burst and count.
#[test]
fn simulate_footer_bounds_gcra_by_the_quotas_burst() {
    let args = [
        "--quota",
        "10/s;burst=30",
        "--algorithm",
        "gcra",
        "--arrivals",
        "uniform:100/s",
        "--duration",
        "5s",
    ];
    let doc = simulate_json(&args);
    let gcra = algo(&doc, "gcra");
    assert_eq!(per_second_admitted(gcra), vec![39, 10, 10, 10, 10]);
    assert_eq!(gcra["peak_in_window"], 39);
    assert_eq!(algo(&doc, "exact-log")["peak_in_window"], 10);
    assert_eq!((&doc["burst"], &doc["gcra_peak_bound"]), (&Value::from(30), &Value::from(39)));
    let footer = |args: &[&str]| {
        let mut all = vec!["simulate"];
        all.extend_from_slice(args);
        let out = tollgate(&all);
        assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.lines().last().unwrap_or_default().to_owned()
    };
    let text = footer(&args);
    assert!(text.contains("the exact log admits at most 10;"), "{text}");
    assert!(text.contains("GCRA with burst 30 and n = 10 can pass up to burst + n − 1 = 39"), "{text}");
    assert!(!text.contains("2n − 1"), "{text}");
    // Burst = count: the familiar 2n − 1, with its value.
    let text = footer(&[
        "--quota",
        "10/s",
        "--algorithm",
        "gcra",
        "--arrivals",
        "uniform:100/s",
        "--duration",
        "2s",
    ]);
    assert!(text.contains("GCRA with burst n = 10 can pass up to 2n − 1 = 19"), "{text}");
}

#[test]
fn simulate_underload_admits_everything() {
    let doc = simulate_json(&[
        "--quota",
        "10/s",
        "--algorithm",
        "gcra",
        "--arrivals",
        "uniform:5/s",
        "--duration",
        "10s",
    ]);
    for name in ["gcra", "exact-log"] {
        let run = algo(&doc, name);
        assert_eq!(run["admitted"], 50, "{name}");
        assert_eq!(run["denied"], 0, "{name}");
        assert_eq!(per_second_admitted(run), vec![5; 10], "{name}");
    }
}

#[test]
fn simulate_bursts_match_the_limit() {
    // 20 arrivals at once, every second: both admit exactly 10 of each burst.
    let doc = simulate_json(&[
        "--quota",
        "10/s",
        "--algorithm",
        "gcra",
        "--arrivals",
        "burst:20/1s",
        "--duration",
        "5s",
    ]);
    for name in ["gcra", "exact-log"] {
        let run = algo(&doc, name);
        assert_eq!(per_second_admitted(run), vec![10; 5], "{name}");
        assert_eq!(run["denied"], 50, "{name}");
    }
}

#[test]
fn simulate_all_skips_an_algorithm_that_cannot_take_the_quota() {
    // 5000 per second is above the sliding log's cap (4096): `all` runs the others and says
    // why the log is missing; asked for alone, the log is a usage error.
    let doc = simulate_json(&["--quota", "5000/s", "--arrivals", "uniform:100/s", "--duration", "2s"]);
    for name in ["gcra", "fixed", "sliding", "exact-log"] {
        assert_eq!(algo(&doc, name)["admitted"], 200, "{name}");
    }
    assert!(doc["algorithms"].as_array().is_some_and(|a| a.iter().all(|x| x["algorithm"] != "log")), "{doc}");
    let skipped = doc["skipped"].as_array().cloned().unwrap_or_default();
    assert_eq!(skipped.len(), 1, "{doc}");
    assert_eq!(skipped[0]["algorithm"], "log", "{doc}");
    assert!(skipped[0]["reason"].as_str().is_some_and(|s| s.contains("4096")), "{doc}");
    // Named, alone or in a list, it is a usage error.
    for named in ["log", "gcra,log"] {
        let out = tollgate(&["simulate", "--quota", "5000/s", "--algorithm", named]);
        assert_eq!(out.status.code(), Some(2), "{named}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("4096"), "{named}");
    }
}

#[test]
fn bad_arguments_exit_2_without_panicking() {
    let cases: &[&[&str]] = &[
        &[],
        &["frobnicate"],
        &["bench", "--threads", "0"],
        &["bench", "--threads", "two"],
        &["bench", "--keys", "0"],
        &["bench", "--keys", "1e40"],
        &["bench", "--distribution", "zipf:abc"],
        &["bench", "--distribution", "zipf:-1"],
        &["bench", "--distribution", "normal"],
        &["bench", "--deny-ratio", "2"],
        &["bench", "--deny-ratio", "NaN"],
        &["bench", "--duration", "-1s"],
        &["bench", "--duration", "0s"],
        &["bench", "--clock", "sundial"],
        &["bench", "--algorithm", "leaky"],
        &["bench", "--compare", "redis"],
        &["simulate", "--quota", "0/s"],
        &["simulate", "--quota", "abc"],
        &["simulate", "--quota", "1e9/s"],
        &["simulate", "--arrivals", "poisson:abc"],
        &["simulate", "--arrivals", "gaussian:5/s"],
        &["simulate", "--arrivals", "uniform:10000000/s", "--duration", "1h"],
        &["simulate", "--duration", "forever"],
    ];
    let huge = "9".repeat(100_000); // below the OS limit on one argument (128 KiB)
    let huge_case = ["simulate", "--quota", huge.as_str()];
    for args in cases.iter().copied().chain(std::iter::once(&huge_case[..])) {
        let out = tollgate(args);
        let args: String = args.join(" ").chars().take(80).collect();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args}: {stderr:.300}");
        assert!(stderr.contains("error") || stderr.contains("Usage:"), "{args}: {stderr:.300}");
        assert!(!stderr.contains("panicked"), "{args}: {stderr:.300}");
    }
}

#[test]
fn negative_values_reach_their_own_checks() {
    // Not clap's "unexpected argument '-1'": each option's parser explains the range.
    for (args, says) in [
        (&["bench", "--threads", "-1"][..], "thread"),
        (&["bench", "--keys", "-5"][..], "key"),
        (&["bench", "--deny-ratio", "-0.1"][..], "ratio"),
        (&["bench", "--duration", "-1s"][..], "duration"),
    ] {
        let out = tollgate(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr:.300}");
        assert!(!stderr.contains("unexpected argument"), "{args:?}: {stderr:.300}");
        assert!(stderr.to_lowercase().contains(says), "{args:?}: {stderr:.300}");
    }
}

#[test]
fn an_unwritable_output_path_fails_before_the_run() {
    let missing = std::env::temp_dir().join("tollgate-no-such-dir-4f1c").join("x.json");
    let missing = missing.to_str().unwrap_or_default();
    for args in [
        &["bench", "--duration", "30s", "--keys", "direct", "--threads", "1", "--json", missing][..],
        &["bench", "--duration", "30s", "--keys", "direct", "--threads", "1", "--plot", missing][..],
        &["simulate", "--duration", "1h", "--json", missing][..],
    ] {
        let started = std::time::Instant::now();
        let out = tollgate(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_ne!(out.status.code(), Some(0), "{args:?}: {stderr:.300}");
        assert!(stderr.contains("cannot write"), "{args:?}: {stderr:.300}");
        // A bench run (30 s per cell, warm-up and governor's cell on top) would not have
        // finished: the path was refused first.
        assert!(started.elapsed() < std::time::Duration::from_secs(20), "{args:?}");
    }
}
