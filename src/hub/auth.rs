//! The connect decision for one socket, as a plain function over the pairing book, the
//! rate limiter and the peer: who is this, and what may it do?
//!
//! Order: device identity (signature, skew, nonce) → shared token (constant time) or
//! device token → pairing decision, each failure charged to its own budget
//! ([`super::ratelimit`]). Scopes are default-deny: a client without a verified
//! device gets what it declared only when it is the operator CLI (`cli` in mode `cli` or
//! `probe`) or a backend client
//! holding the shared token on a direct loopback socket without a browser Origin (the
//! machine's owner), or the dashboard ([`DASHBOARD_CLIENT`], a browser page) holding the
//! shared token on a direct loopback socket; anyone else connects with no scopes. Every
//! refusal carries the error to send and the close to follow.

use std::net::IpAddr;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::ratelimit::{CredentialKind, RateLimiter, Subject};
use crate::config::Secret;
use crate::pairing::{
    verify_device, ConnectContext, ConnectDecision, Credential, DeviceAuthError, Locality, PairingBook, PairingEvent,
    SilentApproval, VerifiedDevice,
};
use crate::protocol::{detail_codes, error_codes, AuthMethod, Close, ConnectParams, ErrorShape, HelloAuth, Role};
use crate::scope::ScopeSet;

/// Where a socket comes from, as decided at the HTTP upgrade.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    pub ip: IpAddr,
    /// `DirectLoopback` only for a loopback socket without Forwarded / X-Forwarded-* /
    /// X-Real-IP headers.
    pub locality: Locality,
    /// The upgrade carried an `Origin` header (a browser).
    pub browser: bool,
}

impl Peer {
    /// The machine's owner: direct loopback, not a browser.
    pub fn is_owner(&self) -> bool {
        self.locality == Locality::DirectLoopback && !self.browser
    }
}

/// `connect.client` `(id, mode)` of the dashboard page served at `/ui` (`src/ui/app.js`
/// sends it).
pub const DASHBOARD_CLIENT: (&str, &str) = ("hivegate-dashboard", "ui");

#[derive(Debug)]
pub struct Accepted {
    pub role: Role,
    pub scopes: ScopeSet,
    pub hello_auth: HelloAuth,
    /// The verified device, if the client sent one.
    pub device_id: Option<String>,
    pub events: Vec<PairingEvent>,
}

#[derive(Debug)]
pub struct Refused {
    /// Boxed: refusals are the cold path, and they keep `Result` small on the hot one.
    pub error: Box<ErrorShape>,
    pub close: Close,
    pub events: Vec<PairingEvent>,
    /// A new pending pairing request was created.
    pub pairing_request: bool,
}

impl Refused {
    fn new(error: ErrorShape, close: Close) -> Refused {
        Refused { error: Box::new(error), close, events: Vec::new(), pairing_request: false }
    }

    fn auth(detail: &str, message: &str) -> Refused {
        let error =
            ErrorShape::new(error_codes::INVALID_REQUEST, message).with_details(serde_json::json!({"code": detail}));
        Refused::new(error, Close::policy(message))
    }
}

fn rate_limited(retry_after_ms: u64) -> Refused {
    let message = "too many failed authentication attempts; try again later";
    let error = ErrorShape::new(error_codes::UNAVAILABLE, message)
        .with_details(serde_json::json!({"code": detail_codes::AUTH_RATE_LIMITED, "retryAfterMs": retry_after_ms}))
        .with_retry_after_ms(retry_after_ms)
        .with_retryable(true);
    Refused::new(error, Close::policy(message))
}

pub struct Authenticator<'a> {
    pub gateway_token: Option<&'a Secret>,
    pub silent: SilentApproval,
    pub book: &'a mut PairingBook,
    pub limiter: &'a mut RateLimiter,
}

/// Constant-time comparison of two secrets: both are hashed first, so neither their
/// contents nor their lengths leak through timing.
pub fn secrets_match(presented: &str, expected: &str) -> bool {
    let a = Sha256::digest(presented.as_bytes());
    let b = Sha256::digest(expected.as_bytes());
    a.ct_eq(&b).into()
}

