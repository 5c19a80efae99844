//! Host patterns of the outbound policy (`allow_hosts`, `deny_hosts` entries) and the
//! classification of special addresses (link-local and metadata, private networks), with
//! IPv4 addresses written as IPv6 counted as the IPv4 address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use url::Host;

/// Why an `allow_hosts` / `deny_hosts` entry was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadPattern(String);

/// One `allow_hosts` / `deny_hosts` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// `api.example.com`: that host only.
    Exact(String),
    /// `*.example.com`: any host under `example.com` (stored as `.example.com`), not
    /// `example.com` itself.
    Suffix(String),
    /// `10.0.0.0/8`, `169.254.169.254`, `[fd00:ec2::254]`: addresses.
    Net(IpNet),
}

impl HostPattern {
    /// Parses an entry: a host name, `*.` and a domain, an IP address or a CIDR network.
    pub fn parse(text: &str) -> Result<Self, BadPattern> {
        let entry = text.trim().trim_end_matches('.').to_ascii_lowercase();
        if entry.is_empty() {
            return Err(BadPattern("an empty entry".into()));
        }
        if entry.contains("://") || entry.contains('@') {
            return Err(BadPattern(format!(
                "{text:?}: give a host name, *.domain, an IP address or a CIDR network, not a URL"
            )));
        }
        if entry.contains('/') {
            return entry
                .parse::<IpNet>()
                .map(|net| Self::Net(net.trunc()))
                .map_err(|_| {
                    BadPattern(format!("{text:?} is not a CIDR network such as 10.0.0.0/8"))
                });
        }
        let bare = entry.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(Self::Net(IpNet::from(ip)));
        }
        let (suffix, name) = match entry.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, entry.as_str()),
        };
        if name.contains('*') {
            return Err(BadPattern(format!(
                "{text:?}: a wildcard may only open the pattern, as in *.example.com"
            )));
        }
        if name.contains(':') {
            return Err(BadPattern(format!(
                "{text:?}: patterns name hosts, without a port"
            )));
        }
        let normalized = match Host::parse(name) {
            Ok(Host::Domain(domain)) => domain,
            Ok(_) if suffix => {
                return Err(BadPattern(format!(
                    "{text:?}: *. must be followed by a domain name"
                )));
            }
            Ok(_) | Err(_) => return Err(BadPattern(format!("{text:?} is not a valid host name"))),
        };
        Ok(if suffix {
            Self::Suffix(format!(".{normalized}"))
        } else {
            Self::Exact(normalized)
        })
    }

    /// True when this name pattern matches `host` (lower case, no trailing dot).
    pub(super) fn matches_name(&self, host: &str) -> bool {
        match self {
            Self::Exact(name) => name == host,
            Self::Suffix(suffix) => host.len() > suffix.len() && host.ends_with(suffix.as_str()),
            Self::Net(_) => false,
        }
    }
}

impl std::fmt::Display for HostPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Exact(name) => f.write_str(name),
            Self::Suffix(suffix) => write!(f, "*{suffix}"),
            Self::Net(net) if net.prefix_len() == net.max_prefix_len() => {
                write!(f, "{}", net.addr())
            }
            Self::Net(net) => write!(f, "{net}"),
        }
    }
}

/// Why an address is special.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressClass {
    /// Link-local or a cloud metadata address: always denied unless named.
    LinkLocal(&'static str),
    /// Internal to a host or network: denied with `deny_private_networks`.
    Private(&'static str),
}

/// The AWS IPv6 instance metadata address (inside fc00::/7, but always denied).
const AWS_METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);
/// Alibaba Cloud's metadata address (inside 100.64.0.0/10).
const ALIBABA_METADATA: Ipv4Addr = Ipv4Addr::new(100, 100, 100, 200);
const THIS_NETWORK: Ipv4Net = Ipv4Net::new_assert(Ipv4Addr::new(0, 0, 0, 0), 8);
const SHARED_CGNAT: Ipv4Net = Ipv4Net::new_assert(Ipv4Addr::new(100, 64, 0, 0), 10);
const IETF_PROTOCOL: Ipv4Net = Ipv4Net::new_assert(Ipv4Addr::new(192, 0, 0, 0), 24);
const BENCHMARKING: Ipv4Net = Ipv4Net::new_assert(Ipv4Addr::new(198, 18, 0, 0), 15);
const RESERVED: Ipv4Net = Ipv4Net::new_assert(Ipv4Addr::new(240, 0, 0, 0), 4);
const NAT64: Ipv6Net = Ipv6Net::new_assert(Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0), 96);
const SITE_LOCAL: Ipv6Net = Ipv6Net::new_assert(Ipv6Addr::new(0xfec0, 0, 0, 0, 0, 0, 0, 0), 10);

