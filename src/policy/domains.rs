//! Domain and network lookups, built once at load time.
//!
//! [`DomainMap`]: exact domains and `*.suffix` wildcards; the most specific entry wins (an exact
//! entry, then the longest matching suffix). `*.gcsx.gov.uk` matches `a.gcsx.gov.uk` and
//! `a.b.gcsx.gov.uk`, not `gcsx.gov.uk` itself. [`Network`]: an IPv4 or IPv6 CIDR block.

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::net::IpAddr;

use crate::decimal::Decimal;

/// Domain → value, exact and wildcard-suffix entries.
#[derive(Debug, Clone)]
pub struct DomainMap<T> {
    exact: HashMap<String, T, NameHash>,
    /// Keyed by the suffix without `*.`.
    suffix: HashMap<String, T, NameHash>,
}

impl<T> Default for DomainMap<T> {
    fn default() -> Self {
        DomainMap {
            exact: HashMap::default(),
            suffix: HashMap::default(),
        }
    }
}

/// The maps' hash: a lookup of `a.b.example.org` tries the name and each of its suffixes in
/// two maps, for every recipient of every message, and SipHash cost more than the rest of
/// it. Keys are the policy's own patterns, so a caller cannot fill a map with colliding
/// keys; a name that collides with one only costs a string comparison.
type NameHash = BuildHasherDefault<Fold>;

/// Multiply-rotate over eight bytes a step (the "Fx" hash of rustc's own tables).
#[derive(Default)]
struct Fold(u64);

impl Hasher for Fold {
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x51_7c_c1_b7_27_22_0a_95;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(K);
        }
        for &b in chunks.remainder() {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(K);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Lower-case and drop a trailing dot, so lookups compare like DNS does.
pub fn normalise_domain(domain: &str) -> String {
    normalised(domain).into_owned()
}

/// [`normalise_domain`] without a copy when the name already is normal (the usual case: MTAs
/// hand over lower-case recipient domains).
fn normalised(domain: &str) -> Cow<'_, str> {
    let d = domain.trim().trim_end_matches('.');
    if d.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(d.to_ascii_lowercase())
    } else {
        Cow::Borrowed(d)
    }
}

impl<T> DomainMap<T> {
    /// Add a pattern (`example.org` or `*.example.org`). Returns false when the same pattern
    /// was already present (the caller reports the duplicate).
    pub fn insert(&mut self, pattern: &str, value: T) -> bool {
        let p = normalise_domain(pattern);
        let (map, key) = match p.strip_prefix("*.") {
            Some(rest) => (&mut self.suffix, rest.to_owned()),
            None => (&mut self.exact, p),
        };
        if map.contains_key(&key) {
            return false;
        }
        map.insert(key, value);
        true
    }

    /// The value for a domain: exact entry first, then the longest `*.suffix` that matches.
    pub fn get(&self, domain: &str) -> Option<&T> {
        let d = normalised(domain);
        if let Some(v) = self.exact.get(&*d) {
            return Some(v);
        }
        let mut rest = &*d;
        while let Some(dot) = rest.find('.') {
            rest = &rest[dot + 1..];
            if let Some(v) = self.suffix.get(rest) {
                return Some(v);
            }
        }
        None
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.suffix.is_empty()
    }

    /// Every value, in no particular order.
    pub fn values(&self) -> impl Iterator<Item = &T> {
        self.exact.values().chain(self.suffix.values())
    }
}

/// Is `pattern` a plausible domain or `*.domain`? Returns the reason when not.
pub fn check_domain_pattern(pattern: &str) -> Result<(), String> {
    let body = pattern.strip_prefix("*.").unwrap_or(pattern);
    if body.is_empty() {
        return Err("an empty domain".to_owned());
    }
    if body.contains('*') {
        return Err("`*` other than a leading `*.`".to_owned());
    }
    for label in body.trim_end_matches('.').split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(format!("the label `{label}`"));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(format!(
                "the label `{label}` (letters, digits and `-` only)"
            ));
        }
    }
    Ok(())
}

/// An IP network in CIDR notation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    addr: IpAddr,
    prefix: u8,
}

impl Network {
    /// Parse `10.0.0.0/8`, `2001:db8::/32`, or a bare address (a single host). Host bits must
    /// be zero, so a typo such as `10.0.0.1/8` is caught rather than silently widened.
    pub fn parse(text: &str) -> Result<Network, String> {
        let (addr_text, prefix_text) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr_text
            .trim()
            .parse()
            .map_err(|_| format!("`{addr_text}` is not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix_text {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("prefix length `/{p}` (0 to {max})"))?,
        };
        let net = Network { addr, prefix };
        let masked = net.masked(addr);
        if masked != bits(addr) {
            let base = match addr {
                IpAddr::V4(_) => IpAddr::V4(std::net::Ipv4Addr::from(masked as u32)),
                IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::from(masked)),
            };
            return Err(format!(
                "host bits set in `{text}` (the network is {base}/{prefix})"
            ));
        }
        Ok(net)
    }

    fn masked(&self, ip: IpAddr) -> u128 {
        let width = if ip.is_ipv4() { 32 } else { 128 };
        let host_bits = width - u32::from(self.prefix);
        let v = bits(ip);
        if host_bits >= 128 {
            0
        } else {
            (v >> host_bits) << host_bits
        }
    }

