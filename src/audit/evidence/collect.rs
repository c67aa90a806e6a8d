//! The streaming pass: one record at a time into running tallies, so memory depends on the
//! number of distinct days, levels, rules, senders (capped) and open incidents, never on the
//! number of records.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{
    ChainResult, ControlRow, Evidence, INCIDENT_BOUND_SECS, KnownPolicy, PolicyEvent, PolicyPeriod,
    TOP_N, TrailHealth, percentile,
};
use crate::alert::IncidentKind;
use crate::audit::event::{AuditEvent, IncidentRef};
use crate::audit::record::{Cause, Edit, MessageRecord, Mode, RecipientStatus, Record, Verdict};
use crate::policy::Control;

/// Distinct refused senders tallied exactly; later new ones count as `(others)`, so a trail
/// with millions of distinct refused senders cannot exhaust memory.
pub const SENDER_CAP: usize = 100_000;

/// The outcomes of the per-day chart, in stacking order.
pub const OUTCOMES: [&str; 7] = [
    "accepted",
    "recipients removed",
    "rejected",
    "tempfailed",
    "quarantined",
    "discarded",
    "shadow",
];

/// A set of controls as bits (there are fewer than 16).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Mask(u16);

impl Mask {
    fn with(self, c: Control) -> Mask {
        Mask(self.0 | 1 << index(c))
    }
    fn union(self, o: Mask) -> Mask {
        Mask(self.0 | o.0)
    }
    fn controls(self) -> impl Iterator<Item = Control> {
        Control::ALL
            .into_iter()
            .filter(move |c| self.0 & (1 << index(*c)) != 0)
    }
}

fn index(c: Control) -> usize {
    Control::ALL.iter().position(|x| *x == c).unwrap_or(0)
}

#[derive(Debug, Default)]
struct MapInfo {
    name: Option<String>,
    version: Option<String>,
    rules: HashMap<String, Mask>,
}

impl MapInfo {
    fn new(
        name: Option<String>,
        version: Option<String>,
        controls: &BTreeMap<String, Vec<String>>,
    ) -> Self {
        let rules = controls
            .iter()
            .map(|(rule, ids)| {
                let mask = ids
                    .iter()
                    .filter_map(|i| Control::from_id(i))
                    .fold(Mask::default(), Mask::with);
                (rule.clone(), mask)
            })
            .collect();
        MapInfo {
            name,
            version,
            rules,
        }
    }
}

#[derive(Debug, Default)]
struct ControlStat {
    rules: BTreeSet<String>,
    messages: u64,
    shadow: u64,
    incidents: u64,
    alerted: u64,
    latencies: Vec<f64>,
    undeliverable: u64,
    overdue: u64,
    pending: u64,
}

#[derive(Debug)]
struct Open {
    raised: f64,
    controls: Mask,
}

#[derive(Debug)]
struct Period {
    from: String,
    to: String,
    messages: u64,
    order: u64,
}

/// Running tallies for one report.
pub struct Collector {
    since: Option<OffsetDateTime>,
    until: Option<OffsetDateTime>,
    maps: HashMap<String, MapInfo>,
    /// The digest of the latest policy load seen, for incidents an alert names without a
    /// decision in the trail.
    latest: Option<String>,
    records: u64,
    messages: u64,
    security_events: u64,
    hosts: BTreeSet<String>,
    first: Option<String>,
    last: Option<String>,
    /// The latest record time in the whole trail (in the period or not): an incident without
    /// an alert is judged against it.
    trail_end: Option<f64>,
    per_day: BTreeMap<String, [u64; OUTCOMES.len()]>,
    by_level: HashMap<String, u64>,
    refused_rules: HashMap<String, u64>,
    refused_senders: HashMap<String, u64>,
    senders_capped: bool,
    stats: Vec<ControlStat>,
    unmapped: u64,
    periods: HashMap<String, Period>,
    policy_events: Vec<PolicyEvent>,
    health: TrailHealth,
    open: HashMap<(u64, IncidentKind), Open>,
}

fn unix(t: OffsetDateTime) -> f64 {
    t.unix_timestamp() as f64 + f64::from(t.nanosecond()) / 1e9
}

