//! The feed's wire format: the messages a writer pushes to a responder's
//! control socket after a commit, as length-prefixed binary frames.
//!
//! ```text
//! frame   = length:u32be  body            length = len(body), 2..=MAX_FRAME_BODY
//! body    = version:u8 (= 1)  type:u8  payload
//! type 1  Hello      latest:u64be  writer_len:u8  writer:utf8
//! type 2  Heartbeat  latest:u64be
//! type 3  Changes    count:u16be  count x change
//! change  = serial:u64be  committed_at:i64be  kind:u8  zone_len:u8 zone  name_len:u8 name
//! ```
//!
//! Names travel in their canonical A-label form (what [`Name::as_str`]
//! returns); a decoder accepts only names that `Name::parse` returns
//! unchanged. `latest` is the newest change-log serial the writer knows of,
//! so a responder that applied less knows it missed something.
//!
//! A message is a hint, never the data: the responder re-reads the change
//! log (DESIGN invariant 1), so a lost, duplicated or reordered frame costs
//! latency, never correctness.
//!
//! Decoding is total: any byte string gives a message, "need more bytes", or
//! a [`FrameError`]; it must never panic and never allocate more than the
//! declared, bounded frame length. The fuzz target `feed_frame` holds it to
//! that.

use crate::model::{Change, ChangeKind};
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
}

impl FeedMessage {
    /// The newest serial this message tells of (0 for an empty `Changes`).
    pub fn latest(&self) -> u64 {
        match self {
            FeedMessage::Hello { latest, .. } | FeedMessage::Heartbeat { latest } => *latest,
            FeedMessage::Changes(changes) => changes.iter().map(|c| c.serial).max().unwrap_or(0),
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
}

/// Why a message cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("{0} changes do not fit one frame (at most {MAX_CHANGES_PER_FRAME})")]
    TooManyChanges(usize),
    #[error("the writer description is longer than 255 bytes")]
    WriterTooLong,
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
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    out.push(FEED_VERSION);
    match message {
        FeedMessage::Hello { latest, writer } => {
            let len = u8::try_from(writer.len()).map_err(|_| EncodeError::WriterTooLong);
            let len = match len {
                Ok(len) => len,
                Err(e) => {
                    out.truncate(start);
                    return Err(e);
                }
            };
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
                out.truncate(start);
                return Err(EncodeError::TooManyChanges(changes.len()));
            }
            let count = changes.len() as u16;
            out.push(TYPE_CHANGES);
            out.extend_from_slice(&count.to_be_bytes());
            for change in changes {
                out.extend_from_slice(&change.serial.to_be_bytes());
                out.extend_from_slice(&change.committed_at.to_be_bytes());
                out.push(kind_code(change.kind));
                // A validated name is at most 253 bytes, so its length fits.
                for name in [&change.zone, &change.name] {
                    let bytes = name.as_str().as_bytes();
                    out.push(bytes.len().min(255) as u8);
                    out.extend_from_slice(&bytes[..bytes.len().min(255)]);
                }
            }
        }
    }
    let body = (out.len() - start - 4) as u32;
    out[start..start + 4].copy_from_slice(&body.to_be_bytes());
    Ok(())
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
                let serial = r.u64("serial")?;
                let committed_at = r.u64("commit time")? as i64;
                let kind = kind_from_code(r.u8("change kind")?)?;
                let zone = r.name("zone")?;
                let name = r.name("name")?;
                changes.push(Change {
                    serial,
                    zone,
                    name,
                    kind,
                    committed_at,
                });
            }
            FeedMessage::Changes(changes)
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

    fn u64(&mut self, what: &'static str) -> Result<u64, FrameError> {
        let mut buf = [0; 8];
        buf.copy_from_slice(self.take(8, what)?);
        Ok(u64::from_be_bytes(buf))
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
        ]
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
