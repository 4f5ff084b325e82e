//! The feed's wire format: the messages a writer pushes to a responder's
//! control socket after a commit, as length-prefixed binary frames.
//!
//! ```text
//! frame   = length:u32be  body            length = len(body), 2..=MAX_FRAME_BODY
//! body    = version:u8 (= 1)  type:u8  payload
//! type 1  Hello      latest:u64be  writer_len:u8  writer:utf8
//! type 2  Heartbeat  latest:u64be
//! type 3  Changes    count:u16be  count x change
//! type 4  Commit     zones:u16be  zones x (zone_len:u8 zone  soa_serial:u32be)
//!                    count:u16be  count x (change  state)
//! change  = serial:u64be  committed_at:i64be  kind:u8  zone_len:u8 zone  name_len:u8 name
//! state   = 0 (no host: removed, or a zone-level entry)
//!         | 1 flags:u8 [ipv4:4] [ipv6:16] txt_count:u8 txt_count x (txt_len:u8 txt)
//! flags   = bit 0 ipv4 follows, 1 ipv6 follows, 2 wildcard, 3 offline, 4 disabled
//! ```
//!
//! Names travel in their canonical A-label form (what [`Name::as_str`]
//! returns); a decoder accepts only names that `Name::parse` returns
//! unchanged. `latest` is the newest change-log serial the writer knows of,
//! so a responder that applied less knows it missed something.
//!
//! `Changes` is a hint: the responder re-reads the change log and the named
//! rows. `Commit` carries what one transaction left behind (each changed
//! host's committed state, each touched zone's SOA serial), so a responder
//! whose applied mark ends exactly before the commit's first serial can
//! apply it without reading the database. Anything else (a gap, a duplicate,
//! a zone-level entry) is still only a hint, and the change log stays the
//! truth (DESIGN invariant 1): a lost, duplicated or reordered frame costs
//! latency, never correctness.
//!
//! Type 4 came after the others within version 1: old frames decode as
//! before; a responder built before it drops a connection that sends one
//! (unknown type) and follows by polling, so upgrade responders first.
//!
//! Decoding is total: any byte string gives a message, "need more bytes", or
//! a [`FrameError`]; it must never panic and never allocate more than the
//! declared, bounded frame length. The fuzz target `feed_frame` holds it to
//! that.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::hosts::MAX_HOST_TXT;
use crate::model::{Change, ChangeKind, Host};
use crate::name::Name;

/// The format version written by this code, and the only one it reads.
pub const FEED_VERSION: u8 = 1;
/// The largest frame body accepted (1 MiB): a `Changes` frame of
/// [`MAX_CHANGES_PER_FRAME`] entries with two 253-byte names each (525 bytes
/// per entry) fits; nothing legitimate is larger.
pub const MAX_FRAME_BODY: usize = 1 << 20;
/// Changes per `Changes` frame; a larger announcement is split.
pub const MAX_CHANGES_PER_FRAME: usize = 1024;

const TYPE_HELLO: u8 = 1;
const TYPE_HEARTBEAT: u8 = 2;
const TYPE_CHANGES: u8 = 3;
const TYPE_COMMIT: u8 = 4;

const FLAG_IPV4: u8 = 1;
const FLAG_IPV6: u8 = 1 << 1;
const FLAG_WILDCARD: u8 = 1 << 2;
const FLAG_OFFLINE: u8 = 1 << 3;
const FLAG_DISABLED: u8 = 1 << 4;
const KNOWN_FLAGS: u8 = FLAG_IPV4 | FLAG_IPV6 | FLAG_WILDCARD | FLAG_OFFLINE | FLAG_DISABLED;

/// A host's DNS-visible state as a commit left it: what the responder
/// serves for it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostState {
    /// IPv4 address.
    pub ipv4: Option<Ipv4Addr>,
    /// IPv6 address.
    pub ipv6: Option<Ipv6Addr>,
    /// TXT values, in order: at most [`MAX_HOST_TXT`], each 1..=255
    /// printable ASCII characters (what the store accepts).
    pub txt: Vec<String>,
    /// Also answers for every name below the host.
    pub wildcard: bool,
    /// The client reported itself offline.
    pub offline: bool,
    /// An administrator disabled the host.
    pub disabled: bool,
}

