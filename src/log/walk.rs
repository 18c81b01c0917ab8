//! The one walk over a segment's records: each frame decoded and checked
//! (CRC), its position checked against the one expected, its chain link
//! checked and its hash computed for the next link; and, where the walk
//! stops, whether the damage is a torn tail or corruption. `FileLog::open`,
//! the [`super::Tail`] and `verify` all walk records with a [`Walk`]; they
//! differ only in how they get the bytes (a whole segment, a buffered file, a
//! block of a segment on a checking thread) and in what they do with damage.
//! Pure: bytes in, verdicts out.

use std::fmt;

use super::Position;
use super::frame::{self, FRAME_HEADER_BYTES, Frame, FrameError, Hash};

/// What is wrong with the record a walk stopped at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Damage {
    /// The bytes are not an intact record: too few of them, an impossible
    /// length, or a checksum that does not match.
    Frame(FrameError),
    /// An intact record that carries another position than the one expected.
    Position { found: Position },
    /// An intact record whose prev_hash is not the hash of the record before it.
    Chain,
}

impl Damage {
    /// Whether a crash can have left this: only a record that does not decode.
    /// One that decodes was written whole, so its wrong position or link is
    /// corruption wherever it is.
    pub fn may_be_torn(self) -> bool {
        matches!(self, Damage::Frame(_))
    }

    /// Whether this damage, met at `offset` of `bytes` (a log's last segment,
    /// through its end) where the record of `position` should start, is a torn
    /// tail: a record a crash left half-written, with no intact record of that
    /// position or later after it. Otherwise it is corruption: intact records
    /// after the damage were written after it, so it was once whole.
    pub fn is_torn_tail(self, bytes: &[u8], offset: usize, position: Position) -> bool {
        self.may_be_torn() && !intact_record_after(bytes, offset, position)
    }
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Damage::Frame(error) => f.write_str(error.describe()),
            Damage::Position { found } => write!(f, "record carries position {found}"),
            Damage::Chain => f.write_str("hash chain broken"),
        }
    }
}

/// Whether any intact record of position `expected` or later starts after `offset`.
fn intact_record_after(bytes: &[u8], offset: usize, expected: Position) -> bool {
    let plausible_max = expected + (bytes.len() / FRAME_HEADER_BYTES) as u64;
    (offset + 1..bytes.len().saturating_sub(FRAME_HEADER_BYTES - 1)).any(|o| {
        let position = u64::from_le_bytes(bytes[o + 8..o + 16].try_into().unwrap());
        (expected..=plausible_max).contains(&position) && frame::decode_record(&bytes[o..]).is_ok()
    })
}

/// What a walk checks of the next record's link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    /// Nothing: no link is checked and no record hashed.
    Unchecked,
    /// Its prev_hash is taken as it is (the caller checks it); every link after it is checked.
    Any,
    /// Its prev_hash must be this.
    To(Hash),
}

/// A walk over consecutive records: the position the next one must carry
/// and, for a chained walk, the hash it must link to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Walk {
    next: Position,
    link: Link,
}

impl Walk {
    /// A walk from the record at `position`, whose prev_hash must be
    /// `prev_hash` (a segment header's): every link is checked.
    pub fn chained(position: Position, prev_hash: Hash) -> Walk {
        Walk { next: position, link: Link::To(prev_hash) }
    }

    /// A walk from the record at `position` whose link is checked by the
    /// caller, against a record this walk does not see (`verify`'s blocks):
    /// every link after the first record's is checked.
    pub fn unanchored(position: Position) -> Walk {
        Walk { next: position, link: Link::Any }
    }

    /// A walk from the record at `position` that checks checksums and positions
    /// only, hashing nothing (the [`super::Tail`], on the read side's hot path).
    pub fn unchained(position: Position) -> Walk {
        Walk { next: position, link: Link::Unchecked }
    }