/// Classifies an address; `None` for an ordinary public address. IPv6 forms that carry an
/// IPv4 address (mapped `::ffff:a.b.c.d`, compatible `::a.b.c.d`, NAT64 `64:ff9b::/96`) are
/// classified by the IPv4 address they carry.
pub fn classify(ip: IpAddr) -> Option<AddressClass> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => classify_v4(v4),
            None => classify_v6(v6),
        },
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<AddressClass> {
    use AddressClass::{LinkLocal, Private};
    Some(if ip == ALIBABA_METADATA {
        LinkLocal("a cloud metadata address")
    } else if ip.is_link_local() {
        LinkLocal("a link-local address (169.254.0.0/16, cloud metadata among them)")
    } else if ip.is_loopback() {
        Private("a loopback address")
    } else if ip.is_private() {
        Private("a private address (RFC 1918)")
    } else if SHARED_CGNAT.contains(&ip) {
        Private("a shared address (100.64.0.0/10, CGNAT)")
    } else if THIS_NETWORK.contains(&ip) {
        Private("a this-network address (0.0.0.0/8)")
    } else if ip.is_broadcast() || RESERVED.contains(&ip) {
        Private("a reserved address (240.0.0.0/4)")
    } else if ip.is_multicast() {
        Private("a multicast address")
    } else if IETF_PROTOCOL.contains(&ip) || BENCHMARKING.contains(&ip) || ip.is_documentation() {
        Private("a special-purpose address")
    } else {
        return None;
    })
}

fn classify_v6(ip: Ipv6Addr) -> Option<AddressClass> {
    use AddressClass::{LinkLocal, Private};
    Some(if ip == AWS_METADATA_V6 {
        LinkLocal("a cloud metadata address")
    } else if ip.is_unicast_link_local() {
        LinkLocal("a link-local address (fe80::/10)")
    } else if ip.is_loopback() {
        Private("a loopback address")
    } else if ip.is_unspecified() {
        Private("the unspecified address")
    } else if ip.is_unique_local() {
        Private("a unique local address (fc00::/7)")
    } else if SITE_LOCAL.contains(&ip) {
        Private("a site-local address (fec0::/10)")
    } else if ip.is_multicast() {
        Private("a multicast address")
    } else {
        return None;
    })
}

/// The IPv4 address an IPv6 address stands for, if any.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    let s = ip.segments();
    let low = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if NAT64.contains(&ip) {
        return Some(low);
    }
    // Deprecated IPv4-compatible addresses; `::` and `::1` are IPv6's own.
    if s[..6] == [0; 6] && !ip.is_unspecified() && !ip.is_loopback() {
        return Some(low);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn patterns_parse_names_wildcards_addresses_and_networks() {
        assert_eq!(
            HostPattern::parse(" API.Example.com. ").unwrap(),
            HostPattern::Exact("api.example.com".into())
        );
        assert_eq!(
            HostPattern::parse("*.example.com").unwrap(),
            HostPattern::Suffix(".example.com".into())
        );
        assert_eq!(
            HostPattern::parse("[fd00:ec2::254]").unwrap().to_string(),
            "fd00:ec2::254"
        );
        assert_eq!(
            HostPattern::parse("10.1.2.3/8").unwrap().to_string(),
            "10.0.0.0/8"
        );
        for bad in [
            "",
            "*",
            "a.*.com",
            "*example.com",
            "https://x.com",
            "x.com:443",
            "10.0.0.0/33",
            "*.10.0.0.1",
            "exa mple.com",
        ] {
            assert!(
                HostPattern::parse(bad).is_err(),
                "{bad:?} should be refused"
            );
        }
    }

    #[test]
    fn a_wildcard_matches_subdomains_but_not_the_domain_itself() {
        let p = HostPattern::parse("*.example.com").unwrap();
        assert!(p.matches_name("a.example.com"));
        assert!(p.matches_name("a.b.example.com"));
        assert!(!p.matches_name("example.com"));
        assert!(!p.matches_name("badexample.com"));
    }

    #[test]
    fn addresses_are_classified_with_embedded_ipv4_forms() {
        let link = |s: &str| matches!(classify(ip(s)), Some(AddressClass::LinkLocal(_)));
        let private = |s: &str| matches!(classify(ip(s)), Some(AddressClass::Private(_)));
        for s in [
            "169.254.169.254",
            "169.254.0.1",
            "fe80::1",
            "fd00:ec2::254",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "100.100.100.200",
        ] {
            assert!(link(s), "{s} is link-local or metadata");
        }
        for s in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "::1",
            "::",
            "fc00::1",
            "fd12:3456::1",
            "::ffff:10.0.0.1",
            "::ffff:127.0.0.1",
            "::127.0.0.1",
        ] {
            assert!(private(s), "{s} is private");
        }
        for s in [
            "93.184.216.34",
            "8.8.8.8",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "172.32.0.1",
        ] {
            assert_eq!(classify(ip(s)), None, "{s} is public");
        }
    }
}
