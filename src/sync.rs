//! Small synchronisation helpers shared by every layer.

use std::sync::{Mutex, MutexGuard};

/// Locks `m`, using its data even if a thread panicked while holding it: every value kept
/// behind these mutexes stays consistent between statements, and a poisoned lock must not
/// take the server down with the thread that panicked.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
