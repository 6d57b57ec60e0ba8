//! A packet in a buffer with headroom, the way AF_XDP and XDP hold it.
//!
//! Encapsulation writes a header into the headroom in front of the packet;
//! decapsulation advances the start past the outer header. Nothing is
//! copied and nothing is allocated.

/// A window `[head, tail)` onto a mutable buffer.
#[derive(Debug)]
pub struct Frame<'a> {
    buf: &'a mut [u8],
    head: usize,
    tail: usize,
}

impl<'a> Frame<'a> {
    /// A frame holding `buf[head..head + len]`; `None` when that is out of bounds.
    pub fn new(buf: &'a mut [u8], head: usize, len: usize) -> Option<Self> {
        let tail = head.checked_add(len)?;
        (tail <= buf.len()).then_some(Frame { buf, head, tail })
    }

    /// Offset of the packet's first byte in the buffer.
    pub fn head(&self) -> usize {
        self.head
    }

    /// Bytes free in front of the packet.
    pub fn headroom(&self) -> usize {
        self.head
    }

    /// Length of the packet.
    pub fn len(&self) -> usize {
        self.tail - self.head
    }

    /// Whether the packet is empty.
    pub fn is_empty(&self) -> bool {
        self.tail == self.head
    }

    /// The packet bytes.
    pub fn data(&self) -> &[u8] {
        &self.buf[self.head..self.tail]
    }

    /// The packet bytes, writable.
    pub fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.head..self.tail]
    }

    /// Grows the packet by `n` bytes at the front; `false` (and no change)
    /// when the headroom is too small.
    #[must_use]
    pub fn push(&mut self, n: usize) -> bool {
        if n > self.head {
            return false;
        }
        self.head -= n;
        true
    }

    /// Drops `n` bytes from the front; `false` (and no change) when the
    /// packet is shorter.
    #[must_use]
    pub fn pull(&mut self, n: usize) -> bool {
        if n > self.len() {
            return false;
        }
        self.head += n;
        true
    }

    /// Shortens the packet to at most `len` bytes.
    pub fn truncate(&mut self, len: usize) {
        if len < self.len() {
            self.tail = self.head + len;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_and_pull_move_the_start_within_bounds() {
        let mut buf = [0u8; 64];
        let mut f = Frame::new(&mut buf, 20, 10).unwrap();
        assert!(!f.push(21));
        assert!(f.push(20));
        assert_eq!((f.head(), f.len()), (0, 30));
        assert!(!f.pull(31));
        assert!(f.pull(30));
        assert!(f.is_empty());
        assert!(Frame::new(&mut buf, 60, 5).is_none());
        assert!(Frame::new(&mut buf, usize::MAX, 5).is_none());
    }
}
