//! A body compressed as it streams: chunk by chunk, never held whole.

use std::io::Write;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use flate2::write::GzEncoder;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};

use super::Coding;
use crate::body::BoxError;
use crate::observability::metrics::CompressionMetrics;

/// gzip level: 4 of 9. Measured on JSON and on source text (flate2's Rust backend, 16 KiB
/// writes): level 4 runs at about twice the speed of 6 for 1-3% more output.
pub const GZIP_LEVEL: u32 = 4;
/// Brotli quality: 4 of 11, about as fast as gzip 4 with output within a few percent of its
/// (smaller on source text, larger on generated JSON); 5 ran at about half the speed.
pub const BROTLI_QUALITY: u32 = 4;
/// Brotli window, log2 bytes: 256 KiB bounds the encoder's memory per response (22, the
/// format's default, would allow 4 MiB) and costs about 1% of size at quality 4.
pub const BROTLI_WINDOW: u32 = 18;
/// Size of the Brotli encoder's output staging buffer.
const BROTLI_BUFFER: usize = 4096;

/// Compressed output is handed on once this much has gathered; less waits for more input or
/// for the upstream to pause.
const EMIT_AT: usize = 16 * 1024;
/// Input taken in since output was last handed on, past which the encoder is flushed anyway,
/// so a fast upstream sending very compressible data cannot keep the client waiting.
const FLUSH_AFTER_INPUT: usize = 256 * 1024;

/// One encoder, writing into a buffer that is taken out as the body's next frame.
enum Encoder {
    Gzip(GzEncoder<Vec<u8>>),
    Br(Box<brotli::CompressorWriter<Vec<u8>>>),
}

impl Encoder {
    fn new(coding: Coding) -> Self {
        match coding {
            Coding::Gzip => Encoder::Gzip(GzEncoder::new(
                Vec::new(),
                flate2::Compression::new(GZIP_LEVEL),
            )),
            Coding::Br => Encoder::Br(Box::new(brotli::CompressorWriter::new(
                Vec::new(),
                BROTLI_BUFFER,
                BROTLI_QUALITY,
                BROTLI_WINDOW,
            ))),
        }
    }

    fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self {
            Encoder::Gzip(e) => e.write_all(data),
            Encoder::Br(e) => e.write_all(data),
        }
    }

    /// Pushes out everything written so far, so the client can decode it now.
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Encoder::Gzip(e) => e.flush(),
            Encoder::Br(e) => e.flush(),
        }
    }

    fn output(&mut self) -> &mut Vec<u8> {
        match self {
            Encoder::Gzip(e) => e.get_mut(),
            Encoder::Br(e) => e.get_mut(),
        }
    }

    /// Ends the stream; the rest of the output.
    fn finish(self) -> std::io::Result<Vec<u8>> {
        match self {
            Encoder::Gzip(e) => e.finish(),
            Encoder::Br(e) => Ok(e.into_inner()),
        }
    }
}

/// `inner`'s data, encoded with one coding as it arrives.
///
/// Memory is bounded by the encoder's window and one input chunk: output is handed on once
/// [`EMIT_AT`] bytes gathered, and whenever `inner` has nothing ready (it would wait), what was
/// taken in is flushed and sent, so a stream that trickles (server-sent events, long polls)
/// reaches the client as it comes, and a fast one compresses in large blocks.
pub struct Compressing<B> {
    inner: B,
    coding: Coding,
    /// `None` once finished.
    encoder: Option<Encoder>,
    /// Input taken in since the encoder was last flushed or drained.
    unflushed: usize,
    /// Trailers of `inner`, sent after the last data.
    trailers: Option<HeaderMap>,
    metrics: CompressionMetrics,
}

impl<B> std::fmt::Debug for Compressing<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compressing")
            .field("coding", &self.coding)
            .field("unflushed", &self.unflushed)
            .finish_non_exhaustive()
    }
}

impl<B> Compressing<B> {
    /// Encodes `inner` with `coding`, counting bytes into `metrics`.
    pub fn new(inner: B, coding: Coding, metrics: CompressionMetrics) -> Self {
        Compressing {
            inner,
            coding,
            encoder: Some(Encoder::new(coding)),
            unflushed: 0,
            trailers: None,
            metrics,
        }
    }

    /// The output gathered so far, as the next frame (`None` when there is none).
    fn take_output(&mut self) -> Option<Bytes> {
        let out = std::mem::take(self.encoder.as_mut()?.output());
        (!out.is_empty()).then(|| self.sent(out))
    }

    fn sent(&self, out: Vec<u8>) -> Bytes {
        self.metrics
            .bytes(self.coding as usize, 0, out.len() as u64);
        Bytes::from(out)
    }

    /// Ends the stream: the encoder's last bytes, if any.
    fn finish(&mut self) -> Result<Option<Bytes>, BoxError> {
        let Some(encoder) = self.encoder.take() else {
            return Ok(None);
        };
        let out = encoder.finish()?;
        Ok((!out.is_empty()).then(|| self.sent(out)))
    }
}