impl Collector {
    /// Tallies for the period, knowing `known` policies' maps besides the trail's own.
    pub fn new(
        since: Option<OffsetDateTime>,
        until: Option<OffsetDateTime>,
        known: &[KnownPolicy],
    ) -> Self {
        let mut maps = HashMap::new();
        for k in known {
            maps.insert(
                k.digest.clone(),
                MapInfo::new(k.name.clone(), k.version.clone(), &k.controls),
            );
        }
        Collector {
            since,
            until,
            latest: known.last().map(|k| k.digest.clone()),
            maps,
            records: 0,
            messages: 0,
            security_events: 0,
            hosts: BTreeSet::new(),
            first: None,
            last: None,
            trail_end: None,
            per_day: BTreeMap::new(),
            by_level: HashMap::new(),
            refused_rules: HashMap::new(),
            refused_senders: HashMap::new(),
            senders_capped: false,
            stats: Control::ALL
                .iter()
                .map(|_| ControlStat::default())
                .collect(),
            unmapped: 0,
            periods: HashMap::new(),
            policy_events: Vec::new(),
            health: TrailHealth::default(),
            open: HashMap::new(),
        }
    }

    /// Stream one file.
    pub fn read_file(&mut self, path: &Path) -> std::io::Result<()> {
        let f = File::open(path)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        let mut reader = BufReader::with_capacity(1 << 20, f);
        let mut buf = Vec::with_capacity(4096);
        loop {
            buf.clear();
            if reader.read_until(b'\n', &mut buf)? == 0 {
                break;
            }
            match Record::from_line(&buf) {
                Ok(r) => self.record(r),
                Err(_) => self.health.unparsed_lines += 1,
            }
        }
        Ok(())
    }

    /// Take one record.
    pub fn record(&mut self, rec: Record) {
        let Ok(at) = OffsetDateTime::parse(&rec.time, &Rfc3339) else {
            self.health.unparsed_lines += 1;
            return;
        };
        let t = unix(at);
        self.trail_end = Some(self.trail_end.map_or(t, |e: f64| e.max(t)));
        let in_period =
            !(self.since.is_some_and(|s| at < s) || self.until.is_some_and(|u| at >= u));
        // Maps and alert matching look at the whole trail: a policy loaded before the period
        // is in force during it, and an alert sent after it still answers an incident in it.
        match rec.event {
            AuditEvent::PolicyLoaded(p) => {
                self.maps.insert(
                    p.digest.clone(),
                    MapInfo::new(p.policy_name.clone(), p.policy_version.clone(), &p.controls),
                );
                self.latest = Some(p.digest.clone());
                if in_period {
                    self.policy_events.push(PolicyEvent {
                        time: rec.time.clone(),
                        seq: rec.seq,
                        trigger: p.trigger,
                        path: p.path,
                        digest: p.digest,
                        name: p.policy_name,
                        version: p.policy_version,
                        mapped_rules: p.controls.len(),
                        error: None,
                    });
                }
                self.tally_record(in_period, &rec.time, &rec.host, rec.security_event);
            }
            AuditEvent::AlertDelivered(a) => {
                for r in &a.incident_refs {
                    self.alerted(r, t);
                }
                self.tally_record(in_period, &rec.time, &rec.host, rec.security_event);
            }
            AuditEvent::AlertUndeliverable(u) => {
                let r = IncidentRef::of(&u.incident);
                self.undeliverable(&r);
                self.tally_record(in_period, &rec.time, &rec.host, rec.security_event);
            }
            event => {
                if !in_period {
                    return;
                }
                self.tally_record(true, &rec.time, &rec.host, rec.security_event);
                match event {
                    AuditEvent::MessageDecision(m) => self.message(rec.seq, &rec.time, t, &m),
                    AuditEvent::ReloadFailed(f) => self.policy_events.push(PolicyEvent {
                        time: rec.time.clone(),
                        seq: rec.seq,
                        trigger: "reload failed".into(),
                        path: f.path,
                        name: self.maps.get(&f.kept_digest).and_then(|m| m.name.clone()),
                        version: None,
                        digest: f.kept_digest,
                        mapped_rules: 0,
                        error: Some(f.error),
                    }),
                    AuditEvent::AuditSinkTrouble(_) => self.health.outages += 1,
                    AuditEvent::AuditSinkRecovered(s) => {
                        self.health.refused_during_outages += s.failed_records
                    }
                    AuditEvent::AuditChainResumed(_) => self.health.chain_resumed += 1,
                    AuditEvent::InternalError(_) => self.health.internal_errors += 1,
                    AuditEvent::AlertsDropped(d) => self.health.alerts_dropped += d.count,
                    _ => {}
                }
            }
        }
    }

