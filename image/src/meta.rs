//! Framing of metadata files: fixed header, then a postcard payload.

use crate::{ImageError, Result, FORMAT_VERSION};
use serde::{de::DeserializeOwned, Serialize};

pub const MAGIC: [u8; 8] = *b"CRYOIMG\0";
pub const HEADER_LEN: usize = 24;

/// What a metadata file holds; stored in the header so a misnamed file is caught.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Kind {
    Inventory = 1,
    Process = 2,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Inventory => "inventory",
            Kind::Process => "process",
        }
    }
    fn from_u32(v: u32) -> Option<Kind> {
        match v {
            1 => Some(Kind::Inventory),
            2 => Some(Kind::Process),
            _ => None,
        }
    }
}

/// magic[8] | version u32 | kind u32 | payload length u32 | payload crc32 u32
pub struct Header {
    pub version: u32,
    pub kind: Kind,
    pub len: u32,
    pub crc: u32,
}

pub fn encode<T: Serialize>(kind: Kind, value: &T) -> Vec<u8> {
    frame(kind, &postcard::to_stdvec(value).expect("serializing to memory cannot fail"))
}

/// Header (with the payload's length and CRC) followed by the payload.
pub fn frame(kind: Kind, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(kind as u32).to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}

/// Decode a whole metadata file, checking magic, version, kind, length and checksum
/// before the payload is parsed, so a damaged file is named as such.
pub fn decode<T: DeserializeOwned>(path: &str, expected: Kind, bytes: &[u8]) -> Result<T> {
    let p = || path.to_string();
    if bytes.len() < HEADER_LEN || bytes[..8] != MAGIC {
        if bytes.len() < HEADER_LEN && MAGIC.starts_with(bytes) && !bytes.is_empty() {
            return Err(ImageError::Truncated { path: p(), expected: HEADER_LEN as u64, found: bytes.len() as u64 });
        }
        return Err(ImageError::BadMagic { path: p() });
    }
    let version = u32_at(bytes, 8);
    if version != FORMAT_VERSION {
        return Err(ImageError::Version { path: p(), found: version, expected: FORMAT_VERSION });
    }
    let kind = Kind::from_u32(u32_at(bytes, 12));
    if kind != Some(expected) {
        return Err(ImageError::Kind {
            path: p(),
            found: kind.map(Kind::name).unwrap_or("file of unknown kind"),
            expected: expected.name(),
        });
    }
    let len = u32_at(bytes, 16) as usize;
    let payload = &bytes[HEADER_LEN..];
    if payload.len() != len {
        return Err(ImageError::Truncated {
            path: p(),
            expected: (HEADER_LEN + len) as u64,
            found: bytes.len() as u64,
        });
    }
    if crc32fast::hash(payload) != u32_at(bytes, 20) {
        return Err(ImageError::Checksum { path: p() });
    }
    postcard::from_bytes(payload).map_err(|source| ImageError::Decode { path: p(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let v: Vec<u64> = (0..100).collect();
        let bytes = encode(Kind::Process, &v);
        let back: Vec<u64> = decode("f", Kind::Process, &bytes).unwrap();
        assert_eq!(back, v);

        let mut flipped = bytes.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0x40;
        assert!(matches!(decode::<Vec<u64>>("f", Kind::Process, &flipped), Err(ImageError::Checksum { .. })));

        assert!(matches!(
            decode::<Vec<u64>>("f", Kind::Process, &bytes[..bytes.len() - 3]),
            Err(ImageError::Truncated { .. })
        ));
        assert!(matches!(decode::<Vec<u64>>("f", Kind::Inventory, &bytes), Err(ImageError::Kind { .. })));

        let mut newer = bytes.clone();
        newer[8] = 99;
        assert!(matches!(decode::<Vec<u64>>("f", Kind::Process, &newer), Err(ImageError::Version { .. })));
        assert!(matches!(decode::<Vec<u64>>("f", Kind::Process, b"hello world, not an image"), Err(ImageError::BadMagic { .. })));
    }
}