    /// Decodes the record at the start of `bytes` and checks that it is the
    /// next one: its checksum, then its position, then its link. The walk
    /// moves past a record that passes and stays at one that does not.
    /// Inlined: it is on the tail's per-record path.
    #[inline]
    pub fn step<'a>(&mut self, bytes: &'a [u8]) -> Result<Frame<'a>, Damage> {
        let record = frame::decode_record(bytes).map_err(Damage::Frame)?;
        if record.position != self.next {
            return Err(Damage::Position { found: record.position });
        }
        match self.link {
            Link::Unchecked => {}
            Link::To(hash) if *record.prev_hash != hash => return Err(Damage::Chain),
            Link::To(_) | Link::Any => self.link = Link::To(frame::record_hash(record.covered)),
        }
        self.next += 1;
        Ok(record)
    }

    /// The position the next record must carry.
    pub fn next_position(&self) -> Position {
        self.next
    }

    /// The hash the next record must link to: the last record's, or the
    /// prev_hash the walk started from. None for a walk that checks no links,
    /// and for an unanchored one before its first record.
    pub fn link(&self) -> Option<Hash> {
        match self.link {
            Link::To(hash) => Some(hash),
            Link::Unchecked | Link::Any => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::frame::{GENESIS_HASH, encode_record};

    /// Records 1 to 3, chained from the genesis hash: their bytes, where each
    /// starts, and each one's hash.
    fn three() -> (Vec<u8>, Vec<usize>, Vec<Hash>) {
        let (mut bytes, mut starts, mut hashes) = (Vec::new(), Vec::new(), Vec::new());
        let mut prev = GENESIS_HASH;
        for position in 1..=3 {
            starts.push(bytes.len());
            prev = encode_record(&mut bytes, position, &prev, format!("record {position}").as_bytes());
            hashes.push(prev);
        }
        (bytes, starts, hashes)
    }

    /// A record with a good checksum that breaks only the position rule, and
    /// one that breaks only the chain: each is refused, naming what is wrong,
    /// and the walk stays where it was.
    #[test]
    fn a_chained_walk_refuses_a_wrong_position_and_a_broken_link() {
        let (bytes, starts, hashes) = three();
        let mut walk = Walk::chained(1, GENESIS_HASH);
        for (i, &start) in starts.iter().enumerate() {
            let record = walk.step(&bytes[start..]).unwrap();
            assert_eq!(record.position, i as u64 + 1);
            assert_eq!(walk.link(), Some(hashes[i]), "the link the next record must carry");
        }
        assert_eq!(walk.next_position(), 4);

        let mut skipped = Vec::new();
        encode_record(&mut skipped, 5, &hashes[2], b"record 5"); // its link is right
        assert_eq!(walk.step(&skipped), Err(Damage::Position { found: 5 }));
        let mut unlinked = Vec::new();
        encode_record(&mut unlinked, 4, &hashes[1], b"record 4"); // its position is right
        assert_eq!(walk.step(&unlinked), Err(Damage::Chain));
        let mut flipped = skipped.clone();
        flipped[FRAME_HEADER_BYTES] ^= 1;
        assert_eq!(walk.step(&flipped), Err(Damage::Frame(FrameError::Checksum)));
        assert_eq!((walk.next_position(), walk.link()), (4, Some(hashes[2])), "the walk stays at the bad record");

        let mut next = Vec::new();
        let hash = encode_record(&mut next, 4, &hashes[2], b"record 4");
        assert_eq!(walk.step(&next).map(|r| r.payload), Ok(&b"record 4"[..]));
        assert_eq!((walk.next_position(), walk.link()), (5, Some(hash)));

        assert_eq!(Walk::chained(1, [1; 32]).step(&bytes), Err(Damage::Chain), "the first link is checked too");
    }

    /// Records 1 and 2, record 2 linked to the genesis hash instead of record 1.
    fn unlinked() -> (Vec<u8>, usize) {
        let (bytes, starts, _) = three();
        let mut unlinked = bytes[..starts[1]].to_vec();
        encode_record(&mut unlinked, 2, &GENESIS_HASH, b"record 2");
        (unlinked, starts[1])
    }

    #[test]
    fn an_unchained_walk_checks_positions_only() {
        let (bytes, starts, _) = three();
        let (unlinked, second) = unlinked();
        let mut walk = Walk::unchained(1);
        assert!(walk.step(&unlinked).is_ok() && walk.step(&unlinked[second..]).is_ok(), "links are not checked");
        assert_eq!((walk.next_position(), walk.link()), (3, None));
        assert_eq!(walk.step(&bytes[starts[1]..]), Err(Damage::Position { found: 2 }));
    }

    #[test]
    fn an_unanchored_walk_checks_every_link_but_the_first() {
        let (bytes, starts, hashes) = three();
        let (unlinked, second) = unlinked();
        let mut walk = Walk::unanchored(2);
        assert_eq!(walk.link(), None);
        let record = walk.step(&unlinked[second..]).unwrap();
        assert_eq!(*record.prev_hash, GENESIS_HASH, "whatever the first record links to");
        assert_eq!(walk.link(), Some(frame::record_hash(record.covered)));
        assert_eq!(walk.step(&bytes[starts[2]..]), Err(Damage::Chain), "record 3 links to another record 2");

        let mut walk = Walk::unanchored(2);
        walk.step(&bytes[starts[1]..]).unwrap();
        assert_eq!(walk.link(), Some(hashes[1]));
        assert!(walk.step(&bytes[starts[2]..]).is_ok());
    }

    /// A record cut short or damaged with nothing intact after it is a torn
    /// tail; with an intact record after it, or one that decodes, corruption.
    #[test]
    fn only_a_record_that_does_not_decode_with_nothing_intact_after_it_is_a_torn_tail() {
        let (bytes, starts, _) = three();
        let cut = &bytes[..bytes.len() - 3];
        let mut walk = Walk::chained(1, GENESIS_HASH);
        walk.step(cut).unwrap();
        walk.step(&cut[starts[1]..]).unwrap();
        let damage = walk.step(&cut[starts[2]..]).unwrap_err();
        assert_eq!(damage, Damage::Frame(FrameError::Incomplete));
        assert!(damage.is_torn_tail(cut, starts[2], 3));

        let mut flipped = bytes.clone();
        flipped[starts[1] + FRAME_HEADER_BYTES] ^= 1;
        let damage = Walk::chained(2, GENESIS_HASH).step(&flipped[starts[1]..]).unwrap_err();
        assert_eq!(damage, Damage::Frame(FrameError::Checksum));
        assert!(!damage.is_torn_tail(&flipped, starts[1], 2), "record 3 follows");
        assert!(damage.is_torn_tail(&flipped[..starts[2]], starts[1], 2), "nothing follows");

        assert!(!Damage::Position { found: 7 }.is_torn_tail(&bytes, starts[2], 3));
        assert!(!Damage::Chain.is_torn_tail(&bytes, starts[2], 3));
        assert_eq!(Damage::Position { found: 7 }.to_string(), "record carries position 7");
        assert_eq!(Damage::Chain.to_string(), "hash chain broken");
        assert_eq!(Damage::Frame(FrameError::Checksum).to_string(), FrameError::Checksum.describe());
    }
}
