//! Certificates made by the test: a CA, and a server and a client
//! certificate it signed; more client certificates on demand.

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair, SanType};

/// A CA, a server certificate for `localhost` and a client certificate (SAN
/// `gateway.internal`), as PEM (certificate, private key) pairs.
pub struct TestPki {
    pub ca_pem: String,
    pub server: (String, String),
    pub client: (String, String),
    ca: CertifiedIssuer<'static, KeyPair>,
}

pub fn make_pki() -> TestPki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf = |names: Vec<String>| {
        let key = KeyPair::generate().unwrap();
        let certificate = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        (certificate.pem(), key.serialize_pem())
    };
    TestPki {
        server: leaf(vec!["localhost".into()]),
        client: leaf(vec!["gateway.internal".into()]),
        ca_pem: ca.pem(),
        ca,
    }
}

impl TestPki {
    /// A client certificate signed by the CA naming `names` (entries with
    /// `://` as SAN URIs, others as SAN DNS names), as PEM (certificate, key).
    pub fn client_naming(&self, names: &[&str]) -> (String, String) {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.subject_alt_names = names
            .iter()
            .map(|name| {
                let text = (*name).try_into().unwrap();
                if name.contains("://") {
                    SanType::URI(text)
                } else {
                    SanType::DnsName(text)
                }
            })
            .collect();
        let key = KeyPair::generate().unwrap();
        let certificate = params.signed_by(&key, &self.ca).unwrap();
        (certificate.pem(), key.serialize_pem())
    }
}
