//! The audit trail: a tamper-evident record of every decision and daemon event.
//!
//! Owns the closed event vocabulary ([`event`](crate::audit::event)), the record schema and
//! hash chain ([`record`](crate::audit::record)) with the hand-written JSON of the message
//! decision (`json`), the single writer task with group commit,
//! rotation and self-healing ([`writer`](crate::audit::writer)), syslog forwarding
//! ([`syslog`](crate::audit::syslog)), and the offline tools
//! [`verify`](crate::audit::verify), [`report`](mod@crate::audit::report) and the compliance
//! [`evidence`](crate::audit::evidence) report; the `[audit]`
//! settings are in [`config`](crate::audit::config). The audit decides nothing about mail: the
//! filter fills a [`MessageRecord`](crate::audit::record::MessageRecord) from the policy's
//! decision and waits for [`AuditHandle::record`](crate::audit::writer::AuditHandle::record)
//! before answering the MTA. The file format is specified in `docs/audit-format.md`.
//!
//! Typical use by the daemon:
//!
//! ```no_run
//! # async fn demo() -> Result<(), markgate::audit::AuditError> {
//! use markgate::audit::{self, AuditConfig, AuditEvent, event::DaemonStart};
//! let handle = audit::start(&AuditConfig::default())?;
//! let ack = handle
//!     .record(AuditEvent::DaemonStart(DaemonStart { pid: std::process::id(), ..Default::default() }))
//!     .await?; // Err => answer 4xx
//! # let _ = ack; Ok(()) }
//! ```

pub mod config;
pub mod event;
pub mod evidence;
mod json;
pub mod record;
pub mod report;
pub mod syslog;
pub mod verify;
pub mod writer;

pub use config::{AuditConfig, DEFAULT_AUDIT_PATH, SyncMode, SyslogConfig, SyslogFormat};
pub use event::{AuditEvent, EventKind, Severity};
pub use record::{MessageRecord, Record, line_hash, policy_digest};
pub use report::{Report, load_records, parse_time_bound, report};
pub use verify::{VerifyReport, verify_files};
pub use writer::{
    Ack, AuditError, AuditHandle, AuditStats, PendingAck, SinkHealth, WriterTask, open, start,
};
