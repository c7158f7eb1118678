//! Fuzz the frame parsers: the WebSocket reader (actix-http's codec behind our header
//! check, with the pre-auth limit) over raw bytes cut into two chunks, and the protocol's
//! text-frame parsers over the same bytes as text. Any panic is a finding.

use futures::stream::{self, StreamExt};
use hivegate::protocol::{parse_client_frame, parse_connect_frame, MAX_PREAUTH_PAYLOAD_BYTES};
use hivegate::ws::socket::{FrameLimit, Frames};

fn main() {
    afl::fuzz!(|data: &[u8]| {
        let cut = data.first().map_or(0, |b| usize::from(*b)).min(data.len());
        let chunks: Vec<Result<bytes::Bytes, String>> =
            vec![Ok(bytes::Bytes::copy_from_slice(&data[..cut])), Ok(bytes::Bytes::copy_from_slice(&data[cut..]))];
        let limit = MAX_PREAUTH_PAYLOAD_BYTES;
        futures::executor::block_on(async {
            let mut frames = Frames::new(Box::pin(stream::iter(chunks)), FrameLimit::new(limit));
            while let Some(frame) = frames.next().await {
                if frame.is_err() {
                    assert!(frames.next().await.is_none(), "the reader stops at its first error");
                    break;
                }
            }
        });
        let text = String::from_utf8_lossy(data);
        if let Err(e) = parse_connect_frame(&text) {
            let _ = (e.close(), e.to_error_shape());
        }
        let _ = parse_client_frame(&text);
    });
}
