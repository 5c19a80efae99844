//! Outbound policy: which hosts and addresses the network actions may call
//! (`policy.http.allow_hosts`, `deny_hosts`, `deny_private_networks`).
//!
//! Names are checked before a request is sent and on every redirect; addresses are checked
//! where the connection is made: IP-literal URLs before sending, names inside the client's
//! DNS resolver ([`PolicyResolver`]), which hands the connector only the addresses that
//! pass. The address checked is therefore the address connected to; there is no gap
//! between checking and connecting for a DNS answer to change in.
//!
//! Deny wins over allow. Link-local and metadata addresses are always denied unless an
//! `allow_hosts` entry names them (their address or network, or the exact host name);
//! the hosts of configured service `base_url`s count as named. A policy without entries
//! costs an IP-literal request one address classification and a named request nothing.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::{Host, Url};

use super::hosts::{AddressClass, BadPattern, HostPattern, classify};

/// A policy entry that does not parse, named by its config key and position.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}[{index}]: {source}")]
pub struct PolicyError {
    pub key: &'static str,
    pub index: usize,
    #[source]
    pub source: BadPattern,
}

/// An outbound call the policy refuses; the message names the host and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Denied {
    pub host: String,
    pub reason: String,
    /// The URL a refused redirect pointed to.
    pub redirect_to: Option<String>,
}

impl std::fmt::Display for Denied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(to) = &self.redirect_to {
            write!(f, "redirect to {to}: ")?;
        }
        write!(f, "outbound policy denies {}: {}", self.host, self.reason)
    }
}

/// The compiled outbound policy.
#[derive(Debug, Clone, Default)]
pub struct OutboundPolicy {
    allow: Vec<HostPattern>,
    deny: Vec<HostPattern>,
    /// Hosts of configured service base URLs: allowed and named, as if listed exactly.
    trusted: Vec<Host<String>>,
    deny_private_networks: bool,
}