impl HostState {
    /// The DNS-visible part of a stored host.
    pub fn of(host: &Host) -> HostState {
        HostState {
            ipv4: host.ipv4,
            ipv6: host.ipv6,
            txt: host.txt.clone(),
            wildcard: host.flags.wildcard,
            offline: host.flags.offline,
            disabled: host.flags.disabled.is_some(),
        }
    }
}

/// One commit's change-log entries with the state they left behind.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Commit {
    /// Every zone the commit touched, with its SOA serial after the commit.
    pub zones: Vec<(Name, u32)>,
    /// The entries in serial order. A host entry carries the host's state
    /// at the end of the commit (the same for every entry of one host),
    /// `None` when the host no longer exists; a zone-level entry carries
    /// `None`.
    pub changes: Vec<(Change, Option<HostState>)>,
}

impl Commit {
    /// The first and the last serial, `None` when empty.
    pub fn serials(&self) -> Option<(u64, u64)> {
        Some((
            self.changes.first()?.0.serial,
            self.changes.last()?.0.serial,
        ))
    }
}

/// One message of the feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedMessage {
    /// Sent first on every connection: who the writer is and the newest
    /// serial it knows of.
    Hello {
        /// The newest change-log serial the writer knows of.
        latest: u64,
        /// A description for logs (`ddserver host add`, `updater`), at most
        /// 255 bytes.
        writer: String,
    },
    /// Sent by long-lived writers when idle.
    Heartbeat {
        /// The newest change-log serial the writer knows of.
        latest: u64,
    },
    /// The change-log entries one commit wrote, in serial order.
    Changes(Vec<Change>),
    /// One commit's entries with the state they left behind.
    Commit(Commit),
}

impl FeedMessage {
    /// The newest serial this message tells of (0 for an empty `Changes`).
    pub fn latest(&self) -> u64 {
        match self {
            FeedMessage::Hello { latest, .. } | FeedMessage::Heartbeat { latest } => *latest,
            FeedMessage::Changes(changes) => changes.iter().map(|c| c.serial).max().unwrap_or(0),
            FeedMessage::Commit(commit) => commit
                .changes
                .iter()
                .map(|(c, _)| c.serial)
                .max()
                .unwrap_or(0),
        }
    }
}

/// Why bytes are not a valid frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame length {0} is outside 2..={MAX_FRAME_BODY}")]
    BadLength(u64),
    #[error("feed format version {0} is not supported (this build reads version {FEED_VERSION})")]
    UnsupportedVersion(u8),
    #[error("unknown message type {0}")]
    UnknownType(u8),
    #[error("the frame ends inside its {0}")]
    Truncated(&'static str),
    #[error("{0} bytes after the end of the message")]
    TrailingBytes(usize),
    #[error("unknown change kind {0}")]
    UnknownKind(u8),
    #[error("a name in the frame is not a canonical domain name")]
    BadName,
    #[error("the writer description is not UTF-8")]
    BadWriter,
    #[error("a host state in the frame is not valid")]
    BadHostState,
}

/// Why a message cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("{0} changes do not fit one frame (at most {MAX_CHANGES_PER_FRAME})")]
    TooManyChanges(usize),
    #[error("the writer description is longer than 255 bytes")]
    WriterTooLong,
    #[error("{0} zones do not fit one frame")]
    TooManyZones(usize),
    #[error("a host state does not fit the format (too many or too long TXT values)")]
    BadHostState,
    #[error("the commit is larger than one frame")]
    TooLarge,
}

fn kind_code(kind: ChangeKind) -> u8 {
    match kind {
        ChangeKind::ZoneAdded => 1,
        ChangeKind::ZoneChanged => 2,
        ChangeKind::RecordsChanged => 3,
        ChangeKind::ZoneRemoved => 4,
        ChangeKind::HostAdded => 5,
        ChangeKind::HostChanged => 6,
        ChangeKind::HostRemoved => 7,
    }
}

fn kind_from_code(code: u8) -> Result<ChangeKind, FrameError> {
    Ok(match code {
        1 => ChangeKind::ZoneAdded,
        2 => ChangeKind::ZoneChanged,
        3 => ChangeKind::RecordsChanged,
        4 => ChangeKind::ZoneRemoved,
        5 => ChangeKind::HostAdded,
        6 => ChangeKind::HostChanged,
        7 => ChangeKind::HostRemoved,
        other => return Err(FrameError::UnknownKind(other)),
    })
}

