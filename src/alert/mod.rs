//! Incident alerts to the security team, by mail, never on a message's path.
//!
//! Owns the incident vocabulary ([`incident`](crate::alert::incident)), the `[alerts]`
//! settings ([`config`](crate::alert::config)) and the background delivery task
//! ([`sender`](crate::alert::sender)): SMTP through lettre to a relay (the local Postfix by
//! default), immediately or as a digest per window, rate-limited, retried with backoff, and
//! audited (`alert_delivered`, `alert_undeliverable`, `alerts_dropped`) so no incident is lost
//! silently. It does not decide what an incident is: the policy (via the filter) does, using
//! [`IncidentKind::defaults`](crate::alert::IncidentKind::defaults) when it says nothing. Mail
//! flow never waits here: [`AlertHandle::raise`](crate::alert::AlertHandle::raise) is a
//! non-blocking queue push. Configuration and format: `docs/audit-format.md`.

pub mod config;
pub mod incident;
pub mod sender;

pub use config::{AlertConfig, AlertMode, AlertSettings, RelayConfig, StartTls};
pub use incident::{ErrorBurst, Incident, IncidentKind};
pub use sender::{AlertHandle, AlertStats, Raised, watch_audit_health};
