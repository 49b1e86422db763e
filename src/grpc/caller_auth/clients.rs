//! Client certificate identities allowed to call: SAN DNS names and SAN URIs
//! (SPIFFE ids such as `spiffe://cluster.local/ns/gateway/sa/envoy`). The TLS
//! handshake has already checked the certificate against the client CA; this
//! only reads whom it names. The subject's common name is not looked at.
//!
//! Parsing a certificate allocates and costs microseconds, more than a warm
//! Authorize, while every call on a connection presents the same certificate;
//! so the answer is remembered per certificate (by its DER bytes, behind an
//! `ArcSwap`), and a call of a known client costs a hash and a comparison.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

/// An identity a client certificate can name.
#[derive(Clone, Debug, PartialEq, Eq)]
enum ClientIdentity {
    /// A SAN DNS name, lowercase (DNS names are compared without ASCII case).
    Dns(String),
    /// A SAN URI, compared exactly.
    Uri(String),
}

/// Answers remembered per certificate (DER bytes → allowed).
type Verdicts = HashMap<Arc<[u8]>, bool, foldhash::fast::RandomState>;

/// The most certificates remembered; past it, the memory starts over. Each
/// caller's certificate is one entry until it is renewed.
const MOST_REMEMBERED: usize = 1024;

/// The identities allowed to call, and the answers given so far.
#[derive(Clone)]
pub struct AllowedClients {
    identities: Arc<[ClientIdentity]>,
    verdicts: Arc<ArcSwap<Verdicts>>,
}

impl std::fmt::Debug for AllowedClients {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_list()
            .entries(self.identities.iter())
            .finish()
    }
}

impl AllowedClients {
    /// Parses the allowlist: entries with `://` are URIs, others DNS names.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<AllowedClients, String> {
        if entries.iter().all(|entry| entry.as_ref().trim().is_empty()) {
            return Err(
                "the list is empty (leave the setting out to let any client call)".to_owned(),
            );
        }
        let mut identities = Vec::with_capacity(entries.len());
        for entry in entries {
            let entry = entry.as_ref().trim();
            if entry.is_empty() {
                return Err("an entry is empty".to_owned());
            }
            if !entry.bytes().all(|byte| byte.is_ascii_graphic()) {
                return Err(format!(
                    "{entry:?} must be visible ASCII without spaces (a SAN DNS name or URI)"
                ));
            }
            identities.push(if entry.contains("://") {
                ClientIdentity::Uri(entry.to_owned())
            } else {
                ClientIdentity::Dns(entry.to_ascii_lowercase())
            });
        }
        Ok(AllowedClients {
            identities: identities.into(),
            verdicts: Arc::default(),
        })
    }

    /// Whether the client certificate `leaf` (DER) names an allowed identity.
    pub fn admits(&self, leaf: &[u8]) -> bool {
        if let Some(&admitted) = self.verdicts.load().get(leaf) {
            return admitted;
        }
        let admitted = self.names_an_allowed_identity(leaf);
        let certificate: Arc<[u8]> = Arc::from(leaf);
        self.verdicts.rcu(|verdicts| {
            let mut next = if verdicts.len() < MOST_REMEMBERED {
                Verdicts::clone(verdicts)
            } else {
                Verdicts::default()
            };
            next.insert(certificate.clone(), admitted);
            next
        });
        admitted
    }

    fn names_an_allowed_identity(&self, leaf: &[u8]) -> bool {
        let Ok((_, certificate)) = X509Certificate::from_der(leaf) else {
            return false;
        };
        let Ok(Some(names)) = certificate.subject_alternative_name() else {
            return false;
        };
        names
            .value
            .general_names
            .iter()
            .any(|name| self.identities.iter().any(|allowed| matches(allowed, name)))
    }
}

fn matches(allowed: &ClientIdentity, name: &GeneralName<'_>) -> bool {
    match (allowed, name) {
        (ClientIdentity::Dns(allowed), GeneralName::DNSName(name)) => {
            allowed.eq_ignore_ascii_case(name)
        }
        (ClientIdentity::Uri(allowed), GeneralName::URI(name)) => allowed == name,
        _ => false,
    }
}

/// The SAN DNS names and URIs of `leaf`, to log who was refused.
pub fn names_of(leaf: &[u8]) -> Vec<String> {
    let Ok((_, certificate)) = X509Certificate::from_der(leaf) else {
        return vec!["(unreadable certificate)".to_owned()];
    };
    let Ok(Some(names)) = certificate.subject_alternative_name() else {
        return Vec::new();
    };
    names
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(name) => Some(format!("dns:{name}")),
            GeneralName::URI(name) => Some(format!("uri:{name}")),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use rcgen::{CertificateParams, KeyPair, SanType};

    use super::{names_of, AllowedClients};

    fn certificate(names: Vec<SanType>) -> Vec<u8> {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = names;
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    fn dns(name: &str) -> SanType {
        SanType::DnsName(name.try_into().unwrap())
    }

    fn uri(name: &str) -> SanType {
        SanType::URI(name.try_into().unwrap())
    }

    const ENVOY: &str = "spiffe://cluster.local/ns/gateway/sa/envoy";

    #[test]
    fn a_certificate_naming_an_allowed_dns_name_or_uri_is_admitted() {
        let allowed = AllowedClients::parse(&["Gateway.Internal", ENVOY]).unwrap();
        let cases = [
            (vec![dns("gateway.internal")], true),
            (vec![dns("GATEWAY.internal")], true),
            (vec![dns("other.internal"), uri(ENVOY)], true),
            (
                vec![uri("spiffe://cluster.local/ns/gateway/sa/other")],
                false,
            ),
            (vec![uri(&ENVOY.to_uppercase())], false),
            // A URI entry does not match a DNS name that spells it, nor the reverse.
            (vec![dns("gateway.internal.evil")], false),
            (vec![uri("https://gateway.internal")], false),
            (Vec::new(), false),
        ];
        for (names, expected) in cases {
            let leaf = certificate(names.clone());
            // Asked twice: once parsed, once remembered.
            assert_eq!(allowed.admits(&leaf), expected, "{names:?}");
            assert_eq!(allowed.admits(&leaf), expected, "{names:?}, remembered");
        }
        assert!(!allowed.admits(b"not a certificate"));
    }

    #[test]
    fn bad_lists_are_refused() {
        assert!(AllowedClients::parse(&["gateway.internal", ""]).is_err());
        assert!(AllowedClients::parse(&["gateway internal"]).is_err());
        assert!(AllowedClients::parse::<&str>(&[]).is_err());
        let blank = AllowedClients::parse(&[""]).unwrap_err();
        assert!(blank.contains("the list is empty"), "{blank}");
        let parsed = AllowedClients::parse(&[" gateway.internal "]).unwrap();
        assert_eq!(format!("{parsed:?}"), r#"[Dns("gateway.internal")]"#);
    }

    #[test]
    fn names_are_listed_for_the_log() {
        let leaf = certificate(vec![dns("a.internal"), uri(ENVOY)]);
        assert_eq!(
            names_of(&leaf),
            vec!["dns:a.internal".to_owned(), format!("uri:{ENVOY}")]
        );
    }
}
