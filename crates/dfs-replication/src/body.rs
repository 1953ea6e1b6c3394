//! A write's body as the engine consumes it: the inline first part, then the chunks the
//! connection hands over through a bounded channel.

use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::EngineError;

/// How long the engine waits for the next chunk of a body before it abandons the write.
/// A writer holds its file's lock while its body streams in, so a silent client must not
/// hold it for long.
pub const BODY_CHUNK_TIMEOUT: Duration = Duration::from_secs(30);

/// Chunks queued between a connection and the engine for one body (with 256 KiB chunks,
/// 2 MiB per streaming write).
const BODY_QUEUE_CHUNKS: usize = 8;

/// The sending side, held by the connection: `(bytes, last)` pairs.
pub type BodyTx = mpsc::Sender<(Bytes, bool)>;

/// A write's body.
#[derive(Debug)]
pub struct BodyStream {
    first: Option<Bytes>,
    rest: Option<mpsc::Receiver<(Bytes, bool)>>,
    chunk_timeout: Duration,
}

impl BodyStream {
    /// A body that is entirely in memory.
    pub fn from_bytes(data: impl Into<Bytes>) -> Self {
        Self {
            first: Some(data.into()),
            rest: None,
            chunk_timeout: BODY_CHUNK_TIMEOUT,
        }
    }

    /// A body whose first part is `first` and whose further chunks arrive through the
    /// returned sender; the stream ends at a chunk marked last.
    pub fn streaming(first: Bytes) -> (Self, BodyTx) {
        let (tx, rx) = mpsc::channel(BODY_QUEUE_CHUNKS);
        let body = Self {
            first: Some(first),
            rest: Some(rx),
            chunk_timeout: BODY_CHUNK_TIMEOUT,
        };
        (body, tx)
    }

    /// Changes how long to wait for each chunk.
    pub fn with_chunk_timeout(mut self, timeout: Duration) -> Self {
        self.chunk_timeout = timeout;
        self
    }

    /// Whether more than the first part is coming.
    pub fn is_streaming(&self) -> bool {
        self.rest.is_some()
    }

    /// The next part, `Ok(None)` at the end, or an error if the stream broke off.
    pub async fn next(&mut self) -> Result<Option<Bytes>, EngineError> {
        if let Some(first) = self.first.take() {
            return Ok(Some(first));
        }
        let Some(rx) = self.rest.as_mut() else {
            return Ok(None);
        };
        match tokio::time::timeout(self.chunk_timeout, rx.recv()).await {
            Ok(Some((data, last))) => {
                if last {
                    self.rest = None;
                }
                Ok(Some(data))
            }
            Ok(None) => Err(EngineError::BodyAborted(
                "the body ended before its last chunk".into(),
            )),
            Err(_) => Err(EngineError::BodyAborted(format!(
                "no body bytes for {:?}",
                self.chunk_timeout
            ))),
        }
    }
}
