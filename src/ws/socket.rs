//! The WebSocket byte streams of one connection, on actix-http's own frame codec:
//! [`Frames`] decodes what the client sends, [`Writer`] encodes what the server sends
//! and [`Outgoing`] is the response body that carries it.
//!
//! Two limits live here, because only here are bytes counted before they are buffered:
//!
//! - **Frame size, per phase.** The limit is read from a shared cell before every
//!   frame, so the connection can raise it after `hello-ok` (64 KiB before, `maxPayload`
//!   after). actix-http's codec checks its size limit only once the whole frame has
//!   arrived, so [`Frames`] first reads the length the frame header declares
//!   (`declared_len`, RFC 6455 §5.2) and refuses an oversized frame from its header
//!   alone; it reads from the socket only when the codec needs more bytes, so an
//!   unauthenticated peer can never make the server hold more than one pre-auth frame.
//! - **Buffered output (`maxBufferedBytes`).** Bytes written are counted until the HTTP
//!   dispatcher takes them for the socket (it stops taking them when the peer stops
//!   reading). Past the limit the writer refuses more; the connection then closes with
//!   1008 "slow consumer", and the queued bytes are dropped so that the close frame is
//!   the next thing the peer reads.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use actix_http::ws::{Codec, Frame, Message, ProtocolError};
use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use tokio::sync::mpsc;
use tokio_util::codec::{Decoder, Encoder};

/// The frame-size limit of a connection, changed by the connection as its phase changes.
#[derive(Clone)]
pub struct FrameLimit(Arc<AtomicUsize>);

impl FrameLimit {
    pub fn new(bytes: usize) -> FrameLimit {
        FrameLimit(Arc::new(AtomicUsize::new(bytes)))
    }

    pub fn set(&self, bytes: usize) {
        self.0.store(bytes, Ordering::Release);
    }

    pub fn get(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }
}

/// Decoded client frames from the request's byte stream.
pub struct Frames<S> {
    payload: S,
    buf: BytesMut,
    codec: Codec,
    codec_limit: usize,
    limit: FrameLimit,
    done: bool,
}

impl<S> Frames<S> {
    pub fn new(payload: S, limit: FrameLimit) -> Frames<S> {
        let codec_limit = limit.get();
        Frames {
            payload,
            buf: BytesMut::new(),
            codec: Codec::new().max_size(codec_limit),
            codec_limit,
            limit,
            done: false,
        }
    }
}

