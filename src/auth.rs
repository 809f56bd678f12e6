//! Identity from call metadata (placeholder, being written).
