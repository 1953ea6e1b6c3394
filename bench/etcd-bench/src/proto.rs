//! The messages of etcd's KV service this client sends and receives, written by hand with
//! prost's derive: the field numbers and types are those of etcd's
//! `etcdserver/etcdserverpb/rpc.proto` (package `etcdserverpb`) and `mvcc/mvccpb/kv.proto`
//! (`KeyValue`). Only the fields used here are declared: protobuf decoders skip the
//! others, and a field left at its default is not sent, so a request means the same to
//! etcd as the full message with the other fields unset.

use bytes::Bytes;

/// `etcdserverpb.ResponseHeader`: which member answered, at which revision and term.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ResponseHeader {
    /// The cluster's id.
    #[prost(uint64, tag = "1")]
    pub cluster_id: u64,
    /// The id of the member that answered.
    #[prost(uint64, tag = "2")]
    pub member_id: u64,
    /// The key-value store's revision when the request was applied.
    #[prost(int64, tag = "3")]
    pub revision: i64,
    /// The Raft term when the request was applied.
    #[prost(uint64, tag = "4")]
    pub raft_term: u64,
}

/// `mvccpb.KeyValue`: one key, its value and revisions.
#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyValue {
    /// The key.
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    /// The revision of the key's last creation.
    #[prost(int64, tag = "2")]
    pub create_revision: i64,
    /// The revision of the key's last change.
    #[prost(int64, tag = "3")]
    pub mod_revision: i64,
    /// How many times the key was changed since its creation.
    #[prost(int64, tag = "4")]
    pub version: i64,
    /// The value.
    #[prost(bytes = "bytes", tag = "5")]
    pub value: Bytes,
    /// The lease the key is attached to (0: none).
    #[prost(int64, tag = "6")]
    pub lease: i64,
}

/// `etcdserverpb.PutRequest` (`/etcdserverpb.KV/Put`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct PutRequest {
    /// The key to put.
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    /// Its new value.
    #[prost(bytes = "bytes", tag = "2")]
    pub value: Bytes,
    /// The lease to attach the key to (0: none).
    #[prost(int64, tag = "3")]
    pub lease: i64,
    /// Return the previous key-value pair.
    #[prost(bool, tag = "4")]
    pub prev_kv: bool,
    /// Keep the key's current value (an error if the key does not exist).
    #[prost(bool, tag = "5")]
    pub ignore_value: bool,
    /// Keep the key's current lease (an error if the key does not exist).
    #[prost(bool, tag = "6")]
    pub ignore_lease: bool,
}

/// `etcdserverpb.PutResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct PutResponse {
    /// Who answered, at which revision.
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    /// The previous key-value pair, if asked for.
    #[prost(message, optional, tag = "2")]
    pub prev_kv: Option<KeyValue>,
}

/// `etcdserverpb.RangeRequest` (`/etcdserverpb.KV/Range`), with the fields up to
/// `count_only`; the revision bounds (10 to 13) are left out.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RangeRequest {
    /// The key, or the first key of the range.
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    /// The end of the range, exclusive (empty: only `key`).
    #[prost(bytes = "vec", tag = "2")]
    pub range_end: Vec<u8>,
    /// At most this many keys (0: no limit).
    #[prost(int64, tag = "3")]
    pub limit: i64,
    /// Read at this revision (0 or less: the newest).
    #[prost(int64, tag = "4")]
    pub revision: i64,
    /// `SortOrder`: 0 none, 1 ascending, 2 descending.
    #[prost(int32, tag = "5")]
    pub sort_order: i32,
    /// `SortTarget`: 0 key, 1 version, 2 create, 3 mod, 4 value.
    #[prost(int32, tag = "6")]
    pub sort_target: i32,
    /// Answer from the member's local store without confirming with the leader; false
    /// (the default) makes the read linearizable.
    #[prost(bool, tag = "7")]
    pub serializable: bool,
    /// Return the keys only.
    #[prost(bool, tag = "8")]
    pub keys_only: bool,
    /// Return the count only.
    #[prost(bool, tag = "9")]
    pub count_only: bool,
}

/// `etcdserverpb.RangeResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RangeResponse {
    /// Who answered, at which revision.
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    /// The key-value pairs found.
    #[prost(message, repeated, tag = "2")]
    pub kvs: Vec<KeyValue>,
    /// More keys are in the range than were returned (with a limit).
    #[prost(bool, tag = "3")]
    pub more: bool,
    /// How many keys are in the range.
    #[prost(int64, tag = "4")]
    pub count: i64,
}

/// `etcdserverpb.DeleteRangeRequest` (`/etcdserverpb.KV/DeleteRange`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct DeleteRangeRequest {
    /// The key, or the first key of the range.
    #[prost(bytes = "vec", tag = "1")]
    pub key: Vec<u8>,
    /// The end of the range, exclusive (empty: only `key`).
    #[prost(bytes = "vec", tag = "2")]
    pub range_end: Vec<u8>,
    /// Return the deleted key-value pairs.
    #[prost(bool, tag = "3")]
    pub prev_kv: bool,
}

/// `etcdserverpb.DeleteRangeResponse` (without `prev_kvs`, never asked for here).
#[derive(Clone, PartialEq, prost::Message)]
pub struct DeleteRangeResponse {
    /// Who answered, at which revision.
    #[prost(message, optional, tag = "1")]
    pub header: Option<ResponseHeader>,
    /// How many keys were deleted.
    #[prost(int64, tag = "2")]
    pub deleted: i64,
}