impl<S, E> Stream for Frames<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    type Item = Result<Frame, ProtocolError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            let limit = this.limit.get();
            if limit != this.codec_limit {
                this.codec = Codec::new().max_size(limit);
                this.codec_limit = limit;
            }
            // Refuse from the header, before reading the payload.
            if declared_len(&this.buf).is_some_and(|len| len > limit as u64) {
                this.done = true;
                this.buf = BytesMut::new();
                return Poll::Ready(Some(Err(ProtocolError::Overflow)));
            }
            match this.codec.decode(&mut this.buf) {
                Ok(Some(frame)) => return Poll::Ready(Some(Ok(frame))),
                Ok(None) => {}
                Err(e) => {
                    this.done = true;
                    this.buf = BytesMut::new();
                    return Poll::Ready(Some(Err(e)));
                }
            }
            match Pin::new(&mut this.payload).poll_next(cx) {
                Poll::Ready(Some(Ok(chunk))) => this.buf.extend_from_slice(&chunk),
                Poll::Ready(Some(Err(e))) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(ProtocolError::Io(io::Error::other(e.to_string())))));
                }
                Poll::Ready(None) => {
                    this.done = true;
                    return Poll::Ready(None);
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// The payload length the frame header at the start of `buf` declares, once the bytes
/// that carry it have arrived (7 bits, or 16 or 64 more after the markers 126 and 127).
fn declared_len(buf: &[u8]) -> Option<u64> {
    let marker = *buf.get(1)? & 0x7f;
    match marker {
        126 => buf.get(2..4).map(|b| u64::from(u16::from_be_bytes([b[0], b[1]]))),
        127 => buf.get(2..10).and_then(|b| <[u8; 8]>::try_from(b).ok()).map(u64::from_be_bytes),
        n => Some(u64::from(n)),
    }
}

/// What the writer and the body share.
struct Shared {
    /// Bytes written and not yet taken by the dispatcher.
    buffered: AtomicUsize,
    /// Set on a slow-consumer close: drop the queue, send only `last`.
    aborted: AtomicBool,
    last: Mutex<Option<Bytes>>,
}

/// The server's side of a connection: encodes frames into the response body.
pub struct Writer {
    tx: Option<mpsc::UnboundedSender<Bytes>>,
    shared: Arc<Shared>,
    codec: Codec,
    max_buffered: usize,
}

/// The output was refused: more than `maxBufferedBytes` is waiting for a peer that does
/// not read.
#[derive(Debug, PartialEq, Eq)]
pub struct SlowConsumer {
    pub buffered: usize,
}

/// The response body of the upgrade: the frames the writer queued, in order.
pub struct Outgoing {
    rx: mpsc::UnboundedReceiver<Bytes>,
    shared: Arc<Shared>,
}

impl Writer {
    pub fn new(max_buffered: usize) -> (Writer, Outgoing) {
        let (tx, rx) = mpsc::unbounded_channel();
        let shared =
            Arc::new(Shared { buffered: AtomicUsize::new(0), aborted: AtomicBool::new(false), last: Mutex::new(None) });
        let writer = Writer { tx: Some(tx), shared: shared.clone(), codec: Codec::new(), max_buffered };
        (writer, Outgoing { rx, shared })
    }

    fn encode(&mut self, message: Message) -> Option<Bytes> {
        let mut buf = BytesMut::new();
        match self.codec.encode(message, &mut buf) {
            Ok(()) => Some(buf.freeze()),
            Err(e) => {
                tracing::error!(error = %e, "cannot encode a websocket frame");
                None
            }
        }
    }

    /// Queue a frame. Refused (and nothing queued) once more than the limit waits.
    pub fn send(&mut self, message: Message) -> Result<(), SlowConsumer> {
        let Some(bytes) = self.encode(message) else { return Ok(()) };
        let Some(tx) = &self.tx else { return Ok(()) };
        let buffered = self.shared.buffered.fetch_add(bytes.len(), Ordering::AcqRel) + bytes.len();
        if buffered > self.max_buffered {
            self.shared.buffered.fetch_sub(bytes.len(), Ordering::AcqRel);
            return Err(SlowConsumer { buffered });
        }
        let _ = tx.send(bytes);
        Ok(())
    }

    /// Queue a close frame and end the output after it.
    pub fn close(&mut self, code: u16, reason: &str) {
        let frame = self.close_frame(code, reason);
        if let (Some(tx), Some(frame)) = (self.tx.take(), frame) {
            self.shared.buffered.fetch_add(frame.len(), Ordering::AcqRel);
            let _ = tx.send(frame);
        }
    }

    /// Drop everything queued and end the output with this close frame.
    pub fn abort(&mut self, code: u16, reason: &str) {
        let frame = self.close_frame(code, reason);
        if let Ok(mut last) = self.shared.last.lock() {
            *last = frame;
        }
        self.shared.aborted.store(true, Ordering::Release);
        self.tx = None;
    }

    /// Echo a close frame the client sent (or an empty one) and end the output.
    pub fn close_with(&mut self, reason: Option<actix_http::ws::CloseReason>) {
        let frame = self.encode(Message::Close(reason));
        if let (Some(tx), Some(frame)) = (self.tx.take(), frame) {
            let _ = tx.send(frame);
        }
    }

    fn close_frame(&mut self, code: u16, reason: &str) -> Option<Bytes> {
        let reason = actix_http::ws::CloseReason { code: code.into(), description: Some(reason.to_string()) };
        self.encode(Message::Close(Some(reason)))
    }

    /// Bytes waiting for the peer.
    pub fn buffered(&self) -> usize {
        self.shared.buffered.load(Ordering::Acquire)
    }
}

impl Stream for Outgoing {
    type Item = Result<Bytes, actix_web::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.shared.aborted.load(Ordering::Acquire) {
            let last = self.shared.last.lock().ok().and_then(|mut last| last.take());
            self.rx.close();
            return Poll::Ready(last.map(Ok));
        }
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(bytes)) => {
                self.shared.buffered.fetch_sub(bytes.len(), Ordering::AcqRel);
                Poll::Ready(Some(Ok(bytes)))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;

    use super::*;

    /// A masked client frame (opcode `op`, FIN set) of `len` bytes of `x`.
    fn client_frame(op: u8, len: usize) -> Bytes {
        let mut codec = Codec::new().client_mode().max_size(usize::MAX);
        let mut buf = BytesMut::new();
        let message = match op {
            1 => Message::Text("x".repeat(len).into()),
            _ => Message::Binary(Bytes::from(vec![b'x'; len])),
        };
        codec.encode(message, &mut buf).unwrap();
        buf.freeze()
    }

    #[actix_rt::test]
    async fn an_oversized_frame_is_refused_from_its_header_alone() {
        let whole = client_frame(1, 1 << 20);
        // Only the header and a few payload bytes arrive; the rest never would.
        let head = whole.slice(..20);
        let payload = futures_util::stream::iter(vec![Ok::<_, String>(head)]).chain(futures_util::stream::pending());
        let mut frames = Frames::new(Box::pin(payload), FrameLimit::new(64 * 1024));
        let first = tokio::time::timeout(std::time::Duration::from_secs(5), frames.next()).await.unwrap();
        assert!(matches!(first, Some(Err(ProtocolError::Overflow))), "{first:?}");
        assert!(frames.next().await.is_none());
    }

    proptest::proptest! {
        /// Random bytes, cut into random chunks: the reader never panics, never yields a
        /// frame over the limit, and stops at its first error.
        #[test]
        fn random_bytes_never_panic_or_pass_the_limit(
            heads in proptest::collection::vec((proptest::prelude::any::<u8>(), 0usize..3000), 0..6),
            tail in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512),
            cuts in proptest::collection::vec(1usize..512, 1..16),
            limit in 1usize..2048,
        ) {
            // Masked frames with random first bytes (opcodes, flags) and lengths in every
            // encoding, then random garbage.
            let mut bytes = Vec::new();
            for (first, len) in heads {
                bytes.push(first);
                match len {
                    0..=125 => bytes.push(0x80 | len as u8),
                    126..=2000 => {
                        bytes.push(0x80 | 126);
                        bytes.extend_from_slice(&(len as u16).to_be_bytes());
                    }
                    _ => {
                        bytes.push(0x80 | 127);
                        bytes.extend_from_slice(&(len as u64).to_be_bytes());
                    }
                }
                bytes.extend_from_slice(&[0, 0, 0, 0]);
                bytes.extend(std::iter::repeat_n(b'a', len));
            }
            bytes.extend_from_slice(&tail);
            let mut chunks = Vec::new();
            let mut rest = &bytes[..];
            for cut in cuts.iter().cycle() {
                if rest.is_empty() {
                    break;
                }
                let (head, tail) = rest.split_at((*cut).min(rest.len()));
                chunks.push(Ok::<_, String>(Bytes::copy_from_slice(head)));
                rest = tail;
            }
            let system = actix_rt::System::new();
            system.block_on(async move {
                let mut frames = Frames::new(Box::pin(futures_util::stream::iter(chunks)), FrameLimit::new(limit));
                while let Some(item) = frames.next().await {
                    match item {
                        Ok(Frame::Text(b) | Frame::Binary(b) | Frame::Ping(b) | Frame::Pong(b)) => {
                            assert!(b.len() <= limit)
                        }
                        Ok(_) => {}
                        Err(_) => {
                            assert!(frames.next().await.is_none());
                            break;
                        }
                    }
                }
            });
        }
    }

    #[test]
    fn declared_lengths_are_read_from_the_header_bytes() {
        assert_eq!(declared_len(&[0x81]), None);
        assert_eq!(declared_len(&[0x81, 0x85]), Some(5));
        assert_eq!(declared_len(&[0x81, 0xfe, 0x01]), None);
        assert_eq!(declared_len(&[0x81, 0xfe, 0x01, 0x00]), Some(256));
        assert_eq!(declared_len(&[0x81, 0xff, 0, 0, 0, 0, 1, 0x80, 0, 0]), Some(24 << 20));
    }

    #[actix_rt::test]
    async fn the_limit_can_be_raised_between_frames() {
        let limit = FrameLimit::new(16);
        let chunks = vec![Ok::<_, String>(client_frame(1, 10)), Ok(client_frame(1, 100))];
        let mut frames = Frames::new(Box::pin(futures_util::stream::iter(chunks)), limit.clone());
        assert!(matches!(frames.next().await, Some(Ok(Frame::Text(t))) if t.len() == 10));
        limit.set(1000);
        assert!(matches!(frames.next().await, Some(Ok(Frame::Text(t))) if t.len() == 100));
        assert!(frames.next().await.is_none());
    }

    #[actix_rt::test]
    async fn output_past_the_limit_is_refused_and_an_abort_sends_only_the_close() {
        let (mut writer, mut body) = Writer::new(100);
        writer.send(Message::Text("a".repeat(60).into())).unwrap();
        let refused = writer.send(Message::Text("b".repeat(60).into())).unwrap_err();
        assert!(refused.buffered > 100);
        assert_eq!(writer.buffered(), 62);
        let first = body.next().await.unwrap().unwrap();
        assert_eq!(first.len(), 62);
        assert_eq!(writer.buffered(), 0, "taken by the body");
        writer.send(Message::Text("c".repeat(60).into())).unwrap();
        writer.abort(1008, "slow consumer");
        let close = body.next().await.unwrap().unwrap();
        assert_eq!(close[0], 0x88, "a close frame, not the queued text");
        assert_eq!(&close[2..4], &1008u16.to_be_bytes());
        assert_eq!(&close[4..], b"slow consumer");
        assert!(body.next().await.is_none());
    }
}
