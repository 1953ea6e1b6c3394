//! TEMPORARY (dfs-mount interim): `write_at` and `truncate` done by read + modify + put
//! on the client, so the FUSE mount can be built and tested before the real replicated
//! operations land. This whole file is deleted when they do; nothing else may use it.
//! Not atomic against concurrent writers of the same file (the put is conditional on the
//! version read, and retried when another write came in between).

use bytes::{Bytes, BytesMut};
use dfs_proto::{Condition, WriteAck};

use crate::{Client, ClientError};

impl Client {
    /// TEMPORARY: writes `data` at `offset`, filling any gap past the end with zeros.
    /// `NotFound` if the file does not exist.
    pub async fn write_at(
        &self,
        name: &str,
        offset: u64,
        data: impl Into<Bytes>,
    ) -> Result<WriteAck, ClientError> {
        let data: Bytes = data.into();
        loop {
            let info = self.stat(name).await?;
            let cond = Condition::NONE.with_version(info.version);
            let result = if offset == info.size {
                self.append_if(name, data.clone(), cond).await
            } else {
                let old = self.read(name, 0, None).await?;
                let end = offset as usize + data.len();
                let mut buf = BytesMut::from(&old[..]);
                if buf.len() < end {
                    buf.resize(end, 0);
                }
                buf[offset as usize..end].copy_from_slice(&data);
                self.put_if(name, buf.freeze(), cond).await
            };
            match result {
                Err(ClientError::VersionMismatch(_)) => continue,
                other => return other,
            }
        }
    }

    /// TEMPORARY: shrinks or extends (with zeros) the file to `size` bytes. `NotFound` if
    /// the file does not exist.
    pub async fn truncate(&self, name: &str, size: u64) -> Result<WriteAck, ClientError> {
        loop {
            let info = self.stat(name).await?;
            let cond = Condition::NONE.with_version(info.version);
            let old = self.read(name, 0, Some(size.min(info.size))).await?;
            let mut buf = BytesMut::from(&old[..]);
            buf.resize(size as usize, 0);
            match self.put_if(name, buf.freeze(), cond).await {
                Err(ClientError::VersionMismatch(_)) => continue,
                other => return other,
            }
        }
    }
}