    fn tally_record(&mut self, in_period: bool, time: &str, host: &str, security: bool) {
        if !in_period {
            return;
        }
        self.records += 1;
        if security {
            self.security_events += 1;
        }
        if !self.hosts.contains(host) && self.hosts.len() < 64 {
            self.hosts.insert(host.to_string());
        }
        if self.first.is_none() {
            self.first = Some(time.to_string());
        }
        self.last = Some(time.to_string());
    }

    fn message(&mut self, seq: u64, time: &str, t: f64, m: &MessageRecord) {
        self.messages += 1;
        let enforced = m.mode == Mode::Enforce;
        let removed = m
            .recipients
            .iter()
            .any(|r| r.status != RecipientStatus::Delivered);
        let outcome = if !enforced {
            6
        } else {
            match m.verdict {
                Verdict::Accept if removed => 1,
                Verdict::Accept => 0,
                Verdict::Reject => 2,
                Verdict::Tempfail => 3,
                Verdict::Quarantine => 4,
                Verdict::Discard => 5,
            }
        };
        let day = time.get(..10).unwrap_or(time);
        match self.per_day.get_mut(day) {
            Some(row) => row[outcome] += 1,
            None => {
                let mut row = [0; OUTCOMES.len()];
                row[outcome] = 1;
                self.per_day.insert(day.to_string(), row);
            }
        }
        let level = m.effective_level.as_deref().unwrap_or("unmarked");
        match self.by_level.get_mut(level) {
            Some(n) => *n += 1,
            None => {
                self.by_level.insert(level.to_string(), 1);
            }
        }

        // Refusals: the whole message (enforced reject, discard, quarantine) or recipients.
        let whole = enforced
            && matches!(
                m.verdict,
                Verdict::Reject | Verdict::Discard | Verdict::Quarantine
            );
        if whole || (enforced && removed) {
            let mut rules: Vec<&str> = Vec::new();
            if whole {
                rules.extend(m.verdict_rules.iter().map(String::as_str));
            }
            rules.extend(
                m.recipients
                    .iter()
                    .filter(|r| r.status != RecipientStatus::Delivered)
                    .filter_map(|r| r.rule.as_deref()),
            );
            rules.sort_unstable();
            rules.dedup();
            for r in rules {
                bump(&mut self.refused_rules, r);
            }
            let sender = if m.sender.is_empty() { "<>" } else { &m.sender };
            if let Some(n) = self.refused_senders.get_mut(sender) {
                *n += 1;
            } else if self.refused_senders.len() < SENDER_CAP {
                self.refused_senders.insert(sender.to_string(), 1);
            } else {
                self.senders_capped = true;
                bump(&mut self.refused_senders, "(others)");
            }
        }

        // Policy period.
        match self.periods.get_mut(&m.policy_digest) {
            Some(p) => {
                p.to = time.to_string();
                p.messages += 1;
            }
            None => {
                let order = self.periods.len() as u64;
                self.periods.insert(
                    m.policy_digest.clone(),
                    Period {
                        from: time.to_string(),
                        to: time.to_string(),
                        messages: 1,
                        order,
                    },
                );
            }
        }

        // Controls: every rule the decision cites, mapped under its own policy's digest.
        let map = self.maps.get(&m.policy_digest);
        if map.is_none() {
            self.unmapped += 1;
        }
        let rule_mask = |rule: &str| -> Mask {
            map.and_then(|mi| mi.rules.get(rule))
                .copied()
                .unwrap_or_default()
        };
        let mut cited: Vec<&str> = m.verdict_rules.iter().map(String::as_str).collect();
        cited.extend(m.recipients.iter().filter_map(|x| x.rule.as_deref()));
        cited.extend(m.findings.iter().filter_map(|x| x.rule.as_deref()));
        cited.extend(m.edits.iter().filter_map(edit_rule));
        cited.sort_unstable();
        cited.dedup();
        // The audit trail itself acts on every decision it records.
        let mut mask = Mask::default().with(Control::CocoAudit);
        for rule in cited {
            mask = mask.union(rule_mask(rule));
        }
        for c in mask.controls() {
            let s = &mut self.stats[index(c)];
            s.messages += 1;
            if !enforced {
                s.shadow += 1;
            }
        }

        // Incidents this decision raises (as `filter::incidents` makes them): one per kind.
        let mut kinds: Vec<(IncidentKind, Option<&str>)> = Vec::new();
        for r in &m.recipients {
            let kind = match r.cause {
                Some(Cause::AutoForward) => IncidentKind::BlockedAutoForward,
                Some(Cause::AboveCeiling) => IncidentKind::AboveCeiling,
                _ => continue,
            };
            if (r.status != RecipientStatus::Delivered || !enforced)
                && !kinds.iter().any(|(k, _)| *k == kind)
            {
                kinds.push((kind, r.rule.as_deref()));
            }
        }
        if let Some(f) = m.findings.iter().find(|f| f.cause == Cause::ForgedLabel) {
            kinds.push((IncidentKind::ForgedLabel, f.rule.as_deref()));
        }
        for (kind, rule) in kinds {
            let controls = rule
                .map(rule_mask)
                .unwrap_or_default()
                .with(Control::Coco11);
            for c in controls.controls() {
                self.stats[index(c)].incidents += 1;
            }
            self.open.insert(
                (seq, kind),
                Open {
                    raised: t,
                    controls,
                },
            );
        }
    }

