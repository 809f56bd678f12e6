//! Client helpers (placeholder, being written).
