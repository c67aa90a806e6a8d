//! The streaming pass: one record at a time into running tallies, so memory depends on the
//! number of distinct days, levels, rules, senders (capped) and open incidents, never on the
//! number of records.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use serde::Deserialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{
    ChainResult, ControlRow, Evidence, INCIDENT_BOUND_SECS, KnownPolicy, PolicyEvent, PolicyPeriod,
    TOP_N, TrailHealth, percentile,
};
use crate::alert::IncidentKind;
use crate::audit::event::IncidentRef;
use crate::audit::record::{Cause, Mode, RecipientStatus, Verdict};
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

/// The fields of a record the report reads, borrowed from the line where possible: the
/// report streams a million records, and parsing each into the full owned [`Record`] would
/// allocate every string of every decision. One `data` shape covers every event kind (the
/// fields it needs have the same type wherever they appear); everything else is skipped.
///
/// [`Record`]: crate::audit::record::Record
#[derive(Deserialize)]
struct Lean<'a> {
    seq: u64,
    #[serde(borrow)]
    time: Cow<'a, str>,
    #[serde(borrow, default)]
    host: Cow<'a, str>,
    #[serde(default)]
    security_event: bool,
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(borrow, default)]
    data: Data<'a>,
}

#[derive(Deserialize, Default)]
struct Data<'a> {
    // message_decision
    #[serde(borrow, default)]
    sender: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    recipients: Vec<LeanRecipient<'a>>,
    #[serde(borrow, default)]
    effective_level: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    findings: Vec<LeanFinding<'a>>,
    #[serde(borrow, default)]
    edits: Vec<LeanEdit<'a>>,
    #[serde(default)]
    verdict: Option<Verdict>,
    #[serde(borrow, default)]
    verdict_rules: Vec<Cow<'a, str>>,
    #[serde(default)]
    mode: Option<Mode>,
    #[serde(borrow, default)]
    policy_digest: Option<Cow<'a, str>>,
    // policy_loaded, reload_failed
    #[serde(borrow, default)]
    path: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    digest: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    trigger: Option<Cow<'a, str>>,
    #[serde(default)]
    policy_name: Option<String>,
    #[serde(default)]
    policy_version: Option<String>,
    #[serde(default)]
    controls: BTreeMap<String, Vec<String>>,
    #[serde(borrow, default)]
    error: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    kept_digest: Option<Cow<'a, str>>,
    // audit_sink_recovered, alerts_dropped
    #[serde(default)]
    failed_records: Option<u64>,
    #[serde(default)]
    count: Option<u64>,
    // alert_delivered, alert_undeliverable
    #[serde(default)]
    incident_refs: Vec<IncidentRef>,
    #[serde(default)]
    incident: Option<LeanIncident>,
}

