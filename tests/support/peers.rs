//! Finding the real peers (Postfix, smtp-sink, swaks, miltertest) and deciding what a missing one
//! means: in CI (`CI=true` or `MARKGATE_REQUIRE_REAL_PEERS=1`) the test fails, locally it is
//! skipped with the reason printed, so `cargo test` on a laptop without Postfix still works.

use std::path::PathBuf;

/// Directories searched after `$PATH`: Postfix installs its commands in `/usr/sbin`, which is
/// often missing from a non-login `PATH`.
const EXTRA_DIRS: &[&str] = &[
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
    "/usr/local/sbin",
    "/usr/local/bin",
];

/// Must every real-peer test run (fail instead of skip)?
pub fn required() -> bool {
    let truthy = |v: &str| matches!(v.trim(), "1" | "true" | "TRUE" | "True" | "yes");
    std::env::var("CI").is_ok_and(|v| truthy(&v))
        || std::env::var("MARKGATE_REQUIRE_REAL_PEERS").is_ok_and(|v| truthy(&v))
}

/// The absolute path of a command, searched in `$PATH` and the usual sbin directories.
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(EXTRA_DIRS.iter().map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Is this process running as root (effective uid 0)? Read from /proc so no libc call is needed.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|rest| rest.split_whitespace().nth(1).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// Check that the named tools exist (and, if `need_root`, that we are root). Returns `true` when
/// the test can go ahead; `false` (after printing why) when it should be skipped. Panics instead
/// of skipping when real peers are required.
pub fn available(test: &str, tools: &[&str], need_root: bool) -> bool {
    let mut missing: Vec<String> = tools
        .iter()
        .filter(|t| find_tool(t).is_none())
        .map(|t| format!("`{t}` not found"))
        .collect();
    if need_root && !is_root() {
        missing.push("not running as root (Postfix's master must start as root)".into());
    }
    if missing.is_empty() {
        return true;
    }
    let reason = format!(
        "{test}: {}; install with `apt-get install -y postfix swaks miltertest` and run as root \
         (scripts/test.sh does both)",
        missing.join(", ")
    );
    if required() {
        panic!("real peers are required (CI / MARKGATE_REQUIRE_REAL_PEERS) but {reason}");
    }
    eprintln!("SKIPPED {reason}");
    false
}

/// The path of a tool that [`available`] has already confirmed.
pub fn tool(name: &str) -> PathBuf {
    find_tool(name).unwrap_or_else(|| panic!("`{name}` not found"))
}
