//! Wire-format primitives shared by the handler and the snapshot writer.
//!
//! Domain names in their lower-case wire form with label offsets ([`NameKey`],
//! built on the stack per query), header field constants, and the conversion
//! of presentation-format names (`www.example.net.`) to wire form and back.
//!
//! Never allocates on the query path: everything the handler uses here works
//! on fixed-size stack buffers. The text conversions (`name_from_text`,
//! `name_to_text`) allocate and are for the writer and zone export only.

/// Largest wire-format domain name, root label included (RFC 1035 §3.1).
pub const MAX_NAME_LEN: usize = 255;
/// Largest label (RFC 1035 §2.3.4).
pub const MAX_LABEL_LEN: usize = 63;
/// Most labels a 255-octet name can have, root excluded.
const MAX_LABELS: usize = 127;

/// Header length (RFC 1035 §4.1.1).
pub(crate) const HEADER_LEN: usize = 12;

// Record types we treat specially (RFC 1035 §3.2.2, RFC 3596, RFC 2782,
// RFC 8659, RFC 6891, RFC 1995, RFC 5936, RFC 4034).
pub(crate) const TYPE_A: u16 = 1;
pub(crate) const TYPE_NS: u16 = 2;
pub(crate) const TYPE_CNAME: u16 = 5;
pub(crate) const TYPE_SOA: u16 = 6;
pub(crate) const TYPE_MX: u16 = 15;
pub(crate) const TYPE_TXT: u16 = 16;
pub(crate) const TYPE_AAAA: u16 = 28;
pub(crate) const TYPE_SRV: u16 = 33;
pub(crate) const TYPE_OPT: u16 = 41;
pub(crate) const TYPE_DS: u16 = 43;
pub(crate) const TYPE_IXFR: u16 = 251;
pub(crate) const TYPE_AXFR: u16 = 252;
pub(crate) const TYPE_ANY: u16 = 255;
pub(crate) const TYPE_CAA: u16 = 257;

pub(crate) const CLASS_IN: u16 = 1;
pub(crate) const CLASS_CH: u16 = 3;

// Response codes (RFC 1035 §4.1.1, RFC 6891 §9).
pub(crate) const RCODE_NOERROR: u8 = 0;
pub(crate) const RCODE_FORMERR: u8 = 1;
pub(crate) const RCODE_NXDOMAIN: u8 = 3;
pub(crate) const RCODE_NOTIMP: u8 = 4;
pub(crate) const RCODE_REFUSED: u8 = 5;
/// BADVERS is extended RCODE 16: upper eight bits (1) go into the OPT TTL,
/// lower four bits (0) into the header (RFC 6891 §6.1.3).
pub(crate) const EXTENDED_RCODE_BADVERS: u8 = 1;

/// A domain name in lower-case wire form, with the offset of every label.
///
/// Built on the stack for each query (no allocation). `label(i)` is the
/// offset of label `i`, counted from the left; `suffix(i)` is the name with
/// the `i` leftmost labels removed, so `suffix(label_count())` is the root.
/// Because the question name is never compressed (we refuse pointers there)
/// the offsets are also the offsets inside the question as received.
#[derive(Clone)]
pub struct NameKey {
    bytes: [u8; MAX_NAME_LEN],
    len: u8,
    labels: [u8; MAX_LABELS + 1],
    count: u8,
}

impl Default for NameKey {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for NameKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&name_to_text(self.as_bytes()))
    }
}

/// Why a name could not be read from a packet or a string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("name runs past the end of the data")]
    Truncated,
    #[error("compression pointer or reserved label type where none is allowed")]
    BadLabelType,
    #[error("label longer than 63 octets")]
    LabelTooLong,
    #[error("name longer than 255 octets")]
    NameTooLong,
    #[error("empty label inside a name")]
    EmptyLabel,
    #[error("bad escape sequence")]
    BadEscape,
}

