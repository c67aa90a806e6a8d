//! The `[audit]` section of the daemon config, with its documented defaults.
//!
//! Only data and validation live here; the writer reads a validated [`AuditConfig`]. The
//! daemon-wide loader (`config/`) embeds this struct and reports errors with file, line and
//! column. `markgate run --audit-log FILE` overrides [`AuditConfig::path`].
//!
//! ```toml
//! [audit]
//! path = "/var/log/markgate/audit.jsonl"  # a missing directory is created (0750)
//! sync = "batch"          # batch | always | none
//! fail_open = false       # true lets mail through unaudited when the file cannot be written
//! max_size = 0            # bytes; rotate to FILE.1 … above this size; 0 = leave it to logrotate
//! preallocate = 0         # bytes of zeros kept ahead of the data (cheaper fsync); 0 = plain appends
//! keep = 10               # rotated files kept by size-based rotation
//! queue = 4096            # records waiting for the writer before producers wait
//! gather_after = 12       # a flush shared by this many records makes the next one wait…
//! gather_wait_us = 500    # …this long (µs) for more records to share it; 0 in either = never
//! file_mode = 0o640       # permissions of a newly created audit file
//! # host = "gw1.example"  # host name written in records; default: the kernel's host name
//!
//! [audit.syslog]
//! enabled = true
//! socket = "/dev/log"
//! facility = "mail"
//! app_name = "markgate"
//! format = "rfc5424"      # rfc5424 (structured data + JSON) | bsd (what syslog(3) sends)
//! ```

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The built-in audit file, used when neither the config nor `--audit-log` names one.
pub const DEFAULT_AUDIT_PATH: &str = "/var/log/markgate/audit.jsonl";

/// The longest `gather_wait_us` accepted.
pub const MAX_GATHER_WAIT_US: u64 = 10_000;

/// When the writer calls `fsync`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncMode {
    /// Group commit: write everything queued, `fsync` once, then acknowledge all of it. Durable,
    /// and many messages share one `fsync`. The default.
    #[default]
    Batch,
    /// `fsync` after every record. Durable, slowest; for testing the cost of durability.
    Always,
    /// Never `fsync`; acknowledge once the bytes are handed to the kernel. Survives a crash of
    /// markgate, not of the machine.
    None,
}

/// `[audit]`: where and how audit records are written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// The audit file. Default [`DEFAULT_AUDIT_PATH`].
    pub path: PathBuf,
    /// Default `batch`.
    pub sync: SyncMode,
    /// Default `false`: a record that cannot be written answers the message with 4xx. `true`
    /// acknowledges it anyway with an `error` log, so mail flows **unaudited** during an outage;
    /// choose it only if losing evidence is preferable to delaying mail.
    pub fail_open: bool,
    /// Size-based rotation threshold in bytes; 0 (default) disables it.
    pub max_size: u64,
    /// Bytes of zero-filled, synced space the writer keeps ahead of the data; 0 (default)
    /// writes by appending. With it, a record overwrites blocks the file already has, so its
    /// `fdatasync` commits no size or extent change (on ext4 and XFS that skips the journal
    /// commit: see BENCHMARKS.md for the measured difference). The cost: until the writer
    /// trims them (rotation, reopen, shutdown, the next start after a crash), the live file
    /// ends in NUL bytes, which markgate's own readers skip but a program tailing the file by
    /// size would see. Forward records with `[audit.syslog]` instead of tailing the file.
    pub preallocate: u64,
    /// How many rotated files (`FILE.1` … `FILE.keep`) size-based rotation keeps. Default 10,
    /// at least 1.
    pub keep: u32,
    /// Bound of the producer → writer queue. Default 4096.
    pub queue: usize,
    /// With `sync = "batch"`: after a batch of at least this many records, the writer waits
    /// [`AuditConfig::gather_wait_us`] before it takes the next batch, so that under heavy
    /// load more records share each `fsync`. Default 12; 0 never waits. A batch this large
    /// means as many messages were waiting for the disk at once: the processors are busy with
    /// others, so the wait costs the gateway no throughput and saves the `fsync`s (each one
    /// system CPU and, on a virtual machine, exits to the host) that the CPUs then spend on
    /// mail. Below it nothing waits, so a quiet gateway answers as soon as its record is
    /// durable. The measured effect is in BENCHMARKS.md.
    pub gather_after: usize,
    /// How long the writer waits after a batch of `gather_after` records, in microseconds.
    /// Default 500; 0 never waits; at most 10 000 (10 ms).
    pub gather_wait_us: u64,
    /// Mode of a newly created audit file. Default `0o640`.
    pub file_mode: u32,
    /// Host name written in each record. Default: the kernel's host name.
    pub host: Option<String>,
    /// Forwarding to syslog/journald.
    pub syslog: SyslogConfig,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            path: PathBuf::from(DEFAULT_AUDIT_PATH),
            sync: SyncMode::Batch,
            fail_open: false,
            max_size: 0,
            preallocate: 0,
            keep: 10,
            queue: 4096,
            gather_after: 12,
            gather_wait_us: 500,
            file_mode: 0o640,
            host: None,
            syslog: SyslogConfig::default(),
        }
    }
}

