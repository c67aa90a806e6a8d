//! Alerts against a real SMTP sink (Postfix's `smtp-sink`): content, digest batching, rate
//! limit, a dead relay that neither blocks `raise` nor loses the incident, queue overflow.

mod audit_support;

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use markgate::alert::{
    AlertConfig, AlertHandle, AlertMode, AlertSettings, Incident, IncidentKind, Raised,
};
use markgate::audit::record::Record;
use markgate::audit::{self, AuditEvent, AuditHandle, SyncMode};

struct Sink {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Sink {
    /// Start smtp-sink on a free loopback port, dumping each mail into `dir`; `None` (with a
    /// printed reason) when the tool is missing outside CI.
    fn start(dir: &Path) -> Option<Sink> {
        let tool = ["/usr/sbin/smtp-sink", "/usr/lib/postfix/sbin/smtp-sink"]
            .into_iter()
            .find(|p| Path::new(p).exists());
        let Some(tool) = tool else {
            assert!(
                std::env::var_os("CI").is_none(),
                "smtp-sink is required in CI"
            );
            println!("SKIP: smtp-sink (Postfix) is not installed");
            return None;
        };
        let port = free_port();
        let dump = dir.join("mail");
        std::fs::create_dir_all(&dump).expect("mkdir");
        // smtp-sink drops privileges to postfix, which must be able to write the dumps.
        let _ = Command::new("chmod").arg("0777").arg(&dump).status();
        let child = Command::new(tool)
            .arg("-u")
            .arg("postfix")
            .arg("-d")
            .arg(format!("{}/msg.", dump.display()))
            .arg(format!("127.0.0.1:{port}"))
            .arg("10")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start smtp-sink");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "smtp-sink did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(Sink {
            child,
            dir: dump,
            port,
        })
    }