impl NameKey {
    /// The root name.
    pub const fn new() -> Self {
        Self {
            bytes: [0; MAX_NAME_LEN],
            len: 1,
            labels: [0; MAX_LABELS + 1],
            count: 0,
        }
    }

    /// Reads an uncompressed name starting at `start` in `msg`, lower-casing
    /// it (ASCII only, RFC 4343 §3). Returns the key and the offset just past
    /// the name. Compression pointers are refused: a question name has
    /// nothing to point back to (RFC 1035 §4.1.4), and NSD refuses them too.
    pub fn parse(msg: &[u8], start: usize) -> Result<(Self, usize), NameError> {
        let mut key = Self::new();
        let end = key.parse_into(msg, start)?;
        Ok((key, end))
    }

    /// As [`NameKey::parse`], into an existing key (no 400-octet move on
    /// the query path). On error the key's content is unspecified.
    #[inline]
    pub fn parse_into(&mut self, msg: &[u8], start: usize) -> Result<usize, NameError> {
        self.count = 0;
        let mut pos = start;
        let mut out = 0usize;
        loop {
            let Some(&len) = msg.get(pos) else {
                return Err(NameError::Truncated);
            };
            if len & 0xC0 != 0 {
                return Err(NameError::BadLabelType);
            }
            let len = usize::from(len);
            if out + 1 + len > MAX_NAME_LEN {
                return Err(NameError::NameTooLong);
            }
            if len == 0 {
                self.bytes[out] = 0;
                self.len = (out + 1) as u8;
                return Ok(pos + 1);
            }
            let Some(label) = msg.get(pos + 1..pos + 1 + len) else {
                return Err(NameError::Truncated);
            };
            self.labels[usize::from(self.count)] = out as u8;
            self.count += 1;
            self.bytes[out] = len as u8;
            for (dst, src) in self.bytes[out + 1..out + 1 + len].iter_mut().zip(label) {
                *dst = src.to_ascii_lowercase();
            }
            out += 1 + len;
            pos += 1 + len;
        }
    }

    /// Builds a key from a wire name that is known to be well formed
    /// (uncompressed, ≤ 255 octets), lower-casing it.
    pub fn from_wire(wire: &[u8]) -> Result<Self, NameError> {
        let (key, end) = Self::parse(wire, 0)?;
        if end != wire.len() {
            return Err(NameError::Truncated);
        }
        Ok(key)
    }

    /// The whole name in lower-case wire form.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// Number of labels, the root not counted.
    pub fn label_count(&self) -> usize {
        usize::from(self.count)
    }

    /// Offset of label `i` (0 is the leftmost); `label_count()` gives the
    /// offset of the root label.
    pub fn label_offset(&self, i: usize) -> usize {
        if i >= usize::from(self.count) {
            usize::from(self.len) - 1
        } else {
            usize::from(self.labels[i])
        }
    }

    /// The name without its `i` leftmost labels.
    pub fn suffix(&self, i: usize) -> &[u8] {
        &self.as_bytes()[self.label_offset(i)..]
    }

    /// The leftmost label's text (without its length octet), or empty at the root.
    pub fn first_label(&self) -> &[u8] {
        if self.count == 0 {
            return &[];
        }
        let len = usize::from(self.bytes[0]);
        &self.bytes[1..1 + len]
    }
}

/// Converts a presentation-format name (`www.Example.net`, `www.example.net.`,
/// `@`-free, always taken as absolute) to wire form, keeping case.
/// Supports `\.`-style and `\DDD` escapes (RFC 1035 §5.1).
pub fn name_from_text(text: &str) -> Result<Vec<u8>, NameError> {
    let mut out = Vec::with_capacity(text.len() + 2);
    name_from_text_into(text, &mut out)?;
    Ok(out)
}

