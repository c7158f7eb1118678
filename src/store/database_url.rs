//! A Postgres database URL as hivegate takes it (`--database-url`, `[store] url`,
//! `HIVEGATE_DATABASE_URL`): checked once, and never shown with its password.
//!
//! Only `postgres://` and `postgresql://` URLs are taken (not libpq's `key=value`
//! strings). TLS to Postgres is not supported yet: a URL asking for it
//! (`sslmode=require`, `verify-ca`, `verify-full`) is refused rather than connected in
//! the clear; `disable` and `prefer` (libpq's default, which allows plaintext) connect
//! without TLS. Everything that shows a URL (errors, logs, `Debug`, `serve`'s first
//! lines) shows [`redact`]'s form.

use std::fmt;
use std::str::FromStr;

use super::StoreError;

/// The schemes a database URL may have.
const SCHEMES: [&str; 2] = ["postgres://", "postgresql://"];

/// What a URL's password is shown as.
const HIDDEN: &str = "***";

/// A checked Postgres URL. `Debug` and `Display` show it redacted; [`DatabaseUrl::expose`]
/// is the only way to the password.
#[derive(Clone)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    /// Check `url`: a `postgres://` or `postgresql://` URL the Postgres client can
    /// parse, not asking for TLS.
    pub fn parse(url: &str) -> Result<DatabaseUrl, StoreError> {
        let invalid = |why: String| StoreError::DatabaseUrl { url: redact(url), why };
        if !SCHEMES.iter().any(|s| url.starts_with(s)) {
            // Not shown: what is not a URL may be a password given by mistake.
            let shown = url.find("://").map_or("(not a URL)".to_string(), |at| format!("{}://…", &url[..at]));
            return Err(StoreError::DatabaseUrl {
                url: shown,
                why: "it must start with postgres:// or postgresql:// (for example postgres://hivegate:PASSWORD@db.example:5432/hivegate)".into(),
            });
        }
        match sslmode(url) {
            None | Some("disable" | "prefer") => {}
            Some(mode @ ("allow" | "require" | "verify-ca" | "verify-full")) => {
                return Err(StoreError::TlsUnsupported { url: redact(url), mode: mode.to_string() })
            }
            Some(other) => {
                return Err(invalid(format!(
                    "sslmode={other} is not one of disable, prefer, require, verify-ca, verify-full"
                )))
            }
        }
        postgres::Config::from_str(url).map_err(|e| invalid(without(&super::postgres::describe(&e), url)))?;
        Ok(DatabaseUrl(url.to_string()))
    }

    /// The URL with its password: for the Postgres client only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL as it may be shown.
    pub fn redacted(&self) -> String {
        redact(&self.0)
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({})", self.redacted())
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl FromStr for DatabaseUrl {
    type Err = String;

    fn from_str(url: &str) -> Result<DatabaseUrl, String> {
        DatabaseUrl::parse(url).map_err(|e| e.to_string())
    }
}

/// `url` with its password hidden: the password of `user:password@` and the value of
/// any `password=` parameter become `***`. Made for URLs that may be malformed: the
/// user information is everything before the last `@`, so a password holding `@`, `/`
/// or `?` is hidden whole (a query parameter holding `@` hides more than it needs to,
/// never less).
pub fn redact(url: &str) -> String {
    let (scheme, rest) = match url.find("://") {
        Some(at) => url.split_at(at + 3),
        None => ("", url),
    };
    let mut shown = String::with_capacity(url.len());
    shown.push_str(scheme);
    let after_userinfo = match rest.rfind('@') {
        Some(at) => {
            let userinfo = &rest[..at];
            match userinfo.find(':') {
                Some(colon) => {
                    shown.push_str(&userinfo[..colon]);
                    shown.push(':');
                    shown.push_str(HIDDEN);
                }
                None => shown.push_str(userinfo),
            }
            shown.push('@');
            &rest[at + 1..]
        }
        None => rest,
    };
    match after_userinfo.split_once('?') {
        Some((base, query)) => {
            shown.push_str(base);
            shown.push('?');
            let params: Vec<String> = query
                .split('&')
                .map(|param| match param.split_once('=') {
                    Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}={HIDDEN}"),
                    _ => param.to_string(),
                })
                .collect();
            shown.push_str(&params.join("&"));
        }
        None => shown.push_str(after_userinfo),
    }
    shown
}

