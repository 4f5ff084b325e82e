//! ddserver's authoritative DNS responder.
//!
//! Layers, from the wire inwards (STYLE habit 6: I/O backends plug in around
//! a pure function):
//!
//! ```text
//!  io::{portable, uring, tcp}   sockets, batches, worker threads   (owns syscalls)
//!          │ query bytes, response buffer
//!          ▼
//!  handle::handle               pure function over bytes           (no I/O, no alloc)
//!          │ lookups
//!          ▼
//!  snapshot::Snapshot           immutable, pre-rendered RRsets     (published by arc-swap)
//!          ▲ one publish per batch
//!  snapshot::SnapshotWriter     zone::Change → render → shards     (writer thread only)
//! ```
//!
//! Off the packet path: `zone` (plain input types the feed converts into),
//! `render` (publish-time wire rendering), `export` (master file as served).
//!
//! A worker's loop: `let view = shared.load();` once per receive batch, then
//! `handle(&view, query, &mut buf, transport)` for each packet of the batch.
//!
//! The packet path never imports SQL, HTTP or the web UI: data reaches it only
//! through the snapshot, which is built off the packet path.

pub mod export;
pub mod handle;
pub mod hash_index;
pub mod io;
mod render;
pub mod snapshot;
pub mod wire;
pub mod zone;

pub use handle::handle;
pub use render::RenderError;
pub use snapshot::{
    ApplyError, ApplyReport, HandlerConfig, Shared, Snapshot, SnapshotView, SnapshotWriter,
};
pub use zone::{
    AddressHost, AddressHosts, Change, HostData, RecordData, Soa, StaticRecord, ZoneData,
};

/// How a query arrived. Decides the response size limit (RFC 1035 §4.2.1,
/// RFC 6891 §6.2.5: UDP answers never exceed what the client advertised;
/// TCP answers may use the full 65535 octets) and whether TC may be set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// What the handler decided for one query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Send the first `n` bytes of the response buffer.
    Reply(usize),
    /// Send nothing (a response, or a packet too broken to carry a header).
    Drop,
}

/// Workers load the published snapshot through [`snapshot::Shared`]: one
/// atomic load per receive batch.
impl io::Source for snapshot::Shared {
    type Snapshot = snapshot::Snapshot;
    type Guard = snapshot::SnapshotView;

    #[inline]
    fn load(&self) -> snapshot::SnapshotView {
        snapshot::Shared::load(self)
    }

    #[inline]
    fn prefetch<'q>(
        snapshot: &snapshot::Snapshot,
        count: usize,
        query: impl Fn(usize) -> Option<&'q [u8]>,
    ) {
        snapshot.prefetch_batch(count, query);
    }
}