impl OutboundPolicy {
    /// The policy of `allow_hosts`, `deny_hosts` and `deny_private_networks`; `trusted` are
    /// the hosts of configured service base URLs. Errors name the list and the entry.
    pub fn new(
        allow_hosts: &[String],
        deny_hosts: &[String],
        deny_private_networks: bool,
        trusted: impl IntoIterator<Item = Host<String>>,
    ) -> Result<Self, PolicyError> {
        let parse = |key: &'static str, entries: &[String]| {
            entries
                .iter()
                .enumerate()
                .map(|(index, e)| {
                    HostPattern::parse(e).map_err(|source| PolicyError { key, index, source })
                })
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Self {
            allow: parse("policy.http.allow_hosts", allow_hosts)?,
            deny: parse("policy.http.deny_hosts", deny_hosts)?,
            trusted: trusted.into_iter().collect(),
            deny_private_networks,
        })
    }

    /// Checks the host of a URL about to be called (or redirected to): name rules for a
    /// name, name and address rules for an IP literal.
    pub fn check_url(&self, url: &Url) -> Result<(), Denied> {
        match url.host() {
            Some(Host::Domain(name)) => self.check_name(name.trim_end_matches('.')),
            Some(Host::Ipv4(ip)) => self.check_literal(IpAddr::V4(ip)),
            Some(Host::Ipv6(ip)) => self.check_literal(IpAddr::V6(ip)),
            None => Err(denied(url.as_str(), "the URL has no host".into())),
        }
    }

    fn check_name(&self, name: &str) -> Result<(), Denied> {
        if self.allow.is_empty() && self.deny.is_empty() {
            return Ok(());
        }
        if let Some(entry) = self.deny.iter().find(|p| p.matches_name(name)) {
            return Err(denied(
                name,
                format!("policy.http.deny_hosts entry \"{entry}\""),
            ));
        }
        let trusted = self
            .trusted
            .iter()
            .any(|h| matches!(h, Host::Domain(d) if d == name));
        if self.allow_list_on() && !trusted && !self.allow.iter().any(|p| p.matches_name(name)) {
            return Err(denied(name, "not in policy.http.allow_hosts".into()));
        }
        Ok(())
    }

    fn check_literal(&self, ip: IpAddr) -> Result<(), Denied> {
        let host = ip.to_string();
        let named = self.trusts_ip(ip) || self.allows_ip(ip);
        if self.allow_list_on() && !named && !self.deny.iter().any(|p| net_contains(p, ip)) {
            return Err(denied(&host, "not in policy.http.allow_hosts".into()));
        }
        self.check_address(&host, ip, named)
    }

    /// Checks an address `host` resolved to. `named`: an exact allow entry or a trusted
    /// base URL names the host, which exempts it from the address classes.
    fn check_address(&self, host: &str, ip: IpAddr, named: bool) -> Result<(), Denied> {
        let via = || {
            if host == ip.to_string() {
                String::new()
            } else {
                format!("it resolves to {ip}, ")
            }
        };
        if let Some(entry) = self.deny.iter().find(|p| net_contains(p, ip)) {
            return Err(denied(
                host,
                format!("{}in policy.http.deny_hosts entry \"{entry}\"", via()),
            ));
        }
        let named = named || self.allows_ip(ip);
        match classify(ip) {
            Some(AddressClass::LinkLocal(what)) if !named => Err(denied(
                host,
                format!(
                    "{}{what}; such addresses are always denied unless policy.http.allow_hosts names them",
                    via()
                ),
            )),
            Some(AddressClass::Private(what)) if self.deny_private_networks && !named => {
                Err(denied(
                    host,
                    format!(
                        "{}{what}, and policy.http.deny_private_networks is on",
                        via()
                    ),
                ))
            }
            _ => Ok(()),
        }
    }

    /// The addresses of `host` that may be connected to, in resolver order; the first
    /// refusal when none may.
    pub fn filter(
        &self,
        host: &str,
        addrs: impl IntoIterator<Item = SocketAddr>,
    ) -> Result<Vec<SocketAddr>, Denied> {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let named = self.names_exactly(&host);
        let mut first_refusal = None;
        let mut allowed = Vec::new();
        for addr in addrs {
            match self.check_address(&host, addr.ip(), named) {
                Ok(()) => allowed.push(addr),
                Err(denied) => {
                    first_refusal.get_or_insert(denied);
                }
            }
        }
        match (allowed.is_empty(), first_refusal) {
            (true, Some(denied)) => Err(denied),
            _ => Ok(allowed),
        }
    }

    fn allow_list_on(&self) -> bool {
        !self.allow.is_empty()
    }

    fn names_exactly(&self, host: &str) -> bool {
        self.allow
            .iter()
            .any(|p| matches!(p, HostPattern::Exact(name) if name == host))
            || self
                .trusted
                .iter()
                .any(|h| matches!(h, Host::Domain(d) if d == host))
    }

    fn allows_ip(&self, ip: IpAddr) -> bool {
        self.allow.iter().any(|p| net_contains(p, ip))
    }

    fn trusts_ip(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|h| match (h, ip) {
            (Host::Ipv4(a), IpAddr::V4(b)) => *a == b,
            (Host::Ipv6(a), IpAddr::V6(b)) => *a == b,
            _ => false,
        })
    }
}

fn net_contains(pattern: &HostPattern, ip: IpAddr) -> bool {
    match pattern {
        HostPattern::Net(net) => net.contains(&ip),
        _ => false,
    }
}

fn denied(host: &str, reason: String) -> Denied {
    Denied {
        host: host.to_owned(),
        reason,
        redirect_to: None,
    }
}

/// The client's DNS resolver: resolves with the system resolver (as reqwest's default
/// does) and passes on only the addresses the policy allows, so the connector can only
/// connect to checked addresses.
#[derive(Debug, Clone)]
pub struct PolicyResolver {
    policy: Arc<OutboundPolicy>,
}

impl PolicyResolver {
    pub fn new(policy: Arc<OutboundPolicy>) -> Self {
        Self { policy }
    }
}

impl Resolve for PolicyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str();
            let found = tokio::net::lookup_host((host, 0)).await?;
            let allowed = policy.filter(host, found)?;
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// The redirect policy: reqwest's default (at most 10 redirects) after the policy's check
/// of the new URL's host. Addresses of redirect targets are checked by the resolver.
pub fn redirect_policy(policy: Arc<OutboundPolicy>) -> reqwest::redirect::Policy {
    let default = reqwest::redirect::Policy::default();
    reqwest::redirect::Policy::custom(move |attempt| match policy.check_url(attempt.url()) {
        Ok(()) => default.redirect(attempt),
        Err(mut denied) => {
            denied.redirect_to = Some(attempt.url().to_string());
            attempt.error(denied)
        }
    })
}