    /// Controls of an incident the trail has no open record of (raised before the files, or
    /// not by a decision: audit failures, internal-error bursts).
    fn orphan_controls(&self, r: &IncidentRef) -> Mask {
        let mut m = Mask::default().with(Control::Coco11);
        if r.kind == Some(IncidentKind::AuditFailure) {
            m = m.with(Control::CocoAudit);
        }
        if let (Some(rule), Some(latest)) = (&r.rule, &self.latest)
            && let Some(rm) = self.maps.get(latest).and_then(|mi| mi.rules.get(rule))
        {
            m = m.union(*rm);
        }
        m
    }

    fn raised_in_period(&self, raised: &str) -> Option<f64> {
        let at = OffsetDateTime::parse(raised, &Rfc3339).ok()?;
        let inside = !(self.since.is_some_and(|s| at < s) || self.until.is_some_and(|u| at >= u));
        inside.then_some(unix(at))
    }

    fn take_open(&mut self, r: &IncidentRef) -> Option<Open> {
        let (Some(seq), Some(kind)) = (r.audit_seq, r.kind) else {
            return None;
        };
        self.open.remove(&(seq, kind))
    }

    fn alerted(&mut self, r: &IncidentRef, alert_time: f64) {
        let (raised, controls) = match self.take_open(r) {
            Some(o) => {
                // The incident's own time when it has one (it is stamped as the decision is
                // made); the decision record's time otherwise.
                let raised = OffsetDateTime::parse(&r.raised, &Rfc3339)
                    .map(unix)
                    .unwrap_or(o.raised);
                (raised, o.controls)
            }
            None => {
                let Some(raised) = self.raised_in_period(&r.raised) else {
                    return;
                };
                let controls = self.orphan_controls(r);
                for c in controls.controls() {
                    self.stats[index(c)].incidents += 1;
                }
                (raised, controls)
            }
        };
        let latency = (alert_time - raised).max(0.0);
        for c in controls.controls() {
            let s = &mut self.stats[index(c)];
            s.alerted += 1;
            s.latencies.push(latency);
        }
    }

    fn undeliverable(&mut self, r: &IncidentRef) {
        let controls = match self.take_open(r) {
            Some(o) => o.controls,
            None => {
                if self.raised_in_period(&r.raised).is_none() {
                    return;
                }
                let controls = self.orphan_controls(r);
                for c in controls.controls() {
                    self.stats[index(c)].incidents += 1;
                }
                controls
            }
        };
        for c in controls.controls() {
            self.stats[index(c)].undeliverable += 1;
        }
    }

