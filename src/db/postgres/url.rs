//! `Url`: a PostgreSQL connection URL as the `db` setting gives it, parsed
//! once at start. tokio-postgres reads the URL itself, except for what it
//! leaves to the TLS layer: `sslmode=verify-ca|verify-full` and
//! `sslrootcert`, which are taken out here and honoured by `tls`.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use percent_encoding::percent_decode_str;
use tokio_postgres::config::Host;

/// How the connection is encrypted and what is checked, as libpq's
/// `sslmode` means it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// Plain TCP.
    Disable,
    /// TLS when the server offers it, else plain; no certificate check.
    Prefer,
    /// TLS or nothing; the certificate is checked only when `sslrootcert`
    /// names the CA (then as `VerifyCa`).
    Require,
    /// TLS, and the certificate must chain to a trusted root.
    VerifyCa,
    /// As `VerifyCa`, and the certificate must name the host.
    VerifyFull,
}

impl TlsMode {
    const NAMES: [(&'static str, TlsMode); 5] = [
        ("disable", TlsMode::Disable),
        ("prefer", TlsMode::Prefer),
        ("require", TlsMode::Require),
        ("verify-ca", TlsMode::VerifyCa),
        ("verify-full", TlsMode::VerifyFull),
    ];

    /// The `sslmode` tokio-postgres is given: the verifying modes are
    /// `require` to it, the checks being the TLS layer's.
    fn wire(self) -> &'static str {
        match self {
            TlsMode::Disable => "disable",
            TlsMode::Prefer => "prefer",
            TlsMode::Require | TlsMode::VerifyCa | TlsMode::VerifyFull => "require",
        }
    }
}

/// A parsed PostgreSQL URL. Its `Display` and `Debug` never show the
/// password.
#[derive(Clone)]
pub struct Url {
    written: String,
    pub(super) config: tokio_postgres::Config,
    pub(super) tls: TlsMode,
    /// PEM file of the CA(s) to trust instead of the system's.
    pub(super) root_cert: Option<PathBuf>,
}

impl Url {
    /// The URL exactly as given, password included.
    pub fn as_written(&self) -> &str {
        &self.written
    }
}

impl FromStr for Url {
    type Err = String;

    fn from_str(s: &str) -> Result<Url, String> {
        // No message here may quote `s`: it holds the password.
        let (scheme, rest) = s
            .split_once("://")
            .ok_or("a PostgreSQL URL starts with postgres:// or postgresql://")?;
        // The password is what lies before the last `@`: a `?`, `/` or `#`
        // in it would move where the parameters begin (`sslmode=require`
        // silently lost), a second `@` where the host begins.
        let (userinfo, after) = rest.rsplit_once('@').unwrap_or(("", rest));
        if let Some(c) = userinfo.chars().find(|c| "?/#@".contains(*c)) {
            return Err(format!(
                "the user or password in the PostgreSQL URL has an unencoded '{c}': \
                 write it percent-encoded ({})",
                percent_encoding::utf8_percent_encode(
                    &c.to_string(),
                    percent_encoding::NON_ALPHANUMERIC
                )
            ));
        }
        if after.contains('#') {
            return Err("a PostgreSQL URL has no #fragment".into());
        }
        let (host_and_db, query) = after.split_once('?').unwrap_or((after, ""));
        // tokio-postgres knows the scheme in lowercase only.
        let at = if userinfo.is_empty() { "" } else { "@" };
        let base = format!(
            "{}://{userinfo}{at}{host_and_db}",
            scheme.to_ascii_lowercase()
        );
        let mut tls = TlsMode::Prefer;
        let mut root_cert = None;
        // The other parameters stay exactly as written (no re-encoding).
        let mut kept: Vec<&str> = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_decode_str(value).decode_utf8_lossy();
            match &*percent_decode_str(key).decode_utf8_lossy() {
                "sslmode" => {
                    tls = TlsMode::NAMES
                        .iter()
                        .find(|(name, _)| *name == value)
                        .map(|&(_, mode)| mode)
                        .ok_or_else(|| {
                            format!(
                                "sslmode={value} is not one of disable, prefer, require, verify-ca, verify-full"
                            )
                        })?;
                }
                "sslrootcert" => root_cert = Some(PathBuf::from(&*value)),
                _ => kept.push(pair),
            }
        }
        kept.push(match tls.wire() {
            "disable" => "sslmode=disable",
            "prefer" => "sslmode=prefer",
            _ => "sslmode=require",
        });
        let config = format!("{base}?{}", kept.join("&"))
            .parse::<tokio_postgres::Config>()
            // Its causes name the option ("unknown option `x`"), never a value.
            .map_err(|e| format!("not a usable PostgreSQL URL: {}", crate::report::Chain(&e)))?;
        if config.get_hosts().is_empty() {
            return Err("the PostgreSQL URL names no host".into());
        }
        if config.get_user().is_none() {
            return Err(
                "the PostgreSQL URL names no user (postgres://USER:PASSWORD@HOST/DB)".into(),
            );
        }
        Ok(Url {
            written: s.to_owned(),
            config,
            tls,
            root_cert,
        })
    }
}