impl Authenticator<'_> {
    pub fn authenticate(
        &mut self,
        params: &ConnectParams,
        nonce: &str,
        peer: &Peer,
        now_ms: u64,
    ) -> Result<Accepted, Refused> {
        let verified = params.device.as_ref().map(|_| verify_device(params, nonce, now_ms));
        self.authenticate_verified(params, verified, peer, now_ms)
    }

    /// [`Authenticator::authenticate`] with the device block already verified against
    /// the socket's nonce (by the connection, on its own thread: the Ed25519 check is
    /// the costliest step of a handshake, and the door's lock is one for all sockets).
    pub fn authenticate_verified(
        &mut self,
        params: &ConnectParams,
        verified: Option<Result<VerifiedDevice, DeviceAuthError>>,
        peer: &Peer,
        now_ms: u64,
    ) -> Result<Accepted, Refused> {
        match verified {
            Some(verified) => self.device_connect(params, verified, peer, now_ms),
            None => {
                let shared_ok = self.check_shared_token(params, peer, now_ms, false)?.unwrap_or(false);
                self.deviceless_connect(params, peer, shared_ok)
            }
        }
    }

    fn limited(&self, peer: &Peer, subject: &Subject, kind: CredentialKind, now_ms: u64) -> Result<(), Refused> {
        if peer.is_owner() {
            return Ok(());
        }
        self.limiter.check(subject, kind, now_ms).map_err(rate_limited)
    }

    fn failed(&mut self, peer: &Peer, subject: Subject, kind: CredentialKind, now_ms: u64) {
        if !peer.is_owner() {
            self.limiter.fail(subject, kind, now_ms);
        }
    }

    /// The shared token, budgeted per address. `Ok(None)`: none was presented, or the
    /// address is locked out and `yield_when_locked` (the device has its own credential,
    /// which the address's budget must not block). `Ok(Some(true))`: it matches.
    fn check_shared_token(
        &mut self,
        params: &ConnectParams,
        peer: &Peer,
        now_ms: u64,
        yield_when_locked: bool,
    ) -> Result<Option<bool>, Refused> {
        let auth = params.auth.as_ref();
        let Some(presented) = auth.and_then(|a| a.token.as_ref().or(a.password.as_ref())) else { return Ok(None) };
        let subject = Subject::Addr(peer.ip);
        match self.limited(peer, &subject, CredentialKind::SharedToken, now_ms) {
            Err(_) if yield_when_locked => return Ok(None),
            Err(refused) => return Err(refused),
            Ok(()) => {}
        }
        let matches = self.gateway_token.is_some_and(|expected| secrets_match(presented.expose(), expected.expose()));
        if !matches {
            self.failed(peer, subject, CredentialKind::SharedToken, now_ms);
            return Err(Refused::auth(detail_codes::AUTH_TOKEN_MISMATCH, "unauthorized: gateway token mismatch"));
        }
        self.limiter.succeed(&subject, CredentialKind::SharedToken);
        Ok(Some(true))
    }

    /// A connect with a device identity. The signature is verified first: a valid one
    /// proves the key, so no anonymous client's failures can refuse it. Bad signatures
    /// are budgeted per address (and answered as rate limited once that budget is spent);
    /// a device token is budgeted per device.
    fn device_connect(
        &mut self,
        params: &ConnectParams,
        verified: Result<VerifiedDevice, DeviceAuthError>,
        peer: &Peer,
        now_ms: u64,
    ) -> Result<Accepted, Refused> {
        let address = Subject::Addr(peer.ip);
        let device = match verified {
            Ok(device) => device,
            Err(e) => {
                self.limited(peer, &address, CredentialKind::DeviceSignature, now_ms)?;
                self.failed(peer, address, CredentialKind::DeviceSignature, now_ms);
                return Err(Refused::new(e.to_error_shape(), e.close()));
            }
        };
        let device_subject = Subject::Device(device.device_id.clone());
        let device_token = params.auth.as_ref().and_then(|a| a.device_token.as_ref());
        let shared_ok = self.check_shared_token(params, peer, now_ms, device_token.is_some())?.unwrap_or(false);
        let credential = match (shared_ok, device_token) {
            (true, _) => Credential::SharedSecret,
            (false, Some(token)) => {
                self.limited(peer, &device_subject, CredentialKind::DeviceToken, now_ms)?;
                Credential::DeviceToken(token.expose())
            }
            (false, None) if self.gateway_token.is_none() => self.signature_only(&device)?,
            (false, None) => {
                return Err(Refused::auth(detail_codes::AUTH_TOKEN_MISSING, "unauthorized: gateway token missing"))
            }
        };
        if self.book.device(&device.device_id).is_none() {
            // An unknown key can only ask to pair; new requests are budgeted per address.
            self.limited(peer, &address, CredentialKind::PairingRequest, now_ms)?;
        }
        let locality = if peer.browser { Locality::Remote } else { peer.locality };
        let ip = peer.ip.to_string();
        let ctx = ConnectContext { credential, locality, silent: self.silent, remote_ip: Some(&ip) };
        let outcome = self.book.decide_connect(&device, &ctx, now_ms).map_err(|e| {
            if matches!(credential, Credential::DeviceToken(_)) {
                self.failed(peer, device_subject.clone(), CredentialKind::DeviceToken, now_ms);
            }
            let error = e.to_error_shape();
            let close = Close::policy(&error.message);
            Refused::new(error, close)
        })?;
        match outcome.decision {
            ConnectDecision::Allowed(grant) => {
                if matches!(credential, Credential::DeviceToken(_)) {
                    self.limiter.succeed(&device_subject, CredentialKind::DeviceToken);
                }
                Ok(Accepted {
                    role: grant.role,
                    scopes: grant.scopes,
                    hello_auth: grant.hello_auth(),
                    device_id: Some(grant.device_id.clone()),
                    events: outcome.events,
                })
            }
            ConnectDecision::PairingRequired(required) => {
                if required.created {
                    self.failed(peer, address, CredentialKind::PairingRequest, now_ms);
                }
                Err(Refused {
                    error: Box::new(required.to_error_shape()),
                    close: required.close(),
                    events: outcome.events,
                    pairing_request: required.created,
                })
            }
        }
    }

    /// No gateway token is configured, and the device sent no device token. Its
    /// signature alone may ask to pair (a new key or a new role) or pick up a token that
    /// was minted and never delivered; a device whose token was delivered, or revoked,
    /// must present it. Otherwise revoking a token would not lock anyone out.
    fn signature_only(&self, device: &VerifiedDevice) -> Result<Credential<'static>, Refused> {
        match self.book.token(&device.device_id, device.role) {
            Some(token) if token.is_live() && !token.delivered => Ok(Credential::SharedSecret),
            Some(_) => Err(Refused::auth(
                detail_codes::AUTH_TOKEN_MISSING,
                "unauthorized: device token required (send auth.deviceToken, or ask an operator to rotate it)",
            )),
            None => Ok(Credential::SharedSecret),
        }
    }

    fn deviceless_connect(
        &mut self,
        params: &ConnectParams,
        peer: &Peer,
        shared_ok: bool,
    ) -> Result<Accepted, Refused> {
        if params.role == Role::Node {
            let message = "device identity required: a node must sign its connect with its device key";
            return Err(Refused::auth(detail_codes::DEVICE_IDENTITY_REQUIRED, message));
        }
        if !shared_ok && self.gateway_token.is_some() {
            return Err(Refused::auth(detail_codes::AUTH_TOKEN_MISSING, "unauthorized: gateway token missing"));
        }
        let trusted_client = matches!(
            (params.client.id.as_str(), params.client.mode.as_str()),
            ("cli", "cli") | ("cli", "probe") | ("gateway-client", "backend")
        );
        // The machine's owner: the operator CLI (its commands, and `gateway probe`, which
        // connects in mode `probe`; OpenClaw's own gateway clears a probe's scopes, so
        // the probe reports no capability there) or a backend client on a direct loopback
        // socket, holding the shared token (or, when none is configured, any such client:
        // without a token, loopback is the trust boundary).
        let owner = trusted_client && peer.is_owner() && (shared_ok || self.gateway_token.is_none());
        // The dashboard: a browser on this machine holding the shared token. A browser is
        // never trusted for its locality alone (any web page can open a socket to
        // loopback), so with no token configured it gets nothing.
        let dashboard = (params.client.id.as_str(), params.client.mode.as_str()) == DASHBOARD_CLIENT
            && peer.locality == Locality::DirectLoopback
            && shared_ok;
        let scopes = if owner || dashboard {
            ScopeSet::parse_lenient(params.scopes.iter().map(String::as_str)).0
        } else {
            ScopeSet::EMPTY
        };
        Ok(Accepted {
            role: Role::Operator,
            scopes,
            hello_auth: HelloAuth {
                method: Some(AuthMethod::Token),
                role: Role::Operator,
                scopes: scopes.names().into_iter().map(String::from).collect(),
                device_token: None,
                issued_at_ms: None,
            },
            device_id: None,
            events: Vec::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connect(client: (&str, &str), token: Option<&str>) -> ConnectParams {
        let auth = token.map(|t| format!(r#","auth":{{"token":"{t}"}}"#)).unwrap_or_default();
        let json = format!(
            r#"{{"minProtocol":4,"maxProtocol":4,"client":{{"id":"{}","version":"1","platform":"web","mode":"{}"}},
            "role":"operator","scopes":["operator.read","operator.write"]{auth}}}"#,
            client.0, client.1
        );
        serde_json::from_str(&json).unwrap()
    }

    fn scopes_of(gateway_token: Option<&str>, params: &ConnectParams, peer: &Peer) -> Result<Vec<String>, String> {
        let secret = gateway_token.map(Secret::new);
        let mut book = PairingBook::default();
        let mut limiter = RateLimiter::default();
        let mut auth = Authenticator {
            gateway_token: secret.as_ref(),
            silent: SilentApproval::default(),
            book: &mut book,
            limiter: &mut limiter,
        };
        auth.authenticate(params, "nonce", peer, 0)
            .map(|a| a.hello_auth.scopes)
            .map_err(|refused| refused.error.message.clone())
    }

    #[test]
    fn the_dashboard_gets_its_scopes_only_on_loopback_with_the_token() {
        let browser = |locality| Peer { ip: [127, 0, 0, 1].into(), locality, browser: true };
        let local = browser(Locality::DirectLoopback);
        let both = vec!["operator.read".to_string(), "operator.write".to_string()];
        assert_eq!(scopes_of(Some("t"), &connect(DASHBOARD_CLIENT, Some("t")), &local), Ok(both));
        // Through a proxy (or from another machine) the page is not the owner.
        let remote = browser(Locality::Remote);
        assert_eq!(scopes_of(Some("t"), &connect(DASHBOARD_CLIENT, Some("t")), &remote), Ok(vec![]));
        // Without a configured token, loopback alone never trusts a browser.
        assert_eq!(scopes_of(None, &connect(DASHBOARD_CLIENT, None), &local), Ok(vec![]));
        // Another browser client with the token, or the CLI's identity from a page, gets nothing.
        assert_eq!(scopes_of(Some("t"), &connect(("webchat", "ui"), Some("t")), &local), Ok(vec![]));
        assert_eq!(scopes_of(Some("t"), &connect(("cli", "cli"), Some("t")), &local), Ok(vec![]));
        // A wrong or missing token is refused.
        let wrong = scopes_of(Some("t"), &connect(DASHBOARD_CLIENT, Some("x")), &local);
        assert_eq!(wrong, Err("unauthorized: gateway token mismatch".to_string()));
        let missing = scopes_of(Some("t"), &connect(DASHBOARD_CLIENT, None), &local);
        assert_eq!(missing, Err("unauthorized: gateway token missing".to_string()));
    }

    #[test]
    fn secrets_compare_by_value_only() {
        assert!(secrets_match("s3cret", "s3cret"));
        assert!(!secrets_match("s3cret", "s3cret "));
        assert!(!secrets_match("", "s3cret"));
    }
}