    /// The report, with the chain verification made before the pass.
    pub fn finish(mut self, chain: ChainResult) -> Evidence {
        // Incidents never alerted: overdue once 24 h passed before the end of the period (or
        // of the trail, for an open-ended period).
        let end = self.trail_end.unwrap_or(0.0);
        for o in self.open.values() {
            let overdue = end - o.raised > INCIDENT_BOUND_SECS;
            for c in o.controls.controls() {
                let s = &mut self.stats[index(c)];
                if overdue {
                    s.overdue += 1;
                } else {
                    s.pending += 1;
                }
            }
        }
        // The rules that enforce each control: every rule the policies in force during the
        // period map to it, whether or not it fired.
        let mut in_force: BTreeSet<&String> = self.periods.keys().collect();
        in_force.extend(
            self.policy_events
                .iter()
                .filter(|e| e.error.is_none())
                .map(|e| &e.digest),
        );
        for digest in in_force {
            if let Some(info) = self.maps.get(digest) {
                for (rule, mask) in &info.rules {
                    for c in mask.controls() {
                        self.stats[index(c)].rules.insert(rule.clone());
                    }
                }
            }
        }
        let controls = Control::ALL
            .iter()
            .zip(self.stats.iter_mut())
            .map(|(c, s)| row(*c, s, &chain, &self.health))
            .collect();

        let mut periods: Vec<(String, Period)> = self.periods.into_iter().collect();
        periods.sort_by_key(|(_, p)| p.order);
        let policies = periods
            .into_iter()
            .map(|(digest, p)| {
                let info = self.maps.get(&digest);
                PolicyPeriod {
                    name: info.and_then(|i| i.name.clone()),
                    version: info.and_then(|i| i.version.clone()),
                    mapped: info.is_some(),
                    digest,
                    from: p.from,
                    to: p.to,
                    messages: p.messages,
                }
            })
            .collect();

        let per_day = self
            .per_day
            .into_iter()
            .map(|(day, row)| {
                (
                    day,
                    OUTCOMES
                        .iter()
                        .zip(row)
                        .map(|(o, n)| ((*o).to_string(), n))
                        .collect(),
                )
            })
            .collect();

        Evidence {
            generated: crate::audit::record::now_rfc3339(),
            generator: format!("markgate {}", env!("CARGO_PKG_VERSION")),
            since: self.since.map(crate::audit::record::format_time),
            until: self.until.map(crate::audit::record::format_time),
            first_record: self.first,
            last_record: self.last,
            hosts: self.hosts.into_iter().collect(),
            chain,
            records: self.records,
            messages: self.messages,
            security_events: self.security_events,
            controls,
            unmapped_messages: self.unmapped,
            per_day,
            by_level: top(self.by_level, usize::MAX),
            top_refused_rules: top(self.refused_rules, TOP_N),
            top_refused_senders: top(self.refused_senders, TOP_N),
            senders_capped: self.senders_capped,
            policies,
            policy_events: self.policy_events,
            health: self.health,
        }
    }
}

fn row(c: Control, s: &mut ControlStat, chain: &ChainResult, health: &TrailHealth) -> ControlRow {
    s.latencies
        .sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let p50 = percentile(&s.latencies, 50.0);
    let max = s.latencies.last().copied();
    let late = s
        .latencies
        .iter()
        .filter(|l| **l > INCIDENT_BOUND_SECS)
        .count() as u64;
    let bound = if s.incidents == 0 {
        "no incidents"
    } else if late + s.undeliverable + s.overdue > 0 {
        "not met"
    } else if s.pending > 0 {
        "pending"
    } else {
        "met"
    };
    let mut rules: Vec<String> = s.rules.iter().cloned().collect();
    let special = matches!(c, Control::CocoAudit | Control::Coco11);
    if c == Control::CocoAudit {
        rules.insert(0, "(the audit trail itself)".into());
    }
    if c == Control::Coco11 {
        rules.insert(0, "(incident alerts)".into());
    }
    let status = if c == Control::CocoAudit {
        if !chain.intact || health.outages > 0 || health.chain_resumed > 0 {
            "exceptions"
        } else if s.messages == 0 {
            "no activity"
        } else {
            "enforced"
        }
    } else if s.rules.is_empty() && !special {
        "no rule"
    } else if bound == "not met" || s.shadow > 0 {
        "exceptions"
    } else if s.messages == 0 && s.incidents == 0 {
        "no activity"
    } else {
        "enforced"
    };
    ControlRow {
        id: c.id().to_string(),
        framework: c.framework().to_string(),
        requirement: c.requirement().to_string(),
        rules,
        messages: s.messages,
        shadow_messages: s.shadow,
        incidents: s.incidents,
        alerted: s.alerted,
        latency_p50_secs: p50,
        latency_max_secs: max,
        undeliverable: s.undeliverable,
        unalerted_overdue: s.overdue,
        pending: s.pending,
        bound_24h: bound.to_string(),
        status: status.to_string(),
    }
}

fn bump(map: &mut HashMap<String, u64>, key: &str) {
    match map.get_mut(key) {
        Some(n) => *n += 1,
        None => {
            map.insert(key.to_string(), 1);
        }
    }
}

fn top(map: HashMap<String, u64>, n: usize) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = map.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v.truncate(n);
    v
}

fn edit_rule(e: &Edit) -> Option<&str> {
    match e {
        Edit::LabelHeader { rule, .. }
        | Edit::Subject { rule, .. }
        | Edit::Disclaimer { rule, .. }
        | Edit::DisclaimerPresent { rule }
        | Edit::DisclaimerSkipped { rule, .. }
        | Edit::Header { rule, .. } => rule.as_deref(),
    }
}
