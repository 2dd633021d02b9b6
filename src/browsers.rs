//! What a web browser on the same machine may ask of sluice. A page from anywhere can make the
//! browser send requests to `127.0.0.1:4080`; two attacks follow, and each has a check here:
//! - DNS rebinding: a page's own name is re-pointed at 127.0.0.1, so its scripts read sluice's
//!   answers as same-origin. The browser still sends the page's name as `Host`: admin paths
//!   (`/stats`, `/usage`, `/metrics`, the dashboard) answer only the hosts sluice is known by.
//! - Cross-site requests: a page makes the browser post to a proxied route (spending the server
//!   key); it cannot read the answer, but the request goes out. A browser marks such requests
//!   (`origin`, `sec-fetch-site`): one whose origin is not sluice's own is refused unless the
//!   origin is configured (`allowed_origins`).
//!
//! Clients that are not browsers (CLIs, SDKs, curl) send neither `origin` nor `sec-fetch-*`
//! and are not affected on proxied routes. `/healthz` is exempt (probes call it by any name).
//!
//! Known hosts: `localhost` and names below `.localhost`, every IP literal (a rebinding needs a
//! name: a `Host` that is an address was not rebound), and the names in `allowed_hosts`. A
//! sluice reached by name from other machines needs that name listed.

use actix_web::http::header::{self, HeaderMap, HeaderName};

use crate::error::Error;

/// Where a browser says which site a request comes from.
const SEC_FETCH_SITE: HeaderName = HeaderName::from_static("sec-fetch-site");

/// Names sluice answers to and browser origins it serves, from the settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BrowserPolicy {
    /// Lowercase host names (no port) besides the ones always known.
    pub allowed_hosts: Vec<String>,
    /// Origins (`scheme://host[:port]`, lowercase) whose pages may call proxied routes.
    pub allowed_origins: Vec<String>,
}

/// The host part of a `Host` value (`name:port`, `[v6]:port`), lowercase.
fn host_part(authority: &str) -> String {
    let authority = authority.trim();
    let host = if let Some(rest) = authority.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default()
    } else {
        authority
            .rsplit_once(':')
            .map_or(authority, |(host, port)| {
                if port.bytes().all(|b| b.is_ascii_digit()) {
                    host
                } else {
                    authority
                }
            })
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

impl BrowserPolicy {
    /// Whether `authority` (a `Host` value) names sluice.
    pub fn knows_host(&self, authority: &str) -> bool {
        let host = host_part(authority);
        host == "localhost"
            || host.ends_with(".localhost")
            || host.parse::<std::net::IpAddr>().is_ok()
            || self.allowed_hosts.contains(&host)
    }

    /// An admin path: its `Host` must name sluice (a request without one is no browser's).
    pub fn check_admin(&self, host: Option<&str>) -> Result<(), Error> {
        match host {
            Some(host) if !self.knows_host(host) => Err(Error::UnknownHost(host.to_string())),
            _ => Ok(()),
        }
    }

    /// A proxied route: a request a browser marks as coming from a page must come from
    /// sluice's own origin (or a configured one), with a `Host` that names sluice.
    pub fn check_proxied(&self, host: Option<&str>, headers: &HeaderMap) -> Result<(), Error> {
        let origin = headers.get(header::ORIGIN).map(|v| {
            String::from_utf8_lossy(v.as_bytes())
                .trim()
                .to_ascii_lowercase()
        });
        let fetch_site = headers.get(SEC_FETCH_SITE).map(|v| {
            String::from_utf8_lossy(v.as_bytes())
                .trim()
                .to_ascii_lowercase()
        });
        if origin.is_none() && fetch_site.is_none() {
            return Ok(());
        }
        if let Some(origin) = &origin {
            if self.allowed_origins.contains(origin) {
                return Ok(());
            }
        }
        let refused = || Error::CrossSiteRequest(origin.clone().unwrap_or_default());
        if fetch_site.as_deref() == Some("cross-site") {
            return Err(refused());
        }
        if let Some(host) = host {
            if !self.knows_host(host) {
                return Err(Error::UnknownHost(host.to_string()));
            }
        }
        if let Some(origin) = &origin {
            // Same origin: the page's scheme://host:port is the one the request goes to.
            let page = origin.split_once("://").map(|(_, authority)| authority);
            let same = page
                .zip(host)
                .is_some_and(|(page, host)| page == host.to_ascii_lowercase());
            if !same {
                return Err(refused());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::HeaderValue;

    fn policy() -> BrowserPolicy {
        BrowserPolicy {
            allowed_hosts: vec!["sluice.example.com".into()],
            allowed_origins: vec!["https://app.example.com".into()],
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(
                header::HeaderName::from_static(name),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn loopback_names_addresses_and_configured_names_are_known() {
        let p = policy();
        for host in [
            "localhost:4080",
            "LOCALHOST",
            "app.localhost:4080",
            "127.0.0.1:4080",
            "[::1]:4080",
            "10.1.2.3",
            "sluice.example.com:443",
            "Sluice.Example.Com.",
        ] {
            assert!(p.knows_host(host), "{host}");
        }
        for host in [
            "evil.example:4080",
            "localhost.evil.example",
            "example.com",
            "",
        ] {
            assert!(!p.knows_host(host), "{host}");
        }
    }

    #[test]
    fn admin_paths_refuse_a_rebound_name() {
        let p = policy();
        assert!(p.check_admin(Some("127.0.0.1:4080")).is_ok());
        assert!(p.check_admin(None).is_ok());
        assert!(matches!(
            p.check_admin(Some("rebind.evil.example:4080")),
            Err(Error::UnknownHost(_))
        ));
    }

    #[test]
    fn clients_that_are_not_browsers_pass_whatever_the_host() {
        assert!(policy()
            .check_proxied(Some("anything.example:4080"), &headers(&[]))
            .is_ok());
    }

    #[test]
    fn browsers_pass_only_from_sluices_own_or_a_configured_origin() {
        let p = policy();
        let host = Some("127.0.0.1:4080");
        let same = headers(&[
            ("origin", "http://127.0.0.1:4080"),
            ("sec-fetch-site", "same-origin"),
        ]);
        assert!(p.check_proxied(host, &same).is_ok());
        let configured = headers(&[
            ("origin", "https://app.example.com"),
            ("sec-fetch-site", "cross-site"),
        ]);
        assert!(p.check_proxied(host, &configured).is_ok());
        for refused in [
            headers(&[("origin", "https://evil.example")]),
            headers(&[("origin", "null")]),
            headers(&[
                ("origin", "http://localhost:3000"),
                ("sec-fetch-site", "same-site"),
            ]),
            headers(&[("sec-fetch-site", "cross-site")]),
        ] {
            assert!(
                matches!(
                    p.check_proxied(host, &refused),
                    Err(Error::CrossSiteRequest(_))
                ),
                "{refused:?}"
            );
        }
        // A rebound name: the page is "same-origin" to itself, but its name is not sluice's.
        let rebound = headers(&[
            ("origin", "http://rebind.evil.example:4080"),
            ("sec-fetch-site", "same-origin"),
        ]);
        assert!(matches!(
            p.check_proxied(Some("rebind.evil.example:4080"), &rebound),
            Err(Error::UnknownHost(_))
        ));
        // A same-origin GET carries no origin, only sec-fetch-site.
        let navigation = headers(&[("sec-fetch-site", "same-origin")]);
        assert!(matches!(
            p.check_proxied(Some("rebind.evil.example:4080"), &navigation),
            Err(Error::UnknownHost(_))
        ));
        assert!(p.check_proxied(host, &navigation).is_ok());
    }
}
