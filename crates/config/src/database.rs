//! `database_url`: where the store keeps its rows when not in SQLite.

use std::fmt;

use serde::{Deserialize, Deserializer};

/// A PostgreSQL connection URL (`postgres://` or `postgresql://`). Its `Debug` and
/// [`DatabaseUrl::redacted`] hide the password; [`DatabaseUrl::as_str`] is the real URL.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    /// Checks the scheme: `postgres://` or `postgresql://` (SQLite needs no URL: it is the
    /// default, in `data_dir`).
    pub fn parse(url: &str) -> Result<DatabaseUrl, String> {
        let url = url.trim();
        let scheme = url.split_once("://").map(|(s, _)| s.to_ascii_lowercase());
        match scheme.as_deref() {
            Some("postgres" | "postgresql") => Ok(DatabaseUrl(url.to_string())),
            _ => Err(format!(
                "database_url must be a postgres:// or postgresql:// URL (got {}); \
                 leave it out for SQLite in data_dir",
                redact_url(url)
            )),
        }
    }

    /// The URL, password included (for connecting only).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The URL with its password replaced by `<redacted>`, for logs.
    pub fn redacted(&self) -> String {
        redact_url(&self.0)
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("DatabaseUrl")
            .field(&self.redacted())
            .finish()
    }
}

impl<'de> Deserialize<'de> for DatabaseUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        DatabaseUrl::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// `url` without its password (`scheme://user:<redacted>@host/...`); a password given as a
/// query parameter (`?password=...`) is redacted too.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{user}:<redacted>@{host}"),
            None => authority.to_string(),
        },
        None => authority.to_string(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=<redacted>"),
                    _ => pair.to_string(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_string(),
    };
    format!("{scheme}://{authority}{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_urls_parse_and_others_are_refused() {
        for ok in [
            "postgres://hf:pw@db.example:5432/hookflash",
            "postgresql://hf@127.0.0.1/hookflash?sslmode=disable",
            "postgres:///hookflash?host=/var/run/postgresql",
        ] {
            assert_eq!(DatabaseUrl::parse(ok).unwrap().as_str(), ok);
        }
        for bad in [
            "",
            "sqlite://data/hookflash.db",
            "mysql://x@y/z",
            "hookflash",
        ] {
            let err = DatabaseUrl::parse(bad).unwrap_err();
            assert!(err.contains("postgres://"), "{err}");
        }
    }

    #[test]
    fn the_password_never_shows() {
        let u =
            DatabaseUrl::parse("postgres://hf:s3cret@db:5432/hookflash?password=s3cret2").unwrap();
        assert_eq!(
            u.redacted(),
            "postgres://hf:<redacted>@db:5432/hookflash?password=<redacted>"
        );
        let debug = format!("{u:?}");
        assert!(!debug.contains("s3cret"), "{debug}");
        assert_eq!(
            redact_url("postgres://hf@db/hookflash"),
            "postgres://hf@db/hookflash"
        );
        assert!(!DatabaseUrl::parse("mysql://u:s3cret@h/d")
            .unwrap_err()
            .contains("s3cret"));
    }
}