#[derive(Deserialize)]
struct LeanRecipient<'a> {
    #[serde(default)]
    status: RecipientStatus,
    #[serde(default)]
    cause: Option<Cause>,
    #[serde(borrow, default)]
    rule: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct LeanFinding<'a> {
    #[serde(default)]
    cause: Option<Cause>,
    #[serde(borrow, default)]
    rule: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct LeanEdit<'a> {
    #[serde(borrow, default)]
    rule: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct LeanIncident {
    #[serde(default)]
    kind: Option<IncidentKind>,
    #[serde(default)]
    time: String,
    #[serde(default)]
    audit_seq: Option<u64>,
    #[serde(default)]
    rule: Option<String>,
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
            self.line(&buf);
        }
        Ok(())
    }

    /// Take one line of an audit file (with or without its newline).
    pub fn line(&mut self, line: &[u8]) {
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        match serde_json::from_slice::<Lean<'_>>(line) {
            Ok(r) => self.record(r),
            Err(_) => self.health.unparsed_lines += 1,
        }
    }

    fn record(&mut self, rec: Lean<'_>) {
        let Ok(at) = OffsetDateTime::parse(&rec.time, &Rfc3339) else {
            self.health.unparsed_lines += 1;
            return;
        };
        let t = unix(at);
        self.trail_end = Some(self.trail_end.map_or(t, |e: f64| e.max(t)));
        let in_period =
            !(self.since.is_some_and(|s| at < s) || self.until.is_some_and(|u| at >= u));
        let d = rec.data;
        // Maps and alert matching look at the whole trail: a policy loaded before the period
        // is in force during it, and an alert sent after it still answers an incident in it.
        match rec.event.as_ref() {
            "policy_loaded" => {
                let digest = d.digest.map(Cow::into_owned).unwrap_or_default();
                self.maps.insert(
                    digest.clone(),
                    MapInfo::new(d.policy_name.clone(), d.policy_version.clone(), &d.controls),
                );
                self.latest = Some(digest.clone());
                if in_period {
                    self.policy_events.push(PolicyEvent {
                        time: rec.time.to_string(),
                        seq: rec.seq,
                        trigger: d.trigger.map(Cow::into_owned).unwrap_or_default(),
                        path: d.path.map(Cow::into_owned).unwrap_or_default(),
                        digest,
                        name: d.policy_name,
                        version: d.policy_version,
                        mapped_rules: d.controls.len(),
                        error: None,
                    });
                }
                self.tally_record(in_period, &rec.time, &rec.host, rec.security_event);
            }
            "alert_delivered" => {
                for r in &d.incident_refs {
                    self.alerted(r, t);
                }
                self.tally_record(in_period, &rec.time, &rec.host, rec.security_event);
            }
            "alert_undeliverable" => {
                if let Some(i) = d.incident {
                    let r = IncidentRef {
                        kind: i.kind,
                        raised: i.time,
                        audit_seq: i.audit_seq,
                        rule: i.rule,
                    };
                    self.undeliverable(&r);
                }
                self.tally_record(in_period, &rec.time, &rec.host, rec.security_event);
            }
            event => {
                if !in_period {
                    return;
                }
                self.tally_record(true, &rec.time, &rec.host, rec.security_event);
                match event {
                    "message_decision" => self.message(rec.seq, &rec.time, t, &d),
                    "reload_failed" => {
                        let kept = d.kept_digest.map(Cow::into_owned).unwrap_or_default();
                        self.policy_events.push(PolicyEvent {
                            time: rec.time.to_string(),
                            seq: rec.seq,
                            trigger: "reload failed".into(),
                            path: d.path.map(Cow::into_owned).unwrap_or_default(),
                            name: self.maps.get(&kept).and_then(|m| m.name.clone()),
                            version: None,
                            digest: kept,
                            mapped_rules: 0,
                            error: Some(d.error.map(Cow::into_owned).unwrap_or_default()),
                        });
                    }
                    "audit_sink_trouble" => self.health.outages += 1,
                    "audit_sink_recovered" => {
                        self.health.refused_during_outages = self
                            .health
                            .refused_during_outages
                            .saturating_add(d.failed_records.unwrap_or(0))
                    }
                    "audit_chain_resumed" => self.health.chain_resumed += 1,
                    "internal_error" => self.health.internal_errors += 1,
                    "alerts_dropped" => {
                        self.health.alerts_dropped = self
                            .health
                            .alerts_dropped
                            .saturating_add(d.count.unwrap_or(0))
                    }
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
        let last = self.last.get_or_insert_with(String::new);
        last.clear();
        last.push_str(time);
    }

    fn message(&mut self, seq: u64, time: &str, t: f64, m: &Data<'_>) {
        self.messages += 1;
        let enforced = m.mode != Some(Mode::Shadow);
        let verdict = m.verdict.unwrap_or_default();
        let removed = m
            .recipients
            .iter()
            .any(|r| r.status != RecipientStatus::Delivered);
        let outcome = if !enforced {
            6
        } else {
            match verdict {
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
                verdict,
                Verdict::Reject | Verdict::Discard | Verdict::Quarantine
            );
        if whole || (enforced && removed) {
            let mut rules: Vec<&str> = Vec::new();
            if whole {
                rules.extend(m.verdict_rules.iter().map(AsRef::as_ref));
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
            let sender = match m.sender.as_deref() {
                None | Some("") => "<>",
                Some(s) => s,
            };
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
        let digest = m.policy_digest.as_deref().unwrap_or("");
        match self.periods.get_mut(digest) {
            Some(p) => {
                p.to.clear();
                p.to.push_str(time);
                p.messages += 1;
            }
            None => {
                let order = self.periods.len() as u64;
                self.periods.insert(
                    digest.to_string(),
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
        let map = self.maps.get(digest);
        if map.is_none() {
            self.unmapped += 1;
        }
        let rule_mask = |rule: &str| -> Mask {
            map.and_then(|mi| mi.rules.get(rule))
                .copied()
                .unwrap_or_default()
        };
        // The audit trail itself acts on every decision it records.
        let mut mask = Mask::default().with(Control::CocoAudit);
        for rule in m
            .verdict_rules
            .iter()
            .map(AsRef::as_ref)
            .chain(m.recipients.iter().filter_map(|x| x.rule.as_deref()))
            .chain(m.findings.iter().filter_map(|x| x.rule.as_deref()))
            .chain(m.edits.iter().filter_map(|x| x.rule.as_deref()))
        {
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
        if let Some(f) = m
            .findings
            .iter()
            .find(|f| f.cause == Some(Cause::ForgedLabel))
        {
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