/// Appends `message` as one frame to `out`.
pub fn encode_frame(message: &FeedMessage, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    framed(out, |out| {
        match message {
            FeedMessage::Hello { latest, writer } => {
                let len = u8::try_from(writer.len()).map_err(|_| EncodeError::WriterTooLong)?;
                out.push(TYPE_HELLO);
                out.extend_from_slice(&latest.to_be_bytes());
                out.push(len);
                out.extend_from_slice(writer.as_bytes());
            }
            FeedMessage::Heartbeat { latest } => {
                out.push(TYPE_HEARTBEAT);
                out.extend_from_slice(&latest.to_be_bytes());
            }
            FeedMessage::Changes(changes) => {
                if changes.len() > MAX_CHANGES_PER_FRAME {
                    return Err(EncodeError::TooManyChanges(changes.len()));
                }
                let count = changes.len() as u16;
                out.push(TYPE_CHANGES);
                out.extend_from_slice(&count.to_be_bytes());
                for change in changes {
                    put_change(change, out);
                }
            }
            FeedMessage::Commit(commit) => put_commit(commit, out)?,
        }
        Ok(())
    })
}

/// Appends `commit` as one `Commit` frame to `out`: the same bytes as
/// [`encode_frame`] of `FeedMessage::Commit`, without owning the commit
/// (the store hands the same one to in-process subscribers).
pub fn encode_commit(commit: &Commit, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    framed(out, |out| put_commit(commit, out))
}

/// Writes one frame around what `body` appends (length prefix, version);
/// on any error `out` is left as it was.
fn framed(
    out: &mut Vec<u8>,
    body: impl FnOnce(&mut Vec<u8>) -> Result<(), EncodeError>,
) -> Result<(), EncodeError> {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    out.push(FEED_VERSION);
    if let Err(e) = body(out) {
        out.truncate(start);
        return Err(e);
    }
    let len = out.len() - start - 4;
    if len > MAX_FRAME_BODY {
        out.truncate(start);
        return Err(EncodeError::TooLarge);
    }
    out[start..start + 4].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(())
}

fn put_name(name: &Name, out: &mut Vec<u8>) {
    // A validated name is at most 253 bytes, so its length fits.
    let bytes = name.as_str().as_bytes();
    out.push(bytes.len().min(255) as u8);
    out.extend_from_slice(&bytes[..bytes.len().min(255)]);
}

fn put_change(change: &Change, out: &mut Vec<u8>) {
    out.extend_from_slice(&change.serial.to_be_bytes());
    out.extend_from_slice(&change.committed_at.to_be_bytes());
    out.push(kind_code(change.kind));
    put_name(&change.zone, out);
    put_name(&change.name, out);
}

/// The type byte and payload of a `Commit`; on error the caller drops
/// what was written.
fn put_commit(commit: &Commit, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    if commit.changes.len() > MAX_CHANGES_PER_FRAME {
        return Err(EncodeError::TooManyChanges(commit.changes.len()));
    }
    let zones = u16::try_from(commit.zones.len())
        .map_err(|_| EncodeError::TooManyZones(commit.zones.len()))?;
    out.push(TYPE_COMMIT);
    out.extend_from_slice(&zones.to_be_bytes());
    for (zone, serial) in &commit.zones {
        put_name(zone, out);
        out.extend_from_slice(&serial.to_be_bytes());
    }
    out.extend_from_slice(&(commit.changes.len() as u16).to_be_bytes());
    for (change, state) in &commit.changes {
        put_change(change, out);
        let Some(state) = state else {
            out.push(0);
            continue;
        };
        // Only what the decoder accepts, so every frame decodes.
        if !valid_txt(&state.txt) {
            return Err(EncodeError::BadHostState);
        }
        let mut flags = 0;
        for (set, flag) in [
            (state.ipv4.is_some(), FLAG_IPV4),
            (state.ipv6.is_some(), FLAG_IPV6),
            (state.wildcard, FLAG_WILDCARD),
            (state.offline, FLAG_OFFLINE),
            (state.disabled, FLAG_DISABLED),
        ] {
            if set {
                flags |= flag;
            }
        }
        out.push(1);
        out.push(flags);
        if let Some(ip) = state.ipv4 {
            out.extend_from_slice(&ip.octets());
        }
        if let Some(ip) = state.ipv6 {
            out.extend_from_slice(&ip.octets());
        }
        out.push(state.txt.len() as u8);
        for value in &state.txt {
            out.push(value.len() as u8);
            out.extend_from_slice(value.as_bytes());
        }
    }
    Ok(())
}

