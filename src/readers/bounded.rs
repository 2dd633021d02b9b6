//! A byte buffer with a hard cap.

/// A byte buffer that refuses to grow past its cap: on overflow it drops what it held and
/// remembers that it overflowed, so the caller skips the value instead of reading half of it.
#[derive(Debug)]
pub struct BoundedBuffer {
    bytes: Vec<u8>,
    cap: usize,
    overflowed: bool,
}

impl BoundedBuffer {
    pub const fn new(cap: usize) -> Self {
        Self {
            bytes: Vec::new(),
            cap,
            overflowed: false,
        }
    }

    pub fn push(&mut self, more: &[u8]) {
        if self.overflowed || more.is_empty() {
            return;
        }
        let needed = self.bytes.len() + more.len();
        if needed > self.cap {
            self.overflowed = true;
            self.bytes = Vec::new();
            return;
        }
        if needed > self.bytes.capacity() {
            // Double as Vec would, but never past the cap, so capacity too stays bounded.
            let target = needed.max(self.bytes.capacity() * 2).min(self.cap);
            self.bytes.reserve_exact(target - self.bytes.len());
        }
        self.bytes.extend_from_slice(more);
    }

    /// Bytes held now (0 once overflowed).
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Drops what was pushed after the first `len` bytes.
    pub fn truncate(&mut self, len: usize) {
        self.bytes.truncate(len);
    }

    pub fn clear(&mut self) {
        self.bytes.clear();
        self.overflowed = false;
    }

    /// Empties it and gives its memory back.
    pub fn release(&mut self) {
        self.bytes = Vec::new();
        self.overflowed = false;
    }

    /// Holds something, or held something that overflowed.
    pub fn is_used(&self) -> bool {
        !self.bytes.is_empty() || self.overflowed
    }

    /// The complete contents, or `None` when they overflowed.
    pub fn contents(&self) -> Option<&[u8]> {
        (!self.overflowed).then_some(self.bytes.as_slice())
    }

    pub fn held_bytes(&self) -> usize {
        self.bytes.capacity()
    }
}