/// The policy refusal in an error's source chain, if that is what the error is.
pub fn find_denied<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a Denied> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(denied) = e.downcast_ref::<Denied>() {
            return Some(denied);
        }
        current = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allow: &[&str], deny: &[&str], private: bool) -> OutboundPolicy {
        let own = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        OutboundPolicy::new(&own(allow), &own(deny), private, []).unwrap()
    }

    fn url(text: &str) -> Url {
        Url::parse(text).unwrap()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn resolved(p: &OutboundPolicy, host: &str, ips: &[&str]) -> Result<Vec<IpAddr>, Denied> {
        let addrs = ips.iter().map(|i| SocketAddr::new(ip(i), 0));
        p.filter(host, addrs)
            .map(|v| v.into_iter().map(|a| a.ip()).collect())
    }

    #[test]
    fn metadata_is_denied_by_default_and_private_networks_only_when_asked() {
        let open = OutboundPolicy::default();
        let e = open
            .check_url(&url("http://169.254.169.254/latest/meta-data"))
            .unwrap_err();
        assert_eq!(e.host, "169.254.169.254");
        assert!(e.to_string().contains("link-local"), "{e}");
        assert!(open.check_url(&url("http://[fd00:ec2::254]/")).is_err());
        assert!(open.check_url(&url("http://127.0.0.1:9/")).is_ok());
        assert!(resolved(&open, "metadata.internal", &["169.254.169.254"]).is_err());

        let closed = policy(&[], &[], true);
        let e = closed.check_url(&url("http://10.0.0.1/")).unwrap_err();
        assert!(e.reason.contains("deny_private_networks"), "{e}");
        let e = resolved(&closed, "db.local", &["192.168.0.4"]).unwrap_err();
        assert_eq!(e.host, "db.local");
        assert!(e.reason.contains("resolves to 192.168.0.4"), "{e}");
        assert_eq!(
            resolved(&closed, "mixed.example", &["10.0.0.1", "93.184.216.34"]).unwrap(),
            [ip("93.184.216.34")],
            "denied addresses are filtered out, allowed ones kept"
        );
    }

    #[test]
    fn deny_wins_over_allow_and_the_allow_list_restricts_names() {
        let p = policy(
            &["*.example.com", "10.1.0.0/16"],
            &["secret.example.com", "10.1.2.0/24"],
            false,
        );
        assert!(p.check_url(&url("https://api.example.com/x")).is_ok());
        let e = p
            .check_url(&url("https://secret.example.com/x"))
            .unwrap_err();
        assert!(
            e.reason.contains("deny_hosts entry \"secret.example.com\""),
            "{e}"
        );
        let e = p.check_url(&url("https://other.org/")).unwrap_err();
        assert!(e.reason.contains("allow_hosts"), "{e}");
        assert!(p.check_url(&url("http://10.1.9.9/")).is_ok());
        assert!(p.check_url(&url("http://10.1.2.3/")).is_err());
        assert!(p.check_url(&url("http://10.2.0.1/")).is_err());
        assert!(resolved(&p, "api.example.com", &["10.1.2.5"]).is_err());
    }

    #[test]
    fn naming_a_host_or_address_exempts_it_from_the_address_classes() {
        let p = policy(
            &["metadata.google.internal", "169.254.169.254", "*.corp"],
            &[],
            true,
        );
        assert!(p.check_url(&url("http://169.254.169.254/")).is_ok());
        assert!(resolved(&p, "metadata.google.internal", &["169.254.169.254"]).is_ok());
        assert!(
            resolved(&p, "db.corp", &["10.0.0.1"]).is_err(),
            "a wildcard does not name an address"
        );
        let trusted = OutboundPolicy::new(
            &[],
            &[],
            true,
            [Host::Domain("router.internal".to_string())],
        )
        .unwrap();
        assert!(resolved(&trusted, "router.internal", &["10.0.0.7"]).is_ok());
        assert!(resolved(&trusted, "other.internal", &["10.0.0.7"]).is_err());
    }

    #[test]
    fn config_errors_name_the_list_and_the_entry() {
        let e = OutboundPolicy::new(&["ok.com".into(), "a*b".into()], &[], false, []).unwrap_err();
        assert!(
            e.to_string().starts_with("policy.http.allow_hosts[1]"),
            "{e}"
        );
    }
}
