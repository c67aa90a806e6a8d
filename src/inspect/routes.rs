//! Which `[[route]]`s a message's headers select: a route with `header = "X-Mobile-Gateway"`
//! (and optionally `header_matches`) puts every recipient of a message carrying that header on
//! the route. The result is the ids of those routes, in policy order, for
//! [`Facts::route_headers`](crate::policy::Facts::route_headers); `policy::routes` does the rest.
//!
//! Must not: decide anything, change the message, do I/O.

use crate::policy::Policy;

use super::forward::unfold;

/// Ids of the routes whose header is present (with a value matching `header_matches`, when set).
pub fn header_routes(policy: &Policy, headers: &[(&[u8], &[u8])]) -> Vec<String> {
    let mut out = Vec::new();
    for route in &policy.routes {
        let Some(h) = &route.header else { continue };
        let hit = headers.iter().any(|(name, value)| {
            let name = String::from_utf8_lossy(name);
            name.trim().eq_ignore_ascii_case(&h.name)
                && h.matches
                    .as_ref()
                    .is_none_or(|re| re.is_match(&unfold(value)))
        });
        if hit {
            out.push(route.id.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presence_and_value() {
        let text = format!(
            "{}\n[[route]]\nid = \"any\"\nceiling = \"PROTECT\"\nheader = \"X-Mobile-Gateway\"\ntext = \"t\"\n\n[[route]]\nid = \"sync\"\nceiling = \"PROTECT\"\nheader = \"x-mobile-gateway\"\nheader_matches = \"^sync\\\\b\"\ntext = \"t\"\n",
            crate::policy::BUILTIN_POLICY
        );
        let p = Policy::from_str("t.toml", &text).unwrap_or_else(|e| panic!("{e}"));
        let h = |v: &'static str| {
            vec![
                (&b"Subject"[..], &b"x"[..]),
                (&b"X-MOBILE-Gateway"[..], v.as_bytes()),
            ]
        };
        assert_eq!(
            header_routes(&p, &h("sync\r\n\tdevice=42")),
            vec!["any", "sync"]
        );
        assert_eq!(header_routes(&p, &h("push")), vec!["any"]);
        assert!(header_routes(&p, &[(&b"Subject"[..], &b"x"[..])]).is_empty());
    }
}