/// [`name_from_text`] appended to `out`, for callers that convert a
/// million names into one reused buffer (a bulk load). On error `out`
/// holds a partial name: the caller discards it.
pub fn name_from_text_into(text: &str, out: &mut Vec<u8>) -> Result<(), NameError> {
    let text = text.as_bytes();
    let start = out.len();
    if text.is_empty() || text == b"." {
        out.push(0);
        return Ok(());
    }
    // Without escapes (nearly every name) a label is a slice between dots,
    // copied whole instead of octet by octet.
    let body = text.strip_suffix(b".").unwrap_or(text);
    if !body.contains(&b'\\') {
        for label in body.split(|&c| c == b'.') {
            if label.is_empty() {
                return Err(NameError::EmptyLabel);
            }
            if label.len() > MAX_LABEL_LEN {
                return Err(NameError::LabelTooLong);
            }
            out.push(label.len() as u8);
            out.extend_from_slice(label);
        }
        out.push(0);
        return check_length(out.len() - start);
    }
    let mut label_start = out.len();
    out.push(0);
    let mut i = 0;
    while i < text.len() {
        let c = text[i];
        match c {
            b'.' => {
                let len = out.len() - label_start - 1;
                if len == 0 {
                    return Err(NameError::EmptyLabel);
                }
                if len > MAX_LABEL_LEN {
                    return Err(NameError::LabelTooLong);
                }
                out[label_start] = len as u8;
                label_start = out.len();
                out.push(0);
                i += 1;
                if i == text.len() {
                    // Trailing dot: the placeholder just pushed is the root.
                    return check_length(out.len() - start);
                }
                continue;
            }
            b'\\' => {
                let rest = &text[i + 1..];
                if rest.len() >= 3 && rest[..3].iter().all(u8::is_ascii_digit) {
                    let v = u32::from(rest[0] - b'0') * 100
                        + u32::from(rest[1] - b'0') * 10
                        + u32::from(rest[2] - b'0');
                    let v = u8::try_from(v).map_err(|_| NameError::BadEscape)?;
                    out.push(v);
                    i += 4;
                } else if let Some(&next) = rest.first() {
                    out.push(next);
                    i += 2;
                } else {
                    return Err(NameError::BadEscape);
                }
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    let len = out.len() - label_start - 1;
    if len == 0 {
        return Err(NameError::EmptyLabel);
    }
    if len > MAX_LABEL_LEN {
        return Err(NameError::LabelTooLong);
    }
    out[label_start] = len as u8;
    out.push(0);
    check_length(out.len() - start)
}

fn check_length(len: usize) -> Result<(), NameError> {
    if len > MAX_NAME_LEN {
        Err(NameError::NameTooLong)
    } else {
        Ok(())
    }
}

/// Converts a well-formed uncompressed wire name to presentation form with a
/// trailing dot, escaping as RFC 1035 §5.1 requires.
pub fn name_to_text(wire: &[u8]) -> String {
    let mut out = String::new();
    let mut pos = 0;
    while let Some(&len) = wire.get(pos) {
        if len == 0 || len & 0xC0 != 0 {
            break;
        }
        let label = wire.get(pos + 1..pos + 1 + usize::from(len)).unwrap_or(&[]);
        for &c in label {
            match c {
                b'.' | b'\\' | b'"' | b'(' | b')' | b';' | b'@' | b'$' => {
                    out.push('\\');
                    out.push(char::from(c));
                }
                0x21..=0x7E => out.push(char::from(c)),
                _ => out.push_str(&format!("\\{c:03}")),
            }
        }
        out.push('.');
        pos += 1 + usize::from(len);
    }
    if out.is_empty() {
        out.push('.');
    }
    out
}

/// Lower-cases an uncompressed wire name in place (ASCII only, RFC 4343).
pub(crate) fn lowercase_in_place(wire: &mut [u8]) {
    let mut pos = 0;
    while let Some(&len) = wire.get(pos) {
        if len == 0 {
            break;
        }
        let end = (pos + 1 + usize::from(len)).min(wire.len());
        wire[pos + 1..end].make_ascii_lowercase();
        pos = end;
    }
}

/// Skips a possibly compressed name in a message; returns the offset past it.
/// Only used to walk past records we do not interpret.
pub(crate) fn skip_name(msg: &[u8], mut pos: usize) -> Option<usize> {
    loop {
        let len = *msg.get(pos)?;
        match len & 0xC0 {
            0x00 if len == 0 => return Some(pos + 1),
            0x00 => pos += 1 + usize::from(len),
            0xC0 => {
                return if pos + 2 <= msg.len() {
                    Some(pos + 2)
                } else {
                    None
                };
            }
            _ => return None,
        }
    }
}

pub(crate) fn read_u16(b: &[u8], pos: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(pos)?, *b.get(pos + 1)?]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trip() {
        let w = name_from_text("Www.Example.NET.").unwrap();
        assert_eq!(w, b"\x03Www\x07Example\x03NET\x00");
        assert_eq!(
            name_from_text("www.example.net").unwrap(),
            b"\x03www\x07example\x03net\x00"
        );
        assert_eq!(name_to_text(&w), "Www.Example.NET.");
        assert_eq!(name_from_text(".").unwrap(), b"\x00");
        assert_eq!(name_from_text("a\\.b.c").unwrap(), b"\x03a.b\x01c\x00");
        assert_eq!(name_to_text(b"\x03a.b\x01c\x00"), "a\\.b.c.");
        assert_eq!(name_from_text("\\065x").unwrap(), b"\x02Ax\x00");
        assert_eq!(name_from_text("a..b"), Err(NameError::EmptyLabel));
        assert_eq!(
            name_from_text(&"x".repeat(64)),
            Err(NameError::LabelTooLong)
        );
        let long = vec!["abcdefghi"; 30].join(".");
        assert_eq!(name_from_text(&long), Err(NameError::NameTooLong));
    }

    /// Names without escapes take a shortcut; writing their first letter
    /// as `\DDD` sends the same name down the escape path: both must give
    /// the same wire name or the same error.
    #[test]
    fn unescaped_shortcut_equals_escape_path() {
        let x63 = "x".repeat(63);
        let x64 = "x".repeat(64);
        let near = vec!["x".repeat(62); 4].join(".");
        let over = vec!["x".repeat(63); 4].join(".");
        let cases = [
            "x", "x.", "x.y", "X.Y.", "x..y", "x.y..", "x.y.", "x..", &x63, &x64, &near, &over,
        ];
        for text in cases {
            let escaped = format!("\\{:03}{}", text.as_bytes()[0], &text[1..]);
            let mut plain = vec![7];
            let mut slow = vec![7];
            let a = name_from_text_into(text, &mut plain);
            let b = name_from_text_into(&escaped, &mut slow);
            assert_eq!(a, b, "{text:?}");
            if a.is_ok() {
                assert_eq!(plain, slow, "{text:?}");
                assert_eq!(plain[0], 7, "appended after what was there");
            }
        }
        assert_eq!(name_from_text(".x"), Err(NameError::EmptyLabel));
    }

    #[test]
    fn key_parse_lowercases_and_indexes_labels() {
        let msg = b"\x03WwW\x07example\x03net\x00rest";
        let (k, end) = NameKey::parse(msg, 0).unwrap();
        assert_eq!(end, 17);
        assert_eq!(k.as_bytes(), b"\x03www\x07example\x03net\x00");
        assert_eq!(k.label_count(), 3);
        assert_eq!(k.suffix(1), b"\x07example\x03net\x00");
        assert_eq!(k.suffix(3), b"\x00");
        assert_eq!(k.first_label(), b"www");
        assert_eq!(
            NameKey::parse(b"\xC0\x0C", 0).err(),
            Some(NameError::BadLabelType)
        );
        assert_eq!(
            NameKey::parse(b"\x05ab", 0).err(),
            Some(NameError::Truncated)
        );
    }
}
