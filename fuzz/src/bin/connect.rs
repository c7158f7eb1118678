//! Fuzz the connect decision: the input's first byte picks the peer (owner on loopback,
//! forwarded, browser) and whether a gateway token is configured; the rest is the
//! `connect` frame. It is parsed, version-checked and decided against a pairing book
//! that already holds a paired device, twice in a row (the second time with the book
//! and rate limiter the first one left). Any panic is a finding.

use hivegate::config::Secret;
use hivegate::hub::auth::{Authenticator, Peer};
use hivegate::hub::ratelimit::RateLimiter;
use hivegate::pairing::{Locality, NodeCommandPolicy, PairingBook, SilentApproval};
use hivegate::protocol::{negotiate_protocol, parse_connect_frame};

fn main() {
    let token = Secret::new("fuzz-token");
    afl::fuzz!(|data: &[u8]| {
        let Some((&selector, rest)) = data.split_first() else { return };
        let text = String::from_utf8_lossy(rest);
        let Ok(request) = parse_connect_frame(&text) else { return };
        let params = request.params;
        if negotiate_protocol(params.min_protocol, params.max_protocol, params.role).is_err() {
            return;
        }
        let peer = Peer {
            ip: if selector & 1 == 0 { [127, 0, 0, 1].into() } else { [203, 0, 113, 7].into() },
            locality: if selector & 2 == 0 { Locality::DirectLoopback } else { Locality::Remote },
            browser: selector & 4 != 0,
        };
        let silent = if selector & 8 == 0 { SilentApproval::Off } else { SilentApproval::LocalOnly };
        let mut book = PairingBook::new(NodeCommandPolicy::default());
        let mut limiter = RateLimiter::default();
        let gateway_token = (selector & 16 == 0).then_some(&token);
        for round in 0..2u64 {
            let mut auth = Authenticator { gateway_token, silent, book: &mut book, limiter: &mut limiter };
            let nonce = params.device.as_ref().map(|d| d.nonce.clone()).unwrap_or_default();
            let _ = auth.authenticate(&params, nonce.as_deref().unwrap_or("n"), &peer, 1_700_000_000_000 + round);
        }
        let _ = serde_json::to_string(&book.export());
    });
}
