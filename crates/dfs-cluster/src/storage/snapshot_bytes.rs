//! The bytes of a snapshot in memory, as openraft reads a built snapshot and writes a
//! received one.

use std::io::{self, Cursor, SeekFrom};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncSeek, AsyncWrite, ReadBuf};

/// A snapshot's bytes in memory, read, written and sought like a file, except that it
/// refuses to seek past its end.
///
/// openraft writes each chunk of a received snapshot at the offset the chunk names, seeking
/// there first. A plain `Cursor<Vec<u8>>` would grow, zero-filled, to any offset a peer
/// names: one chunk claiming to start a terabyte in made the node allocate a terabyte and
/// abort. A leader sends a snapshot's chunks in order (resending one, or starting over, at
/// most), so a chunk never starts past the bytes received; one that does is refused with
/// an error, and the buffer never holds more than the bytes the peer sent.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SnapshotBytes(Cursor<Vec<u8>>);

impl SnapshotBytes {
    /// `bytes`, read from the start.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Cursor::new(bytes))
    }

    /// The bytes.
    pub fn into_inner(self) -> Vec<u8> {
        self.0.into_inner()
    }

    /// The bytes, borrowed.
    pub fn bytes(&self) -> &[u8] {
        self.0.get_ref()
    }
}

impl std::fmt::Debug for SnapshotBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotBytes")
            .field("len", &self.0.get_ref().len())
            .field("position", &self.0.position())
            .finish()
    }
}

impl AsyncRead for SnapshotBytes {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for SnapshotBytes {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

impl AsyncSeek for SnapshotBytes {
    fn start_seek(mut self: Pin<&mut Self>, position: SeekFrom) -> io::Result<()> {
        let len = self.0.get_ref().len() as u64;
        let target = match position {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(delta) => len.checked_add_signed(delta),
            SeekFrom::Current(delta) => self.0.position().checked_add_signed(delta),
        };
        match target {
            Some(n) if n <= len => {
                self.0.set_position(n);
                Ok(())
            }
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "seek to {position:?} is past the end of the {len} snapshot bytes received"
                ),
            )),
        }
    }

    fn poll_complete(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<u64>> {
        Poll::Ready(Ok(self.0.position()))
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn a_seek_past_the_end_is_refused_and_nothing_grows() {
        let mut b = SnapshotBytes::default();
        b.write_all(b"hello").await.expect("writes");
        assert!(b.seek(SeekFrom::Start(1 << 40)).await.is_err());
        assert!(b.seek(SeekFrom::End(1)).await.is_err());
        assert!(b.seek(SeekFrom::Current(i64::MAX)).await.is_err());
        assert!(b.seek(SeekFrom::Current(-100)).await.is_err());
        assert_eq!(b.bytes(), b"hello");
        // Within the bytes (or at their end), seeks and writes work as on a file.
        assert_eq!(b.seek(SeekFrom::Start(5)).await.expect("at the end"), 5);
        b.write_all(b" world").await.expect("appends");
        assert_eq!(b.seek(SeekFrom::Start(0)).await.expect("back"), 0);
        b.write_all(b"J").await.expect("overwrites");
        let mut read = String::new();
        b.seek(SeekFrom::Start(0)).await.expect("back");
        b.read_to_string(&mut read).await.expect("reads");
        assert_eq!(read, "Jello world");
        assert_eq!(b.into_inner(), b"Jello world");
    }
}
