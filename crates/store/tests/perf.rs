//! Micro-benchmarks of the INVITE-path lookups and of call-record writes (not run by default).
//!
//! `cargo test --release -p hookflash-store --test perf -- --ignored --nocapture --test-threads 1`

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use hookflash_config::TrunkSpec;
use hookflash_store::{CallRecord, LegRecord, Registration, Store};

/// CPU time (user + system, all threads) of this process so far, in seconds.
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses): utime is the 12th, stime the
    // 13th of those, in clock ticks (100 per second on Linux).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn temp_dir(tag: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("hookflash-perf-{tag}-{}", std::process::id()))
}

fn record(id: &str) -> CallRecord {
    let leg = |n: &str, role: &str| LegRecord {
        id: format!("{id}-{n}"),
        call_id: id.to_string(),
        role: role.into(),
        direction: "in".into(),
        from: "sip:201@acme.local".into(),
        to: "sip:202@acme.local".into(),
        contact: None,
        started_at: 1,
        answered_at: Some(2),
        ended_at: 3,
        end_cause: "normal".into(),
        sip_status: 200,
    };
    CallRecord {
        id: id.to_string(),
        account_id: Some("acc".into()),
        from: "sip:201@acme.local".into(),
        to: "sip:202@acme.local".into(),
        direction: "inbound".into(),
        started_at: 1,
        answered_at: Some(2),
        ended_at: 3,
        duration_ms: 1,
        end_cause: "normal".into(),
        sip_status: 200,
        legs: vec![leg("a", "caller"), leg("b", "callee")],
    }
}

/// The reads `run_inbound` does for an inbound trunk call to a DID, `N` times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn perf_invite_lookups() {
    const N: usize = 10_000;
    let dir = temp_dir("lookups");
    let _ = std::fs::remove_dir_all(&dir);
    let s = Store::open(&dir).await.unwrap();
    let a = s.create_account("acme", "acme.local").await.unwrap();
    let u = s.add_user(&a.id, "201", "pw", None).await.unwrap();
    s.add_number(&a.id, "+4930123456", "201").await.unwrap();
    let spec = TrunkSpec {
        name: "carrier".into(),
        host: "127.0.0.1".into(),
        port: 5080,
        transport: "udp".into(),
        username: None,
        password: None,
    };
    s.add_trunk(&a.id, &spec).await.unwrap();
    s.upsert_registration(&Registration {
        user_id: u.id.clone(),
        contact: "sip:201@127.0.0.1:5070".into(),
        source: "127.0.0.1:5070".into(),
        transport: "udp".into(),
        expires_at: i64::MAX / 2,
        call_id: "x".into(),
        cseq: 1,
        user_agent: None,
    })
    .await
    .unwrap();
    let ip: IpAddr = "127.0.0.1".parse().unwrap();
    let c0 = cpu_secs();
    let t0 = Instant::now();
    for _ in 0..N {
        let t = s.trunk_by_source(ip, 5080).await.unwrap().unwrap();
        let acc = s.account_by_id(&t.account_id).await.unwrap().unwrap();
        assert!(s
            .user_by_extension(&acc.id, "4930123456")
            .await
            .unwrap()
            .is_none());
        let (_, user) = s.lookup_number("4930123456").await.unwrap().unwrap();
        s.outbound_trunk(&acc.id).await.unwrap().unwrap();
        assert_eq!(s.registrations(&user.id, 1_000).await.unwrap().len(), 1);
    }
    let el = t0.elapsed();
    let cpu = cpu_secs() - c0;
    println!(
        "PERF invite lookups: {N} x 6 reads in {:.1} ms = {:.2} us per INVITE (CPU {:.2} us per INVITE)",
        el.as_secs_f64() * 1e3,
        el.as_secs_f64() * 1e6 / N as f64,
        cpu * 1e6 / N as f64
    );
    s.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// `N` call records written by `C` concurrent callers (each awaits its own write).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn perf_call_records() {
    call_records(10_000, 64).await;
}

/// The same with one caller at a time: no company to batch with (latency of a lone write).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn perf_call_records_sequential() {
    call_records(2_000, 1).await;
}

async fn call_records(n: usize, callers: usize) {
    let dir = temp_dir(&format!("records-{callers}"));
    let _ = std::fs::remove_dir_all(&dir);
    let s = Arc::new(Store::open(&dir).await.unwrap());
    let c0 = cpu_secs();
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..callers {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            for i in (c..n).step_by(callers) {
                s.insert_call_record(&record(&format!("call-{i}")))
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let el = t0.elapsed();
    let cpu = cpu_secs() - c0;
    println!(
        "PERF call records: {n} records from {callers} concurrent callers in {:.1} ms = {:.0} records/s, \
         {:.1} us wall and {:.1} us CPU per record",
        el.as_secs_f64() * 1e3,
        n as f64 / el.as_secs_f64(),
        el.as_secs_f64() * 1e6 / n as f64,
        cpu * 1e6 / n as f64
    );
    assert_eq!(s.call_history(None, 20_000).await.unwrap().len(), n);
    s.close().await;
    let _ = std::fs::remove_dir_all(&dir);
}