/// The `sslmode` parameter of `url`'s query, if it has one (the last one counts, as
/// for the Postgres client).
fn sslmode(url: &str) -> Option<&str> {
    let (_, query) = url.split_once('?')?;
    query.split('&').filter_map(|p| p.split_once('=')).filter(|(k, _)| *k == "sslmode").map(|(_, v)| v).next_back()
}

/// `message` with anything that could be `url`'s password taken out: belt and braces
/// for messages that come from the client library.
pub(super) fn without(message: &str, url: &str) -> String {
    let mut message = message.to_string();
    for secret in secrets(url) {
        if secret.len() >= 2 {
            message = message.replace(&secret, HIDDEN);
        }
    }
    message
}

/// The password in `url`, as written and as the client decodes it.
fn secrets(url: &str) -> Vec<String> {
    let mut found = Vec::new();
    if let Ok(config) = postgres::Config::from_str(url) {
        if let Some(password) = config.get_password() {
            found.push(String::from_utf8_lossy(password).into_owned());
        }
    }
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    if let Some((userinfo, _)) = rest.rsplit_once('@') {
        if let Some((_, password)) = userinfo.split_once(':') {
            found.push(password.to_string());
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_every_form_of_password_and_keeps_the_rest() {
        for (url, shown) in [
            ("postgres://hg:s3cret@db.example:5432/hivegate", "postgres://hg:***@db.example:5432/hivegate"),
            ("postgresql://hg@127.0.0.1:5/postgres", "postgresql://hg@127.0.0.1:5/postgres"),
            ("postgres://db/hivegate?sslmode=disable", "postgres://db/hivegate?sslmode=disable"),
            ("postgres://hg:p%40ss@h/db?application_name=x", "postgres://hg:***@h/db?application_name=x"),
            ("postgres://hg:p@ss/w?rd@h/db", "postgres://hg:***@h/db"),
            ("postgres://hg:@h/db", "postgres://hg:***@h/db"),
            ("postgres://h/db?user=hg&password=s3cret&x=1", "postgres://h/db?user=hg&password=***&x=1"),
            ("postgres://h/db?PASSWORD=s3cret", "postgres://h/db?PASSWORD=***"),
            ("mysql://root:s3cret@h/db", "mysql://root:***@h/db"),
            ("root:s3cret@h", "root:***@h"),
            ("", ""),
        ] {
            assert_eq!(redact(url), shown, "{url}");
        }
    }

    #[test]
    fn a_database_url_never_shows_its_password() {
        let url = DatabaseUrl::parse("postgres://hg:hunter2x@127.0.0.1:5432/hivegate?sslmode=prefer").unwrap();
        assert_eq!(url.expose(), "postgres://hg:hunter2x@127.0.0.1:5432/hivegate?sslmode=prefer");
        assert_eq!(format!("{url:?}"), "DatabaseUrl(postgres://hg:***@127.0.0.1:5432/hivegate?sslmode=prefer)");
        assert_eq!(url.to_string(), "postgres://hg:***@127.0.0.1:5432/hivegate?sslmode=prefer");
    }

    #[test]
    fn urls_that_are_not_postgres_or_ask_for_tls_are_refused_without_the_password() {
        for (url, expected) in [
            (
                "mysql://root:hunter2x@h/db",
                "invalid database URL mysql://…: it must start with postgres:// or postgresql://",
            ),
            ("hunter2x", "invalid database URL (not a URL): it must start with postgres://"),
            (
                "postgres://u:hunter2x@h/db?sslmode=require",
                "the database URL postgres://u:***@h/db?sslmode=require asks for TLS (sslmode=require), which hivegate does not support yet for Postgres",
            ),
            ("postgres://u:hunter2x@h/db?sslmode=verify-full", "asks for TLS (sslmode=verify-full)"),
            ("postgres://u:hunter2x@h/db?sslmode=bogus", "sslmode=bogus is not one of disable, prefer"),
            ("postgres://u:hunter2x@h:notaport/db", "invalid database URL postgres://u:***@h:notaport/db: invalid"),
            ("postgres://u:hunter2x@h/db?nosuch=1", "unknown option `nosuch`"),
        ] {
            let err = DatabaseUrl::parse(url).err().unwrap().to_string();
            assert!(err.contains(expected), "{url}: {err}");
            assert!(!err.contains("hunter2x"), "{url}: {err}");
        }
    }

    #[test]
    fn without_takes_the_password_out_of_a_message() {
        let url = "postgres://u:p%40ssw0rd@h/db";
        assert_eq!(without("saw p%40ssw0rd and p@ssw0rd", url), "saw *** and ***");
    }
}