impl<B> Body for Compressing<B>
where
    B: Body<Data = Bytes, Error = BoxError> + Unpin,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            let Some(encoder) = this.encoder.as_mut() else {
                return Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))));
            };
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    let data = match frame.into_data() {
                        Ok(data) => data,
                        Err(frame) => {
                            // Trailers end the data: finish the stream, then send them.
                            this.trailers = frame.into_trailers().ok();
                            match this.finish() {
                                Ok(Some(out)) => return Poll::Ready(Some(Ok(Frame::data(out)))),
                                Ok(None) => continue,
                                Err(e) => return Poll::Ready(Some(Err(e))),
                            }
                        }
                    };
                    this.metrics
                        .bytes(this.coding as usize, data.len() as u64, 0);
                    if let Err(e) = encoder.write(&data) {
                        this.encoder = None;
                        return Poll::Ready(Some(Err(e.into())));
                    }
                    this.unflushed = this.unflushed.saturating_add(data.len());
                    if this.unflushed >= FLUSH_AFTER_INPUT {
                        if let Err(e) = encoder.flush() {
                            this.encoder = None;
                            return Poll::Ready(Some(Err(e.into())));
                        }
                    }
                    if encoder.output().len() >= EMIT_AT || this.unflushed >= FLUSH_AFTER_INPUT {
                        this.unflushed = 0;
                        if let Some(out) = this.take_output() {
                            return Poll::Ready(Some(Ok(Frame::data(out))));
                        }
                    }
                }
                Poll::Ready(Some(Err(error))) => {
                    // The stream is broken: no end marker, so the client sees it cut short.
                    this.encoder = None;
                    return Poll::Ready(Some(Err(error)));
                }
                Poll::Ready(None) => {
                    return match this.finish() {
                        Ok(Some(out)) => Poll::Ready(Some(Ok(Frame::data(out)))),
                        Ok(None) => Poll::Ready(None),
                        Err(e) => Poll::Ready(Some(Err(e))),
                    };
                }
                Poll::Pending => {
                    // The upstream is pausing: send what it gave so far, decodable now.
                    if this.unflushed > 0 {
                        this.unflushed = 0;
                        if let Err(e) = encoder.flush() {
                            this.encoder = None;
                            return Poll::Ready(Some(Err(e.into())));
                        }
                    }
                    if let Some(out) = this.take_output() {
                        return Poll::Ready(Some(Ok(Frame::data(out))));
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.encoder.is_none() && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        // The compressed length is known only at the end: chunked on HTTP/1.1.
        SizeHint::default()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};
    use std::io::Read;

    type Chunks =
        StreamBody<futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, BoxError>>>>;

    fn chunks(parts: Vec<Vec<u8>>) -> Chunks {
        let frames: Vec<Result<Frame<Bytes>, BoxError>> = parts
            .into_iter()
            .map(|p| Ok(Frame::data(Bytes::from(p))))
            .collect();
        StreamBody::new(futures_util::stream::iter(frames))
    }

    pub(crate) fn decode(coding: Coding, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        match coding {
            Coding::Gzip => flate2::read::GzDecoder::new(data)
                .read_to_end(&mut out)
                .unwrap(),
            Coding::Br => brotli::Decompressor::new(data, 4096)
                .read_to_end(&mut out)
                .unwrap(),
        };
        out
    }

    fn text(len: usize, rng: &mut fastrand::Rng) -> Vec<u8> {
        let words: [&[u8]; 6] = [
            b"order ",
            b"status ",
            b"shipped ",
            b"{\"id\": ",
            b"7, ",
            b"\n",
        ];
        let mut out = Vec::with_capacity(len + 16);
        while out.len() < len {
            out.extend_from_slice(words[rng.usize(..words.len())]);
        }
        out.truncate(len);
        out
    }

    #[tokio::test]
    async fn round_trips_in_any_chunking() {
        let mut rng = fastrand::Rng::with_seed(0xc0de_c0de);
        for coding in [Coding::Gzip, Coding::Br] {
            for round in 0..20 {
                let len = match round {
                    0 => 0,
                    1 => 1,
                    _ => rng.usize(..600_000),
                };
                let body = text(len, &mut rng);
                let mut parts = Vec::new();
                let mut rest = &body[..];
                while !rest.is_empty() {
                    let n = rng.usize(1..=rest.len().min(70_000));
                    parts.push(rest[..n].to_vec());
                    rest = &rest[n..];
                }
                let metrics = CompressionMetrics::default();
                let encoded = Compressing::new(chunks(parts), coding, metrics)
                    .collect()
                    .await
                    .unwrap()
                    .to_bytes();
                assert_eq!(decode(coding, &encoded), body, "{coding:?} {len}");
            }
        }
    }

    #[tokio::test]
    async fn output_is_handed_on_in_bounded_pieces() {
        // Incompressible input: what goes in comes out at about the same size, gzip's as it
        // goes, Brotli's once per block; neither holds more than the flush threshold.
        let mut rng = fastrand::Rng::with_seed(7);
        for coding in [Coding::Gzip, Coding::Br] {
            let parts: Vec<Vec<u8>> = (0..128)
                .map(|_| (0..8192).map(|_| rng.u8(..)).collect())
                .collect();
            let mut body = Compressing::new(chunks(parts), coding, Default::default());
            let mut frames = 0;
            while let Some(frame) = body.frame().await {
                let data = frame.unwrap().into_data().unwrap();
                assert!(
                    data.len() < FLUSH_AFTER_INPUT + 2 * 8192,
                    "{coding:?}: {}",
                    data.len()
                );
                frames += 1;
            }
            assert!(frames >= 4, "{coding:?}: the body was held back whole");
            assert!(body.is_end_stream());
        }
    }

    #[tokio::test]
    async fn an_error_of_the_inner_body_ends_the_stream_with_it() {
        let frames: Vec<Result<Frame<Bytes>, BoxError>> = vec![
            Ok(Frame::data(Bytes::from_static(b"abc"))),
            Err("upstream went away".into()),
        ];
        let inner = StreamBody::new(futures_util::stream::iter(frames));
        let mut body = Compressing::new(inner, Coding::Gzip, Default::default());
        let mut error = None;
        while let Some(frame) = body.frame().await {
            if let Err(e) = frame {
                error = Some(e.to_string());
                break;
            }
        }
        assert_eq!(error.as_deref(), Some("upstream went away"));
        assert!(body.frame().await.is_none());
    }
}