/// TXT values as the store accepts them (`Store::set_host_txt`).
fn valid_txt(values: &[String]) -> bool {
    values.len() <= MAX_HOST_TXT && values.iter().all(|v| valid_txt_value(v.as_bytes()))
}

fn valid_txt_value(value: &[u8]) -> bool {
    !value.is_empty() && value.len() <= 255 && value.iter().all(|b| (0x20..0x7f).contains(b))
}

/// Encodes the changes of one announcement as frames of at most
/// [`MAX_CHANGES_PER_FRAME`] entries each.
pub fn encode_changes(changes: &[Change], out: &mut Vec<u8>) {
    for chunk in changes.chunks(MAX_CHANGES_PER_FRAME) {
        // Cannot fail: the chunk is within the limit.
        let _ = encode_frame(&FeedMessage::Changes(chunk.to_vec()), out);
    }
}

/// Decodes the first frame in `bytes`. `Ok(None)`: `bytes` holds only the
/// beginning of a frame, read more. `Ok(Some((message, used)))`: the first
/// `used` bytes were that message. An error means the stream is not a feed
/// (or a newer version of it); the reader should drop the connection.
pub fn decode_frame(bytes: &[u8]) -> Result<Option<(FeedMessage, usize)>, FrameError> {
    let Some(header) = bytes.get(..4) else {
        return Ok(None);
    };
    let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
    if !(2..=MAX_FRAME_BODY).contains(&len) {
        return Err(FrameError::BadLength(len as u64));
    }
    let Some(body) = bytes.get(4..4 + len) else {
        return Ok(None);
    };
    decode_body(body).map(|message| Some((message, 4 + len)))
}

/// Decodes one frame body (version, type, payload), which must be used up
/// exactly.
pub fn decode_body(body: &[u8]) -> Result<FeedMessage, FrameError> {
    let mut r = Reader { bytes: body };
    let version = r.u8("version")?;
    if version != FEED_VERSION {
        return Err(FrameError::UnsupportedVersion(version));
    }
    let message = match r.u8("message type")? {
        TYPE_HELLO => {
            let latest = r.u64("latest serial")?;
            let len = r.u8("writer length")?;
            let writer = r.take(usize::from(len), "writer")?;
            let writer = std::str::from_utf8(writer).map_err(|_| FrameError::BadWriter)?;
            FeedMessage::Hello {
                latest,
                writer: writer.to_owned(),
            }
        }
        TYPE_HEARTBEAT => FeedMessage::Heartbeat {
            latest: r.u64("latest serial")?,
        },
        TYPE_CHANGES => {
            let count = r.u16("change count")?;
            // Each change takes at least 19 bytes: never reserve more than
            // the frame can hold.
            let mut changes = Vec::with_capacity(usize::from(count).min(r.bytes.len() / 19));
            for _ in 0..count {
                changes.push(r.change()?);
            }
            FeedMessage::Changes(changes)
        }
        TYPE_COMMIT => {
            let count = r.u16("zone count")?;
            // A zone takes at least 5 bytes, a change with its state 20.
            let mut zones = Vec::with_capacity(usize::from(count).min(r.bytes.len() / 5));
            for _ in 0..count {
                let zone = r.name("zone")?;
                zones.push((zone, r.u32("SOA serial")?));
            }
            let count = r.u16("change count")?;
            let mut changes = Vec::with_capacity(usize::from(count).min(r.bytes.len() / 20));
            for _ in 0..count {
                let change = r.change()?;
                changes.push((change, r.host_state()?));
            }
            FeedMessage::Commit(Commit { zones, changes })
        }
        other => return Err(FrameError::UnknownType(other)),
    };
    if !r.bytes.is_empty() {
        return Err(FrameError::TrailingBytes(r.bytes.len()));
    }
    Ok(message)
}

