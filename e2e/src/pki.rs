//! The cluster's certificates and kubeconfigs: one CA, the API server's serving certificate, the
//! service-account signing key, and client certificates for the admin, the controllers and every node
//! (`system:node:<name>` in `system:nodes`, so the Node authorizer and NodeRestriction apply to the
//! kubelet stand-in exactly as to a kubelet).

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use std::path::{Path, PathBuf};

/// A client identity to issue: file stem, common name (user) and organisations (groups).
pub struct ClientIdentity<'a> {
    pub stem: &'a str,
    pub user: &'a str,
    pub groups: &'a [&'a str],
}

/// A serving identity to issue besides the API server's: file stem, common name, subject alternative
/// names (the kubelet API of each node: its address).
pub struct ServerIdentity<'a> {
    pub stem: &'a str,
    pub common_name: &'a str,
    pub sans: Vec<String>,
}

/// Writes a fresh PKI into `dir`: ca.{crt,key}, apiserver.{crt,key}, sa.key, one client pair per
/// client identity and one serving pair per server identity.
pub fn generate(
    dir: &Path,
    server_sans: &[String],
    clients: &[ClientIdentity<'_>],
    servers: &[ServerIdentity<'_>],
) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "weft-e2e-ca");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key)?;
    write(dir, "ca.crt", &ca_cert.pem())?;
    write(dir, "ca.key", &ca_key.serialize_pem())?;
    let issuer = Issuer::new(ca_params, ca_key);

    let server_key = KeyPair::generate()?;
    let mut sp = CertificateParams::new(server_sans.to_vec())?;
    sp.distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    sp.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    sp.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server = sp.signed_by(&server_key, &issuer)?;
    write(dir, "apiserver.crt", &server.pem())?;
    write(dir, "apiserver.key", &server_key.serialize_pem())?;

    for s in servers {
        let key = KeyPair::generate()?;
        let mut p = CertificateParams::new(s.sans.clone())?;
        p.distinguished_name.push(DnType::CommonName, s.common_name);
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = p.signed_by(&key, &issuer)?;
        write(dir, &format!("{}.crt", s.stem), &cert.pem())?;
        write(dir, &format!("{}.key", s.stem), &key.serialize_pem())?;
    }

    let sa_key = KeyPair::generate()?;
    write(dir, "sa.key", &sa_key.serialize_pem())?;
    write(dir, "sa.pub", &sa_key.public_key_pem())?;

    for c in clients {
        let key = KeyPair::generate()?;
        let mut p = CertificateParams::new(Vec::<String>::new())?;
        p.distinguished_name.push(DnType::CommonName, c.user);
        for g in c.groups {
            p.distinguished_name.push(DnType::OrganizationName, *g);
        }
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = p.signed_by(&key, &issuer)?;
        write(dir, &format!("{}.crt", c.stem), &cert.pem())?;
        write(dir, &format!("{}.key", c.stem), &key.serialize_pem())?;
    }
    Ok(())
}

fn write(dir: &Path, name: &str, content: &str) -> Result<()> {
    let p = dir.join(name);
    std::fs::write(&p, content).with_context(|| format!("failed to write {}", p.display()))?;
    if name.ends_with(".key") {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

/// Writes a kubeconfig for client `stem` of the PKI in `pki` that talks to `server`.
pub fn write_kubeconfig(path: &Path, server: &str, pki: &Path, stem: &str) -> Result<PathBuf> {
    let cfg = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "weft-e2e", "cluster": {
            "server": server,
            "certificate-authority": pki.join("ca.crt"),
        }}],
        "users": [{"name": stem, "user": {
            "client-certificate": pki.join(format!("{stem}.crt")),
            "client-key": pki.join(format!("{stem}.key")),
        }}],
        "contexts": [{"name": "weft-e2e", "context": {"cluster": "weft-e2e", "user": stem}}],
        "current-context": "weft-e2e",
    });
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)?;
    }
    std::fs::write(path, yaml_serde::to_string(&cfg)?)
        .with_context(|| format!("failed to write {}", path.display()))?;
    Ok(path.to_path_buf())
}
