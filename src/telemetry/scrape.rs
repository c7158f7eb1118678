//! Who may scrape `/metrics`: the gateway token's holder, as a bearer token compared in
//! constant time (the hub's comparison), when a token is configured; anyone otherwise
//! (`serve` refuses to listen beyond loopback without a token).

/// Why `/metrics` refused a scrape.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScrapeRefused {
    #[error("unauthorized: /metrics needs the gateway token, sent as 'Authorization: Bearer <token>'")]
    Missing,
    #[error("unauthorized: gateway token mismatch")]
    Mismatch,
}

/// Check a scrape's `Authorization` header against the gateway token (constant time);
/// without a configured token every scrape is let in (`serve` and `worker` then listen on
/// loopback only: [`crate::cli`] refuses anything else).
pub fn authorize(token: Option<&crate::config::Secret>, authorization: Option<&[u8]>) -> Result<(), ScrapeRefused> {
    let Some(token) = token else { return Ok(()) };
    let presented = authorization
        .and_then(|h| std::str::from_utf8(h).ok())
        .and_then(|h| h.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, presented)| presented.trim())
        .ok_or(ScrapeRefused::Missing)?;
    if crate::hub::auth::secrets_match(presented, token.expose()) {
        Ok(())
    } else {
        Err(ScrapeRefused::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrapes_need_the_token_as_a_bearer_when_one_is_configured() {
        let token = crate::config::Secret::new("s3cret");
        assert_eq!(authorize(None, None), Ok(()));
        assert_eq!(authorize(Some(&token), None), Err(ScrapeRefused::Missing));
        assert_eq!(authorize(Some(&token), Some(b"Basic czNjcmV0")), Err(ScrapeRefused::Missing));
        assert_eq!(authorize(Some(&token), Some(b"Bearer wrong")), Err(ScrapeRefused::Mismatch));
        assert_eq!(authorize(Some(&token), Some(b"Bearer s3cret")), Ok(()));
        assert_eq!(authorize(Some(&token), Some(b"bearer  s3cret ")), Ok(()));
    }
}