/// A cursor over a frame body.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], FrameError> {
        if self.bytes.len() < n {
            return Err(FrameError::Truncated(what));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, FrameError> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, FrameError> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, FrameError> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, FrameError> {
        let mut buf = [0; 8];
        buf.copy_from_slice(self.take(8, what)?);
        Ok(u64::from_be_bytes(buf))
    }

    fn change(&mut self) -> Result<Change, FrameError> {
        let serial = self.u64("serial")?;
        let committed_at = self.u64("commit time")? as i64;
        let kind = kind_from_code(self.u8("change kind")?)?;
        let zone = self.name("zone")?;
        let name = self.name("name")?;
        Ok(Change {
            serial,
            zone,
            name,
            kind,
            committed_at,
        })
    }

    fn host_state(&mut self) -> Result<Option<HostState>, FrameError> {
        match self.u8("host state")? {
            0 => return Ok(None),
            1 => {}
            _ => return Err(FrameError::BadHostState),
        }
        let flags = self.u8("host flags")?;
        if flags & !KNOWN_FLAGS != 0 {
            return Err(FrameError::BadHostState);
        }
        let ipv4 = if flags & FLAG_IPV4 != 0 {
            let b = self.take(4, "IPv4 address")?;
            Some(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
        } else {
            None
        };
        let ipv6 = if flags & FLAG_IPV6 != 0 {
            let mut octets = [0; 16];
            octets.copy_from_slice(self.take(16, "IPv6 address")?);
            Some(Ipv6Addr::from(octets))
        } else {
            None
        };
        let count = usize::from(self.u8("TXT count")?);
        if count > MAX_HOST_TXT {
            return Err(FrameError::BadHostState);
        }
        let mut txt = Vec::with_capacity(count);
        for _ in 0..count {
            let len = self.u8("TXT length")?;
            let value = self.take(usize::from(len), "TXT value")?;
            if !valid_txt_value(value) {
                return Err(FrameError::BadHostState);
            }
            // Printable ASCII, so UTF-8.
            txt.push(String::from_utf8_lossy(value).into_owned());
        }
        Ok(Some(HostState {
            ipv4,
            ipv6,
            txt,
            wildcard: flags & FLAG_WILDCARD != 0,
            offline: flags & FLAG_OFFLINE != 0,
            disabled: flags & FLAG_DISABLED != 0,
        }))
    }

    fn name(&mut self, what: &'static str) -> Result<Name, FrameError> {
        let len = self.u8(what)?;
        let bytes = self.take(usize::from(len), what)?;
        let text = std::str::from_utf8(bytes).map_err(|_| FrameError::BadName)?;
        match Name::parse(text) {
            Ok(name) if name.as_str() == text => Ok(name),
            _ => Err(FrameError::BadName),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(serial: u64, zone: &str, name: &str, kind: ChangeKind) -> Change {
        Change {
            serial,
            zone: Name::parse(zone).unwrap(),
            name: Name::parse(name).unwrap(),
            kind,
            committed_at: 1_700_000_000 + serial as i64,
        }
    }

    fn samples() -> Vec<FeedMessage> {
        vec![
            FeedMessage::Hello {
                latest: 42,
                writer: "ddserver host add".into(),
            },
            FeedMessage::Hello {
                latest: 0,
                writer: String::new(),
            },
            FeedMessage::Heartbeat { latest: u64::MAX },
            FeedMessage::Changes(Vec::new()),
            FeedMessage::Changes(vec![
                change(
                    7,
                    "dyn.example.net",
                    "h1.dyn.example.net",
                    ChangeKind::HostAdded,
                ),
                change(
                    8,
                    "dyn.example.net",
                    "dyn.example.net",
                    ChangeKind::ZoneChanged,
                ),
                change(
                    9,
                    "xn--bcher-kva.example",
                    "a.xn--bcher-kva.example",
                    ChangeKind::HostRemoved,
                ),
            ]),
            FeedMessage::Commit(Commit::default()),
            FeedMessage::Commit(sample_commit()),
        ]
    }

    fn sample_commit() -> Commit {
        let full = HostState {
            ipv4: Some(Ipv4Addr::new(192, 0, 2, 1)),
            ipv6: Some("2001:db8::1".parse().unwrap()),
            txt: vec!["token-1".into(), "x".repeat(255)],
            wildcard: true,
            offline: true,
            disabled: true,
        };
        Commit {
            zones: vec![
                (Name::parse("dyn.example.net").unwrap(), 7),
                (Name::parse("xn--bcher-kva.example").unwrap(), u32::MAX),
            ],
            changes: vec![
                (
                    change(
                        10,
                        "dyn.example.net",
                        "h1.dyn.example.net",
                        ChangeKind::HostChanged,
                    ),
                    Some(full),
                ),
                (
                    change(
                        11,
                        "dyn.example.net",
                        "h2.dyn.example.net",
                        ChangeKind::HostAdded,
                    ),
                    Some(HostState::default()),
                ),
                (
                    change(
                        12,
                        "xn--bcher-kva.example",
                        "a.xn--bcher-kva.example",
                        ChangeKind::HostRemoved,
                    ),
                    None,
                ),
            ],
        }
    }

    #[test]
    fn commit_states_are_checked_both_ways() {
        let mut bad = sample_commit();
        if let Some(state) = bad.changes[0].1.as_mut() {
            state.txt.push("tab\there".into());
        }
        let mut out = Vec::new();
        assert_eq!(
            encode_frame(&FeedMessage::Commit(bad), &mut out),
            Err(EncodeError::BadHostState)
        );
        assert!(out.is_empty(), "nothing half-written");

        let mut bytes = Vec::new();
        encode_frame(&FeedMessage::Commit(sample_commit()), &mut bytes).unwrap();
        // The first state's tag (1) follows the first change: version,
        // type, zone list, change count, then the change itself.
        let zones_len = 2 + (1 + 15 + 4) + (1 + 21 + 4);
        let state_at = 4 + 2 + zones_len + 2 + (8 + 8 + 1 + 16 + 19);
        assert_eq!(bytes[state_at], 1);
        let mut unknown_tag = bytes.clone();
        unknown_tag[state_at] = 2;
        assert_eq!(decode_frame(&unknown_tag), Err(FrameError::BadHostState));
        let mut unknown_flag = bytes.clone();
        unknown_flag[state_at + 1] |= 0x80;
        assert_eq!(decode_frame(&unknown_flag), Err(FrameError::BadHostState));
        // The first TXT value's first byte made non-printable.
        let mut control = bytes.clone();
        let txt_at = state_at + 2 + 4 + 16 + 1 + 1;
        assert_eq!(&control[txt_at..txt_at + 5], b"token");
        control[txt_at] = 0x07;
        assert_eq!(decode_frame(&control), Err(FrameError::BadHostState));
        let mut many = bytes.clone();
        many[txt_at - 2] = (MAX_HOST_TXT + 1) as u8;
        assert_eq!(decode_frame(&many), Err(FrameError::BadHostState));
        // Counts beyond the frame: typed errors, no huge allocation.
        assert_eq!(
            decode_frame(&[0, 0, 0, 4, 1, 4, 0xff, 0xff]),
            Err(FrameError::Truncated("zone"))
        );
        assert_eq!(
            decode_frame(&[0, 0, 0, 6, 1, 4, 0, 0, 0xff, 0xff]),
            Err(FrameError::Truncated("serial"))
        );
    }

    #[test]
    fn a_commit_too_large_for_a_frame_is_an_error() {
        let state = HostState {
            txt: vec!["t".repeat(255); MAX_HOST_TXT],
            ..HostState::default()
        };
        let entry = (
            change(1, "example.net", "h.example.net", ChangeKind::HostChanged),
            Some(state),
        );
        let commit = Commit {
            zones: Vec::new(),
            changes: vec![entry; 300],
        };
        let mut out = vec![9];
        assert_eq!(
            encode_frame(&FeedMessage::Commit(commit), &mut out),
            Err(EncodeError::TooLarge)
        );
        assert_eq!(out, vec![9]);
    }

    #[test]
    fn round_trip_every_message() {
        for message in samples() {
            let mut bytes = Vec::new();
            encode_frame(&message, &mut bytes).unwrap();
            let (decoded, used) = decode_frame(&bytes).unwrap().unwrap();
            assert_eq!(decoded, message);
            assert_eq!(used, bytes.len());
        }
    }

    #[test]
    fn every_kind_round_trips() {
        for code in 0..=255u8 {
            if let Ok(kind) = kind_from_code(code) {
                assert_eq!(kind_code(kind), code);
            }
        }
    }

    #[test]
    fn a_stream_of_frames_decodes_in_order_and_prefixes_ask_for_more() {
        let mut bytes = Vec::new();
        for message in samples() {
            encode_frame(&message, &mut bytes).unwrap();
        }
        for cut in 0..bytes.len() {
            // Any prefix is either complete frames or "need more", never an error.
            let mut rest = &bytes[..cut];
            while let Some((_, used)) = decode_frame(rest).unwrap() {
                rest = &rest[used..];
            }
        }
        let mut rest = &bytes[..];
        let mut decoded = Vec::new();
        while let Some((message, used)) = decode_frame(rest).unwrap() {
            decoded.push(message);
            rest = &rest[used..];
        }
        assert_eq!(decoded, samples());
    }

    #[test]
    fn bad_frames_are_typed_errors() {
        assert_eq!(
            decode_frame(&[0, 0, 0, 1, 1]),
            Err(FrameError::BadLength(1))
        );
        assert_eq!(
            decode_frame(&[0xff, 0xff, 0xff, 0xff]),
            Err(FrameError::BadLength(0xffff_ffff))
        );
        assert_eq!(
            decode_frame(&[0, 0, 0, 2, 9, 2]),
            Err(FrameError::UnsupportedVersion(9))
        );
        assert_eq!(
            decode_frame(&[0, 0, 0, 2, 1, 77]),
            Err(FrameError::UnknownType(77))
        );
        assert_eq!(
            decode_frame(&[0, 0, 0, 3, 1, 2, 0]),
            Err(FrameError::Truncated("latest serial"))
        );
        let mut hb = vec![0, 0, 0, 11, 1, 2, 0, 0, 0, 0, 0, 0, 0, 1, 0];
        assert_eq!(decode_frame(&hb), Err(FrameError::TrailingBytes(1)));
        hb.truncate(14);
        hb[3] = 10;
        assert_eq!(
            decode_frame(&hb).unwrap().unwrap().0,
            FeedMessage::Heartbeat { latest: 1 }
        );
        // A change count far beyond the frame: a typed error, no huge allocation.
        assert_eq!(
            decode_frame(&[0, 0, 0, 4, 1, 3, 0xff, 0xff]),
            Err(FrameError::Truncated("serial"))
        );
    }

    #[test]
    fn names_must_be_canonical() {
        let mut bytes = Vec::new();
        encode_frame(
            &FeedMessage::Changes(vec![change(
                1,
                "example.net",
                "h.example.net",
                ChangeKind::HostAdded,
            )]),
            &mut bytes,
        )
        .unwrap();
        // Upper-case a letter of the zone: parse would lower-case it, so the
        // bytes are not canonical.
        let at = bytes.windows(7).position(|w| w == b"example").unwrap();
        bytes[at] = b'E';
        assert_eq!(decode_frame(&bytes), Err(FrameError::BadName));
        bytes[at] = 0xff;
        assert_eq!(decode_frame(&bytes), Err(FrameError::BadName));
    }

    #[test]
    fn encoding_limits_are_errors() {
        let mut out = vec![1, 2, 3];
        let err = encode_frame(
            &FeedMessage::Hello {
                latest: 1,
                writer: "x".repeat(256),
            },
            &mut out,
        );
        assert_eq!(err, Err(EncodeError::WriterTooLong));
        assert_eq!(out, vec![1, 2, 3], "nothing half-written");
        let many = vec![change(1, "example.net", "h.example.net", ChangeKind::HostAdded); 70_000];
        let mut out = Vec::new();
        assert_eq!(
            encode_frame(&FeedMessage::Changes(many.clone()), &mut out),
            Err(EncodeError::TooManyChanges(70_000))
        );
        assert!(out.is_empty());
        encode_changes(&many, &mut out);
        let mut rest = &out[..];
        let mut total = 0;
        while let Some((message, used)) = decode_frame(rest).unwrap() {
            match message {
                FeedMessage::Changes(c) => total += c.len(),
                other => panic!("{other:?}"),
            }
            rest = &rest[used..];
        }
        assert_eq!(total, 70_000);
    }
}