    fn mails(&self) -> Vec<String> {
        let mut out: Vec<(std::time::SystemTime, String)> = std::fs::read_dir(&self.dir)
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .filter_map(|e| {
                        let m = e.metadata().ok()?.modified().ok()?;
                        Some((m, std::fs::read_to_string(e.path()).ok()?))
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out.into_iter().map(|(_, s)| s).collect()
    }

    async fn wait_for(&self, n: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mails = self.mails();
            // A dump is complete once smtp-sink has written the end of the message.
            if mails.len() >= n && mails.iter().all(|m| m.contains("audit trail holds")) {
                return mails;
            }
            assert!(
                Instant::now() < deadline,
                "expected {n} mails, have {}",
                mails.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

fn settings(port: u16, mode: AlertMode) -> AlertSettings {
    let cfg = AlertConfig {
        enabled: true,
        to: vec!["soc@dept.gov.uk".into(), "duty-officer@dept.gov.uk".into()],
        from: "markgate@gw1.dept.gov.uk".into(),
        mode,
        ..AlertConfig::default()
    };
    let mut s = AlertSettings::from_config(&cfg).expect("settings");
    s.relay_port = port;
    s.relay_timeout = Duration::from_secs(5);
    s.window = Duration::from_millis(800);
    s.retry_initial = Duration::from_millis(100);
    s.retry_max = Duration::from_millis(400);
    s.give_up_after = Duration::from_secs(30);
    s
}

fn incident(n: u32) -> Incident {
    let mut i = Incident::new(
        IncidentKind::BlockedAutoForward,
        format!("OFFICIAL-SENSITIVE mail auto-forwarded to gmail.com blocked (#{n})"),
    );
    i.queue_id = Some(format!("4QAB{n}"));
    i.message_id = Some(format!("<m{n}@dept.gov.uk>"));
    i.sender = Some("alice@dept.gov.uk".into());
    i.recipients = vec!["alice.home@gmail.com".into()];
    i.level = Some("OFFICIAL-SENSITIVE".into());
    i.rule = Some("forward.block-lower".into());
    i.audit_seq = Some(41 + u64::from(n));
    i.details =
        vec!["forward signals: resent-headers, x-ms-exchange-inbox-rules (7.5 >= 5)".into()];
    i
}

async fn audit_in(dir: &Path) -> (AuditHandle, PathBuf) {
    let path = dir.join("audit.jsonl");
    let h = audit::start(&audit_support::config(&path, SyncMode::Batch)).expect("audit");
    (h, path)
}

fn audit_events(path: &Path) -> Vec<AuditEvent> {
    audit_support::lines(path)
        .iter()
        .map(|l| Record::from_line(l.as_bytes()).expect("record").event)
        .collect()
}

#[tokio::test]
async fn immediate_alert_arrives_with_the_right_content() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(sink) = Sink::start(dir.path()) else {
        return;
    };
    let (audit, audit_path) = audit_in(dir.path()).await;
    let alerts = AlertHandle::spawn(
        settings(sink.port, AlertMode::Immediate),
        Some(audit.clone()),
    );
    assert_eq!(alerts.raise(incident(1)), Raised::Queued);
    let mails = sink.wait_for(1).await;
    let m = &mails[0].replace("\n ", " "); // unfold headers
    assert!(
        m.contains("Content-Transfer-Encoding: 7bit"),
        "readable text, not QP: {m}"
    );
    assert!(m.contains("X-Mail-Args: <markgate@gw1.dept.gov.uk>"), "{m}");
    assert!(m.contains("X-Rcpt-Args: <soc@dept.gov.uk>"), "{m}");
    assert!(m.contains("X-Rcpt-Args: <duty-officer@dept.gov.uk>"), "{m}");
    assert!(m.contains("Subject: [markgate] blocked auto-forward of marked mail: OFFICIAL-SENSITIVE mail auto-forwarded to gmail.com blocked (#1)"), "{m}");
    for needle in [
        "queue id:   4QAB1",
        "message-id: <m1@dept.gov.uk>",
        "sender:     alice@dept.gov.uk",
        "recipients: alice.home@gmail.com",
        "level:      OFFICIAL-SENSITIVE",
        "rule:       forward.block-lower",
        "audit seq:  42",
        "forward signals: resent-headers",
    ] {
        assert!(m.contains(needle), "missing {needle:?} in {m}");
    }
    alerts.shutdown().await;
    audit.shutdown().await.expect("shutdown");
    let delivered: Vec<_> = audit_events(&audit_path)
        .into_iter()
        .filter_map(|e| match e {
            AuditEvent::AlertDelivered(d) => Some(d),
            _ => None,
        })
        .collect();
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0].incidents, 1);
    assert_eq!(delivered[0].kinds, vec![IncidentKind::BlockedAutoForward]);
    // The record names the incident it carried, so the evidence report can measure the time
    // from the incident to this delivery from the trail alone.
    let refs = &delivered[0].incident_refs;
    assert_eq!(refs.len(), 1, "{refs:?}");
    assert_eq!(refs[0].kind, Some(IncidentKind::BlockedAutoForward));
    assert_eq!(refs[0].audit_seq, Some(42));
    assert_eq!(refs[0].rule.as_deref(), Some("forward.block-lower"));
    assert!(
        refs[0].raised.ends_with('Z') && refs[0].raised.len() >= 20,
        "{refs:?}"
    );
    assert!(
        m.contains(&format!("Message-ID: {}", delivered[0].message_id)),
        "{m}"
    );
    assert_eq!(
        alerts
            .stats()
            .mails_sent
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}

#[tokio::test]
async fn digest_mode_batches_a_window() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(sink) = Sink::start(dir.path()) else {
        return;
    };
    let mut s = settings(sink.port, AlertMode::Digest);
    s.window = Duration::from_secs(2);
    let alerts = AlertHandle::spawn(s, None);
    // Incidents trickle in within one window (2 s from the first).
    for n in 1..=3 {
        assert_eq!(alerts.raise(incident(n)), Raised::Queued);
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let mut forged = Incident::new(
        IncidentKind::ForgedLabel,
        "SECRET label on mail from outside",
    );
    forged.sender = Some("mallory@example.com".into());
    alerts.raise(forged);
    let mails = sink.wait_for(1).await;
    // Give a second mail the chance to appear if batching were broken.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mails_after = sink.mails();
    assert_eq!(mails_after.len(), 1, "one digest for the window");
    let m = &mails[0].replace("\n ", " ");
    assert!(
        m.contains("Subject: [markgate] digest: 4 incidents (blocked_auto_forward, forged_label)"),
        "{m}"
    );
    for n in 1..=3 {
        assert!(m.contains(&format!("queue id:   4QAB{n}")), "{m}");
    }
    assert!(m.contains("incident 4 of 4"), "{m}");
    assert!(m.contains("sender:     mallory@example.com"), "{m}");
    alerts.shutdown().await;
}

#[tokio::test]
async fn rate_limit_folds_the_rest_into_one_mail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(sink) = Sink::start(dir.path()) else {
        return;
    };
    let mut s = settings(sink.port, AlertMode::Immediate);
    s.max_mails = 2;
    let alerts = AlertHandle::spawn(s, None);
    for n in 1..=5 {
        alerts.raise(incident(n));
    }
    let mails = sink.wait_for(2).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(sink.mails().len(), 2, "the rate limit allows two mails");
    let digest = mails.iter().find(|m| m.contains("digest: 4 incidents"));
    assert!(digest.is_some(), "{mails:?}");
    alerts.shutdown().await;
}

#[tokio::test]
async fn dead_relay_neither_blocks_nor_loses() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (audit, audit_path) = audit_in(dir.path()).await;
    let dead_port = free_port(); // bound and released: connections are refused
    let mut s = settings(dead_port, AlertMode::Immediate);
    s.give_up_after = Duration::from_millis(1500);
    let alerts = AlertHandle::spawn(s, Some(audit.clone()));
    // raise() is a synchronous queue push: it returns at once whatever the relay does.
    assert_eq!(alerts.raise(incident(7)), Raised::Queued);
    let deadline = Instant::now() + Duration::from_secs(20);
    while alerts
        .stats()
        .undeliverable
        .load(std::sync::atomic::Ordering::Relaxed)
        == 0
    {
        assert!(
            Instant::now() < deadline,
            "the incident must be given up, not forgotten"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        alerts
            .stats()
            .failed_attempts
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 2,
        "retried"
    );
    alerts.shutdown().await;
    audit.shutdown().await.expect("shutdown");
    let undeliverable: Vec<_> = audit_events(&audit_path)
        .into_iter()
        .filter_map(|e| match e {
            AuditEvent::AlertUndeliverable(u) => Some(u),
            _ => None,
        })
        .collect();
    assert_eq!(undeliverable.len(), 1);
    assert_eq!(
        undeliverable[0].incident,
        incident_with_time(&undeliverable[0].incident, 7)
    );
    assert!(undeliverable[0].attempts >= 2);
    assert!(
        undeliverable[0].last_error.contains(&dead_port.to_string()),
        "{:?}",
        undeliverable[0]
    );
}

fn incident_with_time(seen: &Incident, n: u32) -> Incident {
    let mut i = incident(n);
    i.time = seen.time.clone();
    i
}

#[tokio::test]
async fn overflow_is_counted_and_reported_never_blocking() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (audit, audit_path) = audit_in(dir.path()).await;
    let mut s = settings(free_port(), AlertMode::Digest);
    s.queue = 2;
    s.give_up_after = Duration::from_millis(500);
    let alerts = AlertHandle::spawn(s, Some(audit.clone()));
    // On this single-threaded runtime the task cannot drain between these calls.
    let outcomes: Vec<Raised> = (0..10).map(|n| alerts.raise(incident(n))).collect();
    assert_eq!(outcomes.iter().filter(|o| **o == Raised::Queued).count(), 2);
    assert_eq!(
        outcomes.iter().filter(|o| **o == Raised::Dropped).count(),
        8
    );
    alerts.shutdown().await;
    audit.shutdown().await.expect("shutdown");
    let events = audit_events(&audit_path);
    let dropped: u64 = events
        .iter()
        .filter_map(|e| match e {
            AuditEvent::AlertsDropped(d) => Some(d.count),
            _ => None,
        })
        .sum();
    assert_eq!(dropped, 8);
    let undeliverable = events
        .iter()
        .filter(|e| matches!(e, AuditEvent::AlertUndeliverable(_)))
        .count();
    assert_eq!(
        undeliverable, 2,
        "the queued ones are given up loudly, not lost"
    );
}

#[test]
fn config_defaults_and_errors() {
    let c = AlertConfig::default();
    assert!(!c.enabled);
    assert_eq!(c.relay.host, "127.0.0.1");
    assert_eq!(c.relay.port, 25);
    let parsed: AlertConfig = toml::from_str(
        "enabled = true\nto = [\"soc@x.gov.uk\"]\nmode = \"digest\"\nwindow = 60\n[relay]\nstarttls = \"required\"\nport = 587\n",
    )
    .expect("toml");
    let s = AlertSettings::from_config(&parsed).expect("valid");
    assert_eq!(s.mode, AlertMode::Digest);
    assert_eq!(s.window, Duration::from_secs(60));
    assert_eq!(s.relay_port, 587);

    let err = AlertSettings::from_config(&AlertConfig {
        enabled: true,
        ..AlertConfig::default()
    })
    .expect_err("to is required");
    assert!(err.contains("alerts.to"), "{err}");
    let bad = AlertConfig {
        to: vec!["not an address".into()],
        ..AlertConfig::default()
    };
    assert!(
        AlertSettings::from_config(&bad)
            .expect_err("bad")
            .contains("alerts.to")
    );
    let endless = AlertConfig {
        to: vec!["soc@x.gov.uk".into()],
        window: u64::MAX,
        ..AlertConfig::default()
    };
    let err = AlertSettings::from_config(&endless).expect_err("a window past a year");
    assert!(
        err.contains("alerts.window") && err.contains("at most"),
        "{err}"
    );
    let unknown = toml::from_str::<AlertConfig>("enabeld = true\n").expect_err("unknown key");
    assert!(unknown.to_string().contains("enabeld"), "{unknown}");
    assert_eq!(AlertHandle::disabled().raise(incident(1)), Raised::Disabled);
}

#[tokio::test]
async fn audit_outage_raises_one_incident() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (audit, path) = audit_in(dir.path()).await;
    let mut s = settings(free_port(), AlertMode::Immediate);
    s.give_up_after = Duration::from_secs(600);
    let alerts = AlertHandle::spawn(s, None);
    let watcher = markgate::alert::watch_audit_health(audit.health(), alerts.clone());
    audit
        .record(AuditEvent::AlertsDropped(Default::default()))
        .await
        .expect("ack");
    std::fs::rename(&path, dir.path().join("audit.jsonl.1")).expect("rename");
    std::fs::create_dir(&path).expect("mkdir");
    let _ = audit.reopen().await;
    for _ in 0..3 {
        assert!(
            audit
                .record(AuditEvent::AlertsDropped(Default::default()))
                .await
                .is_err()
        );
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while alerts
        .stats()
        .raised
        .load(std::sync::atomic::Ordering::Relaxed)
        == 0
    {
        assert!(
            Instant::now() < deadline,
            "an audit_failure incident is raised"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        alerts
            .stats()
            .raised
            .load(std::sync::atomic::Ordering::Relaxed),
        1,
        "one per outage"
    );
    audit.shutdown().await.expect("shutdown");
    drop(audit);
    let _ = tokio::time::timeout(Duration::from_secs(5), watcher).await;
    alerts.shutdown().await;
}
