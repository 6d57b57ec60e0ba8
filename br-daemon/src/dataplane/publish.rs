//! A value the control plane replaces and the workers read without a lock
//! on the packet path: each worker checks a generation number once per
//! batch and takes the lock only when it moved.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The published value.
pub struct Published<T> {
    current: Mutex<Arc<T>>,
    generation: AtomicU64,
}

impl<T> Published<T> {
    /// Publishes a first value.
    pub fn new(value: T) -> Arc<Self> {
        Arc::new(Published {
            current: Mutex::new(Arc::new(value)),
            generation: AtomicU64::new(1),
        })
    }

    /// Replaces the value; readers see it at their next refresh.
    pub fn publish(&self, value: T) {
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(value);
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// The current value.
    pub fn get(&self) -> Arc<T> {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// How many values were published so far (the first counts 1).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// A reader for one thread.
    pub fn reader(self: &Arc<Self>) -> Reader<T> {
        Reader {
            generation: self.generation.load(Ordering::Acquire),
            value: self.get(),
            cell: Arc::clone(self),
        }
    }
}

/// One thread's view of a [`Published`] value.
pub struct Reader<T> {
    cell: Arc<Published<T>>,
    value: Arc<T>,
    generation: u64,
}

impl<T> Reader<T> {
    /// Picks up a newer value if there is one; true when it changed.
    #[inline]
    pub fn refresh(&mut self) -> bool {
        let g = self.cell.generation.load(Ordering::Acquire);
        if g == self.generation {
            return false;
        }
        self.value = self.cell.get();
        self.generation = g;
        true
    }

    /// The value as of the last refresh.
    #[inline]
    pub fn get(&self) -> &T {
        &self.value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_see_a_new_value_after_refresh() {
        let cell = Published::new(1);
        let mut r = cell.reader();
        assert!(!r.refresh());
        cell.publish(2);
        assert_eq!(*r.get(), 1);
        assert!(r.refresh());
        assert_eq!(*r.get(), 2);
    }
}
