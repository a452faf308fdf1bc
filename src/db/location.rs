//! `Location`: where the database is, as the `db` setting names it. A
//! `postgres://` or `postgresql://` URL is a PostgreSQL database; anything
//! else is the path of a SQLite file.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use super::postgres::Url;

/// Where the database is.
#[derive(Clone, Debug)]
pub enum Location {
    /// A SQLite file, created on first start.
    Sqlite(PathBuf),
    /// A PostgreSQL database that already exists (its tables are created on
    /// first start). Boxed: its parsed config is large, and settings are
    /// moved around by value.
    Postgres(Box<Url>),
}

impl Location {
    /// "sqlite" or "postgres", for the startup line and metrics.
    pub fn backend(&self) -> &'static str {
        match self {
            Location::Sqlite(_) => "sqlite",
            Location::Postgres(_) => "postgres",
        }
    }
}

impl FromStr for Location {
    type Err = String;

    /// No message may quote `s`: a mistyped URL still holds its password.
    fn from_str(s: &str) -> Result<Location, String> {
        if s.is_empty() {
            return Err("the database path is empty".into());
        }
        if s.trim() != s || s.starts_with(['"', '\'']) {
            return Err("the database path or URL starts or ends with a space or quote".into());
        }
        // Anything that starts like a URL is one (the scheme is
        // case-insensitive, RFC 3986): a typo in it must not become the
        // name of a new SQLite file, shown in every error.
        let scheme = s
            .split_once(':')
            .map(|(scheme, _)| scheme)
            .filter(|scheme| {
                scheme.len() > 1
                    && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                    && scheme
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "+.-".contains(c))
            })
            .map(str::to_ascii_lowercase);
        match scheme.as_deref() {
            Some("postgres" | "postgresql") => {
                s.parse().map(|url| Location::Postgres(Box::new(url)))
            }
            Some(other) => Err(format!(
                "{other}: is not a database URL scheme; PostgreSQL URLs start with postgres:// \
                 (a SQLite path has no scheme)"
            )),
            None => Ok(Location::Sqlite(PathBuf::from(s))),
        }
    }
}

/// For people: the path, or the URL without its password.
impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Sqlite(path) => write!(f, "{}", path.display()),
            Location::Postgres(url) => write!(f, "{url}"),
        }
    }
}

/// As written, password and all: this is what the settings layers carry.
/// Anything shown to people goes through `Display`.
impl serde::Serialize for Location {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Location::Sqlite(path) => path.serialize(s),
            Location::Postgres(url) => s.serialize_str(url.as_written()),
        }
    }
}

impl<'de> serde::Deserialize<'de> for Location {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Location, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_postgres_and_everything_else_a_path() {
        for url in [
            "postgres://u:p@127.0.0.1:5432/db",
            "postgresql://u@localhost/db?sslmode=require",
            "POSTGRES://u@h/db",
        ] {
            assert_eq!(
                url.parse::<Location>().unwrap().backend(),
                "postgres",
                "{url}"
            );
        }
        for path in [
            "kaggleingest.db",
            "/var/lib/k.db",
            "./postgres.db",
            "data/a:b.db",
        ] {
            assert_eq!(
                path.parse::<Location>().unwrap().backend(),
                "sqlite",
                "{path}"
            );
        }
        for near_miss in [
            "",
            " postgres://u:pw@h/d",
            "\"postgres://u:pw@h/d\"",
            "postgress://u:pw@h/d",
            "postgres:/u:pw@h/d",
            "pg://u:pw@h/d",
            "sqlite://x",
        ] {
            let refused = near_miss.parse::<Location>().unwrap_err();
            assert!(!refused.contains("pw"), "{near_miss:?}: {refused}");
        }
    }

    #[test]
    fn the_password_is_never_shown_but_is_kept() {
        let location: Location = "postgres://app:s3cret@db.internal:6432/accounts?sslmode=require"
            .parse()
            .unwrap();
        let shown = location.to_string();
        assert_eq!(
            shown,
            "postgres://app@db.internal:6432/accounts?sslmode=require"
        );
        assert!(!format!("{location:?}").contains("s3cret"));
        let kept = toml::Value::try_from(&location).unwrap();
        assert!(kept.as_str().unwrap().contains("s3cret"));
    }
}
