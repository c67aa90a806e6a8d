//! Scenario folders: `tests/scenarios/<name>/` holds `in.eml`, `envelope.toml` (policy, sender,
//! recipients, client address, authenticated user, and the MIME facts the mime inspector would
//! report) and `expected.json` (the decision: direction, markings, effective level, verdict,
//! per-recipient outcome with rule ids, labels and disclaimer). On a mismatch `actual.json` is
//! written beside it; `UPDATE_SCENARIOS=1` rewrites `expected.json` (review the diff!).

use std::path::{Path, PathBuf};

use markgate::inspect::{forward, markings};
use markgate::policy::decide::{DisclaimerDecision, Verdict};
use markgate::policy::{Decision, Envelope, Facts, Policy, decide};
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScenarioEnvelope {
    policy: String,
    from: String,
    rcpts: Vec<String>,
    client_ip: Option<String>,
    auth: Option<String>,
    #[serde(default)]
    facts: MimeFacts,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct MimeFacts {
    #[serde(default)]
    disclaimer_present: bool,
    #[serde(default)]
    signed_or_encrypted: bool,
}

fn summary(facts: &Facts, d: &Decision) -> Value {
    let markings: Vec<Value> = facts
        .markings
        .iter()
        .map(|m| {
            json!({
                "source": m.source,
                "raw": m.raw,
                "range": m.range.as_ref().map(|r| [r.start, r.end]),
                "status": m.status,
                "level": m.label.as_ref().map(|l| l.level_name.clone()),
                "canonical": m.label.as_ref().map(|l| l.canonical.clone()),
                "diagnostics": m.diagnostics.iter().map(|x| x.code).collect::<Vec<_>>(),
                "rejected": m.rejected_codes,
            })
        })
        .collect();
    let verdict = match &d.verdict {
        Verdict::Accept => json!({"kind": "accept"}),
        Verdict::Reject { reply, rule } => {
            json!({"kind": "reject", "rule": rule, "code": reply.code, "enhanced": reply.enhanced})
        }
        Verdict::Tempfail { reply, rule } => {
            json!({"kind": "tempfail", "rule": rule, "code": reply.code, "enhanced": reply.enhanced})
        }
        Verdict::Quarantine { rule, .. } => json!({"kind": "quarantine", "rule": rule}),
    };
    let disclaimer = match &d.disclaimer {
        DisclaimerDecision::Add {
            rule,
            position,
            signed,
            ..
        } => json!({"add": true, "rule": rule, "position": position, "signed": signed}),
        DisclaimerDecision::Skip { reason, .. } => json!({"add": false, "reason": reason}),
    };
    json!({
        "direction": d.direction,
        "subject": facts.subject,
        "markings": markings,
        "forward": { "score": facts.forward.score, "signals": facts.forward.hits.iter().map(|h| h.signal.clone()).collect::<Vec<_>>() },
        "effective": { "level": d.effective.level_name, "marking": d.effective.marking, "source": d.effective.source },
        "hits": d.hits.iter().map(|h| json!({"rule": h.rule, "situation": h.situation, "action": h.action, "recipient": h.recipient})).collect::<Vec<_>>(),
        "recipients": d.recipients.iter().map(|r| json!({"address": r.address, "ceiling": r.ceiling, "delivery": r.delivery, "rules": r.rules})).collect::<Vec<_>>(),
        "verdict": verdict,
        "sender_notice": d.sender_notice.is_some(),
        "labels": {
            "header": d.labels.header.as_ref().map(|h| json!({"name": h.name, "value": h.value, "action": h.action})),
            "subject": d.labels.subject.as_ref().map(|s| json!({"marking": s.marking, "new_subject": s.new_subject})),
        },
        "strip_headers": d.strip_headers,
        "disclaimer": disclaimer,
        "rule_ids": d.rule_ids,
    })
}

fn run(dir: &Path) -> Result<(), String> {
    let env_text = std::fs::read_to_string(dir.join("envelope.toml"))
        .map_err(|e| format!("envelope.toml: {e}"))?;
    let env: ScenarioEnvelope =
        toml::from_str(&env_text).map_err(|e| format!("envelope.toml: {e}"))?;
    let policy_path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("policies")
        .join(format!("{}.toml", env.policy));
    let policy = Policy::from_file(&policy_path).map_err(|e| e.to_string())?;
    let raw = std::fs::read(dir.join("in.eml")).map_err(|e| format!("in.eml: {e}"))?;
    let headers = markings::header_fields(&raw);
    let pairs = || headers.iter().map(|(n, v)| (n.as_slice(), v.as_slice()));
    let found = markings::find(&policy, pairs());
    let facts = Facts {
        subject: found.subject,
        markings: found.markings,
        forward: forward::evidence(&policy, pairs()),
        disclaimer_present: env.facts.disclaimer_present,
        signed_or_encrypted: env.facts.signed_or_encrypted,
        route_headers: markgate::inspect::routes::header_routes(
            &policy,
            &pairs().collect::<Vec<_>>(),
        ),
        ..Facts::default()
    };
    let envelope = Envelope {
        sender: env.from,
        recipients: env.rcpts,
        client_ip: env
            .client_ip
            .as_deref()
            .map(|ip| ip.parse().map_err(|e| format!("client_ip: {e}")))
            .transpose()?,
        auth_user: env.auth,
        daemon_name: None,
        next_hops: Vec::new(),
    };
    let decision = decide(&policy, &facts, &envelope);
    let actual = summary(&facts, &decision);
    let actual_text = serde_json::to_string_pretty(&actual).map_err(|e| e.to_string())? + "\n";
    let expected_path = dir.join("expected.json");
    if std::env::var_os("UPDATE_SCENARIOS").is_some() {
        std::fs::write(&expected_path, &actual_text).map_err(|e| e.to_string())?;
        return Ok(());
    }
    let expected_text =
        std::fs::read_to_string(&expected_path).map_err(|e| format!("expected.json: {e}"))?;
    let expected: Value =
        serde_json::from_str(&expected_text).map_err(|e| format!("expected.json: {e}"))?;
    let actual_path = dir.join("actual.json");
    if expected == actual {
        let _ = std::fs::remove_file(actual_path);
        Ok(())
    } else {
        std::fs::write(&actual_path, &actual_text).map_err(|e| e.to_string())?;
        Err(format!(
            "decision differs from expected.json; see {}",
            actual_path.display()
        ))
    }
}

#[test]
fn scenarios() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("tests/scenarios exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("envelope.toml").is_file())
        .collect();
    dirs.sort();
    assert!(
        dirs.len() >= 15,
        "expected the scenario folders, found {}",
        dirs.len()
    );
    let failures: Vec<String> = dirs
        .iter()
        .filter_map(|d| run(d).err().map(|e| format!("{}: {e}", d.display())))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} scenarios failed:\n{}",
        failures.len(),
        dirs.len(),
        failures.join("\n")
    );
}