impl AuditConfig {
    /// Check the values serde cannot check. The message names the key and what was expected.
    pub fn validate(&self) -> Result<(), String> {
        if self.path.as_os_str().is_empty() {
            return Err("audit.path: expected a file path, found an empty string".into());
        }
        if self.keep == 0 {
            return Err(
                "audit.keep: expected at least 1 (rotation never deletes the only copy)".into(),
            );
        }
        if self.queue == 0 {
            return Err("audit.queue: expected at least 1".into());
        }
        if self.gather_wait_us > MAX_GATHER_WAIT_US {
            return Err(format!(
                "audit.gather_wait_us: expected at most {MAX_GATHER_WAIT_US} (10 ms: the wait \
                 delays the answers of the messages that arrive during it), found {}",
                self.gather_wait_us
            ));
        }
        if self.file_mode > 0o777 {
            return Err(format!(
                "audit.file_mode: expected permission bits (at most 0o777), found {:#o}",
                self.file_mode
            ));
        }
        self.syslog.validate()
    }
}

/// Message layout sent to the syslog socket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyslogFormat {
    /// RFC 5424: header, `[markgate@32473 …]` structured data, the JSON record as MSG.
    #[default]
    Rfc5424,
    /// The traditional local format `syslog(3)` sends (`<PRI>TIMESTAMP APP[PID]: MSG`), with the
    /// JSON record as MSG; for journald or rsyslog set-ups that do not parse RFC 5424 on
    /// `/dev/log`.
    Bsd,
}

/// `[audit.syslog]`: best-effort forwarding of every record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SyslogConfig {
    /// Default `true`.
    pub enabled: bool,
    /// Datagram socket of the local syslog daemon or journald. Default `/dev/log`.
    pub socket: PathBuf,
    /// Facility name (`mail`, `auth`, `authpriv`, `daemon`, `local0` … `local7`). Default `mail`.
    pub facility: String,
    /// APP-NAME / tag. Default `markgate`.
    pub app_name: String,
    /// Default `rfc5424`.
    pub format: SyslogFormat,
}

impl Default for SyslogConfig {
    fn default() -> Self {
        SyslogConfig {
            enabled: true,
            socket: PathBuf::from("/dev/log"),
            facility: "mail".into(),
            app_name: "markgate".into(),
            format: SyslogFormat::Rfc5424,
        }
    }
}

impl SyslogConfig {
    /// Check facility and app name.
    pub fn validate(&self) -> Result<(), String> {
        if facility_code(&self.facility).is_none() {
            return Err(format!(
                "audit.syslog.facility: expected one of kern, user, mail, daemon, auth, syslog, \
                 lpr, news, uucp, cron, authpriv, ftp, local0 … local7; found {:?}",
                self.facility
            ));
        }
        let ok = !self.app_name.is_empty()
            && self.app_name.len() <= 48
            && self.app_name.bytes().all(|b| (33..=126).contains(&b));
        if !ok {
            return Err(format!(
                "audit.syslog.app_name: expected 1 to 48 printable ASCII characters without \
                 spaces, found {:?}",
                self.app_name
            ));
        }
        Ok(())
    }
}

/// The facility number for a facility name.
pub fn facility_code(name: &str) -> Option<u8> {
    Some(match name {
        "kern" => 0,
        "user" => 1,
        "mail" => 2,
        "daemon" => 3,
        "auth" => 4,
        "syslog" => 5,
        "lpr" => 6,
        "news" => 7,
        "uucp" => 8,
        "cron" => 9,
        "authpriv" => 10,
        "ftp" => 11,
        "local0" => 16,
        "local1" => 17,
        "local2" => 18,
        "local3" => 19,
        "local4" => 20,
        "local5" => 21,
        "local6" => 22,
        "local7" => 23,
        _ => return None,
    })
}