/// `postgres://user@host:port/dbname?sslmode=...`: no password, and of the
/// parameters only what says how the connection is secured.
impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        let user = c.get_user().unwrap_or_default();
        let ports = c.get_ports();
        let hosts: Vec<String> = c
            .get_hosts()
            .iter()
            .enumerate()
            .map(|(i, host)| {
                let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
                match host {
                    Host::Tcp(name) if name.contains(':') => format!("[{name}]:{port}"),
                    Host::Tcp(name) => format!("{name}:{port}"),
                    Host::Unix(dir) => format!("{}:{port}", dir.display()),
                }
            })
            .collect();
        let dbname = c.get_dbname().unwrap_or(user);
        let mode = TlsMode::NAMES
            .iter()
            .find(|(_, mode)| *mode == self.tls)
            .map_or("prefer", |(name, _)| name);
        write!(
            f,
            "postgres://{user}@{}/{dbname}?sslmode={mode}",
            hosts.join(",")
        )?;
        if let Some(root) = &self.root_cert {
            write!(f, "&sslrootcert={}", root.display())?;
        }
        Ok(())
    }
}

impl fmt::Debug for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Url({self}, {:?})", self.tls)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_is_libpqs() {
        let mode = |s: &str| s.parse::<Url>().map(|u| u.tls);
        assert_eq!(mode("postgres://u@h/d"), Ok(TlsMode::Prefer));
        assert_eq!(
            mode("postgres://u@h/d?sslmode=disable"),
            Ok(TlsMode::Disable)
        );
        assert_eq!(
            mode("postgres://u@h/d?sslmode=require"),
            Ok(TlsMode::Require)
        );
        assert_eq!(
            mode("postgres://u@h/d?sslmode=verify-full&sslrootcert=/ca.pem"),
            Ok(TlsMode::VerifyFull)
        );
        assert!(mode("postgres://u@h/d?sslmode=sometimes").is_err());
    }

    #[test]
    fn other_parameters_reach_tokio_postgres_as_written() {
        let url: Url = "postgres://u:p%40ss@h:5433/d?application_name=ki%20node&connect_timeout=3"
            .parse()
            .unwrap();
        assert_eq!(url.config.get_application_name(), Some("ki node"));
        assert_eq!(url.config.get_password(), Some(&b"p@ss"[..]));
        assert_eq!(url.to_string(), "postgres://u@h:5433/d?sslmode=prefer");
        let unknown = "postgres://u@h/d?no_such_option=1"
            .parse::<Url>()
            .unwrap_err();
        assert!(unknown.contains("no_such_option"), "{unknown}");
        assert!("postgres:///d".parse::<Url>().is_err());
    }

    #[test]
    fn a_password_can_never_move_the_parameters_or_the_host() {
        for url in [
            "postgres://u:pa?ss@h/d?sslmode=require",
            "postgres://u:pa/ss@h/d?sslmode=require",
            "postgres://u:p@ss@h/d",
            "postgres://u:pa#ss@h/d",
        ] {
            let refused = url.parse::<Url>().unwrap_err();
            assert!(refused.contains("percent-encoded"), "{url}: {refused}");
            assert!(
                !refused.contains("ss@h"),
                "the password is quoted: {refused}"
            );
        }
        let encoded: Url = "postgres://u:pa%3Fss%40x@h/d?sslmode=require"
            .parse()
            .unwrap();
        assert_eq!(encoded.tls, TlsMode::Require);
        assert_eq!(encoded.config.get_password(), Some(&b"pa?ss@x"[..]));
        assert_eq!(
            encoded.config.get_ssl_mode(),
            tokio_postgres::config::SslMode::Require
        );
    }
}
