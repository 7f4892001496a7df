//! The bounds a peer's XML must stay within. One place, one test each (see `tests.rs`).

/// Limits applied to every element read from a stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Bytes one depth-1 element (and the whitespace before it) may take on the wire.
    pub max_stanza_bytes: usize,
    /// Nesting depth inside one stanza; the stanza itself is depth 1.
    pub max_depth: usize,
    /// Attributes on one element, namespace declarations included.
    pub max_attrs: usize,
    /// Elements in one stanza, counting every descendant.
    pub max_elements: usize,
}

/// 256 KiB: well above a roster of a few thousand contacts or an OMEMO bundle (about 10 KiB).
pub const DEFAULT_MAX_STANZA_BYTES: usize = 256 * 1024;
/// OMEMO inside a carbon inside a MAM result is 8 deep; 32 leaves room.
pub const DEFAULT_MAX_DEPTH: usize = 32;
pub const DEFAULT_MAX_ATTRS: usize = 64;
/// A 5,000-item roster is the largest legitimate stanza we expect.
pub const DEFAULT_MAX_ELEMENTS: usize = 10_000;

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_stanza_bytes: DEFAULT_MAX_STANZA_BYTES,
            max_depth: DEFAULT_MAX_DEPTH,
            max_attrs: DEFAULT_MAX_ATTRS,
            max_elements: DEFAULT_MAX_ELEMENTS,
        }
    }
}