    /// Does the network contain `ip`? IPv4-mapped IPv6 addresses (`::ffff:127.0.0.1`) are
    /// compared as IPv4, since that is how a dual-stack listener reports IPv4 clients.
    /// The network's first host address (127.0.0.1 for 127.0.0.0/8; a single host itself).
    pub fn first_host(&self) -> IpAddr {
        match self.addr {
            IpAddr::V4(a) if self.prefix < 31 => {
                IpAddr::V4(std::net::Ipv4Addr::from(u32::from(a).wrapping_add(1)))
            }
            IpAddr::V6(a) if self.prefix < 127 => {
                IpAddr::V6(std::net::Ipv6Addr::from(u128::from(a).wrapping_add(1)))
            }
            a => a,
        }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        if ip.is_ipv4() != self.addr.is_ipv4() {
            return false;
        }
        self.masked(ip) == bits(self.addr)
    }
}

impl std::fmt::Display for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write_ip(f, self.addr)?;
        f.write_str("/")?;
        f.write_str(Decimal::of(u64::from(self.prefix)).as_str())
    }
}

/// `ip` as its `Display` writes it, without padding. A decision writes the client's address
/// twice (the direction's reason and the audit record); the standard library sends each IPv4
/// octet through the formatting machinery (pad_integral), about 4 000 instructions a message,
/// so IPv4 is spelt out here. IPv6 keeps the standard form (its zero compression).
pub fn write_ip(f: &mut impl std::fmt::Write, ip: IpAddr) -> std::fmt::Result {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            for (i, octet) in [a, b, c, d].into_iter().enumerate() {
                if i > 0 {
                    f.write_str(".")?;
                }
                f.write_str(Decimal::of(u64::from(octet)).as_str())?;
            }
            Ok(())
        }
        IpAddr::V6(v6) => write!(f, "{v6}"),
    }
}

/// [`write_ip`] into a new string (what `ip.to_string()` gives).
pub fn ip_text(ip: IpAddr) -> String {
    let mut s = String::with_capacity(15);
    // Writing to a String cannot fail.
    let _ = write_ip(&mut s, ip);
    s
}

fn bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_written_as_the_standard_library_writes_them() {
        let octets = [0u8, 1, 9, 10, 42, 99, 100, 127, 199, 200, 250, 255];
        let mut checked = 0;
        for &a in &octets {
            for &b in &octets {
                for &c in &octets {
                    let ip = IpAddr::from([a, b, c, 255 - a]);
                    assert_eq!(ip_text(ip), ip.to_string());
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, octets.len().pow(3));
        for text in [
            "::",
            "::1",
            "2001:db8::8:800:200c:417a",
            "::ffff:10.0.0.1",
            "fe80::",
        ] {
            let ip: IpAddr = text.parse().expect("an address");
            assert_eq!(ip_text(ip), ip.to_string());
        }
        for text in [
            "10.0.0.0/8",
            "0.0.0.0/0",
            "192.168.100.0/24",
            "2001:db8::/32",
            "::1/128",
        ] {
            let net = Network::parse(text).expect("a network");
            assert_eq!(net.to_string(), text);
        }
        for prefix in 0..=32u8 {
            let net = Network::parse(&format!("0.0.0.0/{prefix}")).expect("a network");
            assert_eq!(net.to_string(), format!("0.0.0.0/{prefix}"));
        }
    }

    #[test]
    fn most_specific_domain_wins() {
        let mut m = DomainMap::default();
        assert!(m.insert("*.gov.uk", 1));
        assert!(m.insert("*.gcsx.gov.uk", 2));
        assert!(m.insert("nhs.net", 3));
        assert!(!m.insert("NHS.net.", 4));
        assert_eq!(m.get("a.gcsx.gov.uk"), Some(&2));
        assert_eq!(m.get("a.b.gcsx.gov.uk"), Some(&2));
        assert_eq!(m.get("gcsx.gov.uk"), Some(&1));
        assert_eq!(m.get("x.gov.uk"), Some(&1));
        assert_eq!(m.get("Nhs.Net."), Some(&3));
        assert_eq!(m.get("mail.nhs.net"), None);
        assert_eq!(m.get(""), None);
        assert_eq!(m.get("gov.uk"), None);
    }

    #[test]
    fn domain_patterns() {
        assert!(check_domain_pattern("*.gcsx.gov.uk").is_ok());
        assert!(check_domain_pattern("nhs.net").is_ok());
        assert!(check_domain_pattern("a.*.uk").is_err());
        assert!(check_domain_pattern("*.").is_err());
        assert!(check_domain_pattern("bad_domain.uk").is_err());
        assert!(check_domain_pattern("a..b").is_err());
    }

    #[test]
    fn networks() {
        let n = Network::parse("127.0.0.0/8").unwrap();
        assert!(n.contains("127.1.2.3".parse().unwrap()));
        assert!(n.contains("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!n.contains("128.0.0.1".parse().unwrap()));
        assert!(!n.contains("::1".parse().unwrap()));
        let h = Network::parse("::1").unwrap();
        assert!(h.contains("::1".parse().unwrap()));
        assert!(!h.contains("::2".parse().unwrap()));
        let all = Network::parse("0.0.0.0/0").unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        let all6 = Network::parse("::/0").unwrap();
        assert!(all6.contains("2001:db8::1".parse().unwrap()));
        assert!(
            Network::parse("10.0.0.1/8")
                .unwrap_err()
                .contains("10.0.0.0/8")
        );
        assert!(Network::parse("10.0.0.0/33").is_err());
        assert!(Network::parse("example").is_err());
        assert!(Network::parse("2001:db8::/32").is_ok());
    }
}
